"""Fault tests on the loopback cluster (issue 10): a killed executor in the middle of
``cooccur`` and in the middle of a GloVe epoch, and a killed driver resumed with
``--resume``; every time the outputs equal an undisturbed ``local[2]`` run's.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from embedpipe import cooccur as cooc
from embedpipe.cli import run_stages
from embedpipe.config import load_config
from embedpipe.runs import RunDir
from embedpipe.vectors import Vectors
from tests.cluster.loopback import spark_submit, spark_submit_background, wait_for_line

pytestmark = pytest.mark.cluster

STAGES = ["vocab", "encode", "cooccur", "glove"]
SETTINGS = ["vocab.min_count=3", "cooccur.shards=2", "cooccur.window=5", "glove.dim=16",
            "glove.epochs=6", "input.partitions=2"]


def _args(corpus, out, *extra):
    args = ["--input", str(corpus), "--out", str(out), "--stages", ",".join(STAGES)]
    for s in SETTINGS:
        args += ["--set", s]
    return [*args, *extra]


@pytest.fixture(scope="module")
def reference(spark, corpus, tmp_path_factory):
    run = RunDir(str(tmp_path_factory.mktemp("reference") / "run"))
    run_stages(STAGES, load_config(None, [f"input.path={corpus}", *SETTINGS]), run, spark=spark)
    return run


def _same_outputs(reference: RunDir, run: RunDir) -> None:
    a, b = cooc.read_matrix(reference), cooc.read_matrix(run)
    assert (a != b).nnz == 0
    va = Vectors.load_model_dir(reference.path("glove"))
    vb = Vectors.load_model_dir(run.path("glove"))
    assert va.index_to_key == vb.index_to_key
    np.testing.assert_array_equal(va.vectors, vb.vectors)


def _kill_one_executor(cluster) -> int:
    deadline = time.time() + 60
    while time.time() < deadline:
        pids = cluster.executor_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.2)
    raise AssertionError("no executor to kill")


@pytest.mark.parametrize("attempt", [1, 2, 3], ids=["run1", "run2", "run3"])
@pytest.mark.parametrize("when", ["encode   ", "glove    epoch 2/"], ids=["cooccur", "glove"])
def test_executor_killed_mid_stage(cluster, package, corpus, reference, tmp_path, when,
                                   attempt):
    # "encode   " is logged as cooccur starts; "glove epoch 2/" in the middle of training.
    out, log = tmp_path / "run", tmp_path / "driver.log"
    driver = spark_submit_background(cluster, package, _args(corpus, out), log)
    try:
        wait_for_line(log, when, driver)
        time.sleep(1.0)
        _kill_one_executor(cluster)
        assert driver.wait(timeout=1800) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    _same_outputs(reference, RunDir(str(out)))


@pytest.mark.parametrize("attempt", [1, 2, 3], ids=["run1", "run2", "run3"])
def test_driver_killed_mid_training_resumes(cluster, package, corpus, reference, tmp_path,
                                            attempt):
    out, log = tmp_path / "run", tmp_path / "driver.log"
    driver = spark_submit_background(cluster, package, _args(corpus, out), log)
    try:
        wait_for_line(log, "glove    epoch 3/", driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    run = RunDir(str(out))
    assert run.record("glove") is None  # never marked finished
    proc = spark_submit(cluster, package, _args(corpus, out, "--resume"), tmp_path / "resume.log")
    assert proc.returncode == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert "resum" in (tmp_path / "resume.log").read_text().lower()
    _same_outputs(reference, run)
