"""Fixtures of the cluster tests: one loopback cluster and one small corpus per session."""

from __future__ import annotations

import pytest

from tests.cluster.loopback import LoopbackCluster, package_zip
from tests.conftest import SAMPLE, head_lines


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "sample.txt"
    path.write_text("\n".join(head_lines(SAMPLE, 3000)) + "\n")
    return path


@pytest.fixture(scope="session")
def package(tmp_path_factory):
    return package_zip(tmp_path_factory.mktemp("dist") / "embedpipe.zip")
