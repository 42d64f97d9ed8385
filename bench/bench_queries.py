"""Speed of batched nearest-neighbour queries: 1,000 ``most_similar`` against 400,000 x 300.

    .venv/bin/python bench/bench_queries.py [--words 400000] [--dim 300] [--queries 1000]

Random float32 vectors (seed 0). Reports the one-off time to build the unit-norm
copy separately from the query time (``Vectors.most_similar_batch``: matrix
products over blocks of candidate rows, a running k-best heap per query), and
checks a few answers against ``Vectors.most_similar``. On a shared machine look at
the CPU seconds (all threads; ~2x the wall time on 2 idle cores) too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command_line, machine, update_section
from embedpipe.vectors import Vectors


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 1 if a checked answer differs from the single-query path."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--topn", type=int, default=10)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((args.words, args.dim), dtype=np.float32)
    v = Vectors([f"w{i}" for i in range(args.words)], matrix)
    t = time.perf_counter()
    _ = v.unit
    t_unit = time.perf_counter() - t
    words = [v.index_to_key[i] for i in rng.choice(args.words, args.queries, replace=False)]

    t, c = time.perf_counter(), time.process_time()
    results = v.most_similar_batch(words, topn=args.topn)
    t_query, c_query = time.perf_counter() - t, time.process_time() - c
    print(f"{args.queries} queries against {args.words} x {args.dim}, top {args.topn}")
    print(f"unit-norm copy (once): {t_unit:.2f}s")
    print(
        f"queries: {t_query:.2f}s wall ({1000 * t_query / args.queries:.2f} ms/query), "
        f"{c_query:.2f}s CPU over all threads"
    )
    update_section("queries", "\n".join([
        "## most_similar throughput (issue 4)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}  ",
        f"{args.queries:,} `most_similar_batch` queries (top {args.topn}) against random "
        f"{args.words:,} x {args.dim} float32 vectors: **{t_query:.2f} s wall** "
        f"({1000 * t_query / args.queries:.2f} ms/query, {c_query:.2f} s CPU over all threads); "
        f"the unit-norm copy made once beforehand took {t_unit:.2f} s.",
    ]))
    for w, got in list(zip(words, results, strict=True))[:3]:
        if [x for x, _ in got] != [x for x, _ in v.most_similar(w, topn=args.topn)]:
            print(f"MISMATCH for {w}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
