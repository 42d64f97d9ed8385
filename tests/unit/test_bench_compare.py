"""bench/compare.py and bench/scaling.py: ratios, tables and fits (no Spark, no peers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import compare, scaling


def _tables(md: str) -> list[list[str]]:
    """The Markdown tables of ``md``, each as its lines."""
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def _assert_rectangular(md: str) -> None:
    for table in _tables(md):
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, "ragged table:\n" + "\n".join(table)


@pytest.fixture()
def no_side_effects(tmp_path, monkeypatch):
    """Plots into tmp_path; no stored runs of other benchmarks."""
    monkeypatch.setattr(compare, "BENCH", tmp_path)
    monkeypatch.setattr(compare, "OUT", tmp_path)
    monkeypatch.setattr(compare.bench_word2vec, "RESULTS_JSON", tmp_path / "none.json")
    monkeypatch.setattr(scaling, "BENCH", tmp_path)
    return tmp_path


def test_ratio_cells_direction():
    ours = {"wall_s": 2.0, "peak_gib": 1.0}
    slower_bigger = {"wall_s": 6.0, "peak_gib": 4.0}
    assert compare.ratio_cells(ours, slower_bigger) == "3.00× | 0.25×"
    assert compare.ratio_cells(ours, ours) == "1.00× | 1.00×"
    assert compare.ratio_cells(ours, {"reason": "not installed"}) == "– | –"
    assert compare.ratio_cells(None, slower_bigger) == "– | –"


def _row(stage, system, wall, **kw):
    base = {"stage": stage, "system": system, "wall_s": wall, "cpu_s": wall, "peak_gib": 1.0,
            "rss_scope": "tree", "load": [1.0, 1.0, 1.0], "shuffle_bytes": 0}  # fmt: skip
    return {**base, **kw}


def test_render_every_stage_with_reasons(no_side_effects):
    sc = {"ws353": 0.5, "simlex999": 0.2, "analogy": 0.1, "movie_reviews": 0.7}
    rows = [
        _row("vocab", "embedpipe", 2.0),
        _row("encode", "embedpipe", 1.0),
        _row("vocab+encode", "Python", 6.0, units=1000, what="Counter", rss_scope="process"),
        _row("cooccur", "embedpipe", 3.0, record={"counts": {
            "shards": 1, "nnz": 10, "partial_entries": 20, "shuffle_bytes": 100}}),
        compare.reason_row("cooccur", "Stanford GloVe `cooccur`", "no peer on PyPI"),
        _row("glove", "embedpipe", 4.0, partitions=2, epochs=2, losses=[0.2, 0.1], scores=sc),
        compare.reason_row("glove", "Stanford GloVe `glove`", "no peer on PyPI"),
        _row("svd", "embedpipe", 5.0, scores=sc),
        compare.reason_row("svd", "scikit-learn", "not installed (sklearn)"),
        _row("word2vec", "embedpipe", 8.0, mode="skipgram", partitions=2, epochs=1, units=100,
             scores=sc, round_losses=[0.6, 0.5], rounds_per_epoch=2),
        _row("word2vec", "gensim", 4.0, mode="skipgram", partitions=2, epochs=1, units=100,
             scores=sc, rss_scope="process"),
        compare.reason_row("word2vec", "MLlib", "failed: Py4JError: boom", mode="skipgram (hs)",
                           partitions=4),
    ]  # fmt: skip
    meta = {
        "command": "python bench/compare.py --quick",
        "started": "now",
        "machine": "m",
        "corpus_label": "c",
        "profile": compare.PROFILES["quick"],
        "spark_startup_s": 1.0,
        "warmup_s": 2.0,
        "seconds_scoring": 3.0,
        "load_end": 1.0,
        "corpus": {"tokens": 1000, "lines": 10, "kept_tokens": 900, "vocab_size": 50},
    }
    md = compare.render({"meta": meta, "rows": rows}, quick=True)
    _assert_rectangular(md)
    for reason in ("no peer on PyPI", "not installed (sklearn)", "failed: Py4JError: boom"):
        assert reason in md
    # gensim took half embedpipe's wall: speed 0.50×; the Python baseline 6 s vs 3 s: 2.00×.
    assert "| 0.50× | 1.00× |" in md
    assert "| 2.00× | 1.00× |" in md
    assert "None" not in md
    assert (no_side_effects / "compare_quick_loss.png").exists()


def test_fit_power_recovers_an_exact_law():
    xs = [1e5, 4e5, 1.6e6]
    k, b = scaling.fit_power(xs, [3.0 * x**0.75 for x in xs])
    assert k == pytest.approx(3.0, rel=1e-9)
    assert b == pytest.approx(0.75, rel=1e-9)
    assert scaling.fit_power([1e5], [10.0]) is None


def test_predict_time_is_exact_for_affine_costs():
    sizes = [1e6, 2e6, 8e6]
    times = [2.0 + 3e-6 * n for n in sizes]
    assert scaling.predict_time(sizes, times) == pytest.approx(times[-1])
    # With one smaller size the model is t = b·N through it.
    assert scaling.predict_time([1e6, 4e6], [5.0, 99.0]) == pytest.approx(20.0)
    assert scaling.predict_time([1e6], [5.0]) is None


def test_scaling_render_with_failed_points(no_side_effects):
    points = [{"master": m, "tokens": n, "load_end": 1.0, "idle_worker_bytes": 0,
               "stages": {st: {"reason": "child exited 1"} for st in scaling.STAGES}}
              for m in ("local[1]", "local[2]") for n in (1000, 4000)]  # fmt: skip
    meta = {"command": "c", "started": "now", "machine": "m",
            "profile": scaling.PROFILES["quick"]}  # fmt: skip
    args = SimpleNamespace(cluster_tokens=1e10, cluster_cores=64, cluster_dim=300,
                           cluster_max_vocab=1_000_000)  # fmt: skip
    md = scaling.render({"meta": meta, "points": points}, True, args)
    _assert_rectangular(md)
    assert md.count("child exited 1") == 2 * 2 * len(scaling.STAGES)
