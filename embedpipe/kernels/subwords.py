"""Subword (fastText) kernels: character n-grams, their hashed buckets, and skip-gram /
CBOW whose input side is the mean of a word's own vector and its n-gram vectors.

This module knows nothing of Spark. It follows Bojanowski et al. (2017) as implemented
in fastText's ``dictionary.cc`` (``computeSubwords``, ``hash``) and ``fasttext.cc`` /
``model.cc`` (``skipgram``, ``cbow``, ``Model::update``, ``getWordVector``); the random
stream, subsampling, window shrink, noise words, sigmoid, learning-rate schedule and
update counts are exactly those of :mod:`embedpipe.kernels.sgns` (its module docstring is
the specification), so that with no n-grams this kernel *is* the word2vec kernel (tested).

N-grams (``computeSubwords``)
    The word is wrapped in ``<`` and ``>``; for every start position that is a UTF-8
    lead byte (``(b & 0xC0) != 0x80``) and every length ``n = 1 .. maxn`` *characters*
    (a character is a lead byte plus its continuation bytes), the n-gram is kept when
    ``n >= minn`` and it is not the lone ``<`` or ``>`` (fastText's
    ``!(n == 1 && (i == 0 || j == word.size()))``). Order: by start, then by length.
    The whole wrapped word ``<word>`` *is* an n-gram when it has at most ``maxn``
    characters (fastText and gensim both keep it: ``"a"`` with 3..6 gives ``<a>``).

Hash (``Dictionary::hash``)
    32-bit FNV-1a over the n-gram's UTF-8 bytes, offset basis 2166136261, prime
    16777619, except that every byte is cast to *signed* ``int8`` before the xor:
    ``h = (h ^ uint32(int8(byte))) * 16777619``, so a byte >= 0x80 is xor-ed as
    ``0xFFFFFF00 | byte``. fastText keeps this (once compiler-dependent ``char``) cast so
    that released models stay valid, gensim's ``ft_hash_bytes`` replicates it, and so do
    we: pure-ASCII n-grams hash as standard FNV-1a, others do not. The bucket is
    ``hash % buckets`` (unsigned).

Rows
    fastText's input matrix holds the ``V`` words and then the ``buckets`` n-gram rows
    (row ``V + bucket``); a word's input rows are its own id followed by its n-grams'
    rows, duplicates kept (an n-gram occurring twice, or two n-grams in one bucket, count
    twice, as in fastText). :func:`input_rows` builds that table as CSR (``offsets``,
    ``rows``); with ``used`` (the sorted buckets some word has) the n-gram rows are
    compacted to ``V + index in used``: only those rows can ever be trained, so the
    others need not exist while training.

Training (``FastText::skipgram`` / ``cbow``, ``Model::update``)
    An example's hidden vector ``h`` is the mean of its input rows: skip-gram, the rows
    of the one context word; CBOW, the rows of all the window's context words pooled
    (one mean over the whole bag, fastText's ``bow``). The input gradient ``neu1e`` is
    added in full to *every* input row (fastText scales it by ``1/len`` only for
    supervised models). Each input row's update count goes up by one per addition.
    Skip-gram direction as in :mod:`~embedpipe.kernels.sgns` (word2vec.c / gensim): the
    context word's input rows predict the centre word; fastText uses the centre word's
    rows to predict each context word, which trains the same (input, output) pairs over
    a symmetric window.

Word vectors (``getWordVector``)
    The mean of a word's input rows (:func:`compose`). An unseen word's vector is the
    mean of its n-gram rows; :func:`ngram_buckets` gives them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from embedpipe.errors import ConfigError, InputError, TrainingDivergedError
from embedpipe.kernels.sgns import (
    _FASTMATH,
    MAX_EXP,
    TrainStats,
    _advance,
    _draw_centre,
    _initial_state,
    _noise_guide,
    _prefetch_row,
)

__all__ = [
    "BOW",
    "EOW",
    "FNV_OFFSET",
    "FNV_PRIME",
    "SubwordTable",
    "char_ngrams",
    "check_settings",
    "compose",
    "fasttext_hash",
    "init_ngrams",
    "input_rows",
    "ngram_buckets",
    "subword_table",
    "train_partition",
]

BOW = "<"
"""Begin-of-word mark (fastText's ``Dictionary::BOW``)."""
EOW = ">"
"""End-of-word mark (fastText's ``Dictionary::EOW``)."""
FNV_OFFSET = 2166136261
"""32-bit FNV offset basis."""
FNV_PRIME = 16777619
"""32-bit FNV prime."""

_MASK32 = 0xFFFFFFFF


# ------------------------------------------------------------------ n-grams (Python)


def fasttext_hash(data: bytes) -> int:
    """fastText's ``Dictionary::hash``: FNV-1a 32 with every byte cast to signed int8.

    ``h = 2166136261``; per byte ``h = ((h ^ uint32(int8(b))) * 16777619) mod 2**32``.
    Equal to plain FNV-1a on ASCII; a byte ``b >= 0x80`` is xor-ed as ``0xFFFFFF00 | b``.
    """
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ (b | 0xFFFFFF00 if b >= 0x80 else b)) * FNV_PRIME) & _MASK32
    return h


