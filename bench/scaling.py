"""Scaling: time and memory per stage on synthetic corpora, local[1] -> local[2], and the
README's cost model checked against the measurements (issue 11).

    python bench/scaling.py                          # 10M, 50M, 200M tokens (hours)
    python bench/scaling.py --quick                  # 100k and 400k tokens: the code path
    python bench/scaling.py --sizes 1e6,5e6 --masters 'local[1],local[2]'

Corpora come from ``../shared/corpora/synth.py`` (``bench.common.synth_corpus``; cached in
bench/out). Every (master, size) runs vocab, encode, cooccur, glove, svd and word2vec
(skip-gram) in a child process of this one (``--point``; one child per master with
``--quick``, so a JVM start is paid once per master), each stage forced, with the stage's
default partitioning, after an untimed job that starts the Python workers. Per stage:
wall, CPU seconds of the process tree, peak RSS of the tree and of the largest Python
worker (one task), shuffle bytes from Spark's status store, and the stage's own
counters (manifest record, model.json).

From those: the speed-up local[1] -> local[2] per stage; the cost model of the README
("Cost model") evaluated with each run's V, entries and settings and printed next to the
measured bytes and memory; the time of the largest size predicted from the smaller ones;
and an extrapolation to a cluster (``--cluster-*``). Writes the ``scaling`` (or
``scaling-quick``) section of bench/RESULTS.md and ``bench/scaling[_quick].png`` (time
and peak memory against corpus size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BENCH,
    OUT,
    SHARED,
    PeakRSS,
    command_line,
    machine,
    synth_corpus,
    update_section,
)
from bench.compare import attempt, head, measured

WORK = OUT / "scaling"
STAGES = ("vocab", "encode", "cooccur", "glove", "svd", "word2vec")
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"sizes": "100000,400000", "masters": "local[1],local[2]", "dim": 50,
              "glove_epochs": 1, "power_iters": 2, "driver_memory": "2g", "group": True},
    "full": {"sizes": "10000000,50000000,200000000", "masters": "local[1],local[2]",
             "dim": 100, "glove_epochs": 3, "power_iters": 7, "driver_memory": "12g",
             "group": False},
}  # fmt: skip
MIN_COUNT, COOC_WINDOW, W2V_WINDOW = 5, 10, 5
WARMUP_LINES = 2_000


# ------------------------------------------------------------------ child: measure


def settings(corpus: Path, p: dict[str, Any]) -> list[str]:
    """The config of every scaling run (defaults apart from these)."""
    return [
        f"input.path={corpus}", "vocab.tokenizer=whitespace", f"vocab.min_count={MIN_COUNT}",
        f"cooccur.window={COOC_WINDOW}", f"glove.dim={p['dim']}",
        f"glove.epochs={p['glove_epochs']}", f"svd.dim={p['dim']}",
        f"svd.power_iters={p['power_iters']}", f"word2vec.dim={p['dim']}",
        f"word2vec.window={W2V_WINDOW}", "word2vec.epochs=1", "word2vec.mode=skipgram",
    ]  # fmt: skip


def warm_up(spark: Any, corpus: Path, p: dict[str, Any]) -> int:
    """Every stage once on the first lines of ``corpus``, untimed (Python workers start,
    numba loads the kernels, the JVM compiles its hot paths: what the earlier stages of a
    pipeline run do), then the RSS of the largest idle Python worker, in bytes."""
    import importlib

    import psutil

    from embedpipe.config import load_config
    from embedpipe.runs import RunDir

    small = head(corpus, WARMUP_LINES, WORK / "warmup.txt")
    path = WORK / "runs" / "warmup"
    shutil.rmtree(path, ignore_errors=True)
    run = RunDir(str(path))
    cfg = load_config(None, [*settings(small, p), "svd.power_iters=1", "svd.oversample=10"])
    for stage in STAGES:
        importlib.import_module(f"embedpipe.stages.{stage}").run(spark, cfg, run, force=True)
    shutil.rmtree(path, ignore_errors=True)
    idle = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name().startswith("python"):
                idle = max(idle, proc.memory_info().rss)
        except psutil.Error:
            continue
    return idle


def model_json(run: Any, stage: str) -> dict[str, Any]:
    """The stage's model.json (glove, svd, word2vec), else {}."""
    from embedpipe import fsutil

    try:
        return json.loads(fsutil.read_text(run.path(stage, "model.json")))
    except Exception:
        return {}


