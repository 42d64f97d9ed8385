"""Shared fixtures: one local[2] SparkSession for the whole test session, data paths."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMBEDPIPE_SHARED", REPO.parent / "shared"))
SAMPLE = REPO / "data" / "pd-sample.txt.gz"
EN_OPEN_TOK = SHARED / "corpora" / "en-open.tok.txt.gz"
EN_OPEN_RAW = SHARED / "corpora" / "en-open.txt.gz"


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip a test, with the reason, when a file from ../shared is absent."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (../shared)")


def head_lines(path: Path, n: int) -> list[str]:
    """First ``n`` lines of a gzip text file (without newlines)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n"))
            if len(out) >= n:
                break
    return out


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for every Spark test (UI off, few shuffle partitions)."""
    from embedpipe.config import SparkConfig
    from embedpipe.spark import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = build_session(SparkConfig(master="local[2]", conf={
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
        "spark.driver.memory": "2g",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
    }))
    yield session
    session.stop()