def char_ngrams(word: str, minn: int, maxn: int) -> list[str]:
    """The character n-grams of ``<word>`` in fastText's order (see the module docstring).

    Characters are Unicode code points, i.e. UTF-8 lead bytes, as fastText counts them.
    ``char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]``.
    """
    _check_n(minn, maxn)
    ext = BOW + word + EOW
    size = len(ext)
    out = []
    for i in range(size):
        for n in range(1, maxn + 1):
            if i + n > size:
                break
            if n >= minn and not (n == 1 and (i == 0 or i + n == size)):
                out.append(ext[i : i + n])
    return out


def ngram_buckets(word: str, minn: int, maxn: int, buckets: int) -> np.ndarray:
    """Buckets (int64) of :func:`char_ngrams` of ``word``, same order, duplicates kept."""
    _check_buckets(buckets)
    grams = char_ngrams(word, minn, maxn)
    return np.array(
        [fasttext_hash(g.encode("utf-8")) % buckets for g in grams], dtype=np.int64
    ).reshape(-1)


def check_settings(minn: int, maxn: int, buckets: int) -> None:
    """Raise :class:`ConfigError` unless ``1 <= minn <= maxn`` and ``buckets >= 1``."""
    _check_n(minn, maxn)
    _check_buckets(buckets)


def _check_n(minn: int, maxn: int) -> None:
    if not 1 <= minn <= maxn:
        raise ConfigError(
            f"word2vec.minn = {minn} and word2vec.maxn = {maxn} need 1 <= minn <= maxn"
        )


def _check_buckets(buckets: int) -> None:
    if buckets < 1:
        raise ConfigError(f"word2vec.buckets = {buckets} must be >= 1")


# ------------------------------------------------------------------ n-grams (numba)


@njit(cache=True, nogil=True)
def _ngram_pass(data, offsets, minn, maxn, buckets, counts, out):
    """n-gram buckets of every wrapped word ``data[offsets[w]:offsets[w+1]]``.

    With ``out`` empty, only counts n-grams per word into ``counts``; otherwise writes
    the buckets word after word (``out`` sized from the counting pass). The FNV hash of
    the n-gram of length n + 1 extends the one of length n by the next character's
    bytes, so each start position costs one pass over at most ``maxn`` characters.
    """
    fill = out.shape[0] > 0
    k = 0
    for w in range(offsets.shape[0] - 1):
        s = offsets[w]
        e = offsets[w + 1]
        c = 0
        for i in range(s, e):
            if (data[i] & 0xC0) == 0x80:
                continue  # a continuation byte does not start a character
            h = np.uint64(FNV_OFFSET)
            j = i
            n = 1
            while j < e and n <= maxn:
                while True:  # one character: its lead byte, then continuation bytes
                    b = np.uint64(data[j])
                    if b >= 0x80:
                        b |= np.uint64(0xFFFFFF00)  # fastText's int8 cast
                    h = ((h ^ b) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF)
                    j += 1
                    if j >= e or (data[j] & 0xC0) != 0x80:
                        break
                if n >= minn and not (n == 1 and (i == s or j == e)):
                    if fill:
                        out[k] = np.int64(h % np.uint64(buckets))
                    k += 1
                    c += 1
                n += 1
        counts[w] = c
    return k


@dataclass(frozen=True)
class SubwordTable:
    """The n-gram buckets of every vocabulary word (CSR).

    Attributes:
        offsets: int64, ``V + 1``; word ``w``'s buckets are ``buckets[offsets[w]:offsets[w+1]]``.
        buckets: int64 bucket ids in :func:`char_ngrams` order, duplicates kept.
        minn, maxn, n_buckets: the settings the table was built with.
    """

    offsets: np.ndarray
    buckets: np.ndarray
    minn: int
    maxn: int
    n_buckets: int

    @property
    def vocab_size(self) -> int:
        """Number of words ``V``."""
        return int(self.offsets.size - 1)

    def used(self) -> np.ndarray:
        """Sorted distinct buckets some word has (int64): the only trainable n-gram rows."""
        return np.unique(self.buckets)


