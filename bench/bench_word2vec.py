"""word2vec stage against gensim and Spark MLlib on the same corpus (issue 8).

    .venv/bin/python bench/bench_word2vec.py --phase speed            # 1 epoch, S = 2
    .venv/bin/python bench/bench_word2vec.py --phase speed --epochs 5 # the issue's settings
    .venv/bin/python bench/bench_word2vec.py --phase quality          # 5 epochs, S = 1,2,4,8
    .venv/bin/python bench/bench_word2vec.py --phase render           # table + plot only

Corpus: ``../shared/corpora/en-open.tok.txt.gz`` (whitespace tokens, min_count 5), dim
100, window 5, negative 5, seed 1. Every system reads the same file; the raw-words rate
is in-vocabulary tokens × epochs ÷ wall time of the training call (Spark start-up
excluded; embedpipe's vocab/encode stages excluded and its corpus load included;
gensim's vocabulary scan and MLlib's vocabulary pass included, as in the issue).

* embedpipe: ``word2vec.run`` with ``word2vec.partitions = S`` on local[2].
* gensim: ``Word2Vec(LineSentence(path), workers=2, sg=..., sample=..., seed=1)``.
* MLlib: ``pyspark.ml.feature.Word2Vec`` (skip-gram with hierarchical softmax, its only
  mode) on the same lines split on spaces, ``numPartitions`` = S; input cached first.
* ``--share-negatives``: embedpipe with ``word2vec.share_negatives = true`` (one draw of
  noise words per centre word), stored and reported as its own rows.

Every measurement is stored in ``bench/out/word2vec/results.json`` as soon as it
finishes, and the ``word2vec`` section of RESULTS.md plus ``bench/word2vec_quality.png``
are re-rendered from everything stored, so a long run that is stopped early still
reports what it finished. Scores: WS353 and SimLex-999 Spearman ρ, Google analogy
3CosAdd accuracy (restrict_vocab 30000), by :mod:`embedpipe.scoring`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (
    OUT,
    SHARED,
    CpuMeter,
    PeakRSS,
    Usage,
    command_line,
    head_file,
    machine,
    update_section,
)

CORPUS = SHARED / "corpora" / "en-open.tok.txt.gz"
WORK = OUT / "word2vec"
RESULTS_JSON = WORK / "results.json"
PLOT = Path(__file__).resolve().parent / "word2vec_quality.png"
SETTINGS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "seed": 1}
#: Measurements of the stage before issue 8's merge fix (count-weighted average of partitions
#: trained at alpha, 1 round per epoch), kept for the table under their own merge label.
BEFORE_JSON = WORK / "results-before-fix.json"
BEFORE_LABEL = "average (old: alpha, count-weighted, R=1)"


# ------------------------------------------------------------------ storage


def load_results(path: Path = RESULTS_JSON) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"runs": {}}


def store(key: str, value: dict[str, Any], path: Path = RESULTS_JSON) -> None:
    """Save one measurement (keyed by what was measured); re-render the report from the
    full-corpus results (a ``--max-lines`` dry run keeps its own file and renders nothing)."""
    data = load_results(path)
    data["runs"][key] = value
    data["machine"] = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    if path == RESULTS_JSON:
        render(data)


def key_of(system: str, mode: str, parts: int, merge: str, epochs: int, sample: float) -> str:
    return f"{system}|{mode}|{parts}|{merge}|{epochs}|{sample:g}"


# ------------------------------------------------------------------ scoring


def score(vectors: Any) -> dict[str, float]:
    """WS353 ρ, SimLex ρ, Google analogy 3CosAdd accuracy (restrict_vocab 30000)."""
    from embedpipe import scoring

    data = {d.name: d.path for d in scoring.default_datasets()}
    ws = scoring.evaluate_similarity(vectors, data["ws353"])
    sl = scoring.evaluate_similarity(vectors, data["simlex999"])
    an = scoring.evaluate_analogy(vectors, data["google_analogy"], 30000)
    return {"ws353": ws["spearman"], "simlex": sl["spearman"], "analogy": an["accuracy"],
            "analogy_covered": an["covered"]}  # fmt: skip


# ------------------------------------------------------------------ systems


def prepare(spark: Any, corpus: Path) -> tuple[Any, list[str], int]:
    """vocab + encode of ``corpus`` into bench/out/runs/w2v-<name> (skipped when current)."""
    from embedpipe.config import load_config
    from embedpipe.runs import RunDir
    from embedpipe.stages import encode, vocab

    base = [f"input.path={corpus}", "vocab.tokenizer=whitespace",
            f"vocab.min_count={SETTINGS['min_count']}"]  # fmt: skip
    cfg = load_config(None, base)
    run = RunDir(str(OUT / "runs" / f"w2v-{corpus.name.split('.')[0]}"))
    vocab.run(spark, cfg, run)
    rec = encode.run(spark, cfg, run).record
    return run, base, int(rec["counts"]["kept_tokens"])


def run_ours(spark, run, base, n_words, mode, parts, merge, epochs, sample,
             settings: dict[str, Any] = SETTINGS, scorer: Any = None,
             extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The word2vec stage on ``run`` (``extra``: more ``--set`` overrides, e.g. subwords)."""
    from embedpipe import fsutil
    from embedpipe.config import load_config
    from embedpipe.stages import word2vec
    from embedpipe.vectors import Vectors

    cfg = load_config(None, [
        *base, f"word2vec.mode={mode}", f"word2vec.partitions={parts}", f"word2vec.merge={merge}",
        f"word2vec.epochs={epochs}", f"word2vec.sample={sample}",
        *(f"word2vec.{k}={settings[k]}" for k in ("dim", "window", "negative", "seed")),
        *extra,
    ])  # fmt: skip
    with PeakRSS() as peak, CpuMeter() as cpu:
        t0 = time.perf_counter()
        word2vec.run(spark, cfg, run, force=True)
        wall = time.perf_counter() - t0
    model = json.loads(fsutil.read_text(run.path("word2vec", word2vec.MODEL_FILE)))
    train = sum(model["epoch_seconds"])
    out = {
        "system": "embedpipe", "mode": mode, "partitions": parts, "merge": merge,
        "epochs": epochs, "sample": sample, "wall_s": wall, "train_s": train,
        "load_s": model["load_seconds"], "words": n_words * epochs,
        "words_per_s": n_words * epochs / wall, "train_words_per_s": n_words * epochs / train,
        "cpu_s": cpu.seconds,
        "losses": model["losses"], "peak_gib": peak.gib,
        "broadcast_bytes": model["exchange_bytes_per_round"]["broadcast"],
        "result_bytes": model["exchange_bytes_per_round"]["results"],
        "rounds_per_epoch": model["rounds_per_epoch"], "alpha_scale": model["alpha_scale"],
        "share_negatives": bool(model["settings"].get("share_negatives", False)),
    }  # fmt: skip
    out.update((scorer or score)(Vectors.load(run.path("word2vec"))))
    return out


