"""Single-thread speed of the GloVe AdaGrad kernel (entries per second).

    .venv/bin/python bench/bench_glove_kernel.py [--vocab 65536] [--dim 100]
        [--entries 2000000] [--passes 2] [--dist uniform|zipf]

Reference point: Stanford GloVe's README reports 31.3M entries in 32.2 s per
iteration with 2 threads, i.e. ~0.49M entries/s per thread (double precision,
lock-free Hogwild threads over a pre-shuffled file). On a shared machine the CPU
time (``cpu``) is the fairer single-thread figure; wall time includes waiting for
a core.

``uniform`` draws (i, j) uniformly: every row access is a cache miss, the worst
case. ``zipf`` draws both ids with probability ∝ 1 / (rank + 1), like real
co-occurrence data, where frequent rows stay in cache.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embedpipe.kernels import glove


def make_cooc(vocab: int, entries: int, dist: str, seed: int = 0):
    """Random distinct (i, j) entries with positive x, sorted by (i, j) like a cooc shard."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        flat = rng.integers(0, vocab * vocab, size=int(entries * 1.01), dtype=np.int64)
    else:
        p = 1.0 / np.arange(1, vocab + 1)
        p /= p.sum()
        n = int(entries * 1.5)
        flat = rng.choice(vocab, n, p=p).astype(np.int64) * vocab + rng.choice(vocab, n, p=p)
    flat = np.unique(flat)[:entries]  # distinct and sorted, as the cooc stage writes them
    i, j = (flat // vocab).astype(np.int32), (flat % vocab).astype(np.int32)
    x = (1.0 + rng.pareto(1.0, size=flat.size)).astype(np.float32)  # heavy-tailed, > 0
    return i, j, x


def main() -> None:
    """Run the benchmark and print one line per measurement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--entries", type=int, default=2_000_000)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--dist", choices=("uniform", "zipf"), default="uniform")
    a = ap.parse_args()

    i, j, x = make_cooc(a.vocab, a.entries, a.dist)
    n = i.size
    params = glove.init_params(a.vocab, a.dim, seed=0)
    # Compile (or load from numba's cache) outside the timing.
    warm = params.copy()
    glove.adagrad_pass(i[:100], j[:100], x[:100], warm, np.arange(100))

    p = params.copy()
    for k in range(a.passes):
        order = glove.shuffle_order(n, (0, k))
        t0, c0 = time.perf_counter(), time.thread_time()
        cost, _ = glove.adagrad_pass(i, j, x, p, order)
        dt, ct = time.perf_counter() - t0, time.thread_time() - c0
        print(
            f"adagrad_pass  dist={a.dist} V={a.vocab} dim={a.dim} n={n} pass={k}: "
            f"wall {dt:.2f} s = {n / dt / 1e6:.2f}M entries/s, "
            f"cpu {ct:.2f} s = {n / ct / 1e6:.2f}M entries/s, cost/entry {cost / n:.4f}"
        )

    t0, c0 = time.perf_counter(), time.thread_time()
    res = glove.train_shard(i, j, x, params, seed=(0, 0, 0), passes=a.passes)
    dt, ct = time.perf_counter() - t0, time.thread_time() - c0
    print(
        f"train_shard   passes={a.passes} (gather + train + emit {res.context.rows.size} "
        f"context rows): wall {dt:.2f} s, cpu {ct:.2f} s = {a.passes * n / ct / 1e6:.2f}M "
        "entries/s"
    )
    t0, c0 = time.perf_counter(), time.thread_time()
    glove.merge_results(params, [res, res])
    dt, ct = time.perf_counter() - t0, time.thread_time() - c0
    print(f"merge_results 2 results: wall {dt:.2f} s, cpu {ct:.2f} s")


if __name__ == "__main__":
    main()
