"""Throughput of the co-occurrence counting kernel on one core (no Spark).

    .venv/bin/python bench/bench_cooccur_kernel.py [--tokens 1000000] [--window 10] [--reps 3]

Reads the first ``--tokens`` tokens of ../shared/corpora/en-open.tok.txt.gz (one
document per line), numbers the words by frequency rank (a Counter over the sample,
ties by token, as the vocab stage does), and counts them through both entry points:
``count_arrow_lists`` (what the Spark stage calls: offsets and values of the ``ids``
column) and ``count_partition`` (a Python list of per-document arrays). Prints one
JSON line per entry point with the best of ``--reps`` runs (wall and CPU time: on a
shared machine CPU time is the steadier of the two).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from embedpipe.kernels import cooccur

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared/corpora/en-open.tok.txt.gz"


def load(path: Path, tokens: int) -> tuple[list[np.ndarray], int, np.ndarray]:
    """The first ``tokens`` tokens (whole lines) as id arrays, the vocab size and counts."""
    lines: list[list[str]] = []
    n = 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            words = line.split()
            lines.append(words)
            n += len(words)
            if n >= tokens:
                break
    counts = collections.Counter(w for line in lines for w in line)
    vocab = sorted(counts, key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(vocab)}
    docs = [np.array([index[w] for w in line], dtype=np.int32) for line in lines]
    return docs, len(vocab), np.array([counts[w] for w in vocab], dtype=np.int64)


def run(label: str, make_blocks, n_tokens: int, reps: int) -> dict:
    best_wall = best_cpu = float("inf")
    entries = blocks = 0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        entries = blocks = 0
        for keys, _values in make_blocks():
            entries += keys.size
            blocks += 1
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {
        "entry_point": label,
        "tokens": n_tokens,
        "seconds_wall": round(best_wall, 3),
        "tokens_per_s_wall": round(n_tokens / best_wall),
        "tokens_per_s_cpu": round(n_tokens / best_cpu),
        "blocks": blocks,
        "entries_emitted": entries,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--tokens", type=float, default=1e6)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--weighting", default="harmonic", choices=cooccur.WEIGHTINGS)
    ap.add_argument("--dynamic-window", action="store_true")
    ap.add_argument("--subsample", type=float, default=0.0)
    ap.add_argument("--memory-mb", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.corpus.exists():
        print(f"corpus {args.corpus} not found; pass --corpus", file=sys.stderr)
        return 2
    docs, V, counts = load(args.corpus, int(args.tokens))
    n = int(sum(d.size for d in docs))
    lists = pa.array(docs, type=pa.list_(pa.int32()))
    opts = {
        "weighting": args.weighting,
        "dynamic_window": args.dynamic_window,
        "subsample": args.subsample,
        "counts": counts,
        "memory_mb": args.memory_mb,
    }
    # Warm up: numba loads its cached machine code on first use.
    for _ in cooccur.count_partition(docs[:100], V, args.window, **opts):
        pass
    common = {"vocab_size": V, "window": args.window, "docs_count": len(docs), **opts}
    common.pop("counts")
    for label, make in (
        ("count_arrow_lists", lambda: cooccur.count_arrow_lists(lists, V, args.window, **opts)),
        ("count_partition", lambda: cooccur.count_partition(docs, V, args.window, **opts)),
    ):
        print(json.dumps({**run(label, make, n, args.reps), **common}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