def bracketed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One row from two timed runs of a configuration, before and after the peers: the
    mean of their times (``wall_runs`` keeps both walls)."""
    row = dict(after)
    for k in ("wall_s", "train_s", "load_s", "cpu_s"):
        if before.get(k) is not None and after.get(k) is not None:
            row[k] = (before[k] + after[k]) / 2
    row["wall_runs"] = [before["wall_s"], after["wall_s"]]
    row["words_per_s"] = row["words"] / row["wall_s"]
    if row.get("train_s"):
        row["train_words_per_s"] = row["words"] / row["train_s"]
    return row


def run_gensim(corpus: Path, n_words: int, mode: str, epochs: int, sample: float,
               settings: dict[str, Any] = SETTINGS, scorer: Any = None) -> dict:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    from embedpipe.vectors import Vectors

    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        model = Word2Vec(
            LineSentence(str(corpus)), vector_size=settings["dim"], window=settings["window"],
            min_count=settings["min_count"], negative=settings["negative"], sample=sample,
            epochs=epochs, workers=2, sg=1 if mode == "skipgram" else 0, seed=settings["seed"],
        )  # fmt: skip
        wall = time.perf_counter() - t0
    out = {
        "system": "gensim", "mode": mode, "partitions": 2, "merge": "-", "epochs": epochs,
        "sample": sample, "wall_s": wall, "cpu_s": cpu.seconds,
        "words": n_words * epochs, "words_per_s": n_words * epochs / wall,
    }  # fmt: skip
    out.update((scorer or score)(Vectors(model.wv.index_to_key, model.wv.vectors)))
    return out


def run_mllib(spark, corpus: Path, run, n_words: int, parts: int, epochs: int,
              settings: dict[str, Any] = SETTINGS, scorer: Any = None) -> dict:
    from pyspark.ml.feature import Word2Vec
    from pyspark.sql import functions as F

    from embedpipe.stages.vocab import read_vocab
    from embedpipe.vectors import Vectors

    words = (
        spark.read.text(str(corpus))
        .select(F.array_remove(F.split("value", " "), "").alias("words"))
        .cache()
    )
    words.count()  # read and tokenised before the clock starts
    est = Word2Vec(vectorSize=settings["dim"], windowSize=settings["window"],
                   minCount=settings["min_count"], maxIter=epochs, numPartitions=parts,
                   seed=settings["seed"], inputCol="words", outputCol="vec")  # fmt: skip
    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        model = est.fit(words)
        wall = time.perf_counter() - t0
    words.unpersist()
    rows = model.getVectors().collect()
    # Frequency order (the analogy restrict_vocab needs it): our vocabulary's ids.
    rank = {t: i for i, t in enumerate(read_vocab(run).column("token").to_pylist())}
    rows.sort(key=lambda r: (rank.get(r["word"], len(rank)), r["word"]))
    import numpy as np

    vec = Vectors([r["word"] for r in rows], np.array([r["vector"].toArray() for r in rows]))
    out = {
        "system": "mllib", "mode": "skipgram (hs)", "partitions": parts, "merge": "sum/avg",
        "epochs": epochs, "sample": 0.0, "wall_s": wall, "cpu_s": cpu.seconds,
        "words": n_words * epochs,
        "words_per_s": n_words * epochs / wall,
    }  # fmt: skip
    out.update((scorer or score)(vec))
    return out


def warm_up(spark: Any, corpus: Path, systems: list[str]) -> None:
    """Run each Spark system once, untimed, on the first 20,000 lines: the JVM compiles
    its hot paths and Spark starts its Python workers (which import numpy, pyarrow and
    numba and load the compiled kernels) on the first job of a session, about 15 CPU
    seconds here; that is Spark start-up, which the issue excludes from the rate."""
    from embedpipe.config import load_config
    from embedpipe.stages import word2vec

    if corpus.name.startswith("head-"):
        return
    head = head_file(corpus, 20_000, WORK)
    if "embedpipe" in systems:
        run, base, _ = prepare(spark, head)
        for mode in ("skipgram", "cbow"):
            cfg = load_config(None, [*base, "word2vec.epochs=1", "word2vec.partitions=2",
                                     f"word2vec.mode={mode}", "word2vec.dim=100"])  # fmt: skip
            word2vec.run(spark, cfg, run, force=True)
    if "mllib" in systems:
        from pyspark.ml.feature import Word2Vec
        from pyspark.sql import functions as F

        words = spark.read.text(str(head)).select(
            F.array_remove(F.split("value", " "), "").alias("words")
        )
        Word2Vec(vectorSize=SETTINGS["dim"], minCount=SETTINGS["min_count"], maxIter=1,
                 numPartitions=2, inputCol="words", outputCol="vec").fit(words)  # fmt: skip


# ------------------------------------------------------------------ report


def _load(r: dict[str, Any]) -> str:
    """Load average before→(mean during→)after, as stored."""
    return "→".join(f"{x:.1f}" for x in r["load"]) if r.get("load") else "–"


def _runs(r: dict[str, Any]) -> str:
    """The two walls of a bracketed row (timed before and after the peers), if any."""
    runs = r.get("wall_runs")
    return f" (mean of {runs[0]:.1f}, {runs[1]:.1f})" if runs else ""


def _cpu(r: dict[str, Any]) -> str:
    return f"{r['cpu_s']:.0f}" if r.get("cpu_s") is not None else "–"


def _merge(r: dict[str, Any]) -> str:
    shared = ", shared negatives" if r.get("share_negatives") else ""
    if r["system"] == "embedpipe" and r.get("rounds_per_epoch"):
        return f"{r['merge']}, R={r['rounds_per_epoch']}, α×{r.get('alpha_scale', 1):g}{shared}"
    return r["merge"] + shared


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def render(data: dict[str, Any]) -> None:
    """RESULTS.md section and the quality-vs-S plot from every stored measurement."""
    runs = list(data["runs"].values())
    if BEFORE_JSON.exists():  # the pre-fix stage's S > 1 rows, under their own label
        old = json.loads(BEFORE_JSON.read_text())["runs"].values()
        runs += [
            {**r, "merge": BEFORE_LABEL}
            for r in old
            if r["system"] == "embedpipe" and r["partitions"] > 1 and r["epochs"] >= 5
        ]
    # Rows trained with another --seed are the seed study, not the tables' runs.
    runs = [r for r in runs if r.get("seed", SETTINGS["seed"]) == SETTINGS["seed"]]
    speed = [r for r in runs if r["epochs"] == 1]
    quality = sorted((r for r in runs if r["epochs"] >= 5),
                     key=lambda r: (r["mode"], r["system"] != "embedpipe", r["system"],
                                    bool(r.get("share_negatives")), r["partitions"],
                                    r["merge"]))  # fmt: skip
    md = [
        "## word2vec stage vs gensim and Spark MLlib (issue 8)",
        "",
        f"Command: `{command_line()}` (each phase updates its rows)  ",
        f"Machine: {data.get('machine', machine())}  ",
        "Corpus: en-open.tok.txt.gz, whitespace tokens, min_count 5; dim 100, window 5, "
        "negative 5, seed 1; local[2] (the machine is shared with other jobs, so wall "
        "times carry noise; peers ran in the same process, one after the other; a wall "
        "given as the mean of two is embedpipe timed before and after the peers, "
        "`--bracket`, because this host's memory speed drifts). Raw words/s = "
        "in-vocabulary tokens × epochs ÷ wall time of the training call (embedpipe: the "
        "word2vec stage incl. its corpus load, excl. Spark start-up and vocab/encode; gensim: "
        "incl. its vocabulary scan; MLlib: `fit` incl. its vocabulary pass, input cached). "
        "Before the timed runs each Spark system ran once on the first 20,000 lines (JVM "
        "warm-up, Python workers started: Spark start-up). CPU s = CPU seconds of the "
        "timed call over the whole process tree (driver, JVM, Python workers), which the "
        "load of other jobs does not change much.",
        "",
    ]
    md += speed_section(speed, 1)
    # The issue's own settings (5 epochs): the speed phase with --epochs 5 measures the
    # S = 2 rows (shared with the quality table: same runs) and MLlib at numPartitions 2.
    for e in sorted({r["epochs"] for r in quality}):
        rows = [r for r in quality if r["epochs"] == e and (
            (r["system"] == "embedpipe" and r["partitions"] == 2 and r["merge"] == "average"
             and not r.get("rounds_set"))
            or r["system"] == "gensim" or (r["system"] == "mllib" and r["partitions"] == 2))]
        modes = {r["mode"] for r in rows if r["system"] == "embedpipe"}
        rows = [r for r in rows if r["mode"].split(" ")[0] in modes]
        if any(r["system"] == "mllib" for r in rows):
            md += speed_section(rows, e)
    if quality:
        md += [
            "### Quality (5 epochs)",
            "",
            "| system | mode | S | merge | sample | WS353 ρ | SimLex ρ | analogy 3CosAdd | "
            "wall | raw words/s | final loss | CPU s | load avg before→mean→after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in quality:
            loss = r.get("losses", [None])[-1]
            md.append(
                f"| {r['system']} | {r['mode']} | {r['partitions']} | {_merge(r)} | "
                f"{r['sample']:g} | {_fmt(r['ws353'], '.3f')} | {_fmt(r['simlex'], '.3f')} | "
                f"{_fmt(r['analogy'] * 100 if r['analogy'] is not None else None, '.1f')}% | "
                f"{r['wall_s']:.0f} s | {r['words_per_s'] / 1e6:.3f}M | {_fmt(loss, '.4f')} | "
                f"{_cpu(r)} | {_load(r)} |"
            )
        md += ["", *quality_checks(quality), "", f"Plot: `bench/{PLOT.name}`."]
        plot(quality)
    update_section("word2vec", "\n".join(md))


def speed_section(rows: list[dict[str, Any]], epochs: int) -> list[str]:
    """One speed table (every row trained ``epochs`` epochs) and the issue's speed checks:
    embedpipe S = 2 against gensim (bar 0.8x) and MLlib numPartitions 2 (bar 5x), for the
    word2vec.c-exact stage and, when measured, with shared negatives."""
    if not rows:
        return []
    rows = sorted(rows, key=lambda r: (r["mode"], r["system"], r["partitions"],
                                       bool(r.get("share_negatives"))))  # fmt: skip
    md = [f"### Speed ({epochs} epoch{'s' if epochs > 1 else ''})", "",
          "| system | mode | partitions / workers | merge | sample | wall | train only | "
          "raw words/s | embedpipe S=2 ÷ system | CPU s | load avg before→mean→after |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def ours(mode: str, shared: bool) -> dict[str, Any] | None:
        return next((r for r in rows if r["system"] == "embedpipe" and r["mode"] == mode
                     and r["partitions"] == 2 and r["merge"] == "average"
                     and not r.get("rounds_set")
                     and bool(r.get("share_negatives")) == shared), None)  # fmt: skip

    for r in rows:
        mine = ours(r["mode"].split(" ")[0], False)
        ratio = mine["words_per_s"] / r["words_per_s"] if mine else None
        md.append(
            f"| {r['system']} | {r['mode']} | {r['partitions']} | {_merge(r)} | "
            f"{r['sample']:g} | {r['wall_s']:.1f} s{_runs(r)} | "
            f"{_fmt(r.get('train_s'), '.1f')} s | {r['words_per_s'] / 1e6:.3f}M | "
            f"{_fmt(ratio, '.2f')}× | {_cpu(r)} | {_load(r)} |"
        )
    md.append("")
    checks = []
    ml = next((r for r in rows if r["system"] == "mllib" and r["partitions"] == 2), None)
    for shared in (False, True):
        label = " (word2vec.share_negatives = true)" if shared else ""
        for mode in ("skipgram", "cbow"):
            mine = ours(mode, shared)
            g = next((r for r in rows if r["system"] == "gensim" and r["mode"] == mode), None)
            if mine and g:
                ratio = mine["words_per_s"] / g["words_per_s"]
                checks.append(f"{mode}{label}: embedpipe S=2 = {ratio:.2f} × gensim (bar ≥ 0.8: "
                              f"{'PASS' if ratio >= 0.8 else 'FAIL'})")  # fmt: skip
        mine = ours("skipgram", shared)
        if ml and mine:
            ratio = mine["words_per_s"] / ml["words_per_s"]
            verdict = "PASS" if ratio >= 5 else "FAIL"
            checks.append(f"skipgram{label}: embedpipe S=2 = {ratio:.1f} × MLlib "
                          f"numPartitions=2 (bar ≥ 5: {verdict})")  # fmt: skip
    return md + [f"* {c}" for c in checks] + [""]


def quality_checks(quality: list[dict[str, Any]]) -> list[str]:
    """The acceptance comparisons the issue names, computed from the stored rows."""
    out = []

    def find(system: str, mode: str, parts: int | None = None, merge: str | None = None,
             shared: bool = False):  # fmt: skip
        for r in quality:
            if (r["system"] == system and r["mode"].startswith(mode)
                    and (parts is None or r["partitions"] == parts)
                    and (merge is None or r["merge"] == merge)
                    and bool(r.get("share_negatives")) == shared):  # fmt: skip
                return r
        return None

    for mode, shared in (("skipgram", False), ("cbow", False), ("skipgram", True)):
        label = " (word2vec.share_negatives = true)" if shared else ""
        s1 = find("embedpipe", mode, 1, "average", shared)
        g = find("gensim", mode)
        if s1 and g:
            ok = (s1["ws353"] >= g["ws353"] - 0.01 and s1["simlex"] >= g["simlex"] - 0.01
                  and s1["analogy"] >= g["analogy"] - 0.01)  # fmt: skip
            out.append(f"* {mode}{label} S=1 vs gensim: WS353 {s1['ws353'] - g['ws353']:+.3f}, "
                       "SimLex "
                       f"{s1['simlex'] - g['simlex']:+.3f}, analogy "
                       f"{(s1['analogy'] - g['analogy']) * 100:+.1f} pt (bar −0.01 ρ / −1 pt: "
                       f"{'PASS' if ok else 'FAIL'})")  # fmt: skip
        # The default rounds first, then runs with word2vec.rounds_per_epoch set (--rounds).
        fours = sorted(
            (r for r in quality if r["system"] == "embedpipe" and r["mode"] == mode
             and r["partitions"] == 4 and r["merge"] == "average"
             and bool(r.get("share_negatives")) == shared),
            key=lambda r: r.get("rounds_set", 0),
        )  # fmt: skip
        for s4 in fours if s1 else []:
            ok = (s4["ws353"] >= s1["ws353"] - 0.02 and s4["simlex"] >= s1["simlex"] - 0.02
                  and s4["analogy"] >= s1["analogy"] - 0.03)  # fmt: skip
            rr = f", word2vec.rounds_per_epoch={s4['rounds_set']}" if s4.get("rounds_set") else ""
            out.append(f"* {mode}{label} S=4{rr} vs S=1: WS353 "
                       f"{s4['ws353'] - s1['ws353']:+.3f}, SimLex "
                       f"{s4['simlex'] - s1['simlex']:+.3f}, analogy "
                       f"{(s4['analogy'] - s1['analogy']) * 100:+.1f} pt (bar −0.02 ρ / −3 pt: "
                       f"{'PASS' if ok else 'FAIL'})")  # fmt: skip
    s4 = find("embedpipe", "skipgram", 4, "average")
    ml = find("mllib", "skipgram", 4)
    if s4 and ml:
        ok = all(s4[k] > ml[k] for k in ("ws353", "simlex", "analogy"))
        out.append(f"* skipgram S=4 vs MLlib numPartitions=4: WS353 {s4['ws353']:.3f} vs "
                   f"{ml['ws353']:.3f}, SimLex {s4['simlex']:.3f} vs {ml['simlex']:.3f}, analogy "
                   f"{s4['analogy'] * 100:.1f}% vs {ml['analogy'] * 100:.1f}% (better on every "
                   f"score: {'PASS' if ok else 'FAIL'})")  # fmt: skip
    return out


def plot(quality: list[dict[str, Any]]) -> None:
    """Quality vs S per merge and mode, peers as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("ws353", "WS353 Spearman ρ"), ("simlex", "SimLex-999 Spearman ρ"),
               ("analogy", "Google analogy 3CosAdd"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = {"skipgram": "tab:blue", "cbow": "tab:orange"}
    for ax, (m, title) in zip(axes, metrics, strict=True):
        for mode in ("skipgram", "cbow"):
            for merge, style in (("average", "-o"), ("procrustes", "--s"), (BEFORE_LABEL, ":x")):
                pts = sorted((r["partitions"], r[m]) for r in quality
                             if r["system"] == "embedpipe" and r["mode"] == mode
                             and not r.get("rounds_set") and not r.get("share_negatives")
                             and (r["merge"] == merge or r["partitions"] == 1))  # fmt: skip
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=colors[mode],
                            label=f"embedpipe {mode} {merge}")  # fmt: skip
            for r in quality:
                if r["system"] != "embedpipe" and r["mode"].startswith(mode):
                    ls = ":" if r["system"] == "gensim" else "-."
                    ax.axhline(
                        r[m],
                        ls=ls,
                        color=colors[mode],
                        alpha=0.7,
                        label=f"{r['system']} {r['mode']} ({r['partitions']})",
                    )
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.set_xlabel("partitions S")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["speed", "quality", "render"], default="speed")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--max-lines", type=int, default=0, help="first N lines only (a dry run)")
    ap.add_argument("--modes", default="skipgram,cbow")
    ap.add_argument("--partitions", default="1,2,4,8", help="quality phase: values of S")
    ap.add_argument("--merges", default="average,procrustes")
    ap.add_argument("--sample", type=float, default=1e-4)
    ap.add_argument("--rounds", type=int, default=0,
                    help="word2vec.rounds_per_epoch for S > 1 (0: the stage's default)")
    ap.add_argument("--systems", default="embedpipe,gensim,mllib")
    ap.add_argument("--epochs", type=int, default=0,
                    help="epochs (0: 1 for --phase speed, 5 for quality)")
    ap.add_argument("--seed", type=int, default=SETTINGS["seed"],
                    help="embedpipe's word2vec.seed (other seeds are stored as their own rows)")
    ap.add_argument("--share-negatives", action="store_true",
                    help="embedpipe with word2vec.share_negatives = true")
    ap.add_argument("--redo", action="store_true", help="re-measure stored measurements")
    ap.add_argument("--bracket", action="store_true",
                    help="speed phase: time every embedpipe run again after the peers and "
                         "store the mean of the two (this host's memory speed drifts)")
    args = ap.parse_args(argv)
    if args.phase == "render":
        render(load_results())
        return 0
    if not args.corpus.exists():
        print(f"{args.corpus}: not found (needs ../shared)", file=sys.stderr)
        return 2
    corpus = head_file(args.corpus, args.max_lines, WORK) if args.max_lines else args.corpus

    import logging

    from embedpipe.config import SparkConfig
    from embedpipe.log import setup
    from embedpipe.spark import build_session

    setup()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    spark = build_session(SparkConfig(master="local[2]", conf={
        "spark.driver.memory": "4g", "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
    }))  # fmt: skip
    systems = args.systems.split(",")
    modes = args.modes.split(",")
    epochs = args.epochs or (1 if args.phase == "speed" else 5)
    parts = [2] if args.phase == "speed" else [int(p) for p in args.partitions.split(",")]
    results_path = WORK / f"results-head{args.max_lines}.json" if args.max_lines else RESULTS_JSON
    done = load_results(results_path)["runs"]
    try:
        run, base, n_words = prepare(spark, corpus)
        warmed = False
        jobs: list[tuple[str, Any]] = []
        seeded = {**SETTINGS, "seed": args.seed}
        seed_row = {"seed": args.seed} if args.seed != SETTINGS["seed"] else {}
        for mode in modes:
            for s in parts:
                for merge in args.merges.split(",") if s > 1 else ["average"]:
                    if "embedpipe" in systems:
                        rr = args.rounds if s > 1 else 0
                        key = key_of("embedpipe", mode, s, merge, epochs, args.sample)
                        extra = ((f"word2vec.rounds_per_epoch={rr}",) if rr else ()) + (
                            ("word2vec.share_negatives=true",) if args.share_negatives else ())
                        jobs.append((key + (f"|R{rr}" if rr else "")
                                     + ("|shared" if args.share_negatives else "")
                                     + (f"|seed{args.seed}" if args.seed != SETTINGS["seed"]
                                        else ""),
                                     lambda mode=mode, s=s, merge=merge, rr=rr, extra=extra: {
                                         **run_ours(spark, run, base, n_words, mode, s, merge,
                                                    epochs, args.sample, settings=seeded,
                                                    extra=extra),
                                         **({"rounds_set": rr} if rr else {}),
                                         **seed_row}))  # fmt: skip
            if "gensim" in systems:
                jobs.append((key_of("gensim", mode, 2, "-", epochs, args.sample),
                             lambda mode=mode: run_gensim(corpus, n_words, mode, epochs,
                                                          args.sample)))  # fmt: skip
        if "mllib" in systems and "skipgram" in modes:
            m_parts = 2 if args.phase == "speed" else 4
            jobs.append(
                (
                    key_of("mllib", "skipgram", m_parts, "-", epochs, 0.0),
                    lambda: run_mllib(spark, corpus, run, n_words, m_parts, epochs),
                )
            )
        if args.bracket and args.phase == "speed":
            # Each embedpipe configuration once before and once after the peers: a drift
            # of the host's speed during the run then falls on both sides of the ratio.
            jobs += [(key, job) for key, job in jobs if key.startswith("embedpipe|")]
        first: dict[str, dict[str, Any]] = {}
        for key, job in jobs:
            if key in done and not args.redo and key not in first:
                print(f"{key}: stored, skipped (--redo re-measures)")
                continue
            if not warmed and key.split("|")[0] in ("embedpipe", "mllib"):
                warm_up(spark, corpus, systems)
                warmed = True
            print(f"{key}: running", flush=True)
            with Usage() as usage:
                res = job()
            res["corpus"] = corpus.name
            # The machine is shared: the load average says how disturbed a run was (the CPU
            # seconds of the training call, stored by each runner, what it cost regardless).
            res["load"] = usage.load
            if key in first:
                res = bracketed(first[key], res)
            elif args.bracket and args.phase == "speed" and key.startswith("embedpipe|"):
                first[key] = res
            store(key, res, results_path)
            print(f"{key}: {json.dumps({k: v for k, v in res.items() if k != 'losses'})}",
                  flush=True)  # fmt: skip
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
