"""vocab + encode throughput against a single-process pure-Python baseline, and exactness.

    python bench/bench_vocab_encode.py                 # en-open (13M tokens) + 200M synthetic
    python bench/bench_vocab_encode.py --quick         # en-open only
    python bench/bench_vocab_encode.py --check-only    # exactness on the whole en-open file

Spark start-up is timed separately. The baseline is the obvious single-process Python
(`str.split`, `collections.Counter`, a dict lookup per token), run in the same
invocation on the same file. ``--check`` verifies on the whole en-open file that every
count equals the Counter's and that the encoded corpus decodes to the token stream
minus OOV tokens. Writes the ``vocab-encode`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, SHARED, PeakRSS, command_line, machine, synth_corpus, update_section


def open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(
        path, encoding="utf-8")


def python_baseline(path: Path, max_tokens: int | None, min_count: int = 5) -> dict:
    """Count then encode with plain Python; returns tokens and seconds of each pass."""
    t0 = time.perf_counter()
    counter: collections.Counter = collections.Counter()
    n = 0
    with open_text(path) as f:
        for line in f:
            toks = line.split()
            counter.update(toks)
            n += len(toks)
            if max_tokens and n >= max_tokens:
                break
    t1 = time.perf_counter()
    kept = sorted(((t, c) for t, c in counter.items() if c >= min_count),
                  key=lambda x: (-x[1], x[0]))
    vocab = {t: i for i, (t, _) in enumerate(kept)}
    m = 0
    with open_text(path) as f:
        for line in f:
            toks = line.split()
            ids = [vocab[t] for t in toks if t in vocab]
            m += len(toks)
            del ids
            if max_tokens and m >= max_tokens:
                break
    t2 = time.perf_counter()
    return {"tokens": n, "vocab_s": t1 - t0, "encode_s": t2 - t1}


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and its live children (JVM, workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def run_embedpipe(path: Path, name: str, partitions: int = 0) -> dict:
    from embedpipe.config import SparkConfig, load_config
    from embedpipe.runs import RunDir
    from embedpipe.spark import build_session
    from embedpipe.stages import encode, vocab

    run_dir = OUT / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(None, [f"input.path={path}", "vocab.tokenizer=whitespace",
                             f"input.partitions={partitions}"])
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        spark = build_session(SparkConfig(master="local[2]", conf={
            "spark.driver.memory": "4g", "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4"}))
        startup = time.perf_counter() - t0
        try:
            run = RunDir(str(run_dir))
            load0, c0 = os.getloadavg()[0], tree_cpu()
            v = vocab.run(spark, cfg, run)
            c1 = tree_cpu()
            e = encode.run(spark, cfg, run)
            c2, load1 = tree_cpu(), os.getloadavg()[0]
        finally:
            spark.stop()
    return {"startup_s": startup, "vocab_s": v.seconds, "encode_s": e.seconds,
            "vocab_cpu": c1 - c0, "encode_cpu": c2 - c1, "load": (load0, load1),
            "reader": run.record("vocab")["inputs"]["reader"],
            "tokens": v.record["counts"]["tokens"], "vocab_size": v.record["counts"]["vocab_size"],
            "peak_gib": peak.gib, "run": run}


def check_exact(path: Path, run) -> str:
    """Counts equal a Counter over the file; the corpus decodes to the kept token stream."""
    import io

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from embedpipe import fsutil

    counter: collections.Counter = collections.Counter()
    with open_text(path) as f:
        for line in f:
            counter.update(line.split())
    vt = pq.read_table(io.BytesIO(fsutil.read_bytes(run.path("vocab", "vocab.parquet"))))
    ours = dict(zip(vt.column("token").to_pylist(), vt.column("count").to_pylist(), strict=True))
    expected = {t: c for t, c in counter.items() if c >= 5}
    assert ours == expected, "vocabulary counts differ from collections.Counter"
    tokens = vt.column("token").to_pylist()
    index = {t: i for i, t in enumerate(tokens)}
    table = ds.dataset(run.path("corpus"), format="parquet").to_table()
    order = np.argsort(table.column("doc").to_numpy(), kind="stable")
    flat = table.column("ids").take(order).combine_chunks().flatten().to_numpy()
    want = []
    with open_text(path) as f:
        for line in f:
            want.extend(index[t] for t in line.split() if t in index)
    assert np.array_equal(flat, np.array(want, dtype=np.int32)), "decoded stream differs"
    return (f"exact: {len(ours):,} vocabulary counts equal collections.Counter; "
            f"{len(want):,} encoded ids equal the token stream minus OOV")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="en-open only")
    ap.add_argument("--synth-tokens", type=int, default=200_000_000)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--baseline-max-tokens", type=int, default=50_000_000,
                    help="cap the pure-Python baseline (it is slow); its rate is reported")
    args = ap.parse_args()
    en_open = SHARED / "corpora" / "en-open.tok.txt.gz"
    if not en_open.exists():
        print(f"{en_open} not found: this benchmark needs ../shared", file=sys.stderr)
        return 1
    rows, notes = [], []
    corpora = [("en-open.tok.txt.gz (13.1M tokens, gzip)", en_open, "en-open")]
    if not args.quick and not args.check_only:
        corpora.append((f"synth {args.synth_tokens / 1e6:.0f}M tokens (plain text)",
                        synth_corpus(args.synth_tokens), "synth"))
    for label, path, name in corpora:
        ours = run_embedpipe(path, name)
        if name == "en-open":
            notes.append(check_exact(path, ours["run"]))
            print(notes[-1])
            if args.check_only:
                break
        base = python_baseline(path, args.baseline_max_tokens)
        both = ours["vocab_s"] + ours["encode_s"]
        base_rate = base["tokens"] / (base["vocab_s"] + base["encode_s"])
        rate = ours["tokens"] / both
        cpu = ours["vocab_cpu"] + ours["encode_cpu"]
        rows.append(
            f"| {label} | {ours['reader']} | {ours['startup_s']:.1f} s "
            f"| {ours['tokens'] / ours['vocab_s'] / 1e6:.2f}M"
            f" | {ours['tokens'] / ours['encode_s'] / 1e6:.2f}M | **{rate / 1e6:.2f}M** "
            f"| {ours['vocab_cpu']:.0f} + {ours['encode_cpu']:.0f} s "
            f"| {ours['tokens'] / (cpu / 2) / 1e6:.2f}M "
            f"| {ours['load'][0]:.1f} / {ours['load'][1]:.1f} "
            f"| {ours['peak_gib']:.2f} GiB | {base_rate / 1e6:.2f}M "
            f"({base['tokens'] / 1e6:.0f}M tokens) | {rate / base_rate:.1f}x |")
        print(rows[-1])
    if args.check_only:
        return 0
    md = [
        "## vocab + encode (issue 3)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}  ",
        "Settings: whitespace tokenizer, min_count 5, local[2], driver memory 4g.",
        "Throughput = input tokens / stage wall time (Spark start-up excluded, shown apart). "
        "CPU = user + system seconds of the whole process tree (driver, JVM, Python workers) "
        "during each stage; CPU-bound rate = tokens / (CPU / 2), what the two cores give "
        "when no other job shares them; load = 1-minute load average before / after. "
        "Peak RSS covers the Python driver, the Spark JVM and its Python workers. "
        "Baseline: single-process Python (`str.split` + `Counter`, then a dict lookup per "
        "token), same file, same invocation (capped at the first tokens shown; its rate is "
        "per token).",
        "",
        "| corpus | reader | Spark start-up | vocab tokens/s | encode tokens/s "
        "| vocab+encode tokens/s | CPU s (vocab + encode) | CPU-bound rate, 2 cores | load "
        "| peak RSS | pure-Python tokens/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[f"Correctness on the whole en-open file: {n}." for n in notes],
    ]
    update_section("vocab-encode", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
