"""embedpipe against its peers: one corpus, the same settings, one invocation (issue 11).

    python bench/compare.py --quick   # a 50,000-line slice of en-open, dim 50, 1-2 epochs
    python bench/compare.py           # the whole en-open, dim 100, 5 / 25 epochs (hours)
    python bench/compare.py --quick --glove-shards 1,2,4 --w2v-partitions 1,2,4   # S scan

Every system runs in this process tree, one after the other, on the same file:

* embedpipe (one local[2] session): vocab -> encode -> cooccur -> glove (``--glove-shards``)
  and svd, word2vec skip-gram (``--w2v-partitions``) and CBOW, every stage forced;
* peers: the single-process Python count + encode (``bench_vocab_encode.python_baseline``),
  scikit-learn ``randomized_svd`` on the same PPMI CSR (``bench_svd.run_sklearn``), gensim
  ``Word2Vec`` skip-gram and CBOW (``bench_word2vec.run_gensim``), gensim ``FastText``
  (skip-gram), Spark MLlib ``Word2Vec`` with 1 and 4 partitions (``bench_word2vec.run_mllib``).
  A peer that is not installed, or fails, gets its row with the reason.

Each run is timed (wall; CPU seconds of the whole process tree, sampled; peak RSS of the
process tree for Spark systems, of this Python process for one-process peers, so an
idle Spark JVM is not charged to gensim) and every set of vectors is scored by
``embedpipe.scoring.evaluate_all`` (what ``embedpipe evaluate`` runs): WS353 and
SimLex-999 Spearman, Google analogy 3CosAdd (restrict 30000), movie-review accuracy.
Before the timed runs every embedpipe stage and MLlib run once, untimed, on the first
2,000 lines (Spark's Python workers start, numba loads or compiles the kernels, the JVM
warms up), as a pipeline's earlier stages would have done.

Ratios are computed from the rows of this invocation only (its JSON in
``bench/out/compare/`` is replaced, never merged). Writes the ``compare`` (or
``compare-quick``) section of bench/RESULTS.md, ``bench/compare[_quick]_loss.png`` (loss
per epoch / round) and ``bench/compare[_quick]_shards.png`` (quality against S: this
invocation's runs when it trained several S, else the S scans bench_glove.py and
bench_word2vec.py stored in bench/out, which ``run_all.py`` runs first).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_glove, bench_svd, bench_vocab_encode, bench_word2vec
from bench.common import (
    BENCH,
    OUT,
    REPO,
    SHARED,
    CpuMeter,
    PeakRSS,
    ShuffleMeter,
    Usage,
    command_line,
    head_file,
    machine,
    update_section,
)

EN_OPEN = SHARED / "corpora" / "en-open.tok.txt.gz"
#: The corpus bundled with embedpipe (tests/conftest.py SAMPLE), used without ../shared.
SAMPLE = REPO / "data" / "pd-sample.txt.gz"
WORK = OUT / "compare"
WARMUP_LINES = 2_000

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"lines": 50_000, "dim": 50, "w2v_epochs": 1, "glove_epochs": 2,
              "glove_shards": "2", "w2v_partitions": "2", "driver_memory": "4g"},
    "full": {"lines": 0, "dim": 100, "w2v_epochs": 5, "glove_epochs": 25,
             "glove_shards": "2", "w2v_partitions": "2", "driver_memory": "6g"},
}  # fmt: skip
MIN_COUNT, WINDOW, NEGATIVE, SEED, COOC_WINDOW, SAMPLE_RATE = 5, 5, 5, 1, 10, 1e-3


# ------------------------------------------------------------------ corpus


def prepare_corpus(lines: int, corpus: Path | None) -> tuple[Path, str]:
    """(plain-text whitespace-tokenized corpus, its description).

    en-open's tokenized twin (its first ``lines`` lines, or all of it) when present;
    otherwise the vendored sample tokenized by embedpipe's own regex tokenizer, so that
    every system (gensim, MLlib, ours) sees the same tokens split on spaces.
    """
    WORK.mkdir(parents=True, exist_ok=True)
    src = corpus or (EN_OPEN if EN_OPEN.exists() else SAMPLE)
    if src == SAMPLE or src.name.startswith("pd-sample"):
        return tokenized_sample(src, lines), f"{src.name} (embedpipe's regex tokens)"
    if lines:
        return head_file(src, lines, bench_word2vec.WORK), f"{src.name}, first {lines:,} lines"
    return src, f"{src.name} (whole file)"


def tokenized_sample(src: Path, lines: int) -> Path:
    """The vendored raw-text sample as space-separated lowercase regex tokens (cached)."""
    import gzip

    import pyarrow as pa

    from embedpipe.stages.tokenize import tokenize

    out = WORK / f"{src.name.split('.')[0]}-tok-{lines or 'all'}.txt"
    if out.exists():
        return out
    with gzip.open(src, "rt", encoding="utf-8") as f:
        text = f.read().splitlines()
    text = text[:lines] if lines else text
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as g:
        for start in range(0, len(text), 50_000):
            for toks in tokenize(pa.array(text[start : start + 50_000])).to_pylist():
                if toks:
                    g.write(" ".join(toks) + "\n")
    tmp.rename(out)
    return out


def head(path: Path, lines: int, out: Path) -> Path:
    """The first ``lines`` lines of a plain-text file, written to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(path, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= lines:
                break
            g.write(line)
    return out


# ------------------------------------------------------------------ measuring


def scores(vectors: Any) -> dict[str, float | None]:
    """The four headline scores of ``embedpipe.scoring.evaluate_all`` (bench_glove's)."""
    return bench_glove.scores(vectors)


class Deferred:
    """A scorer for the bench_word2vec runners that keeps the vectors for later: scoring
    then happens outside the runner's (and our) memory and time measurements."""

    def __init__(self) -> None:
        self.vectors: Any = None

    def __call__(self, vectors: Any) -> dict:
        self.vectors = vectors
        return {}


def measured(spark: Any, fn: Callable[[], Any], tree: bool = True) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` under the meters; (its result, wall / CPU / RSS / shuffle / load)."""
    import psutil

    shuffle = ShuffleMeter(spark) if spark is not None else None
    start_rss = psutil.Process().memory_info().rss
    with Usage(interval=2.0) as usage, PeakRSS(tree=tree) as peak, CpuMeter() as cpu:
        if shuffle:
            shuffle.__enter__()
        t0 = time.perf_counter()
        try:
            result = fn()
        finally:
            wall = time.perf_counter() - t0
            if shuffle:
                shuffle.__exit__(None, None, None)
    return result, {
        "wall_s": wall, "cpu_s": cpu.seconds, "peak_gib": peak.gib,
        "worker_gib": peak.peak_worker / 2**30 if tree else None,
        "rss_scope": "tree" if tree else "process", "load": usage.load,
        "start_gib": None if tree else start_rss / 2**30,
        "shuffle_bytes": shuffle.bytes if shuffle else None,
    }  # fmt: skip


def reason_row(stage: str, system: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A row that was not measured, and why."""
    return {"stage": stage, "system": system, "reason": reason, **extra}


def attempt(stage: str, system: str, fn: Callable[[], dict[str, Any]], **extra: Any) -> dict:
    """``fn()``'s row, or a row giving the reason it could not be measured."""
    try:
        row = fn()
    except ImportError as e:
        return reason_row(stage, system, f"not installed ({e.name}): `pip install -e '.[bench]'`",
                          **extra)  # fmt: skip
    except Exception as e:  # a peer's failure must not stop the others
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return reason_row(stage, system, f"failed: {type(e).__name__}: {msg}", **extra)
    return {"stage": stage, "system": system, **extra, **row}


# ------------------------------------------------------------------ embedpipe


def base_settings(corpus: Path, p: dict[str, Any]) -> list[str]:
    """Config overrides shared by every embedpipe stage of this invocation."""
    return [
        f"input.path={corpus}", "vocab.tokenizer=whitespace", f"vocab.min_count={MIN_COUNT}",
        f"cooccur.window={COOC_WINDOW}", f"glove.dim={p['dim']}",
        f"glove.epochs={p['glove_epochs']}", f"glove.seed={SEED}", f"svd.dim={p['dim']}",
        f"svd.seed={SEED}", f"word2vec.sample={SAMPLE_RATE}", f"word2vec.dim={p['dim']}",
        f"word2vec.window={WINDOW}", f"word2vec.negative={NEGATIVE}", f"word2vec.seed={SEED}",
    ]  # fmt: skip


def w2v_settings(p: dict[str, Any]) -> dict[str, Any]:
    """bench_word2vec's settings dict for every word2vec-like system of this invocation."""
    return {"dim": p["dim"], "window": WINDOW, "negative": NEGATIVE, "min_count": MIN_COUNT,
            "seed": SEED}  # fmt: skip


def warm_up(spark: Any, corpus: Path, p: dict[str, Any]) -> float:
    """Every embedpipe stage and MLlib once on the first lines, untimed; returns seconds."""
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir
    from embedpipe.stages import cooccur, encode, glove, svd, vocab, word2vec

    t0 = time.perf_counter()
    small = head(corpus, WARMUP_LINES, WORK / "warmup.txt")
    run_path = WORK / "runs" / "warmup"
    shutil.rmtree(run_path, ignore_errors=True)
    run = RunDir(str(run_path))
    cfg = load_config(None, [*base_settings(small, p), "glove.epochs=1", "word2vec.epochs=1",
                             "svd.power_iters=1", "svd.oversample=10"])  # fmt: skip
    for mod in (vocab, encode, cooccur, glove, svd):
        mod.run(spark, cfg, run, force=True)
    # The subword run compiles its own numba kernel (cached on disk, but not yet on a
    # fresh clone): compile it here, not in the timed run.
    for extra in ("word2vec.mode=skipgram", "word2vec.mode=cbow", "word2vec.subwords=true"):
        word2vec.run(
            spark,
            load_config(None, [*base_settings(small, p), "word2vec.epochs=1", extra]),
            run,
            force=True,
        )
    try:
        from pyspark.ml.feature import Word2Vec
        from pyspark.sql import functions as F

        words = spark.read.text(str(small)).select(
            F.array_remove(F.split("value", " "), "").alias("words")
        )
        Word2Vec(vectorSize=p["dim"], minCount=MIN_COUNT, maxIter=1, numPartitions=2,
                 inputCol="words", outputCol="vec").fit(words)  # fmt: skip
    except Exception:  # MLlib's own row will say what is wrong
        traceback.print_exc()
    return time.perf_counter() - t0


def run_stage(spark: Any, mod: Any, cfg: Any, run: Any, stage: str) -> dict[str, Any]:
    """One embedpipe stage, forced, under the meters; its manifest record attached."""
    res, m = measured(spark, lambda: mod.run(spark, cfg, run, force=True))
    return {**m, "record": {k: res.record.get(k) for k in ("counts", "timings", "summary")},
            "stage_s": res.seconds}  # fmt: skip


def run_glove(spark: Any, cfg: Any, run: Any, shards: int) -> tuple[dict, Any]:
    """bench_glove.run_ours under the meters; (row, vectors)."""
    from embedpipe.vectors import Vectors

    model, m = measured(spark, lambda: bench_glove.run_ours(spark, cfg, run, shards, False))
    vec = Vectors.load_model_dir(run.path("glove"))
    return {**m, "partitions": model["shards"], "epochs": len(model["losses"]),
            "losses": model["losses"], "units": model["entries"] * len(model["losses"]),
            "exchange": model["exchange_bytes_per_epoch"]}, vec  # fmt: skip


def run_svd(spark: Any, cfg: Any, run: Any) -> tuple[dict, Any]:
    """The svd stage under the meters; (row, vectors)."""
    from embedpipe import fsutil
    from embedpipe.stages import svd
    from embedpipe.vectors import Vectors

    row = run_stage(spark, svd, cfg, run, "svd")
    model = json.loads(fsutil.read_text(run.path("svd", "model.json")))
    row.update(memory=model.get("memory"), traffic=model.get("traffic"))
    return row, Vectors.load_model_dir(run.path("svd"))


def run_word2vec(spark, run, base, n_words, mode, parts, p, subwords: bool = False
                 ) -> tuple[dict, Any]:
    """bench_word2vec.run_ours (its own wall / CPU / tree RSS), scored afterwards; with
    ``subwords`` fastText's n-grams as gensim FastText's (3-6 characters, 2M buckets)."""
    keep = Deferred()
    extra = ("word2vec.subwords=true", "word2vec.minn=3", "word2vec.maxn=6",
             "word2vec.buckets=2000000") if subwords else ()  # fmt: skip
    out, m = measured(spark, lambda: bench_word2vec.run_ours(
        spark, run, base, n_words, mode, parts, "average", p["w2v_epochs"], SAMPLE_RATE,
        settings=w2v_settings(p), scorer=keep, extra=extra))  # fmt: skip
    row = {**m, "wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "peak_gib": out["peak_gib"],
           "mode": mode + (" + subwords" if subwords else ""), "partitions": parts,
           "epochs": p["w2v_epochs"], "units": out["words"],
           "losses": out["losses"], "rounds_per_epoch": out.get("rounds_per_epoch"),
           "exchange": {"broadcast": out.get("broadcast_bytes"),
                        "results": out.get("result_bytes")}}  # fmt: skip
    from embedpipe import fsutil
    from embedpipe.stages import word2vec

    model = json.loads(fsutil.read_text(run.path("word2vec", word2vec.MODEL_FILE)))
    row["round_losses"] = [r.get("loss") for r in model.get("rounds", [])]
    return row, keep.vectors


# ------------------------------------------------------------------ peers


def run_python_baseline(corpus: Path) -> dict[str, Any]:
    """bench_vocab_encode.python_baseline (Counter, then a dict lookup per token)."""
    out, m = measured(None, lambda: bench_vocab_encode.python_baseline(corpus, None, MIN_COUNT),
                      tree=False)  # fmt: skip
    return {**m, "units": out["tokens"], "what": "str.split + Counter, dict lookup per token"}


def run_sklearn(run: Any, cfg: Any) -> tuple[dict, Any]:
    """bench_svd.run_sklearn on the cooc matrix of this run: PPMI by the same kernel in this
    process, then ``randomized_svd`` with the stage's k, oversampling and power iterations."""
    from embedpipe import cooccur as layout
    from embedpipe.stages.vocab import read_vocab
    from embedpipe.vectors import Vectors

    s = cfg.svd
    x = layout.read_matrix(run)
    out, m = measured(None, lambda: bench_svd.run_sklearn(x, s.oversample, s.power_iters, s.cds,
                                                         k=s.dim), tree=False)  # fmt: skip
    tokens = read_vocab(run).column("token").to_pylist()
    import sklearn

    w = out["u"] * out["s"] ** s.eig
    return {
        **m,
        "what": f"scikit-learn {sklearn.__version__} PPMI + randomized_svd",
        "ppmi_s": out["ppmi_seconds"],
        "svd_s": out["svd_seconds"],
    }, Vectors(tokens, w)


def run_gensim(corpus: Path, n_words: int, mode: str, p: dict[str, Any]) -> tuple[dict, Any]:
    """bench_word2vec.run_gensim (2 workers) in this process; scored afterwards."""
    keep = Deferred()
    out, m = measured(None, lambda: bench_word2vec.run_gensim(
        corpus, n_words, mode, p["w2v_epochs"], SAMPLE_RATE, settings=w2v_settings(p),
        scorer=keep), tree=False)  # fmt: skip
    import gensim

    return {**m, "wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "mode": mode, "partitions": 2,
            "epochs": p["w2v_epochs"], "units": out["words"],
            "what": f"gensim {gensim.__version__} Word2Vec, workers=2"}, keep.vectors  # fmt: skip


def run_fasttext(corpus: Path, n_words: int, p: dict[str, Any]) -> tuple[dict, Any]:
    """gensim FastText skip-gram (subwords 3-6, 2M buckets, fastText's defaults), 2 workers."""
    import gensim
    from gensim.models import FastText
    from gensim.models.word2vec import LineSentence

    from embedpipe.vectors import Vectors

    s = w2v_settings(p)

    def train():
        return FastText(
            LineSentence(str(corpus)), vector_size=s["dim"], window=s["window"],
            min_count=s["min_count"], negative=s["negative"], sample=SAMPLE_RATE,
            epochs=p["w2v_epochs"], workers=2, sg=1, seed=s["seed"], min_n=3, max_n=6,
            bucket=2_000_000,
        )  # fmt: skip

    model, m = measured(None, train, tree=False)
    return {**m, "mode": "skipgram + subwords", "partitions": 2, "epochs": p["w2v_epochs"],
            "units": n_words * p["w2v_epochs"],
            "what": f"gensim {gensim.__version__} FastText, workers=2"}, Vectors(
        model.wv.index_to_key, model.wv.vectors)  # fmt: skip


def run_mllib(spark, corpus: Path, run, n_words: int, parts: int, p) -> tuple[dict, Any]:
    """bench_word2vec.run_mllib (skip-gram, hierarchical softmax, input cached); scored after."""
    import pyspark

    keep = Deferred()
    out, m = measured(spark, lambda: bench_word2vec.run_mllib(
        spark, corpus, run, n_words, parts, p["w2v_epochs"], settings=w2v_settings(p),
        scorer=keep))  # fmt: skip
    return {**m, "wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "mode": "skipgram (hs)",
            "partitions": parts, "epochs": p["w2v_epochs"], "units": out["words"],
            "what": f"Spark MLlib {pyspark.__version__} Word2Vec, numPartitions={parts}"}, \
        keep.vectors  # fmt: skip


# ------------------------------------------------------------------ the invocation


def run_all(args: argparse.Namespace, p: dict[str, Any], corpus: Path) -> dict[str, Any]:
    """Every system on ``corpus``; the invocation's JSON (rows in the order they ran)."""
    from embedpipe.config import SparkConfig, load_config
    from embedpipe.runs import RunDir
    from embedpipe.spark import build_session
    from embedpipe.stages import cooccur, encode, vocab

    systems = set(args.systems.split(","))
    rows: list[dict[str, Any]] = []
    vectors: dict[int, Any] = {}  # row index -> vectors, scored at the end

    def add(row: dict[str, Any], vec: Any = None) -> None:
        rows.append(row)
        if vec is not None:
            vectors[len(rows) - 1] = vec
        brief = {k: row[k] for k in ("stage", "system", "wall_s", "cpu_s", "peak_gib", "reason")
                 if k in row}  # fmt: skip
        print(json.dumps(brief, default=str), flush=True)

    def add_with_vectors(stage: str, system: str, fn, **extra) -> None:
        box: dict[str, Any] = {}

        def inner():
            row, vec = fn()
            box["vec"] = vec
            return row

        add(attempt(stage, system, inner, **extra), box.get("vec"))

    meta: dict[str, Any] = {
        "machine": machine(),
        "command": command_line(),
        "profile": p,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t0 = time.perf_counter()
    spark = build_session(SparkConfig(master="local[2]", conf={
        "spark.driver.memory": p["driver_memory"], "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}))  # fmt: skip
    meta["spark_startup_s"] = time.perf_counter() - t0
    try:
        meta["warmup_s"] = warm_up(spark, corpus, p) if args.warmup else None
        base = base_settings(corpus, p)
        cfg = load_config(None, base)
        run_path = WORK / "runs" / ("quick" if args.quick else "full")
        shutil.rmtree(run_path, ignore_errors=True)
        run = RunDir(str(run_path))

        # vocab + encode, then the one-process Python baseline.
        add({"stage": "vocab", "system": "embedpipe", **run_stage(spark, vocab, cfg, run, "vocab")})
        add({"stage": "encode", "system": "embedpipe",
             **run_stage(spark, encode, cfg, run, "encode")})  # fmt: skip
        counts = run.record("vocab")["counts"]
        n_words = int(run.record("encode")["counts"]["kept_tokens"])
        meta["corpus"] = {
            "tokens": counts["tokens"],
            "lines": counts["documents"],
            "kept_tokens": n_words,
            "vocab_size": counts["vocab_size"],
        }
        if "python" in systems:
            add(attempt("vocab+encode", "Python", lambda: run_python_baseline(corpus)))

        # cooccur: no peer on PyPI.
        add({"stage": "cooccur", "system": "embedpipe",
             **run_stage(spark, cooccur, cfg, run, "cooccur")})  # fmt: skip
        add(
            reason_row(
                "cooccur",
                "Stanford GloVe `cooccur`",
                "no peer installable from PyPI "
                "(C source; `bench/bench_cooccur.py --glove BINARY` measures it)",
            )
        )

        # glove: no peer on PyPI.
        for s in [int(x) for x in p["glove_shards"].split(",")]:
            add_with_vectors("glove", "embedpipe", lambda s=s: run_glove(spark, cfg, run, s))
        add(
            reason_row(
                "glove",
                "Stanford GloVe `glove`",
                "no peer installable from PyPI "
                "(C source; `bench/bench_glove.py --peer BINARY` measures it)",
            )
        )

        # svd and scikit-learn on the same PPMI.
        add_with_vectors("svd", "embedpipe", lambda: run_svd(spark, cfg, run))
        if "sklearn" in systems:
            add_with_vectors("svd", "scikit-learn", lambda: run_sklearn(run, cfg))

        # word2vec: ours, gensim, FastText, MLlib.
        parts = [int(x) for x in p["w2v_partitions"].split(",")]
        for mode in ("skipgram", "cbow"):
            for s in parts if mode == "skipgram" else [2]:
                add_with_vectors("word2vec", "embedpipe", lambda mode=mode, s=s: run_word2vec(
                    spark, run, base, n_words, mode, s, p))  # fmt: skip
            if "gensim" in systems:
                add_with_vectors("word2vec", "gensim",
                                 lambda mode=mode: run_gensim(corpus, n_words, mode, p),
                                 mode=mode)  # fmt: skip
        if "fasttext" in systems:
            add_with_vectors("word2vec", "embedpipe", lambda: run_word2vec(
                spark, run, base, n_words, "skipgram", 2, p, subwords=True),
                mode="skipgram + subwords", partitions=2)  # fmt: skip
            add_with_vectors(
                "word2vec",
                "gensim FastText",
                lambda: run_fasttext(corpus, n_words, p),
                mode="skipgram + subwords",
            )
        if "mllib" in systems:
            for s in (1, 4):
                add_with_vectors(
                    "word2vec",
                    "MLlib",
                    lambda s=s: run_mllib(spark, corpus, run, n_words, s, p),
                    mode="skipgram (hs)",
                    partitions=s,
                )
    finally:
        spark.stop()
    meta["seconds_measuring"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i, vec in vectors.items():
        if vec is not None:
            rows[i]["scores"] = scores(vec)
            rows[i]["vocab"] = len(vec)
    meta["seconds_scoring"] = time.perf_counter() - t1
    meta["load_end"] = round(os.getloadavg()[0], 1)
    return {"meta": meta, "rows": rows}


# ------------------------------------------------------------------ report


def _f(v: Any, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{format(v, spec)}{unit}"


def _gib(r: dict[str, Any]) -> str:
    if r.get("peak_gib") is None:
        return "–"
    if r.get("rss_scope") != "process":
        return f"{r['peak_gib']:.2f} GiB"
    return f"{r['peak_gib']:.2f} GiB (process; {r.get('start_gib') or 0:.2f} at start)"


def _scores(r: dict[str, Any]) -> str:
    s = r.get("scores") or {}
    an = s.get("analogy")
    return (f"{_f(s.get('ws353'), '.3f')} | {_f(s.get('simlex999'), '.3f')} | "
            f"{_f(None if an is None else 100 * an, '.1f', '%')} | "
            f"{_f(s.get('movie_reviews'), '.3f')}")  # fmt: skip


def _load(r: dict[str, Any]) -> str:
    return "→".join(f"{x:.1f}" for x in r["load"]) if r.get("load") else "–"


def _bytes(n: Any) -> str:
    if n is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def ratio_cells(ours: dict[str, Any] | None, r: dict[str, Any]) -> str:
    """Speed (system wall ÷ embedpipe wall: > 1 means embedpipe is faster) and memory
    (embedpipe peak ÷ system peak) of a measured row against embedpipe's row."""
    if r.get("reason") or not ours or ours.get("reason"):
        return "– | –"
    if r is ours:
        return "1.00× | 1.00×"
    return (f"{r['wall_s'] / ours['wall_s']:.2f}× | "
            f"{ours['peak_gib'] / r['peak_gib']:.2f}×")  # fmt: skip


def render(data: dict[str, Any], quick: bool) -> str:
    """The Markdown section of an invocation's JSON; every figure from that JSON."""
    meta, rows = data["meta"], data["rows"]
    p, c = meta["profile"], meta.get("corpus", {})
    name = "compare_quick" if quick else "compare"
    md = [
        f"## embedpipe vs peers: same corpus, same settings, one invocation (issue 11"
        f"{', quick' if quick else ''})",
        "",
        f"Command: `{meta['command']}` (started {meta['started']})  ",
        f"Machine: {meta['machine']}; load average {meta.get('load_end', '?')} at the end  ",
        f"Corpus: {meta['corpus_label']}: {c.get('tokens', 0):,} tokens in "
        f"{c.get('lines', 0):,} lines, {c.get('kept_tokens', 0):,} kept, V = "
        f"{c.get('vocab_size', 0):,} (whitespace tokens, min_count {MIN_COUNT}).  ",
        f"Settings: dim {p['dim']}; cooccur window {COOC_WINDOW} harmonic; GloVe "
        f"{p['glove_epochs']} epochs; SVD of PPMI (cds 0.75) with the stage's oversampling and "
        f"power iterations for both; word2vec-like systems window {WINDOW}, negative "
        f"{NEGATIVE}, sample {SAMPLE_RATE:g}, {p['w2v_epochs']} epoch(s), seed {SEED}. "
        f"embedpipe and MLlib on local[2] (Spark start-up {meta['spark_startup_s']:.1f} s and "
        f"warm-up {_f(meta.get('warmup_s'), '.1f', ' s')} excluded); gensim with 2 workers.",
        "",
        "Wall = the stage (embedpipe, forced), the training call (gensim, incl. its vocabulary "
        "scan; MLlib `fit`, input cached first) or PPMI + SVD (scikit-learn). CPU s = the whole "
        "process tree (driver, JVM, Python workers), sampled every second. Peak RSS: the process "
        "tree for Spark systems (the JVM keeps heap it grew in earlier stages), this Python "
        "process for one-process peers (marked *process*, with its RSS when the call started: "
        "the driver's own libraries and data, which a standalone run of the peer would not "
        "hold). Scores by `embedpipe.scoring."
        "evaluate_all`: WS353 and SimLex-999 Spearman ρ, Google analogy 3CosAdd (restrict "
        "30000), movie-review accuracy. **speed** = the system's wall ÷ embedpipe's wall (> 1: "
        "embedpipe faster), **memory** = embedpipe's peak ÷ the system's; both from rows of "
        "this invocation. The machine is shared: the load average (before→mean→after) says how "
        "many cores were ours; CPU seconds are the steadier comparison.",
        "",
    ]
    by = {}
    for r in rows:
        by.setdefault(r["stage"], []).append(r)
    ep = {st: next((r for r in rs if r["system"] == "embedpipe" and not r.get("reason")), None)
          for st, rs in by.items()}  # fmt: skip

    # vocab + encode
    ve = [r for r in by.get("vocab", []) + by.get("encode", []) if not r.get("reason")]
    if ve:
        both = {
            "wall_s": sum(r["wall_s"] for r in ve), "cpu_s": sum(r["cpu_s"] for r in ve),
            "peak_gib": max(r["peak_gib"] for r in ve), "rss_scope": "tree",
            "shuffle_bytes": sum(r.get("shuffle_bytes") or 0 for r in ve),
            "load": [ve[0]["load"][0], round(np.mean([r["load"][1] for r in ve]), 1),
                     ve[-1]["load"][-1]],
        }  # fmt: skip
        tokens = c.get("tokens", 0)
        md += ["### vocab + encode", "",
               "| system | what | wall | CPU s | peak RSS | tokens/s | shuffle | speed | memory "
               "| load |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, r in (("embedpipe vocab", ve[0]), ("embedpipe encode", ve[-1]),
                         ("embedpipe vocab + encode", both)):  # fmt: skip
            md.append(
                f"| {label} | Spark local[2] | {r['wall_s']:.1f} s | {r['cpu_s']:.0f} | "
                f"{_gib(r)} | {tokens / r['wall_s'] / 1e6:.2f}M | "
                f"{_bytes(r.get('shuffle_bytes'))} | "
                f"{ratio_cells(both, r) if r is both else '– | –'} | {_load(r)} |"
            )
        for r in by.get("vocab+encode", []):
            if r.get("reason"):
                md.append(f"| {r['system']} | {r['reason']} | – | – | – | – | – | – | – | – |")
            else:
                md.append(
                    f"| {r['system']} (one process) | {r['what']} | {r['wall_s']:.1f} s | "
                    f"{r['cpu_s']:.0f} | {_gib(r)} | {r['units'] / r['wall_s'] / 1e6:.2f}M"
                    f" | – | {ratio_cells(both, r)} | {_load(r)} |"
                )
        md.append("")

    # cooccur
    if by.get("cooccur"):
        md += [
            "### cooccur",
            "",
            "| system | wall | CPU s | peak RSS | tokens/s | non-zeros | partial entries | "
            "shuffle | shuffle B/token | load |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in by["cooccur"]:
            if r.get("reason"):
                md.append(f"| {r['system']} | {r['reason']} |" + " – |" * 8)
                continue
            k = r["record"]["counts"]
            kept = c.get("kept_tokens", 0)
            md.append(
                f"| embedpipe (S = {k['shards']}) | {r['wall_s']:.1f} s | {r['cpu_s']:.0f} | "
                f"{_gib(r)} | {kept / r['wall_s'] / 1e6:.2f}M | {k['nnz']:,} | "
                f"{k['partial_entries']:,} | {_bytes(k['shuffle_bytes'])} | "
                f"{k['shuffle_bytes'] / max(kept, 1):.1f} | {_load(r)} |"
            )
        md.append("")

    # glove
    if by.get("glove"):
        md += ["### glove", "",
               "| system | S | epochs | wall | CPU s | peak RSS | s/epoch | final loss | WS353 | "
               "SimLex-999 | analogy | movie reviews | load |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in by["glove"]:
            if r.get("reason"):
                md.append(f"| {r['system']} | {r['reason']} |" + " – |" * 11)
                continue
            md.append(
                f"| embedpipe | {r['partitions']} | {r['epochs']} | {r['wall_s']:.1f} s | "
                f"{r['cpu_s']:.0f} | {_gib(r)} | {r['wall_s'] / r['epochs']:.1f} | "
                f"{r['losses'][-1]:.5f} | {_scores(r)} | {_load(r)} |"
            )
        md.append("")

    # svd
    if by.get("svd"):
        md += ["### svd (PPMI + randomized SVD)", "",
               "| system | what | wall | CPU s | peak RSS | WS353 | SimLex-999 | analogy | "
               "movie reviews | speed | memory | load |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in by["svd"]:
            if r.get("reason"):
                md.append(f"| {r['system']} | {r['reason']} |" + " – |" * 10)
                continue
            what = r.get("what") or "the svd stage, local[2]"
            md.append(
                f"| {r['system']} | {what} | {r['wall_s']:.1f} s | {r['cpu_s']:.0f} | "
                f"{_gib(r)} | {_scores(r)} | {ratio_cells(ep.get('svd'), r)} | "
                f"{_load(r)} |"
            )
        md.append("")

    # word2vec
    if by.get("word2vec"):
        md += ["### word2vec", "",
               "Ratios against embedpipe's row with the same mode and S = 2 (gensim FastText: "
               "embedpipe skip-gram + subwords, `word2vec.subwords = true`; MLlib, which has "
               "only hierarchical softmax: embedpipe skip-gram).", "",
               "| system | mode | S / workers | epochs | wall | CPU s | peak RSS | words/s | WS353 "
               "| SimLex-999 | analogy | movie reviews | speed | memory | load |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        ours = {
            r["mode"]: r
            for r in by["word2vec"]
            if r["system"] == "embedpipe" and not r.get("reason") and r["partitions"] == 2
        }
        for r in by["word2vec"]:
            if r.get("reason"):
                md.append(
                    f"| {r['system']} | {r.get('mode', '–')} | {r.get('partitions', '–')} "
                    f"| {r['reason']} |" + " – |" * 11
                )
                continue
            mine = ours.get(r["mode"]) or ours.get("skipgram")
            md.append(
                f"| {r['system']} | {r['mode']} | {r['partitions']} | {r['epochs']} | "
                f"{r['wall_s']:.1f} s | {r['cpu_s']:.0f} | {_gib(r)} | "
                f"{r['units'] / r['wall_s'] / 1e6:.3f}M | {_scores(r)} | "
                f"{ratio_cells(mine, r)} | {_load(r)} |"
            )
        md.append("")
    md += [
        f"Scoring {len([r for r in rows if r.get('scores')])} sets of vectors took "
        f"{meta['seconds_scoring']:.0f} s (not in any wall time).",
        "",
    ]
    plots = plot_losses(rows, BENCH / f"{name}_loss.png")
    md.append(plots)
    md.append(plot_shards(rows, BENCH / f"{name}_shards.png"))
    return "\n".join(md)


def plot_losses(rows: list[dict[str, Any]], path: Path) -> str:
    """GloVe loss per epoch and word2vec loss per round of every embedpipe run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n = 0
    for r in rows:
        if r["system"] != "embedpipe" or r.get("reason"):
            continue
        if r["stage"] == "glove":
            axes[0].plot(range(1, len(r["losses"]) + 1), r["losses"], "o-",
                         label=f"S={r['partitions']}")  # fmt: skip
            n += 1
        elif r["stage"] == "word2vec" and r.get("round_losses"):
            ys = r["round_losses"]
            xs = np.arange(1, len(ys) + 1) / max(r.get("rounds_per_epoch") or 1, 1)
            axes[1].plot(xs, ys, "o-", ms=3, label=f"{r['mode']} S={r['partitions']}")
            n += 1
    if not n:
        plt.close(fig)
        return "Loss curves: none (no embedpipe GloVe or word2vec run in this invocation)."
    axes[0].set(xlabel="epoch", ylabel="cost per entry", title="GloVe", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="loss (sampled)", title="word2vec, per round")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"Loss curves: `bench/{path.name}`."


def plot_shards(rows: list[dict[str, Any]], path: Path) -> str:
    """Scores against S for GloVe and word2vec: this invocation's runs when it trained more
    than one S, else the glove / word2vec sections' stored measurements (bench/out)."""
    series: dict[str, list[tuple[int, dict]]] = {}
    for r in rows:
        if r["system"] == "embedpipe" and r["stage"] in ("glove", "word2vec") and r.get("scores"):
            key = f"{r['stage']} {r.get('mode', '')}".strip() + " (this run)"
            series.setdefault(key, []).append((r["partitions"], r["scores"]))
    series = {k: v for k, v in series.items() if len(v) > 1}
    source = "this invocation"
    if not series:
        series, source = stored_shard_scores(), "the glove / word2vec sections' stored runs"
    if not series:
        return (
            "Quality vs shards: not plotted (this invocation trained one S, and no "
            "stored multi-S runs of bench_glove.py / bench_word2vec.py are in bench/out)."
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, title) in zip(axes, (("ws353", "WS353 ρ"), ("simlex999", "SimLex-999 ρ"),
                                       ("analogy", "analogy 3CosAdd")), strict=True):  # fmt: skip
        for label, pts in series.items():
            pts = sorted((s, sc[key]) for s, sc in pts if sc.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for pts in series.values() for x, _ in pts})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set(xlabel="shards / partitions S", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"Quality vs shards ({source}): `bench/{path.name}`."


def stored_shard_scores() -> dict[str, list[tuple[int, dict]]]:
    """Scores per S from bench_glove.py's ``bench/out/glove-S<S>[-<merge>]-xmax100-e25.json``
    (S = 1 has no merge: it starts every series) and bench_word2vec.py's results.json
    (5-epoch runs, merge average), when present."""
    import re

    glove_runs: dict[str, list[tuple[int, dict]]] = {}
    first: list[tuple[int, dict]] = []
    for f in sorted(OUT.glob("glove-S*-xmax100-e25.json")):
        m = re.fullmatch(r"glove-S(\d+)(?:-(\w+))?-xmax100-e25\.json", f.name)
        scores = json.loads(f.read_text()).get("scores")
        if not m or not scores:
            continue
        if int(m.group(1)) == 1:
            first.append((1, scores))
        else:
            label = f"glove, merge {m.group(2) or 'scaled'} (bench_glove.py, 25 epochs)"
            glove_runs.setdefault(label, []).append((int(m.group(1)), scores))
    out = {k: first + v for k, v in glove_runs.items()}
    if bench_word2vec.RESULTS_JSON.exists():
        for r in bench_word2vec.load_results()["runs"].values():
            if r["system"] == "embedpipe" and r["epochs"] >= 5 and r["merge"] == "average":
                sc = {"ws353": r["ws353"], "simlex999": r["simlex"], "analogy": r["analogy"]}
                out.setdefault(f"word2vec {r['mode']} (bench_word2vec.py, 5 epochs)", []).append(
                    (int(r["partitions"]), sc)
                )
    return {k: v for k, v in out.items() if len(v) > 1}


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Measure (or ``--render`` the stored JSON), write the RESULTS.md section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, small dims (minutes)")
    ap.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="default: ../shared en-open.tok.txt.gz, else the vendored sample",
    )
    ap.add_argument("--lines", type=int, default=None, help="first N lines only (0 = all)")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--w2v-epochs", type=int, default=None)
    ap.add_argument("--glove-epochs", type=int, default=None)
    ap.add_argument("--glove-shards", default=None, help="comma-separated S values")
    ap.add_argument("--w2v-partitions", default=None, help="skip-gram S values (CBOW: S = 2)")
    ap.add_argument(
        "--systems",
        default="python,sklearn,gensim,fasttext,mllib",
        help="peers to run (embedpipe always runs)",
    )
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--render", action="store_true", help="re-render the stored JSON only")
    args = ap.parse_args(argv)
    p = dict(PROFILES["quick" if args.quick else "full"])
    for k in ("lines", "dim", "w2v_epochs", "glove_epochs", "glove_shards", "w2v_partitions"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    if not any(str(s) == "2" for s in p["w2v_partitions"].split(",")):
        p["w2v_partitions"] = "2," + p["w2v_partitions"]  # the ratios' reference
    path = WORK / f"results-{'quick' if args.quick else 'full'}.json"
    if not args.render:
        from embedpipe.log import setup

        setup()
        logging.getLogger("gensim").setLevel(logging.WARNING)
        logging.getLogger("py4j").setLevel(logging.WARNING)
        corpus, label = prepare_corpus(p["lines"], args.corpus)
        t0 = time.perf_counter()
        data = run_all(args, p, corpus)
        data["meta"]["corpus_label"] = label
        data["meta"]["seconds_total"] = time.perf_counter() - t0
        WORK.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=str))
    data = json.loads(path.read_text())
    md = render(data, args.quick)
    print(md, flush=True)
    update_section("compare-quick" if args.quick else "compare", md)
    missing = [r for r in data["rows"] if r.get("reason", "").startswith("failed")]
    print(
        f"{path}: {len(data['rows'])} rows, {len(missing)} failed; RESULTS.md section "
        f"{'compare-quick' if args.quick else 'compare'} written"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