def subword_table(tokens: Sequence[str], minn: int, maxn: int, buckets: int) -> SubwordTable:
    """n-gram buckets of every token (ids = positions), computed over UTF-8 bytes in numba.

    Equals :func:`ngram_buckets` word by word (tested); ~1 s per million words.
    """
    _check_n(minn, maxn)
    _check_buckets(buckets)
    parts = [(BOW + t + EOW).encode("utf-8") for t in tokens]
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    counts = np.zeros(len(parts), dtype=np.int64)
    total = _ngram_pass(data, offsets, minn, maxn, buckets, counts, np.empty(0, np.int64))
    out = np.empty(total, dtype=np.int64)
    _ngram_pass(data, offsets, minn, maxn, buckets, counts, out)
    word_offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(counts, out=word_offsets[1:])
    return SubwordTable(word_offsets, out, int(minn), int(maxn), int(buckets))


def input_rows(
    table: SubwordTable, used: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of every word's input rows: its id, then one row per n-gram.

    Without ``used`` an n-gram's row is ``V + bucket`` (fastText's layout, a
    ``(V + buckets) x dim`` matrix); with ``used`` (sorted distinct buckets, e.g.
    :meth:`SubwordTable.used`) it is ``V + position of the bucket in used`` (a
    ``(V + len(used)) x dim`` matrix). Returns ``(offsets int64 (V + 1), rows int32)``.
    """
    V = table.vocab_size
    n_per_word = np.diff(table.offsets)
    if used is None:
        ngram_rows = V + table.buckets
        top = V + table.n_buckets
    else:
        used = np.asarray(used, dtype=np.int64)
        pos = np.searchsorted(used, table.buckets)
        if table.buckets.size and (pos.max() >= used.size or np.any(used[pos] != table.buckets)):
            raise InputError("input_rows: a word's bucket is missing from 'used'")
        ngram_rows = V + pos
        top = V + used.size
    if top >= 2**31:
        raise ConfigError(
            f"{top:,} input rows do not fit int32: lower word2vec.buckets (now {table.n_buckets:,})"
        )
    offsets = np.zeros(V + 1, dtype=np.int64)
    np.cumsum(n_per_word + 1, out=offsets[1:])
    rows = np.empty(int(offsets[-1]), dtype=np.int32)
    rows[offsets[:-1]] = np.arange(V, dtype=np.int32)  # the word's own row first
    is_gram = np.ones(rows.size, dtype=bool)
    is_gram[offsets[:-1]] = False
    rows[is_gram] = ngram_rows
    return offsets, rows


def init_ngrams(rows: int, dim: int, seed: int) -> np.ndarray:
    """Initial n-gram rows: uniform in ``[-0.5, 0.5) / dim`` like word2vec's syn0 (float32)."""
    if rows < 0 or dim < 1:
        raise ConfigError(f"n-gram matrix needs rows >= 0 and word2vec.dim >= 1 ({rows}, {dim})")
    rng = np.random.default_rng(seed)
    m = (rng.random((rows, dim), dtype=np.float32) - np.float32(0.5)) / np.float32(dim)
    return np.ascontiguousarray(m)


@njit(cache=True, nogil=True)
def _compose(matrix, offsets, rows, out):
    """``out[w] = mean of matrix[rows[offsets[w]:offsets[w+1]]]`` (float32 sum, x 1/n)."""
    dim = matrix.shape[1]
    for w in range(out.shape[0]):
        a = offsets[w]
        b = offsets[w + 1]
        for k in range(dim):
            out[w, k] = 0.0
        for q in range(a, b):
            r = rows[q]
            for k in range(dim):
                out[w, k] += matrix[r, k]
        if b > a:
            inv = np.float32(1.0) / np.float32(b - a)
            for k in range(dim):
                out[w, k] *= inv


