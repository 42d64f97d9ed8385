"""bench/bench_word2vec.py: bracketed speed rows and their rendering (no Spark, no peers)."""

from __future__ import annotations

import pytest

from bench import bench_word2vec as bw


def _row(system: str, wall: float, **kw) -> dict:
    words = 64_000_000
    return {"system": system, "mode": "skipgram", "partitions": 2, "merge": "average",
            "epochs": 5, "sample": 1e-4, "wall_s": wall, "train_s": wall - 3.0,
            "load_s": 3.0, "cpu_s": 2 * wall, "words": words, "words_per_s": words / wall,
            "load": [2.0, 2.1, 2.2], **kw}  # fmt: skip


def test_bracketed_row_is_the_mean_of_both_runs():
    row = bw.bracketed(_row("embedpipe", 60.0), _row("embedpipe", 70.0))
    assert row["wall_s"] == pytest.approx(65.0) and row["wall_runs"] == [60.0, 70.0]
    assert row["train_s"] == pytest.approx(62.0) and row["cpu_s"] == pytest.approx(130.0)
    assert row["words_per_s"] == pytest.approx(64_000_000 / 65.0)
    assert row["train_words_per_s"] == pytest.approx(64_000_000 / 62.0)


def test_speed_table_ratio_uses_the_bracketed_mean():
    ours = bw.bracketed(_row("embedpipe", 50.0), _row("embedpipe", 70.0))
    mllib = _row("mllib", 300.0, mode="skipgram (hs)", merge="-", sample=0.0)
    md = "\n".join(bw.speed_section([ours, mllib], 5))
    assert "60.0 s (mean of 50.0, 70.0)" in md
    assert "5.0 × MLlib numPartitions=2 (bar ≥ 5: PASS)" in md