def measure_point(spark: Any, corpus: Path, tokens: int, p: dict[str, Any]) -> dict[str, Any]:
    """Every stage on one corpus under the meters; {stage: measurements}."""
    import importlib

    from embedpipe.config import load_config
    from embedpipe.runs import RunDir

    cfg = load_config(None, settings(corpus, p))
    master = spark.sparkContext.master
    path = WORK / "runs" / f"synth-{tokens}-{master.replace('[', '').replace(']', '')}"
    shutil.rmtree(path, ignore_errors=True)
    run = RunDir(str(path))
    out: dict[str, Any] = {}
    for stage in STAGES:
        mod = importlib.import_module(f"embedpipe.stages.{stage}")

        def go(mod=mod, stage=stage):
            res, m = measured(spark, lambda: mod.run(spark, cfg, run, force=True))
            rec = res.record
            return {**m, "counts": rec.get("counts"), "timings": rec.get("timings"),
                    "model": {k: v for k, v in model_json(run, stage).items()
                              if k not in ("singular_values", "rounds", "settings")}}  # fmt: skip

        out[stage] = attempt(stage, "embedpipe", go)
        print(f"{master} {tokens}: {stage} {out[stage].get('wall_s', out[stage].get('reason'))}",
              file=sys.stderr, flush=True)  # fmt: skip
        if out[stage].get("reason") and stage in ("vocab", "encode"):
            break  # nothing downstream can run
    shutil.rmtree(path, ignore_errors=True)  # 200M tokens leave GBs behind
    return out


def child(masters: list[str], sizes: list[int], p: dict[str, Any]) -> list[dict[str, Any]]:
    """For each master, one Spark session (in this process: the JVM starts once) that warms
    up, then runs every size in turn."""
    from embedpipe.config import SparkConfig
    from embedpipe.log import setup
    from embedpipe.spark import build_session

    setup()
    points = []
    for master in masters:
        t0 = time.perf_counter()
        spark = build_session(SparkConfig(master=master, conf={
            "spark.driver.memory": p["driver_memory"], "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4"}))  # fmt: skip
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            idle = warm_up(spark, synth_corpus(min(sizes)), p)
            warm = time.perf_counter() - t0
            for n in sizes:
                stages = measure_point(spark, synth_corpus(n), n, p)
                points.append({
                    "master": master, "tokens": n, "startup_s": startup, "warmup_s": warm,
                    "idle_worker_bytes": idle, "load_end": round(os.getloadavg()[0], 1),
                    "stages": stages,
                })  # fmt: skip
        finally:
            spark.stop()
    return points


# ------------------------------------------------------------------ cost model


def _v(pt: dict[str, Any], stage: str, *keys: str, default: Any = None) -> Any:
    """pt["stages"][stage][keys...] or ``default`` when any is missing."""
    x: Any = pt["stages"].get(stage, {})
    for k in keys:
        if not isinstance(x, dict) or x.get(k) is None:
            return default
        x = x[k]
    return x


