"""Single-thread throughput of the word2vec kernel (embedpipe.kernels.sgns).

Reads the first ``--tokens`` tokens of the pre-tokenized en-open corpus, builds a
vocabulary (min_count, ids = frequency rank, ties by token), encodes the lines as
documents and times one pass of :func:`train_partition` per mode after a warm-up on a
small slice (so numba compilation is not timed). Prints raw words/s (tokens read per
second, subsampled-away tokens included: the unit word2vec.c and gensim report).

    .venv/bin/python bench/bench_sgns_kernel.py --tokens 2000000
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections import Counter
from pathlib import Path

import numpy as np

from embedpipe.kernels import sgns

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "en-open.tok.txt.gz"


def load_corpus(path: Path, max_tokens: int, min_count: int):
    """Return (flat ids int32, doc offsets int64, counts int64) of the first max_tokens tokens."""
    lines = []
    n = 0
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            toks = line.split()
            lines.append(toks)
            n += len(toks)
            if n >= max_tokens:
                break
    freq = Counter(t for toks in lines for t in toks)
    vocab = sorted((t for t, c in freq.items() if c >= min_count), key=lambda t: (-freq[t], t))
    index = {t: i for i, t in enumerate(vocab)}
    counts = np.array([freq[t] for t in vocab], dtype=np.int64)
    flat: list[int] = []
    offsets = [0]
    for toks in lines:
        flat.extend(index[t] for t in toks if t in index)
        offsets.append(len(flat))
    return np.array(flat, dtype=np.int32), np.array(offsets, dtype=np.int64), counts


def main() -> None:
    """Parse arguments, load the corpus, time both modes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--tokens", type=int, default=2_000_000)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negative", type=int, default=5)
    ap.add_argument("--sample", type=float, default=1e-4)
    ap.add_argument("--modes", default="skipgram,cbow")
    ap.add_argument("--no-loss", action="store_true", help="time without loss accumulation")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed passes per mode (from the same init); best is kept",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    ids, offsets, counts = load_corpus(args.corpus, args.tokens, args.min_count)
    print(
        f"corpus: {ids.size:,} in-vocab tokens, {offsets.size - 1:,} docs, "
        f"vocab {counts.size:,} (min_count {args.min_count}), loaded in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    keep = sgns.keep_probabilities(counts, args.sample)
    cdf = sgns.noise_cdf(counts)
    warm = int(np.searchsorted(offsets, 20_000))
    for mode in args.modes.split(","):
        alpha = 0.025 if mode == "skipgram" else 0.05
        syn0, syn1 = sgns.init_params(counts.size, args.dim, seed=1)
        kw = dict(
            mode=mode,
            window=args.window,
            negative=args.negative,
            alpha_start=alpha,
            alpha_end=1e-4,
            compute_loss=not args.no_loss,
        )
        w0, w1 = syn0.copy(), syn1.copy()
        sgns.train_partition(
            ids[: offsets[warm]], offsets[: warm + 1], w0, w1, keep, cdf, seed=0, **kw
        )
        walls, cpus = [], []
        for _ in range(args.repeat):
            s0, s1 = syn0.copy(), syn1.copy()
            t, c = time.perf_counter(), time.thread_time()
            st = sgns.train_partition(ids, offsets, s0, s1, keep, cdf, seed=1, **kw)
            walls.append(time.perf_counter() - t)
            cpus.append(time.thread_time() - c)
        # The machine is shared: the fastest pass is the least disturbed one, and CPU time
        # (this thread only) is less sensitive to other processes than wall time.
        dt, ct = min(walls), min(cpus)
        print(
            f"{mode:8s} dim {args.dim} window {args.window} negative {args.negative} "
            f"sample {args.sample:g}: {st.raw_words:,} raw words, best wall {dt:.2f} s = "
            f"{st.raw_words / dt / 1e6:.3f} M raw words/s, best CPU {ct:.2f} s = "
            f"{st.raw_words / ct / 1e6:.3f} M raw words/s; kept {st.trained_words:,}, "
            f"loss {st.loss:.4f}; wall passes {', '.join(f'{x:.2f}' for x in walls)} s"
        )


if __name__ == "__main__":
    main()
