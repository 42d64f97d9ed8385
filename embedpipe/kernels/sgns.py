"""word2vec kernels: skip-gram and CBOW with negative sampling, on NumPy arrays.

The maths follows Mikolov et al. (2013) as implemented in word2vec.c and gensim's
``word2vec_inner.pyx``; this module knows nothing of Spark. The word2vec stage
broadcasts the input matrix ``syn0`` and output matrix ``syn1neg``, every partition
calls :func:`train_partition` on its own copy and slice of the encoded corpus, turns
the result into a :class:`RowUpdate` (touched rows only) with :func:`row_update`, and
the driver folds all updates into new matrices with :func:`merge` (the mean of the
partition models, never a sum of models: SPARK-24666).

Everything random in :func:`train_partition` comes from ONE explicitly specified stream
so that a slow reference can replay it draw for draw (the unit tests do):

* state: 48-bit, ``state = (state * 25214903917 + 11) mod 2**48`` (the LCG of
  word2vec.c / gensim / java.util.Random); a draw advances the state and yields the
  32-bit value ``state >> 16``.  The initial state is ``splitmix64(seed) mod 2**48``
  so that neighbouring seeds (partition 0, 1, ...) start far apart in the stream.
* per document, first every token whose keep probability is ``< 1`` takes one draw
  ``u = value / 2**32`` and is kept iff ``u < keep_prob[token]`` (tokens with keep
  probability 1 take no draw);
* then, for every kept position (the centre word) in order: one draw
  ``b = value % window`` (word2vec.c's uniform window shrink; effective radius
  ``window - b``), then
  - skip-gram: for every context position left to right, ``negative`` draws, each a
    noise word ``bisect_right(cdf, value % cdf[-1])``; with ``share_negatives``,
    ``negative`` draws once for the whole window, the noise words of every context;
  - CBOW: ``negative`` draws as above, once for the whole window.
  A noise word equal to the centre word is skipped (its draw is still consumed).

The stream differs from word2vec.c's in small ways that do not change the statistics:
word2vec.c takes the window shrink from the full 64-bit state (``next_random % window``,
whose low bits have short periods for an even ``window``) and the subsampling draw from
its low 16 bits; we use the high 32 bits for both, as gensim does for subsampling.
Noise words come from gensim's cumulative table rather than word2vec.c's 1e8-entry
table (gensim bisects left, we right: they differ only on a boundary value, probability
about V / 2**31 per draw).

Numerics (stated choices):

* Sigmoid: exact ``1 / (1 + exp(-x))`` (float32) inside ``[-6, 6]`` and saturated to
  exactly 0 or 1 outside, the semantics of word2vec.c's 1000-entry table (``MAX_EXP = 6``)
  without its quantisation.  gensim instead *skips* the update outside ±6; word2vec.c
  applies ``(label - 1) * alpha`` / ``label * alpha``; we do what word2vec.c does.
* Skip-gram direction as in word2vec.c and gensim: the *context* word's input vector
  predicts the *centre* word (``syn0[context] · syn1neg[centre]``).
* CBOW uses the mean of the context input vectors (``cbow_mean=1``) and adds the full
  error vector to every context row, as word2vec.c and gensim do.
* Learning rate: for a centre word whose document-order position in the partition is
  ``p`` raw words (subsampled-away words included, as word2vec.c and gensim count),
  ``alpha = max(alpha_end, alpha_start - (alpha_start - alpha_end) * progress)`` with
  ``progress = (words_done_before + words_scale * p) / total_words``.
* Loss: mean over all applied (label, target) terms of ``-log sigmoid(±x)``, computed
  exactly (``softplus``, float32) even where the sigmoid saturates; NaN here means the
  parameters diverged and :func:`train_partition` raises TrainingDivergedError. With
  ``loss_every = k`` only the terms of every k-th example count (the stage's estimate).
* Shared negatives (``share_negatives``, skip-gram only; Ji et al. 2016, "Parallelizing
  Word2Vec in Shared and Distributed Memory"): a centre word's noise words are drawn once
  and serve each of its context words in turn (each context still sees the rows as the
  previous context left them). word2vec.c draws fresh ones per (centre, context) pair, so
  a centre word with ~6 contexts touches ~30 random ``syn1neg`` rows; shared, it touches
  5, and training is memory-bound on those rows. On en-open (bench/RESULTS.md): S = 2,
  5 epochs in 35.6 s instead of 51.8 s; over 3 seeds at S = 1 the same WS353 and
  SimLex-999, 0.45 analogy points lower. Off by default.
* Update counts: a ``syn0`` row counts one per gradient step applied to it (skip-gram:
  per (centre, context) pair; CBOW: per context occurrence per centre word); a
  ``syn1neg`` row counts one per applied target term.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from embedpipe.errors import ConfigError, InputError, TrainingDivergedError

__all__ = [
    "MAX_EXP",
    "NOISE_DOMAIN",
    "RowUpdate",
    "TrainStats",
    "derive_seed",
    "init_params",
    "keep_probabilities",
    "merge",
    "noise_cdf",
    "procrustes_align",
    "procrustes_rotation",
    "row_update",
    "train_partition",
]

MAX_EXP = 6.0
"""|x| beyond which the sigmoid is taken as exactly 0 or 1 (word2vec.c's table range)."""

NOISE_DOMAIN = 2**31 - 1
"""Integer range of :func:`noise_cdf` (gensim's ``cum_table`` domain)."""

_MASK48 = (1 << 48) - 1
_MASK64 = (1 << 64) - 1

# Reassociation lets LLVM vectorise the dot products and axpys (SIMD sums in a different
# order than a scalar loop, hence the float32-rounding tolerance in the tests). No
# 'nnan'/'ninf': the divergence check relies on NaN propagating; no 'afn': exp and log1p
# stay accurate.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# --------------------------------------------------------------------------- tables


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each occurrence of a word under frequent-word subsampling.

    gensim's form of word2vec.c's formula: with ``t = sample * counts.sum()``,
    ``keep = (sqrt(count / t) + 1) * t / count``, capped at 1. ``sample = 0`` disables
    subsampling (all ones).

    Args:
        counts: corpus count of every vocabulary id (ids are frequency ranks).
        sample: the ``word2vec.sample`` threshold, in ``[0, 1)``.

    Returns:
        float32 array of the same length as ``counts``.
    """
    if not 0.0 <= sample < 1.0:
        raise ConfigError(
            f"word2vec.sample = {sample!r} is out of range: use a value in [0, 1), "
            "e.g. 1e-3 (0 disables subsampling)"
        )
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise InputError("word counts must be a 1-D array of non-negative numbers: check vocab")
    if sample == 0.0 or counts.size == 0:
        return np.ones(counts.shape, dtype=np.float32)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(counts / threshold) + 1.0) * (threshold / counts)
    # A zero count (never drawn anyway) and every rare word keep probability 1.
    keep = np.where(counts > 0, np.minimum(keep, 1.0), 1.0)
    return keep.astype(np.float32)


def noise_cdf(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Cumulative integer table for drawing noise words from ``count ** power``.

    Entry ``i`` is ``round(sum_{j <= i} count_j**power / Z * NOISE_DOMAIN)`` (gensim's
    ``cum_table``); word ``i`` is drawn for an integer ``r`` in
    ``[cdf[i-1], cdf[i])``, i.e. ``np.searchsorted(cdf, r, side="right")`` with ``r``
    uniform in ``[0, cdf[-1])``. Words whose share rounds to zero are never drawn.

    Returns:
        int64 array of the same length as ``counts``; ``cdf[-1] == NOISE_DOMAIN``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or counts.min() < 0 or counts.sum() <= 0:
        raise InputError(
            "noise distribution needs a non-empty 1-D array of non-negative counts with a "
            "positive sum: check the vocab stage output"
        )
    weights = counts**power
    cumulative = np.cumsum(weights)
    cdf = np.rint(cumulative / cumulative[-1] * NOISE_DOMAIN).astype(np.int64)
    cdf[-1] = NOISE_DOMAIN  # guard against the last cumsum rounding a hair below Z
    return cdf


def init_params(vocab_size: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial ``(syn0, syn1neg)`` as word2vec.c: syn0 uniform in ``[-0.5, 0.5) / dim``, syn1neg 0.

    Both float32 and C-contiguous, shape ``(vocab_size, dim)``.
    """
    if vocab_size < 1 or dim < 1:
        raise ConfigError(
            f"word2vec needs vocab_size >= 1 and word2vec.dim >= 1 (got {vocab_size}, {dim})"
        )
    rng = np.random.default_rng(seed)
    syn0 = (rng.random((vocab_size, dim), dtype=np.float32) - np.float32(0.5)) / np.float32(dim)
    syn1neg = np.zeros((vocab_size, dim), dtype=np.float32)
    return np.ascontiguousarray(syn0), syn1neg


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for one task, e.g. ``derive_seed(seed, epoch, round, partition)``.

    Depends only on the numbers given (not on Spark's scheduling or retries). NumPy's
    ``SeedSequence`` mixes them, so neighbouring keys give unrelated seeds.
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ConfigError(f"word2vec.seed = {seed} must be a non-negative integer")
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def _initial_state(seed: int) -> int:
    """splitmix64(seed) reduced to the LCG's 48 bits (see the module docstring)."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & _MASK48


def _noise_guide(cdf: np.ndarray) -> tuple[np.ndarray, int]:
    """Bucket index over ``cdf`` so that a noise draw bisects only a few entries.

    Values ``v`` in ``[0, cdf[-1])`` fall into bucket ``v >> shift`` (about one bucket per
    vocabulary word); ``guide[b] = bisect_right(cdf, b << shift)`` and the answer
    ``bisect_right(cdf, v)`` lies in ``[guide[b], guide[b + 1]]``, so searching that range
    gives exactly the same word as a full binary search.
    """
    total = int(cdf[-1])
    shift = max(0, total.bit_length() - max(1, int(cdf.size).bit_length()))
    n_buckets = ((total - 1) >> shift) + 1
    edges = np.arange(n_buckets + 1, dtype=np.int64) << shift
    guide = np.minimum(np.searchsorted(cdf, edges, side="right"), cdf.size - 1)
    # int32 halves the table's cache footprint (256 KiB at 64k words).
    return guide.astype(np.int32), shift


# --------------------------------------------------------------------------- numba core


_PREFETCH_LINES = 8
"""Cache lines :func:`_prefetch_row` touches from a row's start (plus its last byte): a
whole row up to ``dim = 128`` float32, the first 512 bytes of a longer one."""


@intrinsic
def _prefetch_row(typingctx, matrix, row):
    """Ask the CPU to start loading row ``row`` of a C-contiguous 2-D matrix into cache.

    A hint (``llvm.prefetch``, read), never a fault: it changes no value. Noise words
    are random rows of ``syn1neg`` (25 MiB at 64k x 100, beyond L2), and the kernel
    otherwise waits on each row's cache misses one after the other; drawing an example's
    noise words ahead and prefetching their rows overlaps those misses (skip-gram 1.5x
    faster on en-open, bench/bench_sgns_kernel.py).

    The rows go to L2, not L1 (locality 2, x86 ``prefetcht1``): a skip-gram centre word
    prefetches ~30 rows, 13 KiB, which in L1 (32 KiB) would evict the rows and vectors
    the current centre word is training on. Measured with two kernels running side by
    side as in an S = 2 stage: about 10% faster than locality 3 (L1).
    """
    sig = types.void(matrix, row)

    def codegen(context, builder, signature, args):
        arr_t, row_t = signature.args
        arr = context.make_array(arr_t)(context, builder, args[0])
        dim = builder.extract_value(arr.shape, 1)
        index = context.cast(builder, args[1], row_t, types.intp)
        i8p = ir.IntType(8).as_pointer()
        start = builder.bitcast(builder.gep(arr.data, [builder.mul(index, dim)]), i8p)
        nbytes = builder.mul(dim, ir.Constant(dim.type, arr_t.dtype.bitwidth // 8))
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )  # fmt: skip
        hint = [ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)]
        for k in range(_PREFETCH_LINES):
            off = ir.Constant(dim.type, 64 * k)
            with builder.if_then(builder.icmp_signed("<", off, nbytes), likely=True):
                builder.call(fn, [builder.gep(start, [off]), *hint])
        last = builder.sub(nbytes, ir.Constant(dim.type, 1))
        builder.call(fn, [builder.gep(start, [last]), *hint])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _advance(state):
    """One step of the 48-bit LCG (uint64 arithmetic wraps; the mask keeps 48 bits)."""
    return (state * np.uint64(25214903917) + np.uint64(11)) & np.uint64(0xFFFFFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _draw_noise(state, noise_total, cdf, guide, guide_shift):
    """One noise-word draw: advance the stream, then ``bisect_right(cdf, value)`` for
    ``value = draw % noise_total``, searched only within the value's guide bucket
    (:func:`_noise_guide`). Returns ``(state, word)``."""
    state = _advance(state)
    draw = state >> np.uint64(16)
    if noise_total == np.uint64(NOISE_DOMAIN):
        # The table noise_cdf() always builds. A constant divisor compiles to a multiply
        # and shifts instead of a 64-bit division (tens of cycles; a skip-gram centre
        # word draws ~30 noise words). Same value either way.
        value = np.int64(draw % np.uint64(NOISE_DOMAIN))
    else:
        value = np.int64(draw % noise_total)
    bucket = value >> guide_shift
    lo = guide[bucket]
    hi = guide[bucket + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] > value:
            hi = mid
        else:
            lo = mid + 1
    return state, lo


@njit(cache=True, nogil=True, inline="always")
def _draw_centre(
    state, s, n, sent, window, negative, per_pair, syn1, tgt, slot,
    noise_total, cdf, guide, guide_shift,
):  # fmt: skip
    """The draw half of a pipeline step, for the kept position ``s`` of ``n``: the window
    shrink, then the noise words (``negative`` per context word, or once if not
    ``per_pair``) into ``tgt[slot]``, prefetching the centre's and the noise words'
    ``syn1`` rows. Returns ``(state, lo, hi)``, the window ``[lo, hi)`` around ``s``;
    nothing is drawn after the shrink when it holds no context word. Shared by the word
    and subword kernels, which prefetch their own input rows."""
    state = _advance(state)
    reach = window - np.int64((state >> np.uint64(16)) % np.uint64(window))
    lo = max(0, s - reach)
    hi = min(n, s + reach + 1)
    nc = hi - lo - 1
    if nc >= 1:
        _prefetch_row(syn1, sent[s])
        n_draw = nc * negative if per_pair else negative
        for q in range(n_draw):
            state, noise = _draw_noise(state, noise_total, cdf, guide, guide_shift)
            tgt[slot, q] = noise
            _prefetch_row(syn1, noise)
    return state, lo, hi


@functools.cache
def _train_core(dim: int) -> Callable[..., tuple[int, int, int, float, int]]:
    """The training loop compiled for rows of ``dim`` floats, one numba function per dim
    (each cached on disk, like every kernel here).

    Why per dim: with the row length a compile-time constant LLVM lays every row loop
    out as whole vectors plus a fixed tail, instead of a vector loop, a narrower
    remainder loop and a scalar one per row; about 10% faster at dim 100 (two kernels
    side by side, as in an S = 2 stage). A closure, not ``numba.literally``: a literal
    argument sends every call through the dispatcher's slow path (~0.3 s per call).
    """

    def core(
        ids,
        offsets,
        syn0,
        syn1,
        keep,
        cdf,
        guide,
        guide_shift,
        cbow,
        share,
        window,
        negative,
        alpha_start,
        alpha_end,
        words_done_before,
        words_scale,
        total_words,
        state,
        counts0,
        counts1,
        loss_every,
    ):
        """Train one partition in place; returns (raw, trained, examples, loss_sum, loss_terms).

        The loss is accumulated for every ``loss_every``-th example (0 = never). ``share``
        (skip-gram): one set of noise words per centre word, as CBOW always has.

        ``guide`` (see :func:`_noise_guide`) narrows each noise-word bisection to a few
        entries of ``cdf``: a plain 16-step binary search over 64k words mispredicts most
        of its branches and costs about as much as a 100-dim dot product.

        One loop serves both modes: an *example* is a hidden vector ``h`` (skip-gram: a copy
        of one context row; CBOW: the mean of the window's context rows) trained against the
        centre word and ``negative`` noise words, whose input-side gradient ``neu1e`` is then
        added to the example's input rows. Everything is indexed 2-D and inline: passing
        arrays to a helper or taking row views makes numba emit atomic reference-count
        updates in the innermost loop, which cost about as much as a 100-dim dot product.

        Memory latency, not arithmetic, bounded the straightforward loop: each noise word is a
        random row of ``syn1neg`` (25 MiB at 64k x 100). None of the draws depends on the
        arithmetic, so a centre word's window and noise words are drawn one centre word
        ahead, in the stream's order, and their rows prefetched (:func:`_prefetch_row`)
        while the previous centre word trains. Within an example the dot products of
        distinct targets are independent and computed first. Both change no value: the
        updates are the ones the sequential loop makes (tested against the reference).
        """
        n_docs = offsets.shape[0] - 1
        max_len = 0
        for d in range(n_docs):
            max_len = max(max_len, offsets[d + 1] - offsets[d])
        sent = np.empty(max_len, dtype=np.int64)
        pos = np.empty(max_len, dtype=np.int64)
        tgt = np.empty((2, 2 * window * negative + negative + 1), dtype=np.int64)
        lo_s = np.zeros(2, dtype=np.int64)
        hi_s = np.zeros(2, dtype=np.int64)
        h = np.zeros(dim, dtype=np.float32)
        neu1e = np.zeros(dim, dtype=np.float32)
        targets = np.empty(negative + 1, dtype=np.int64)
        dots = np.empty(negative + 1, dtype=np.float32)
        noise_total = np.uint64(cdf[cdf.shape[0] - 1])
        u_scale = 1.0 / 4294967296.0  # 2**-32: a 32-bit draw to [0, 1)
        slope = (alpha_start - alpha_end) / total_words
        raw = 0
        trained = 0
        examples = 0
        loss_sum = 0.0
        loss_terms = 0
        countdown = 1
        # Noise words drawn per example (word2vec.c's skip-gram) or once per centre word.
        per_pair = not (cbow or share)
        for d in range(n_docs):
            start = offsets[d]
            end = offsets[d + 1]
            # Subsample the whole document first (the stream order the reference replays).
            n = 0
            for t in range(start, end):
                w = ids[t]
                p_keep = keep[w]
                if p_keep < 1.0:
                    state = _advance(state)
                    if np.float64(state >> np.uint64(16)) * u_scale >= p_keep:
                        continue
                sent[n] = w
                pos[n] = raw + (t - start)
                n += 1
            raw += end - start
            trained += n
            # Software pipeline: step s draws centre s's window and noise words (the stream
            # order is unchanged: the arithmetic consumes no draws) and prefetches their rows,
            # then trains centre s - 1, whose rows were prefetched one step earlier.
            for s in range(n + 1):
                if s < n:
                    bsl = s & 1
                    state, lo_n, hi_n = _draw_centre(
                        state, s, n, sent, window, negative, per_pair, syn1, tgt, bsl,
                        noise_total, cdf, guide, guide_shift,
                    )  # fmt: skip
                    lo_s[bsl] = lo_n
                    hi_s[bsl] = hi_n
                    if hi_n - lo_n > 1:
                        for j in range(lo_n, hi_n):
                            _prefetch_row(syn0, sent[j])
                if s == 0:
                    continue
                i = s - 1
                bcur = i & 1
                lo = lo_s[bcur]
                hi = hi_s[bcur]
                n_ctx = hi - lo - 1
                if n_ctx < 1:
                    continue  # a one-word document after subsampling: no pair to train
                alpha = alpha_start - slope * (words_done_before + words_scale * pos[i])
                alpha32 = np.float32(max(alpha, alpha_end))
                word = sent[i]
                n_examples = 1 if cbow else n_ctx
                for e in range(n_examples):
                    # Examples 0, k, 2k, ... (a countdown: cheaper than a modulo per example).
                    with_loss = False
                    if loss_every > 0:
                        countdown -= 1
                        if countdown == 0:
                            with_loss = True
                            countdown = loss_every
                    # ---- hidden vector of this example
                    if cbow:
                        for k in range(dim):
                            h[k] = 0.0
                        for j in range(lo, hi):
                            if j != i:
                                c = sent[j]
                                for k in range(dim):
                                    h[k] += syn0[c, k]
                        inv = np.float32(1.0) / np.float32(n_ctx)
                        for k in range(dim):
                            h[k] *= inv
                        ctx = -1
                    else:
                        j = lo + e
                        if j >= i:
                            j += 1  # skip the centre position
                        ctx = sent[j]
                        for k in range(dim):
                            h[k] = syn0[ctx, k]
                    for k in range(dim):
                        neu1e[k] = 0.0
                    # ---- targets: the centre word (label 1), then the noise words (label 0)
                    n_t = 1
                    targets[0] = word
                    for dn in range(negative):
                        t = tgt[bcur, (e * negative if per_pair else 0) + dn]
                        if t != word:
                            targets[n_t] = t
                            n_t += 1
                    distinct = True
                    for a in range(2, n_t):
                        for b in range(1, a):
                            if targets[a] == targets[b]:
                                distinct = False
                    if distinct:
                        # No target's update can change another's dot product (distinct rows,
                        # h fixed), so all dot products go first: independent chains the CPU
                        # overlaps, instead of waiting on each dot -> exp -> update in turn.
                        for q in range(n_t):
                            target = targets[q]
                            x = np.float32(0.0)
                            for k in range(dim):
                                x += h[k] * syn1[target, k]
                            dots[q] = x
                    for q in range(n_t):
                        target = targets[q]
                        label = np.float32(1.0) if q == 0 else np.float32(0.0)
                        if distinct:
                            x = dots[q]
                        else:  # a noise word drawn twice sees its first update, as word2vec.c
                            x = np.float32(0.0)
                            for k in range(dim):
                                x += h[k] * syn1[target, k]
                        # word2vec.c's sigmoid: saturated beyond ±MAX_EXP, exact inside.
                        # One exp serves both the sigmoid and the loss: ex = exp(-|x|).
                        ax = abs(x)
                        ex = math.exp(-ax)
                        if ax > MAX_EXP:
                            f = np.float32(1.0) if x > 0 else np.float32(0.0)
                        elif x >= 0:
                            f = np.float32(1.0) / (np.float32(1.0) + ex)
                        else:
                            f = ex / (np.float32(1.0) + ex)
                        if with_loss:
                            # -log sigmoid(z) = log1p(exp(-|z|)) + max(-z, 0), z = x for the
                            # centre word and -x for a noise word; exact even when saturated.
                            z = x if q == 0 else -x
                            loss_sum += math.log1p(ex) + max(-z, np.float32(0.0))
                            loss_terms += 1
                        g = (label - f) * alpha32
                        # Fused: the input gradient uses the output row *before* its update,
                        # as word2vec.c's two consecutive loops do.
                        for k in range(dim):
                            out_k = syn1[target, k]
                            neu1e[k] += g * out_k
                            syn1[target, k] = out_k + g * h[k]
                        counts1[target] += 1
                    examples += 1
                    # ---- input-side update of every row that formed h
                    if cbow:
                        for j in range(lo, hi):
                            if j != i:
                                c = sent[j]
                                for k in range(dim):
                                    syn0[c, k] += neu1e[k]
                                counts0[c] += 1
                    else:
                        for k in range(dim):
                            syn0[ctx, k] += neu1e[k]
                        counts0[ctx] += 1
        return raw, trained, examples, loss_sum, loss_terms

    return njit(cache=True, nogil=True, fastmath=_FASTMATH)(core)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class TrainStats:
    """What one :func:`train_partition` call did.

    Attributes:
        raw_words: tokens read (before subsampling); what alpha decays over.
        trained_words: tokens kept by subsampling (centre-word candidates).
        examples: skip-gram (centre, context) pairs or CBOW windows trained.
        loss_sum: sum of ``-log sigmoid`` over every applied target term.
        loss_terms: number of those terms (0 when ``compute_loss`` was off).
        syn0_counts: int64 per-row update counts of the input matrix.
        syn1_counts: int64 per-row update counts of the output matrix.
    """

    raw_words: int
    trained_words: int
    examples: int
    loss_sum: float
    loss_terms: int
    syn0_counts: np.ndarray
    syn1_counts: np.ndarray

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per target term (NaN if none was computed)."""
        return self.loss_sum / self.loss_terms if self.loss_terms else float("nan")


def _require_matrix(name: str, a: np.ndarray) -> None:
    if not (
        isinstance(a, np.ndarray)
        and a.dtype == np.float32
        and a.ndim == 2
        and a.flags.c_contiguous
        and a.flags.writeable
    ):
        raise InputError(
            f"{name} must be a writeable C-contiguous float32 2-D array (a private copy of "
            "the broadcast matrix: np.array(m, dtype=np.float32, copy=True))"
        )


def train_partition(
    ids: np.ndarray,
    doc_offsets: np.ndarray,
    syn0: np.ndarray,
    syn1neg: np.ndarray,
    keep_prob: np.ndarray,
    cdf: np.ndarray,
    *,
    mode: Literal["skipgram", "cbow"] = "skipgram",
    window: int = 5,
    negative: int = 5,
    alpha_start: float = 0.025,
    alpha_end: float = 0.0001,
    words_done_before: int = 0,
    total_words: int | None = None,
    words_scale: float = 1.0,
    seed: int = 0,
    compute_loss: bool = True,
    loss_every: int = 1,
    share_negatives: bool = False,
) -> TrainStats:
    """Train skip-gram or CBOW with negative sampling on one corpus slice, in place.

    Args:
        ids: flat int32 token ids (Arrow ``ListArray.values``); ids index rows of
            ``syn0``/``syn1neg``.
        doc_offsets: int32 or int64 document boundaries, length ``n_docs + 1``, absolute
            positions in ``ids`` (Arrow ``ListArray.offsets``, which need not start at 0
            for a sliced array); document ``d`` is ``ids[off[d]:off[d+1]]``. Context
            windows never cross a document boundary; tokens outside the documents are
            ignored.
        syn0, syn1neg: the task's private float32 copies; updated in place.
        keep_prob: :func:`keep_probabilities` of the vocabulary.
        cdf: :func:`noise_cdf` of the vocabulary.
        mode: ``"skipgram"`` or ``"cbow"``.
        window: maximum context radius (shrunk uniformly per centre word).
        negative: noise words per positive term.
        alpha_start, alpha_end: the global linear learning-rate schedule endpoints
            (``word2vec.alpha``, ``word2vec.min_alpha``).
        words_done_before: global raw words processed before this slice.
        total_words: global raw words of the whole training (tokens × epochs); defaults
            to this slice's token count (one-shot, single-partition training).
        words_scale: global raw words that one local raw word stands for. Partitions of a
            round train concurrently, so the stage passes (round's raw words over all
            partitions) / (this partition's raw words) to put every partition on the same
            global schedule; 1.0 for sequential training.
        seed: seeds the stream described in the module docstring (use
            ``derive_seed(word2vec.seed, epoch, round, partition)``).
        compute_loss: also accumulate the exact loss (one log1p per term, ~15% slower).
        loss_every: with ``compute_loss``, accumulate the loss of every ``loss_every``-th
            example only (examples ``0, k, 2k, ...`` of this call): an unbiased estimate of
            the mean loss at ``1/k`` of the cost.
        share_negatives: skip-gram: draw a centre word's noise words once for its whole
            window instead of per context word (module docstring; ``word2vec.
            share_negatives``). No effect on CBOW, which always draws once per window.

    Returns:
        :class:`TrainStats` with the per-row update counts needed by :func:`row_update`.
    """
    _require_matrix("syn0", syn0)
    _require_matrix("syn1neg", syn1neg)
    if syn0.shape != syn1neg.shape:
        raise InputError(f"syn0 {syn0.shape} and syn1neg {syn1neg.shape} must have equal shapes")
    if mode not in ("skipgram", "cbow"):
        raise ConfigError(f"word2vec.mode = {mode!r} is unknown: use 'skipgram' or 'cbow'")
    if window < 1:
        raise ConfigError(f"word2vec.window = {window} must be >= 1")
    if negative < 1:
        raise ConfigError(f"word2vec.negative = {negative} must be >= 1 (negative sampling only)")
    if not (alpha_start > 0 and 0 <= alpha_end <= alpha_start):
        raise ConfigError(
            f"word2vec.alpha = {alpha_start} and word2vec.min_alpha = {alpha_end} need "
            "0 <= min_alpha <= alpha and alpha > 0"
        )
    vocab_size = syn0.shape[0]
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
    keep = np.ascontiguousarray(keep_prob, dtype=np.float32)
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    if keep.shape != (vocab_size,) or cdf.shape != (vocab_size,):
        raise InputError(
            f"keep_prob {keep.shape} and cdf {cdf.shape} must have one entry per syn0 row "
            f"({vocab_size}): build them from the same vocab"
        )
    if (
        offsets.ndim != 1
        or offsets.size < 1
        or offsets[0] < 0
        or offsets[-1] > ids.size
        or np.any(np.diff(offsets) < 0)
    ):
        raise InputError(
            "doc_offsets must be non-decreasing positions in [0, len(ids)] (the Arrow list "
            "offsets that go with ids)"
        )
    ids_used = ids[offsets[0] : offsets[-1]]
    if ids_used.size and (ids_used.min() < 0 or ids_used.max() >= vocab_size):
        raise InputError(
            f"token ids must lie in [0, {vocab_size}): the corpus was encoded with another vocab"
        )
    if loss_every < 1:
        raise ConfigError(f"loss_every = {loss_every} must be >= 1")
    if total_words is None:
        total_words = max(int(offsets[-1] - offsets[0]), 1)
    if total_words < 1:
        raise ConfigError(f"total_words = {total_words} must be >= 1")
    if cdf[-1] < 1 or np.any(np.diff(cdf) < 0):
        raise InputError("cdf must be non-decreasing with a positive last entry: use noise_cdf()")
    guide, guide_shift = _noise_guide(cdf)
    counts0 = np.zeros(vocab_size, dtype=np.int64)
    counts1 = np.zeros(vocab_size, dtype=np.int64)
    raw, trained, examples, loss_sum, loss_terms = _train_core(int(syn0.shape[1]))(
        ids,
        offsets,
        syn0,
        syn1neg,
        keep,
        cdf,
        guide,
        guide_shift,
        mode == "cbow",
        bool(share_negatives),
        int(window),
        int(negative),
        float(alpha_start),
        float(alpha_end),
        float(words_done_before),
        float(words_scale),
        float(total_words),
        np.uint64(_initial_state(seed)),
        counts0,
        counts1,
        int(loss_every) if compute_loss else 0,
    )
    if compute_loss and not math.isfinite(loss_sum):
        raise TrainingDivergedError(
            f"word2vec training diverged (loss {loss_sum}): lower word2vec.alpha "
            f"(now {alpha_start})"
        )
    return TrainStats(
        raw_words=int(raw),
        trained_words=int(trained),
        examples=int(examples),
        loss_sum=float(loss_sum),
        loss_terms=int(loss_terms),
        syn0_counts=counts0,
        syn1_counts=counts1,
    )


@dataclass(frozen=True)
class RowUpdate:
    """The touched rows of one partition: what a task ships back to the driver.

    ``*_rows`` are int32 row ids (ascending), ``*_vectors`` the float32 rows after
    training, ``*_counts`` the int64 update counts (all > 0).
    """

    syn0_rows: np.ndarray
    syn0_vectors: np.ndarray
    syn0_counts: np.ndarray
    syn1_rows: np.ndarray
    syn1_vectors: np.ndarray
    syn1_counts: np.ndarray


def row_update(syn0: np.ndarray, syn1neg: np.ndarray, stats: TrainStats) -> RowUpdate:
    """Extract the rows a partition touched (count > 0) with their update counts."""
    r0 = np.flatnonzero(stats.syn0_counts).astype(np.int32)
    r1 = np.flatnonzero(stats.syn1_counts).astype(np.int32)
    return RowUpdate(
        syn0_rows=r0,
        syn0_vectors=syn0[r0],
        syn0_counts=stats.syn0_counts[r0],
        syn1_rows=r1,
        syn1_vectors=syn1neg[r1],
        syn1_counts=stats.syn1_counts[r1],
    )


@njit(cache=True, nogil=True)
def _accumulate_rows(acc, k, rows, vecs):
    """``acc[rows] += vecs`` and ``k[rows] += 1`` (rows distinct) without temporaries."""
    dim = acc.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(dim):
            acc[r, j] += vecs[i, j]
        k[r] += 1


@njit(cache=True, nogil=True)
def _finish_mean(base, acc, k, partitions, out):
    """``out[r] = (acc[r] + (S - k[r]) * base[r]) / S`` for every row some partition touched."""
    dim = base.shape[1]
    for r in range(base.shape[0]):
        if k[r] == 0:
            continue  # untouched by every partition: keeps base exactly
        rest = np.float64(partitions - k[r])
        for j in range(dim):
            out[r, j] = np.float32((acc[r, j] + rest * base[r, j]) / partitions)


def merge(
    base_syn0: np.ndarray,
    base_syn1: np.ndarray,
    updates: Iterable[RowUpdate],
    partitions: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Average of the ``partitions`` partition models of one round (model averaging).

    Every partition trained a private copy of the same broadcast ``base``; a partition
    that did not touch a row still holds ``base`` there. So per row
    ``new[r] = (sum_{p touched r} v_p[r] + (S - k_r) * base[r]) / S`` with ``k_r`` the
    number of partitions that touched ``r`` (``base + mean of the S deltas``), and
    untouched rows keep ``base`` exactly. With ``S = 1`` the result is the partition's
    model bit for bit.

    Why the plain mean and not a count-weighted one: the stage trains every partition
    at ``S`` times the learning rate, so in the linear regime (a row updated a few times
    per round) partition ``p`` moves a row ``S`` times as far as its share of a
    sequential pass would, and the mean of the S deltas equals the sequential pass's
    sum; a row seen by one partition only must then be divided by ``S``, which a
    count-weighted mean would not do. Rows that settle within a round (frequent words)
    land on the mean of the partitions' equilibria, where a sum of deltas would
    overshoot S-fold and diverge. Never a sum of models (SPARK-24666).

    ``updates`` is consumed one at a time, so the driver can stream task results (e.g.
    ``toLocalIterator``); accumulation is in float64. Returns new float32 arrays; the
    bases are not modified.

    Raises:
        InputError: more updates than ``partitions``, or an update listing a row twice.
        TrainingDivergedError: if a merged row is not finite.
    """
    if partitions < 1:
        raise InputError(f"merge needs partitions >= 1, got {partitions}")
    bases = (
        np.ascontiguousarray(base_syn0, dtype=np.float32),
        np.ascontiguousarray(base_syn1, dtype=np.float32),
    )
    accs = [np.zeros(b.shape, dtype=np.float64) for b in bases]
    ks = [np.zeros(b.shape[0], dtype=np.int64) for b in bases]
    for seen, u in enumerate(updates, start=1):
        if seen > partitions:
            raise InputError(f"merge got more than partitions = {partitions} updates")
        for acc, k, rows, vecs in (
            (accs[0], ks[0], u.syn0_rows, u.syn0_vectors),
            (accs[1], ks[1], u.syn1_rows, u.syn1_vectors),
        ):
            rows = np.asarray(rows)
            # row_update() lists rows ascending; that also rules out duplicates cheaply.
            if rows.size and (
                np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= acc.shape[0]
            ):
                raise InputError(
                    "a RowUpdate must list distinct rows in ascending order within the "
                    "matrix: build it with row_update()"
                )
            _accumulate_rows(acc, k, rows, np.ascontiguousarray(vecs, dtype=np.float32))
    out = []
    for base, acc, k in zip(bases, accs, ks, strict=True):
        new = base.copy()
        _finish_mean(base, acc, k, partitions, new)
        if not np.all(np.isfinite(new)):
            raise TrainingDivergedError(
                "word2vec produced NaN/inf vectors: lower word2vec.alpha or use more "
                "word2vec.rounds_per_epoch"
            )
        out.append(new)
    return out[0], out[1]


def procrustes_rotation(reference: np.ndarray, other: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Orthogonal ``R`` minimising ``‖other[rows] R - reference[rows]‖_F`` (float64, dim × dim).

    ``R = U Vᵀ`` from the SVD ``U S Vᵀ = other[rows]ᵀ reference[rows]`` (Schönemann 1966).
    Rotating both ``syn0`` and ``syn1neg`` of a shard by the same R keeps every
    ``syn0 · syn1neg`` score, i.e. the shard's model, unchanged.
    """
    rows = np.asarray(rows)
    if reference.ndim != 2 or other.ndim != 2 or reference.shape[1] != other.shape[1]:
        raise InputError(
            f"cannot align vectors of shape {other.shape} to shape {reference.shape}: "
            "both must be 2-D with the same dim"
        )
    if rows.size == 0:
        raise InputError("Procrustes alignment needs at least one shared row to fit the rotation")
    m = other[rows].astype(np.float64).T @ reference[rows].astype(np.float64)
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def procrustes_align(reference: np.ndarray, other: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rotate all of ``other`` onto ``reference`` by the Procrustes fit on ``rows``.

    Returns ``other @ procrustes_rotation(reference, other, rows)`` in ``other``'s dtype.
    """
    rotation = procrustes_rotation(reference, other, rows)
    return (other.astype(np.float64) @ rotation).astype(other.dtype, copy=False)