def cost_rows(pt: dict[str, Any], p: dict[str, Any]) -> list[tuple[str, str, Any, Any, str]]:
    """(stage, quantity, predicted, measured, formula) for one point: the README cost model
    evaluated with this run's V, entries and settings, next to what was measured. Task
    memory is measured as a Python worker's peak RSS less an idle worker's (the
    interpreter and its libraries, measured after the warm-up)."""
    from embedpipe.stages import glove, svd, word2vec

    rows: list[tuple[str, str, Any, Any, str]] = []
    idle = pt.get("idle_worker_bytes") or 0

    def task(peak: float | None) -> float | None:
        return None if not peak else peak - idle

    vc = _v(pt, "vocab", "counts", default={})
    kept = _v(pt, "encode", "counts", "kept_tokens")
    if vc.get("tokens") and _v(pt, "vocab", "shuffle_bytes") is not None:
        mean_len = vc["bytes"] / vc["tokens"] - 1  # one separator per token
        bound = vc["input_partitions"] * vc["distinct_tokens"] * (mean_len + 9)
        rows.append(("vocab", "shuffle bytes (bound)", bound, _v(pt, "vocab", "shuffle_bytes"),
                     "≤ tasks · distinct tokens · (length + 9) B"))  # fmt: skip
    if kept and _v(pt, "encode", "shuffle_bytes") is not None:
        rows.append(("encode", "shuffle bytes", 0, _v(pt, "encode", "shuffle_bytes"),
                     "none (the vocabulary is broadcast once)"))  # fmt: skip
    cc = _v(pt, "cooccur", "counts", default={})
    if cc and kept:
        partials = 0.33 * cc["window"] * kept
        rows += [
            ("cooccur", "partial entries", partials, cc["partial_entries"],
             "0.33 · window · kept tokens"),
            ("cooccur", "shuffle bytes", partials * 3.3, cc["shuffle_bytes"],
             "partial entries · 3.3 B"),
            ("cooccur", "task memory", 512 * 2**20, task(cc.get("peak_task_rss")),
             "≤ cooccur.memory_mb (512 MiB) + one packed block"),
        ]  # fmt: skip
    gm = _v(pt, "glove", "model", default={})
    if gm:
        V, d, S = gm["vocab_size"], gm["dim"], gm["shards"]
        ex = gm["exchange_bytes_per_epoch"]
        rows += [
            ("glove", "broadcast / epoch / executor", glove.param_bytes(V, d), ex["broadcast"],
             "4 · V · (dim + 1) · 4 B"),
            ("glove", "results / epoch (bound)", S * (math.ceil(V / S) + V) * glove.row_bytes(d),
             ex["results"], "≤ S · (V/S + V) · (8 · dim + 20) B"),
            ("glove", "task memory", glove.task_memory_need(V, d, max(gm["shard_entries"])),
             task((_v(pt, "glove", "worker_gib") or 0) * 2**30),
             f"2 · broadcast + {glove.TASK_BYTES_PER_ENTRY} B · shard entries"),
        ]  # fmt: skip
    sm = _v(pt, "svd", "model", default={})
    if sm.get("traffic"):
        V, lw, S, q = sm["vocab_size"], sm["sketch_width"], sm["shards"], p["power_iters"]
        sent = q * V * lw * 4 + V * lw * 8
        mem = sm.get("memory", {})
        rows += [
            ("svd", "bytes sent to tasks", sent, sm["traffic"]["broadcast_bytes"],
             "q · V·l·4 + V·l·8 (float32 iterations, float64 last pass)"),
            ("svd", "partial sums to the driver", S * sent,
             sm["traffic"]["partial_sum_bytes_to_driver"], "S · the above"),
            ("svd", "task memory", mem.get("task_bytes_estimate"), task(mem.get("peak_task_rss")),
             f"{svd.TASK_BYTES_PER_ENTRY} B · shard entries + 2 · V·l·8 + 2 · (V/S)·l·8"),
            ("svd", "driver memory", mem.get("driver_bytes_estimate"), mem.get("driver_peak_rss"),
             "5 · V·l·8 + 3 · V·dim·8 (measured: the driver's whole RSS)"),
        ]  # fmt: skip
    wm = _v(pt, "word2vec", "model", default={})
    if wm:
        V, d, S, R = wm["vocab_size"], wm["dim"], wm["partitions"], wm["rounds_per_epoch"]
        N, ex = wm["corpus_words"], wm["exchange_bytes_per_round"]
        rows += [
            ("word2vec", "broadcast / epoch / executor", R * word2vec.param_bytes(V, d),
             R * ex["broadcast"], "R · 2 · V · dim · 4 B"),
            ("word2vec", "results / round (bound)", S * 2 * V * word2vec.row_bytes(d),
             ex["results"], "≤ S · 2 · V · (4 · dim + 12) B"),
            ("word2vec", "task memory", word2vec.task_memory_need(V, d, math.ceil(N / S)),
             task((_v(pt, "word2vec", "worker_gib") or 0) * 2**30),
             "3 · broadcast + 16 · V + 24 B · partition tokens"),
            ("word2vec", "shuffle bytes", 4 * N, _v(pt, "word2vec", "shuffle_bytes"),
             "the corpus once: 4 B per id (lz4 gains little)"),
        ]  # fmt: skip
    return rows