def compose(matrix: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Word vectors as fastText's ``getWordVector``: the mean of each word's input rows.

    ``matrix`` is the input matrix (word rows then n-gram rows), ``offsets, rows`` from
    :func:`input_rows`. Returns a new float32 ``(V, dim)`` array.
    """
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    out = np.empty((offsets.size - 1, matrix.shape[1]), dtype=np.float32)
    _compose(matrix, np.asarray(offsets, np.int64), np.asarray(rows, np.int32), out)
    return out


# ------------------------------------------------------------------ training (numba)


@functools.cache
def _train_core(dim: int) -> Callable[..., tuple[int, int, int, float, int]]:
    """The training loop compiled for rows of ``dim`` floats, one numba function per dim,
    for the reason :func:`embedpipe.kernels.sgns._train_core` gives (and so that without
    n-grams the two kernels sum in the same order and agree bit for bit)."""

    def core(
        ids,
        offsets,
        syn0,
        syn1,
        sub_off,
        sub_rows,
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

        :func:`embedpipe.kernels.sgns._train_core` with the input side of a word replaced by
        its CSR rows ``sub_rows[sub_off[w]:sub_off[w+1]]`` (the same stream, draw for draw),
        pipelined and prefetched the same way (1.4x faster than without). Inline 2-D
        indexing throughout for the reason given there (no row views in the loop).
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
        noise_total = np.uint64(cdf[cdf.shape[0] - 1])
        u_scale = 1.0 / 4294967296.0  # 2**-32: a 32-bit draw to [0, 1)
        slope = (alpha_start - alpha_end) / total_words
        raw = 0
        trained = 0
        examples = 0
        loss_sum = 0.0
        loss_terms = 0
        countdown = 1
        per_pair = not (cbow or share)  # noise words per example, or once per centre word
        for d in range(n_docs):
            start = offsets[d]
            end = offsets[d + 1]
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
            # The pipeline of sgns._train_core: step s draws centre s's window and noise
            # words and prefetches their rows, then trains centre s - 1. A context word's
            # input rows (its own and ~20 n-gram rows, scattered over the n-gram matrix) are
            # prefetched once per document, when its position first enters a window.
            fetched = 0
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
                        for j in range(max(fetched, lo_n), hi_n):
                            c = sent[j]
                            for q in range(sub_off[c], sub_off[c + 1]):
                                _prefetch_row(syn0, sub_rows[q])
                        fetched = max(fetched, hi_n)
                if s == 0:
                    continue
                i = s - 1
                bcur = i & 1
                lo = lo_s[bcur]
                hi = hi_s[bcur]
                n_ctx = hi - lo - 1
                if n_ctx < 1:
                    continue
                alpha = alpha_start - slope * (words_done_before + words_scale * pos[i])
                alpha32 = np.float32(max(alpha, alpha_end))
                word = sent[i]
                n_examples = 1 if cbow else n_ctx
                for e in range(n_examples):
                    with_loss = False
                    if loss_every > 0:
                        countdown -= 1
                        if countdown == 0:
                            with_loss = True
                            countdown = loss_every
                    # ---- hidden vector: the mean of the example's input rows
                    for k in range(dim):
                        h[k] = 0.0
                    n_rows = 0
                    if cbow:
                        j_lo = lo
                        j_hi = hi
                    else:
                        j = lo + e
                        if j >= i:
                            j += 1  # skip the centre position
                        j_lo = j
                        j_hi = j + 1
                    for j in range(j_lo, j_hi):
                        if j == i:
                            continue
                        c = sent[j]
                        for q in range(sub_off[c], sub_off[c + 1]):
                            r = sub_rows[q]
                            for k in range(dim):
                                h[k] += syn0[r, k]
                        n_rows += sub_off[c + 1] - sub_off[c]
                    inv = np.float32(1.0) / np.float32(n_rows)
                    for k in range(dim):
                        h[k] *= inv
                    for k in range(dim):
                        neu1e[k] = 0.0
                    # ---- the centre word (label 1), then `negative` noise words (label 0)
                    for dn in range(negative + 1):
                        if dn == 0:
                            target = word
                            label = np.float32(1.0)
                        else:
                            target = tgt[bcur, (e * negative if per_pair else 0) + dn - 1]
                            if target == word:
                                continue
                            label = np.float32(0.0)
                        x = np.float32(0.0)
                        for k in range(dim):
                            x += h[k] * syn1[target, k]
                        ax = abs(x)
                        ex = math.exp(-ax)
                        if ax > MAX_EXP:
                            f = np.float32(1.0) if x > 0 else np.float32(0.0)
                        elif x >= 0:
                            f = np.float32(1.0) / (np.float32(1.0) + ex)
                        else:
                            f = ex / (np.float32(1.0) + ex)
                        if with_loss:
                            z = x if dn == 0 else -x
                            loss_sum += math.log1p(ex) + max(-z, np.float32(0.0))
                            loss_terms += 1
                        g = (label - f) * alpha32
                        for k in range(dim):
                            out_k = syn1[target, k]
                            neu1e[k] += g * out_k
                            syn1[target, k] = out_k + g * h[k]
                        counts1[target] += 1
                    examples += 1
                    # ---- the full input gradient to every input row (fastText's update)
                    for j in range(j_lo, j_hi):
                        if j == i:
                            continue
                        c = sent[j]
                        for q in range(sub_off[c], sub_off[c + 1]):
                            r = sub_rows[q]
                            for k in range(dim):
                                syn0[r, k] += neu1e[k]
                            counts0[r] += 1
        return raw, trained, examples, loss_sum, loss_terms

    return njit(cache=True, nogil=True, fastmath=_FASTMATH)(core)


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


def _check_rows(sub_offsets: np.ndarray, sub_rows: np.ndarray, V: int, n_input: int) -> None:
    if (
        sub_offsets.shape != (V + 1,)
        or sub_offsets[0] != 0
        or sub_offsets[-1] != sub_rows.size
        or np.any(np.diff(sub_offsets) < 1)
    ):
        raise InputError(
            f"sub_offsets must be {V + 1} increasing offsets from 0 to len(sub_rows) with at "
            "least one input row per word: build them with input_rows()"
        )
    if sub_rows.size and (sub_rows.min() < 0 or sub_rows.max() >= n_input):
        raise InputError(
            f"sub_rows must index the {n_input} rows of the input matrix: build it with "
            "input_rows() from the same table"
        )


def train_partition(
    ids: np.ndarray,
    doc_offsets: np.ndarray,
    syn0: np.ndarray,
    syn1neg: np.ndarray,
    sub_offsets: np.ndarray,
    sub_rows: np.ndarray,
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
    """Train skip-gram or CBOW with subword inputs on one corpus slice, in place.

    Arguments as :func:`embedpipe.kernels.sgns.train_partition`, except:

    Args:
        syn0: the input matrix, word rows ``0..V-1`` then n-gram rows (``V + U`` rows,
            ``U`` from :func:`input_rows`); float32, private, updated in place.
        syn1neg: the output matrix, ``V`` rows.
        sub_offsets, sub_rows: every word's input rows (:func:`input_rows`).

    Returns:
        :class:`~embedpipe.kernels.sgns.TrainStats`; ``syn0_counts`` has one entry per
        input row (words and n-grams), so :func:`~embedpipe.kernels.sgns.row_update`
        returns the touched n-gram rows with the word rows.
    """
    _require_matrix("syn0", syn0)
    _require_matrix("syn1neg", syn1neg)
    V = syn1neg.shape[0]
    if syn0.shape[1] != syn1neg.shape[1] or syn0.shape[0] < V:
        raise InputError(
            f"syn0 {syn0.shape} must hold the {V} word rows of syn1neg {syn1neg.shape} and "
            "then the n-gram rows, with the same dim"
        )
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
    if loss_every < 1:
        raise ConfigError(f"loss_every = {loss_every} must be >= 1")
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
    sub_off = np.ascontiguousarray(sub_offsets, dtype=np.int64)
    rows = np.ascontiguousarray(sub_rows, dtype=np.int32)
    keep = np.ascontiguousarray(keep_prob, dtype=np.float32)
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    _check_rows(sub_off, rows, V, syn0.shape[0])
    if keep.shape != (V,) or cdf.shape != (V,):
        raise InputError(
            f"keep_prob {keep.shape} and cdf {cdf.shape} must have one entry per word "
            f"({V}): build them from the same vocab"
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
    used_ids = ids[offsets[0] : offsets[-1]]
    if used_ids.size and (used_ids.min() < 0 or used_ids.max() >= V):
        raise InputError(
            f"token ids must lie in [0, {V}): the corpus was encoded with another vocab"
        )
    if total_words is None:
        total_words = max(int(offsets[-1] - offsets[0]), 1)
    if total_words < 1:
        raise ConfigError(f"total_words = {total_words} must be >= 1")
    if cdf[-1] < 1 or np.any(np.diff(cdf) < 0):
        raise InputError("cdf must be non-decreasing with a positive last entry: use noise_cdf()")
    guide, guide_shift = _noise_guide(cdf)
    counts0 = np.zeros(syn0.shape[0], dtype=np.int64)
    counts1 = np.zeros(V, dtype=np.int64)
    raw, trained, examples, loss_sum, loss_terms = _train_core(int(syn0.shape[1]))(
        ids,
        offsets,
        syn0,
        syn1neg,
        sub_off,
        rows,
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
