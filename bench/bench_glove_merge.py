"""How the glove stage's merge modes train with S shards, against S = 1 (no Spark).

    .venv/bin/python bench/bench_glove_merge.py [--epochs 5] [--x-max 100]
        [--runs 1:scaled,4:average,4:sum,4:scaled] [--no-eval] [--report-only]

Reads the en-open co-occurrence matrix that ``bench/bench_glove.py`` builds
(``bench/out/runs/glove-en-open``, 4 cooc shards; ``bench_glove.py --build-only``) and
runs the stage's algorithm in this process: per epoch every shard ``k`` trains
:func:`embedpipe.kernels.glove.train_shard` from the same parameters with
``seed=(1, epoch, k)`` (2 threads; the kernel releases the GIL), and
:func:`~embedpipe.kernels.glove.merge_results` folds the results in shard order. These
are the calls the Spark tasks and the driver make (tests/spark/test_glove.py checks that
the stage equals them bit for bit), without Spark's start-up and exchange.

Per epoch: glove.c's running cost per entry and the mean |C| and |W| (is the context side
as far along as the word side?); at the end the cost of the final parameters over all
entries and, unless ``--no-eval``, the four scores of bench_glove.py. Writes the
``glove-merge`` section of ``bench/RESULTS.md`` (``-xmaxN`` appended for x_max != 100),
``bench/glove_loss_merge*.png`` and ``bench/out/glove-merge-*.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np

from bench.bench_glove import RUN
from bench.common import OUT, command_line, machine, update_section
from embedpipe import cooccur as cooc_layout
from embedpipe.errors import TrainingDivergedError
from embedpipe.kernels import glove as kernel
from embedpipe.runs import RunDir

BENCH_DIR = Path(__file__).resolve().parent


def train(run: RunDir, shards: int, merge: str, epochs: int, x_max: float, evaluate: bool) -> dict:
    """``epochs`` epochs of the stage's algorithm with ``shards`` shards and ``merge``."""
    from embedpipe.stages.glove import read_training_shard

    meta = cooc_layout.info(run)
    data = [read_training_shard(run, meta, shards, k) for k in range(shards)]
    entries = sum(d[0].size for d in data)
    params = kernel.init_params(meta.vocab_size, 100, seed=(1, 0))
    scale = kernel.context_scale(merge, shards)
    out: dict = {"shards": shards, "merge": merge, "x_max": x_max, "epochs": epochs,
                 "losses": [], "mean_abs_C": [], "mean_abs_W": [], "diverged_at": None}  # fmt: skip
    load0, cpu0, wall0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        for epoch in range(1, epochs + 1):

            def task(k: int, p: kernel.GloveParams = params, e: int = epoch) -> kernel.ShardResult:
                i, j, x = data[k]
                return kernel.train_shard(
                    i, j, x, p, seed=(1, e, k), x_max=x_max, alpha=0.75, eta=0.05,
                    context_scale=scale,
                )  # fmt: skip

            results = list(pool.map(task, range(shards)))
            loss = sum(float(r.losses[-1]) for r in results) / entries
            try:
                if not math.isfinite(loss):
                    raise TrainingDivergedError("non-finite loss")
                params = kernel.merge_results(params, results, merge)
            except TrainingDivergedError:
                out["diverged_at"] = epoch
                break
            out["losses"].append(loss)
            out["mean_abs_C"].append(float(np.abs(params.C).mean()))
            out["mean_abs_W"].append(float(np.abs(params.W).mean()))
            print(f"S={shards} {merge} epoch {epoch}: loss {loss:.6f}", flush=True)
    out["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    out["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    out["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if out["diverged_at"] is None:
        full = sum(kernel.loss(i, j, x, params, x_max=x_max) for i, j, x in data)
        out["final_full_loss"] = full / entries
        if evaluate:
            from bench.bench_glove import scores
            from embedpipe.stages.vocab import read_vocab
            from embedpipe.vectors import Vectors

            tokens = read_vocab(run).column("token").to_pylist()
            out["scores"] = scores(Vectors(tokens, kernel.output_vectors(params)))
    return out


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def report(command: str, runs: list[dict], epochs: int, x_max: float, png: str) -> str:
    """The Markdown of the section."""
    lines = [
        "## GloVe: merging S shards (issue 6)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Data: the en-open matrix of `glove-xmax100` (V = 64,221, 31.3M entries); dim 100, "
        f"x_max {x_max:g}, alpha 0.75, eta 0.05, {epochs} epochs; the stage's kernel and merge "
        "called in one process (2 threads), no Spark. Loss = glove.c's running cost per entry; "
        "|C|, |W| = mean absolute value of the context and word vectors after the epoch; "
        "full loss = cost of the final parameters over all entries.",
        "",
        "| S | merge | loss per epoch | mean abs C / W, last epoch | full loss | WS353 "
        "| SimLex-999 | analogy | movie reviews | wall s | CPU s | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sc = r.get("scores", {})
        curve = " ".join(f"{v:.5f}" for v in r["losses"])
        if r["diverged_at"]:
            curve += f" **diverged at epoch {r['diverged_at']}**"
        cw = f"{r['mean_abs_C'][-1]:.4f} / {r['mean_abs_W'][-1]:.4f}" if r["mean_abs_C"] else "–"
        full = r.get("final_full_loss")
        lines.append(
            f"| {r['shards']} | {r['merge']} | {curve} | {cw} "
            f"| {'–' if full is None else f'{full:.5f}'} | {_fmt(sc.get('ws353'))} "
            f"| {_fmt(sc.get('simlex999'))} | {_fmt(sc.get('analogy'), True)} "
            f"| {_fmt(sc.get('movie_reviews'))} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} "
            f"| {r['load_average'][0]:.1f} / {r['load_average'][1]:.1f} |"
        )
    lines += [
        "",
        "average: every shard sees ~1/S of a column's entries, so the count-weighted mean of "
        "the shards' context rows moves ~1/S as far as a sequential pass: |C| lags |W|. "
        "sum: adding the shards' changes is right while they are small, but every shard "
        "fully corrects a frequent word's row, so S corrections overshoot S-fold and training "
        "blows up. scaled (the default): shards take S-times context steps, the changes are "
        "averaged over the S shards and the AdaGrad sums add up; first-order equal to one "
        "sequential pass, and a mean (not a sum) where the shards have converged.",
        "",
        f"Loss curves: `bench/{png}`.",
        "",
    ]
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    """Running loss per epoch of every run (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for r in runs:
        ax.plot(range(1, len(r["losses"]) + 1), r["losses"], marker="o", ms=3,
                label=f"S={r['shards']} {r['merge']}")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost per entry (glove.c's)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("GloVe on en-open: merge modes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train every requested (S, merge), write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--x-max", type=float, default=100.0)
    ap.add_argument("--runs", default="1:scaled,4:average,4:sum,4:scaled")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--run", default=str(RUN))
    ap.add_argument("--report-only", action="store_true", help="from bench/out JSON files")
    args = ap.parse_args(argv)
    run = RunDir(args.run)
    if run.record("cooccur") is None:
        print(f"{args.run}: no cooc; run bench/bench_glove.py --build-only", file=sys.stderr)
        return 2
    suffix = "" if args.x_max == 100 else f"-xmax{args.x_max:g}"
    name = f"glove-merge{suffix}"
    png = f"glove_loss_merge{suffix}.png"
    runs = []
    for spec in args.runs.split(","):
        s, merge = spec.split(":")
        path = OUT / f"{name}-S{s}-{merge}-e{args.epochs}.json"
        if args.report_only:
            if path.exists():
                runs.append(json.loads(path.read_text()))
            continue
        r = train(run, int(s), merge, args.epochs, args.x_max, not args.no_eval)
        r["command"] = command_line()
        path.write_text(json.dumps(r, indent=1))
        runs.append(r)
    if not runs:
        return 1
    plot(runs, BENCH_DIR / png)
    md = report(runs[0].get("command", command_line()), runs, args.epochs, args.x_max, png)
    update_section(name, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