def fit_power(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(k, b) of y = k · x^b by least squares in log-log, or None for < 2 points."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x and y]
    if len(pts) < 2:
        return None
    lx, ly = np.log([x for x, _ in pts]), np.log([y for _, y in pts])
    b, a = np.polyfit(lx, ly, 1)
    return float(math.exp(a)), float(b)


def predict_time(sizes: list[int], times: list[float]) -> float | None:
    """Time at the largest size from the smaller ones: t = a + b·N through them (least
    squares), or t = b·N through the smallest when it is alone."""
    if len(sizes) < 2:
        return None
    xs, ys = np.array(sizes[:-1], float), np.array(times[:-1], float)
    if len(xs) == 1:
        return float(ys[0] / xs[0] * sizes[-1])
    b, a = np.polyfit(xs, ys, 1)
    return float(a + b * sizes[-1])


# ------------------------------------------------------------------ report


def _b(n: Any) -> str:
    if n is None:
        return "–"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _count(n: Any) -> str:
    return "–" if n is None else f"{n:,.0f}"


def _tok(n: float) -> str:
    return f"{n / 1e9:g}B" if n >= 1e9 else f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k"


def render(data: dict[str, Any], quick: bool, args: argparse.Namespace) -> str:
    """The Markdown section, every figure from the stored points of this invocation."""
    meta, points = data["meta"], data["points"]
    p = meta["profile"]
    name = "scaling_quick" if quick else "scaling"
    masters = sorted({pt["master"] for pt in points})
    sizes = sorted({pt["tokens"] for pt in points})
    at = {(pt["master"], pt["tokens"]): pt for pt in points}
    md = [
        f"## Scaling on synthetic corpora, local[1] → local[2], cost model (issue 11"
        f"{', quick' if quick else ''})",
        "",
        f"Command: `{meta['command']}` (started {meta['started']})  ",
        f"Machine: {meta['machine']}  ",
        f"Corpora: `../shared/corpora/synth.py` (seed 1), {', '.join(_tok(n) for n in sizes)} "
        f"tokens. Settings: whitespace tokens, min_count {MIN_COUNT}; cooccur window "
        f"{COOC_WINDOW} harmonic, default shards; glove dim {p['dim']}, {p['glove_epochs']} "
        f"epoch(s); svd dim {p['dim']}, {p['power_iters']} power iterations; word2vec "
        f"skip-gram dim {p['dim']}, window {W2V_WINDOW}, 1 epoch; default partitions "
        f"(word2vec S = cores); spark.driver.memory {p['driver_memory']}. One Spark session per "
        + (
            "master, all sizes in it, one JVM for all (a later session inherits the heap an "
            "earlier one grew)"
            if p["group"]
            else "(master, size)"
        )
        + ", Python workers started before timing; Spark start-up excluded. Peak RSS = the "
        "process tree (driver, JVM, workers) during the stage; worker = the largest Python "
        "worker (one task). CPU s = the whole tree.",
        "",
        "### Time and memory per stage",
        "",
        "| tokens | stage | "
        + " | ".join(f"{m} wall | CPU s | peak RSS | worker" for m in masters)
        + " | speed-up |",
        "|---|---|" + "---|---|---|---|" * len(masters) + "---|",
    ]
    for n in sizes:
        for st in STAGES:
            cells = []
            walls = {}
            for m in masters:
                r = at.get((m, n), {}).get("stages", {}).get(st)
                if not r:
                    cells.append("– | – | – | –")
                elif r.get("reason"):
                    cells.append(f"{r['reason']} | – | – | –")
                else:
                    walls[m] = r["wall_s"]
                    cells.append(
                        f"{r['wall_s']:.1f} s | {r['cpu_s']:.0f} | "
                        f"{r['peak_gib']:.2f} GiB | {(r.get('worker_gib') or 0) * 1024:.0f} MiB"
                    )
            sp = (
                f"{walls['local[1]'] / walls['local[2]']:.2f}×"
                if "local[1]" in walls and "local[2]" in walls
                else "–"
            )
            md.append(f"| {_tok(n)} | {st} | " + " | ".join(cells) + f" | {sp} |")
    md += [
        "",
        "Speed-up = local[1] wall ÷ local[2] wall (2 cores: at most 2×; the load "
        "average of the shared machine is in the Machine line and per point: "
        + ", ".join(f"{pt['master']} {_tok(pt['tokens'])} {pt['load_end']}" for pt in points)
        + ").",
        "",
    ]

    # Time of the largest size predicted from the smaller ones.
    md += [
        "### Time model: the largest corpus predicted from the smaller ones",
        "",
        "t(N) = a + b·N fitted on the smaller sizes (t = b·N through the smallest when it "
        "is alone), evaluated at the largest.",
        "",
        "| master | stage | predicted | measured | measured ÷ predicted |",
        "|---|---|---|---|---|",
    ]
    for m in masters:
        for st in STAGES:
            xs, ys = [], []
            for n in sizes:
                r = at.get((m, n), {}).get("stages", {}).get(st)
                if r and not r.get("reason"):
                    xs.append(n)
                    ys.append(r["wall_s"])
            pred = predict_time(xs, ys) if len(xs) == len(sizes) else None
            if pred is None:
                md.append(f"| {m} | {st} | – | – | – (needs every size measured) |")
            else:
                md.append(f"| {m} | {st} | {pred:.1f} s | {ys[-1]:.1f} s | {ys[-1] / pred:.2f} |")
    md.append("")

    # Bytes and memory: the cost model against the measurements, largest size, local[2].
    ref = at.get(("local[2]", sizes[-1])) or at.get((masters[-1], sizes[-1]))
    md += [f"### Cost model against the measurements ({_tok(ref['tokens'])} tokens, "
           f"{ref['master']})", "",
           "Predicted = the README's formulas (\"Cost model\") with this run's V, entries and "
           "settings; measured = Spark's status store (shuffle), the stages' records and "
           "model.json (exchanged bytes), and for task memory the largest Python worker's peak "
           "RSS less an idle worker's ("
           f"{(ref.get('idle_worker_bytes') or 0) / 2**20:.0f} MiB: interpreter and "
           "libraries, after the warm-up).", "",
           "| stage | quantity | predicted | measured | measured ÷ predicted | formula |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for st, what, pred, meas, how in cost_rows(ref, p):
        ratio = f"{meas / pred:.2f}" if pred and meas is not None else "–"
        fmt = _count if "entries" in what else _b
        md.append(f"| {st} | {what} | {fmt(pred)} | {fmt(meas)} | {ratio} | {how} |")
    md.append("")
    md += cluster_table(points, sizes, args)
    md.append(plot(points, masters, sizes, BENCH / f"{name}.png"))
    return "\n".join(md)


def cluster_table(points: list[dict[str, Any]], sizes: list[int], args) -> list[str]:
    """Extrapolation to ``--cluster-tokens`` on ``--cluster-cores``: V and non-zeros from
    power laws fitted on the local[2] points (V capped at ``--cluster-max-vocab``, as
    ``vocab.max_size`` would), bytes and memory from the cost model, compute time from
    the CPU seconds per unit measured at the largest size."""
    from embedpipe.config import Word2VecConfig
    from embedpipe.stages import glove, svd, word2vec

    pts = sorted((pt for pt in points if pt["master"] == "local[2]"), key=lambda x: x["tokens"])
    ones = {pt["tokens"]: pt for pt in points if pt["master"] == "local[1]"}
    ok = [pt for pt in pts if _v(pt, "vocab", "counts", "vocab_size")
          and _v(pt, "cooccur", "counts", "nnz")]  # fmt: skip
    xs = [pt["tokens"] for pt in ok]
    heaps = fit_power(xs, [_v(pt, "vocab", "counts", "vocab_size") for pt in ok])
    nnzfit = fit_power(xs, [_v(pt, "cooccur", "counts", "nnz") for pt in ok])
    if not heaps or not nnzfit:
        return ["Cluster extrapolation: needs two local[2] sizes with vocab and cooccur "
                "measured.", ""]  # fmt: skip
    N, C, d, q = args.cluster_tokens, args.cluster_cores, args.cluster_dim, 7
    v_fit = heaps[0] * N ** heaps[1]
    V = int(min(v_fit, args.cluster_max_vocab))
    nnz = min(nnzfit[0] * N ** nnzfit[1], float(V) ** 2)
    S = C
    big = ok[-1]
    kept = _v(big, "encode", "counts", "kept_tokens") or big["tokens"]
    entries = _v(big, "cooccur", "counts", "nnz") or 1
    epochs = max(len(_v(big, "glove", "model", "losses", default=[])), 1)
    vocab_shuffle = (_v(big, "vocab", "shuffle_bytes") or 0) / big["tokens"]
    width = svd.sketch_width(V, d, 40)
    R = word2vec.resolve_rounds(Word2VecConfig(), S, int(N))
    table = (
        # stage, measured units at `big`, units on the cluster, shuffle, broadcast, memory
        ("vocab", big["tokens"], N, _b(vocab_shuffle * N), "–",
         "2M-token chunk + a hash table of its distinct tokens"),
        ("encode", big["tokens"], N, "0", _b(V * 60) + " once", "2M-token chunk + ~50 B · V"),
        ("cooccur", kept, N, _b(0.33 * COOC_WINDOW * 3.3 * N), "–",
         "cooccur.memory_mb (512 MiB) + a packed block"),
        ("glove", entries * epochs, nnz, "–", _b(glove.param_bytes(V, d)) + " per epoch",
         _b(glove.task_memory_need(V, d, int(nnz / S)))),
        ("svd", entries, nnz, "–", _b(svd.dense_bytes(V, width) * (q + 2) / 2) + " in all",
         _b(svd.task_memory_need(V, width, math.ceil(V / S), int(nnz / S)))),
        ("word2vec", kept, N, _b(4 * N), _b(R * word2vec.param_bytes(V, d)) + " per epoch",
         _b(word2vec.task_memory_need(V, d, int(N / S)))),
    )  # fmt: skip
    rows = []
    for st, unit, units, shuffle, bcast, mem in table:
        r2 = big["stages"].get(st, {})
        r1 = ones.get(big["tokens"], {}).get("stages", {}).get(st, {})
        if r2.get("reason") or r2.get("cpu_s") is None:
            rows.append(f"| {st} | – | – | – | {shuffle} | {bcast} | {mem} |")
            continue
        cpu = r2["cpu_s"] / unit
        eff = r1["wall_s"] / r2["wall_s"] / 2 if r1.get("wall_s") else None
        t = cpu * units / (C * min(eff or 1.0, 1.0))
        rows.append(f"| {st} | {cpu * 1e6:.2f} | {_f2(eff)} | {t / 3600:.2f} h | {shuffle} | "
                    f"{bcast} | {mem} |")  # fmt: skip
    return [
        f"### Extrapolated to a cluster: {_tok(N)} tokens, {C} cores, dim {d}, S = {S}", "",
        f"Fitted on the local[2] points ({', '.join(_tok(x) for x in xs)} tokens): V ≈ "
        f"{heaps[0]:.3g} · N^{heaps[1]:.3f} → {v_fit:,.0f}, capped at {V:,} "
        f"(`vocab.max_size`); non-zeros ≈ {nnzfit[0]:.3g} · N^{nnzfit[1]:.3f} → {nnz:.3g}. "
        f"Compute time = CPU seconds per unit measured at {_tok(big['tokens'])} tokens on "
        "local[2] (per token; GloVe per entry and epoch; svd per non-zero) × the cluster's "
        "units ÷ (cores × the 2-core efficiency, local[1] wall ÷ local[2] wall ÷ 2); it "
        f"leaves out the exchange, whose bytes are given per executor (word2vec R = {R} rounds "
        f"per epoch, svd {q} power iterations with l = {width}); one GloVe and one word2vec "
        "epoch. Small benchmark corpora extrapolate poorly: trust the bytes (formulas) more "
        "than the times.", "",
        "| stage | CPU µs per unit | 2-core efficiency | compute time | shuffle | broadcast | "
        "memory per task |", "|---|---|---|---|---|---|---|",
        *rows, "",
    ]  # fmt: skip


def _f2(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def plot(points: list[dict[str, Any]], masters: list[str], sizes: list[int], path: Path) -> str:
    """Wall time and peak RSS against tokens, one line per stage and master."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"local[1]": "--", "local[2]": "-"}
    drawn = 0
    colors = dict(zip(STAGES, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for m in masters:
        for st in STAGES:
            pts = [(pt["tokens"], pt["stages"].get(st, {})) for pt in points if pt["master"] == m]
            pts = sorted((n, r) for n, r in pts if r and not r.get("reason"))
            if not pts:
                continue
            drawn += 1
            xs = [n for n, _ in pts]
            axes[0].plot(xs, [r["wall_s"] for _, r in pts], styles.get(m, ":"), marker="o",
                         color=colors[st], label=f"{st} {m}")  # fmt: skip
            axes[1].plot(xs, [r["peak_gib"] for _, r in pts], styles.get(m, ":"), marker="o",
                         color=colors[st], label=f"{st} {m}")  # fmt: skip
    if not drawn:
        plt.close(fig)
        return "Plot: none (no stage was measured)."
    for ax, ylabel in zip(axes, ("wall seconds", "peak RSS of the process tree (GiB)"),
                          strict=True):  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="corpus tokens", ylabel=ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("embedpipe stages on synthetic corpora (solid local[2], dashed local[1])")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"Plot: `bench/{path.name}` (time and peak memory against corpus size)."


# ------------------------------------------------------------------ main


def parse_sizes(text: str) -> list[int]:
    """'1e6,5e6' -> [1000000, 5000000] (ascending)."""
    return sorted(int(float(x)) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    """Measure every (master, size) in child processes, then write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two tiny corpora (the code path)")
    ap.add_argument("--sizes", default=None, help="comma-separated token counts, e.g. 1e7,5e7")
    ap.add_argument("--masters", default=None, help="comma-separated Spark masters")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--glove-epochs", type=int, default=None)
    ap.add_argument("--power-iters", type=int, default=None)
    ap.add_argument("--driver-memory", default=None)
    ap.add_argument("--cluster-tokens", type=float, default=1e10)
    ap.add_argument("--cluster-cores", type=int, default=64)
    ap.add_argument("--cluster-dim", type=int, default=300)
    ap.add_argument("--cluster-max-vocab", type=int, default=1_000_000)
    ap.add_argument("--render", action="store_true", help="re-render the stored JSON only")
    ap.add_argument("--point", action="store_true", help=argparse.SUPPRESS)  # a child
    ap.add_argument("--profile-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.point:
        p = json.loads(args.profile_json)
        print(json.dumps(child(p["masters"].split(","), parse_sizes(p["sizes"]), p), default=str))
        return 0
    p = dict(PROFILES["quick" if args.quick else "full"])
    for k in ("sizes", "masters", "dim", "glove_epochs", "power_iters", "driver_memory"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    path = WORK / f"results-{'quick' if args.quick else 'full'}.json"
    section = "scaling-quick" if args.quick else "scaling"
    if not args.render and not (SHARED / "corpora" / "synth.py").exists():
        update_section(section, "## Scaling on synthetic corpora (issue 11)\n\nNot measured: "
                       f"{SHARED / 'corpora' / 'synth.py'} (the corpus generator) is absent; "
                       "set EMBEDPIPE_SHARED to the shared data directory.")  # fmt: skip
        print("scaling: synth.py not found; section written with the reason", file=sys.stderr)
        return 0
    if not args.render:
        WORK.mkdir(parents=True, exist_ok=True)
        sizes = parse_sizes(p["sizes"])
        for n in sizes:  # generated before any timing (synth.py uses both cores)
            synth_corpus(n)
        meta = {"machine": machine(), "command": command_line(), "profile": p,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        points = []
        masters = p["masters"].split(",")
        # Quick: one child for everything (one JVM start); full: one per (master, size), so
        # that every point starts from a fresh JVM and its peak memory is its own.
        groups = [(masters, sizes)] if p["group"] else [([m], [n]) for m in masters for n in sizes]
        for ms, ns in groups:
            sub = {**p, "sizes": ",".join(map(str, ns)), "masters": ",".join(ms)}
            cmd = [sys.executable, __file__, "--point", "--profile-json", json.dumps(sub)]
            print(f"== {ms} {ns}", flush=True)
            with PeakRSS() as peak:
                res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if res.returncode != 0:
                points += [{"master": m, "tokens": n, "load_end": None,
                            "stages": {st: {"reason": f"child exited {res.returncode}"}
                                       for st in STAGES}} for m in ms for n in ns]  # fmt: skip
                continue
            for pt in json.loads(res.stdout.strip().splitlines()[-1]):
                pt["child_peak_gib"] = peak.gib
                points.append(pt)
        meta["load_end"] = round(os.getloadavg()[0], 1)
        path.write_text(json.dumps({"meta": meta, "points": points}, indent=1, default=str))
    data = json.loads(path.read_text())
    md = render(data, args.quick, args)
    start = md.find("### Cost model")
    print(md[start:] if start >= 0 else md, flush=True)  # predicted vs measured, cluster
    update_section(section, md)
    failed = [(pt["master"], pt["tokens"], st) for pt in data["points"]
              for st, r in pt["stages"].items() if r.get("reason")]  # fmt: skip
    print(
        f"{path}: {len(data['points'])} points; RESULTS.md section {section} written"
        + (f"; not measured: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
