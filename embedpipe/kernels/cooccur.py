"""Co-occurrence counting kernel: id arrays in, sorted partial sums out (no Spark).

Semantics follow Stanford GloVe's ``cooccur`` (symmetric window, weight ``1/d`` or
``1``, a line/document is a hard boundary, OOV tokens were removed before windowing):

    X[i, j] = sum over documents, over position pairs (p, q) with 0 < |p - q| <= window
              and ids[p] = i, ids[q] = j, of w(|p - q|)

so ``X`` is symmetric and a pair of equal words at distance ``d`` adds ``2 w(d)`` to
the diagonal (once seen from each side), exactly as glove.c does. Two word2vec
options exist for SVD users: ``dynamic_window`` (centre ``p`` sees only
``|p - q| <= b_p``, ``b_p`` uniform in ``1..window``; ``X`` is then symmetric only in
expectation) and ``subsample`` (word2vec's frequent-word down-sampling, applied before
windowing, so windows reach over dropped tokens as in word2vec).

How it is fast without a per-token Python loop (glove.c's design, vectorised):

* Documents are concatenated and cut into batches of up to 64k tokens (a batch owns
  the left ends of its pairs and reads ``window`` tokens past its end, so documents
  may straddle batches). For each offset ``d = 1..window`` the left tokens
  ``ids[:-d]`` and right tokens ``ids[d:]`` form all pairs at distance ``d`` at once;
  ``rem`` (tokens left in the document) masks pairs that would cross a document end.
* Ids are frequency ranks, so most pair *instances* involve two frequent words.
  Pairs with ``(i + 1)(j + 1) <= max_product`` (glove.c's rule: the region holding
  the Zipfian mass in the fewest cells) are summed into a dense float64 block with
  ``np.add.at`` (~80 % of the instances of en-open at window 10). Symmetric counting
  stores the unordered pair (min, max) once and mirrors it when the block is emitted.
  The block grows with the tokens seen, up to 40 % of ``memory_mb`` and at most
  4M cells (32 MB, about the L3 cache), so that a small partition does not scan (and
  page-fault) a block sized for a big one.
* The other pairs are appended, both directions, to a buffer of int64 keys
  ``(i * V + j) << bits | d``; when the buffer reaches its share of ``memory_mb`` it
  is radix-sorted (numba; ~3x np.sort on these mostly distinct keys), runs of equal
  pairs are summed and the result is emitted as a block.

Exactness: weights are accumulated in units of ``1 / weight_denominator(...)`` (the
lcm of ``1..window`` for harmonic weighting), i.e. as integer-valued float64 sums,
which are exact below 2**53. Results therefore do not depend on batching, block
sizes, ``memory_mb`` or the order of documents; with ``integer_units=True`` the
emitted partials are those integers, so partials summed across partitions in any
order are exact too (divide by the denominator after the final reduction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numba import njit

from embedpipe.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

Block = tuple[np.ndarray, np.ndarray]
"""``(keys int64 ascending and unique, values float64)`` with ``key = i * V + j``."""

WEIGHTINGS = ("harmonic", "uniform")

# Largest denominator for exact integer-unit accumulation. Sums stay exact below 2**53,
# so this leaves 2**29 (5e8) full-weight co-occurrences of one pair per partial.
_MAX_EXACT_DENOMINATOR = 1 << 24

# Memory plan (a soft limit, like glove.c's -memory): the dense block <= 40 %, the
# sparse key buffer and its radix-sort twin 2 x 10 % (+ one batch of slack each), the
# emitted block ~16 B per distinct pair of the buffer, batches and chunks a few MB.
_DENSE_SHARE = 0.40  # the frequent-pair block, float64 cells ...
# ... but no bigger than about the L3 cache: np.add.at into a block that misses the
# cache costs as much per pair as the sparse path (measured: 13M cells were ~30 %
# slower than 2-6M on en-open; the sparse path then emits only ~5 % more entries).
_MAX_DENSE_CELLS = 1 << 22
_BUFFER_SHARE = 0.10  # packed sparse keys, 8 B each
_MAX_BATCH_TOKENS = 1 << 16  # per-offset temporaries of a batch stay in the L2 cache
_CELLS_PER_TOKEN = 8  # dense cells per token seen (the block grows with the partition)

# Random streams of the per-token counter-based generator.
_STREAM_SUBSAMPLE = 0x5B5A_D4E1
_STREAM_WINDOW = 0x3C6E_F372
_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_MIX1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_MIX2 = np.uint64(0x94D0_49BB_1331_11EB)


# --------------------------------------------------------------------- public helpers


def weight_denominator(window: int, weighting: str = "harmonic") -> int:
    """The integer ``L`` such that every weight ``w(d)`` of ``window`` is a multiple of ``1/L``.

    ``lcm(1..window)`` for harmonic weighting (``w(d) = 1/d``), 1 for uniform. Values
    emitted with ``integer_units=True`` are ``L`` times the true co-occurrence values.
    """
    _check_window(window)
    _check_weighting(weighting)
    if weighting == "uniform":
        return 1
    return math.lcm(*range(1, window + 1))


def keys_to_ij(keys: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Split keys ``i * vocab_size + j`` into ``(i int32, j int32)``."""
    keys = np.asarray(keys, dtype=np.int64)
    i = keys // vocab_size
    j = keys - i * vocab_size
    return i.astype(np.int32), j.astype(np.int32)


def ij_to_keys(i: np.ndarray, j: np.ndarray, vocab_size: int) -> np.ndarray:
    """Combine row and column ids into int64 keys ``i * vocab_size + j``."""
    return np.asarray(i, dtype=np.int64) * vocab_size + np.asarray(j, dtype=np.int64)


def shard_of(i: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard owning row ``i``: ``i mod num_shards`` (int32), as in the cooc/ layout."""
    if num_shards < 1:
        raise ConfigError(f"cooccur.shards must be >= 1, got {num_shards}")
    return (np.asarray(i, dtype=np.int64) % num_shards).astype(np.int32)


class ShardSplit(NamedTuple):
    """A sorted block split by shard into pieces, keys delta-coded (see :func:`split_by_shard`).

    Piece ``p`` belongs to shard ``shard[p]`` and spans ``[start[p], start[p + 1])`` of
    ``deltas`` and ``values``; its keys are ``first[p] + cumsum(deltas[start[p]:...])``
    (the piece's first delta is 0). Pieces are in shard order, keys ascending in each.
    """

    shard: np.ndarray  # int32, one per piece
    start: np.ndarray  # int64, pieces + 1 offsets
    first: np.ndarray  # int64, first key of each piece
    deltas: np.ndarray  # int32 when every delta fits, else int64
    values: np.ndarray  # float32 when every value converts exactly (integers < 2**24)


def split_by_shard(
    keys: np.ndarray,
    values: np.ndarray,
    vocab_size: int,
    num_shards: int,
    max_piece: int = 1 << 20,
    narrow_values: bool = False,
) -> ShardSplit:
    """Split a sorted block by shard ``(key // vocab_size) mod num_shards``, delta-coding keys.

    The map-side step before a shuffle by shard: two linear passes (numba), no sort,
    since a sorted block holds each row's keys contiguously. Each shard's run is cut
    into pieces of at most ``max_piece`` entries. With ``narrow_values`` (values are
    integer counts, e.g. ``integer_units=True``) values below 2**24 are stored as
    float32, which is exact.
    """
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if keys.shape != values.shape:
        raise InputError(f"{keys.size} keys but {values.size} values")
    if num_shards < 1:
        raise ConfigError(f"cooccur.shards must be >= 1, got {num_shards}")
    if max_piece < 1:
        raise ConfigError(f"max_piece must be >= 1, got {max_piece}")
    n = keys.size
    if n == 0:
        empty = np.empty(0, np.int64)
        return ShardSplit(
            np.empty(0, np.int32),
            np.zeros(1, np.int64),
            empty,
            np.empty(0, np.int32),
            np.empty(0, np.float32),
        )
    # One pass: counts per shard, the largest gap, and whether the values are small
    # non-negative integers (then float32 holds them exactly).
    counts, max_delta, ordered, small_ints = _shard_counts(keys, values, vocab_size, num_shards)
    if not ordered:
        raise InputError("split_by_shard needs ascending unique keys >= 0 (a block)")
    pos = np.cumsum(counts) - counts
    pieces = -(-counts // max_piece)
    first_piece = np.cumsum(pieces) - pieces
    n_pieces = int(pieces.sum())
    deltas = np.empty(n, np.int32 if max_delta < 1 << 31 else np.int64)
    narrow = narrow_values and small_ints
    out_values = np.empty(n, np.float32 if narrow else np.float64)
    first = np.empty(n_pieces, np.int64)
    _shard_scatter(
        keys, values, vocab_size, num_shards, pos, first_piece, max_piece, deltas, out_values, first
    )
    shard = np.repeat(np.arange(num_shards, dtype=np.int32), pieces)
    within = np.arange(n_pieces) - np.repeat(first_piece, pieces)
    start = np.empty(n_pieces + 1, np.int64)
    start[:-1] = np.repeat(pos, pieces) + within * max_piece
    start[-1] = n
    return ShardSplit(shard, start, first, deltas, out_values)


def merge_sorted_blocks(blocks: Iterable[Block]) -> Block:
    """Sum blocks ``(keys, values)`` into one block with ascending unique keys.

    The reduce step for partials: blocks may overlap, differ in size and need not
    even be sorted (a stable LSD radix sort orders them in a few linear passes, so
    the reduce side of the shuffle can hand it whatever rows it received). Values of
    equal keys are added in block order, so the result is deterministic.
    """
    key_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for keys, values in blocks:
        if len(keys) != len(values):
            raise InputError(
                f"block has {len(keys)} keys but {len(values)} values; pass (keys, values) pairs"
            )
        if len(keys):
            key_parts.append(np.asarray(keys, dtype=np.int64))
            val_parts.append(np.asarray(values, dtype=np.float64))
    if not key_parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(key_parts) == 1 and _is_strictly_increasing(key_parts[0]):
        return key_parts[0], val_parts[0]
    keys = np.concatenate(key_parts)
    values = np.concatenate(val_parts)
    if keys.min() < 0:
        raise InputError("pair keys must be >= 0 (key = i * vocab_size + j)")
    bits = max(1, int(keys.max()).bit_length())
    return _sort_reduce_kv(keys, values, bits)


def subsample_keep_prob(counts: np.ndarray, threshold: float) -> np.ndarray:
    """word2vec's keep probability per id: ``min(1, (sqrt(f / t) + 1) t / f)``.

    ``f = counts[i] / sum(counts)`` (word2vec's ``train_words`` is the in-vocabulary
    total, which is what the vocab counts sum to); ids with count 0 are always kept.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if threshold <= 0.0 or total <= 0.0:
        return np.ones(counts.shape, np.float64)
    f = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(f / threshold) + 1.0) * threshold / f
    keep[~np.isfinite(keep)] = 1.0
    return np.minimum(keep, 1.0)


def token_uniforms(seed: int, stream: int, doc_keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats, one per token, a pure function of (seed, stream, doc key, position).

    A counter-based generator (splitmix64 finaliser over the tuple), so the draw of a
    token does not depend on which other documents share its batch or partition.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = int(lengths.sum())
    if n == 0:
        return np.empty(0, np.float64)
    with np.errstate(over="ignore"):
        s = _mix64(np.array([seed % (1 << 64)], dtype=np.uint64) ^ np.uint64(stream))
        h_doc = _mix64(_mix64(np.asarray(doc_keys).astype(np.int64).view(np.uint64) ^ s) + _GOLDEN)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
        h = _mix64(np.repeat(h_doc, lengths) + pos.view(np.uint64) * _GOLDEN)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --------------------------------------------------------------------- entry points


def count_partition(
    docs: Iterable[np.ndarray],
    vocab_size: int,
    window: int,
    weighting: str = "harmonic",
    dynamic_window: bool = False,
    subsample: float = 0.0,
    counts: np.ndarray | None = None,
    seed: int = 0,
    memory_mb: int = 256,
    doc_keys: Iterable[int] | np.ndarray | None = None,
    *,
    max_product: int | None = None,
    integer_units: bool = False,
) -> Iterator[Block]:
    """Count co-occurrences of a partition's documents; yield partial blocks.

    ``docs`` are int id arrays (ids in ``[0, vocab_size)``), one per document, in order.
    Yields ``(keys int64, values float64)`` blocks, ``key = i * vocab_size + j``; each
    block is sorted ascending and unique, different blocks may repeat keys (sum them
    with :func:`merge_sorted_blocks` or in the shuffle). Both ``(i, j)`` and ``(j, i)``
    are emitted. Memory stays near ``memory_mb`` (soft limit, like glove.c's -memory):
    when the sparse buffer is full it is emitted as a block; the dense frequent-pair
    block is emitted at the end.

    Determinism. Randomness (``dynamic_window``, ``subsample > 0``) is a pure function
    of ``(seed, doc key, position in the document)``, never of batching. Pass
    ``doc_keys`` (one int64 per document, e.g. the corpus ``doc`` column) and the sum
    of all blocks depends only on the set of (doc key, ids) documents, the seed and
    the settings: not on ``memory_mb``, ``max_product``, document order or how the
    documents are split across calls (partitions). It is bit-for-bit identical with
    ``integer_units=True`` (integer sums); in true units every emitted value is an
    exact sum divided by ``weight_denominator`` once, so sums of partials from
    different splits may differ in the last bit. Without ``doc_keys`` the key is the
    document's index in this call (0, 1, ...): random options then reproduce only
    for the same sequence of documents per call.

    ``max_product`` overrides the dense-block size (pairs with ``(i+1)(j+1) <=
    max_product`` are dense; 0 disables it); ``integer_units=True`` emits values
    multiplied by :func:`weight_denominator` (exact integers, see the module doc).
    """
    counter = _Counter(
        vocab_size,
        window,
        weighting,
        dynamic_window,
        subsample,
        counts,
        seed,
        memory_mb,
        max_product,
        integer_units,
    )
    yield from counter.run(_chunks_from_docs(docs, doc_keys, counter.chunk_tokens))


def count_arrow_lists(
    lists: pa.Array | pa.ChunkedArray | Iterable[pa.Array],
    vocab_size: int,
    window: int,
    weighting: str = "harmonic",
    dynamic_window: bool = False,
    subsample: float = 0.0,
    counts: np.ndarray | None = None,
    seed: int = 0,
    memory_mb: int = 256,
    doc_keys: pa.Array | pa.ChunkedArray | Iterable[pa.Array] | None = None,
    *,
    max_product: int | None = None,
    integer_units: bool = False,
) -> Iterator[Block]:
    """:func:`count_partition` over Arrow ``list<int32>`` arrays (the corpus ``ids`` column).

    ``lists`` is one list array, a chunked array or an iterable of list arrays (e.g.
    the ``ids`` column of each record batch of a partition); offsets and values are
    read zero-copy. ``doc_keys`` (the ``doc`` column, int64) must then be aligned
    array by array. Null lists count as empty documents.
    """
    counter = _Counter(
        vocab_size,
        window,
        weighting,
        dynamic_window,
        subsample,
        counts,
        seed,
        memory_mb,
        max_product,
        integer_units,
    )
    yield from counter.run(_chunks_from_arrow(lists, doc_keys))


def count_record_batches(
    batches: Iterable[pa.RecordBatch],
    vocab_size: int,
    window: int,
    weighting: str = "harmonic",
    dynamic_window: bool = False,
    subsample: float = 0.0,
    counts: np.ndarray | None = None,
    seed: int = 0,
    memory_mb: int = 256,
    *,
    ids_column: str = "ids",
    doc_column: str | None = "doc",
    max_product: int | None = None,
    integer_units: bool = False,
) -> Iterator[Block]:
    """:func:`count_arrow_lists` over record batches (what ``mapInArrow`` hands a task).

    Reads the corpus contract ``doc:int64, ids:list<int32>``; ``doc_column`` is the
    document key for seeding (None: the document's index within this call).
    """
    counter = _Counter(
        vocab_size,
        window,
        weighting,
        dynamic_window,
        subsample,
        counts,
        seed,
        memory_mb,
        max_product,
        integer_units,
    )

    def columns() -> Iterator[tuple[pa.Array, pa.Array | None]]:
        for batch in batches:
            names = batch.schema.names
            for want in (ids_column, doc_column):
                if want is not None and want not in names:
                    raise InputError(
                        f"record batch has no column {want!r} (columns: {names}); "
                        "read the encode stage output (doc:int64, ids:list<int32>)"
                    )
            docs = batch.column(doc_column) if doc_column is not None else None
            yield batch.column(ids_column), docs

    yield from counter.run(_chunks_from_arrow_pairs(columns(), use_keys=doc_column is not None))


# --------------------------------------------------------------------- chunking


Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(ids int32 concatenated, lengths int64 per document, doc keys int64 per document)``."""


def _chunks_from_docs(
    docs: Iterable[np.ndarray],
    doc_keys: Iterable[int] | np.ndarray | None,
    target_tokens: int,
) -> Iterator[Chunk]:
    """Group documents into chunks of about ``target_tokens`` (a Python loop per document,
    not per token; Arrow input avoids even that)."""
    keys_it = iter(doc_keys) if doc_keys is not None else None
    parts: list[np.ndarray] = []
    keys: list[int] = []
    total = 0
    for index, doc in enumerate(docs):
        arr = np.asarray(doc)
        if arr.ndim != 1:
            raise InputError(f"document {index} is {arr.ndim}-D; pass one 1-D id array each")
        if keys_it is not None:
            try:
                keys.append(int(next(keys_it)))
            except StopIteration:
                raise InputError(
                    f"doc_keys has {index} entries but there are more documents; "
                    "pass one key per document"
                ) from None
        else:
            keys.append(index)
        parts.append(arr)
        total += arr.size
        if total >= target_tokens:
            yield _make_chunk(parts, keys)
            parts, keys, total = [], [], 0
    if parts:
        yield _make_chunk(parts, keys)


def _make_chunk(parts: list[np.ndarray], keys: list[int]) -> Chunk:
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
    ids = np.concatenate(parts) if parts else np.empty(0, np.int32)
    return _as_ids(ids), lengths, np.asarray(keys, dtype=np.int64)


def _chunks_from_arrow(
    lists: pa.Array | pa.ChunkedArray | Iterable[pa.Array],
    doc_keys: pa.Array | pa.ChunkedArray | Iterable[pa.Array] | None,
) -> Iterator[Chunk]:
    """Pair each list array with its doc key array (or None) and convert."""
    if doc_keys is None:
        pairs: Iterator[tuple[pa.Array, pa.Array | None]] = ((arr, None) for arr in _arrays(lists))
        yield from _chunks_from_arrow_pairs(pairs, use_keys=False)
        return
    keys_it = _arrays(doc_keys)

    def zipped() -> Iterator[tuple[pa.Array, pa.Array | None]]:
        for arr in _arrays(lists):
            try:
                yield arr, next(keys_it)
            except StopIteration:
                raise InputError(
                    "doc_keys ran out before the id lists; pass one doc key array per list array"
                ) from None

    yield from _chunks_from_arrow_pairs(zipped(), use_keys=True)


def _arrays(x: object) -> Iterator[pa.Array]:
    import pyarrow as pa

    if isinstance(x, pa.ChunkedArray):
        yield from x.chunks
    elif isinstance(x, pa.Array):
        yield x
    else:
        yield from x  # type: ignore[misc]


def _chunks_from_arrow_pairs(
    pairs: Iterable[tuple[pa.Array, pa.Array | None]], use_keys: bool
) -> Iterator[Chunk]:
    next_index = 0
    for arr, key_arr in pairs:
        ids, lengths = _list_array_to_numpy(arr)
        if use_keys:
            assert key_arr is not None
            if len(key_arr) != len(lengths) or key_arr.null_count:
                raise InputError(
                    f"doc key array has {len(key_arr)} entries ({key_arr.null_count} null) for "
                    f"{len(lengths)} documents; the doc column must be non-null int64"
                )
            keys = np.asarray(key_arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            keys = np.arange(next_index, next_index + len(lengths), dtype=np.int64)
        next_index += len(lengths)
        yield ids, lengths, keys


def _list_array_to_numpy(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(values, lengths)`` of a list array, zero-copy when there are no nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise InputError(f"ids column has type {arr.type}; the corpus contract is list<int32>")
    if arr.null_count:
        lengths = np.asarray(pc.list_value_length(arr).fill_null(0), dtype=np.int64)
        values = arr.flatten()
    else:
        offsets = np.asarray(arr.offsets)
        lengths = np.diff(offsets).astype(np.int64)
        values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    if values.null_count:
        raise InputError("ids lists contain null ids; re-run encode (ids must be non-null int32)")
    return _as_ids(values.to_numpy(zero_copy_only=False)), lengths


def _as_ids(ids: np.ndarray) -> np.ndarray:
    if ids.dtype == np.int32:
        return ids
    if ids.size == 0:
        return ids.astype(np.int32)
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"token ids have dtype {ids.dtype}; pass integer id arrays")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= 1 << 31:
        bad = lo if lo < 0 else hi
        raise InputError(f"token id {bad} is outside [0, 2**31); ids are int32 vocabulary ranks")
    return ids.astype(np.int32)


# --------------------------------------------------------------------- the counter


class _Counter:
    """Accumulator state of one counting call: the dense block and the sparse buffer."""

    def __init__(
        self,
        vocab_size: int,
        window: int,
        weighting: str,
        dynamic_window: bool,
        subsample: float,
        counts: np.ndarray | None,
        seed: int,
        memory_mb: int,
        max_product: int | None,
        integer_units: bool,
    ) -> None:
        _check_window(window)
        _check_weighting(weighting)
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be >= 1, got {vocab_size}; build the vocab first")
        if memory_mb < 1:
            raise ConfigError(f"cooccur.memory_mb must be >= 1, got {memory_mb}")
        if not subsample >= 0.0:
            raise ConfigError(f"cooccur.subsample must be >= 0 (0 disables), got {subsample}")
        if max_product is not None and max_product < 0:
            raise ConfigError(
                f"max_product must be >= 0 (0 disables the dense block), got {max_product}"
            )
        self.V = int(vocab_size)
        self.W = int(window)
        self.symmetric = not dynamic_window
        self.seed = int(seed)

        # Weights. Harmonic weights are kept as integers L/d (L = lcm(1..W)) whenever
        # that is exact in float64, so sums never depend on the order of addition.
        denom = weight_denominator(self.W, weighting)
        if integer_units and denom > _MAX_EXACT_DENOMINATOR:
            raise ConfigError(
                f"integer_units needs lcm(1..window) <= 2**24, window {self.W} gives {denom}; "
                "use window <= 17 or integer_units=False"
            )
        self.exact = denom <= _MAX_EXACT_DENOMINATOR
        unit = denom if self.exact else 1
        self.out_scale = 1.0 if integer_units else 1.0 / unit
        dist = np.arange(1, self.W + 1)
        if weighting == "uniform":
            w = np.ones(self.W)
        elif self.exact:
            w = (denom // dist).astype(np.float64)
        else:
            w = 1.0 / dist
        self.weights = np.concatenate([[0.0], w])  # indexed by the offset d
        # Uniform weights need no offset in the sparse keys: a run's length is its sum.
        self.dbits = self.W.bit_length() if weighting == "harmonic" else 0
        if (self.V * self.V) << self.dbits >= 1 << 63:
            raise ConfigError(
                f"vocab_size {self.V} is too large for int64 pair keys at window {self.W}; "
                "lower vocab.max_size"
            )

        self.keep_prob: np.ndarray | None = None
        if subsample > 0.0:
            if counts is None:
                raise ConfigError("cooccur.subsample > 0 needs the vocab counts (counts=...)")
            counts = np.asarray(counts)
            if counts.shape != (self.V,):
                raise ConfigError(
                    f"counts has shape {counts.shape}, expected ({self.V},): one count per id"
                )
            self.keep_prob = subsample_keep_prob(counts, subsample)

        # Memory plan (soft, like glove.c's -memory).
        budget = memory_mb * (1 << 20)
        self.cell_budget = min(_MAX_DENSE_CELLS, int(_DENSE_SHARE * budget) // 8)
        self.buffer_cap = max(1024, int(_BUFFER_SHARE * budget) // 8)
        # A batch writes at most 2 keys per pair into the buffer, so the buffer gets one
        # batch of slack past its flush threshold. Small batches keep the per-offset
        # temporaries in cache.
        self.batch_tokens = min(_MAX_BATCH_TOKENS, max(self.W + 1, self.buffer_cap // (2 * self.W)))
        self.chunk_tokens = max(self.batch_tokens, min(1 << 20, int(0.05 * budget) // 32))
        size = self.buffer_cap + 2 * self.W * self.batch_tokens
        self.buffer = np.empty(size, np.int64)
        self.scratch = np.empty(size, np.int64)  # the radix sort's second array
        self.fill = 0
        self.key_bits = max(1, (self.V * self.V - 1).bit_length()) + self.dbits
        # The reduce looks weights up by the packed offset; uniform keys carry none.
        self.reduce_weights = self.weights if self.dbits else np.ones(1)
        self.fixed_product = max_product
        self.tokens_seen = 0
        self.dense_final = False
        self._set_layout(0 if max_product is None else int(max_product))

    # ---------------------------------------------------------------- dense block

    def _set_layout(self, P: int) -> None:
        """Place the dense block: cells (a, b) with (a+1)(b+1) <= P, glove.c's rule.

        Symmetric counting stores each unordered pair once as (lo, hi), so only the
        upper triangle of the region is allocated; directed counting needs all of it.
        Existing sums are carried over (the new region contains the old one).
        """
        V = self.V
        P = min(P, V * V)
        rows = min(V, P)
        a = np.arange(rows, dtype=np.int64)
        end = np.minimum(V, P // (a + 1))
        first = a if self.symmetric else np.zeros(rows, np.int64)
        length = np.maximum(end - first, 0)
        offset = np.zeros(V + 1, np.int64)
        np.cumsum(length, out=offset[1 : rows + 1])
        offset[rows + 1 :] = offset[rows]
        cells = int(offset[-1])
        base = np.zeros(V, np.int64)
        base[:rows] = offset[:rows] - first
        row_end = np.zeros(V, np.int32)
        row_end[:rows] = np.where(length > 0, end, 0)  # column >= row_end: outside
        dense = np.zeros(cells, np.float64)  # calloc: untouched pages cost nothing
        old = getattr(self, "dense", None)
        if old is not None and old.size:
            keys, v, _, _ = _dense_blocks(old, self.row_offset, self.row_base, V, 1.0, False)
            r = keys // V
            dense[base[r] + (keys - r * V)] = v
        self.product = P
        self.cells = cells
        self.row_offset = offset
        # int32 unless base + column could overflow it.
        self.row_base = base.astype(np.int32 if cells + V < (1 << 31) else np.int64)
        self.row_end = row_end
        self.dense = dense

    def _cells_for(self, P: int) -> int:
        # Upper-triangle rows a >= sqrt(P) are empty ((a + 1)^2 > P).
        rows = min(self.V, math.isqrt(P) + 1 if self.symmetric else P)
        a = np.arange(rows, dtype=np.int64)
        end = np.minimum(self.V, P // (a + 1))
        first = a if self.symmetric else 0
        return int(np.maximum(end - first, 0).sum())

    def _largest_product(self, cell_budget: int) -> int:
        """The largest P whose region has at most ``cell_budget`` cells (bisection)."""
        full = self.V * self.V
        if self._cells_for(full) <= cell_budget:
            return full
        lo, hi = 0, full
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._cells_for(mid) <= cell_budget:
                lo = mid
            else:
                hi = mid
        return lo

    def _grow_dense(self) -> None:
        """Grow the dense block with the data seen, up to its share of memory_mb.

        Emitting the block scans every cell (and first touches of fresh pages are page
        faults), so a small partition must not pay for a block sized for a big one:
        keep cells <= _CELLS_PER_TOKEN x tokens seen, growing 4x at a time.
        """
        if self.fixed_product is not None or self.dense_final:
            return
        target = min(self.cell_budget, _CELLS_PER_TOKEN * self.tokens_seen)
        if self.cells and target < min(4 * self.cells, self.cell_budget):
            return
        self.dense_final = target == self.cell_budget
        P = self._largest_product(target)
        if self.product < P:
            self._set_layout(P)

    # ---------------------------------------------------------------- driver

    def run(self, chunks: Iterable[Chunk]) -> Iterator[Block]:
        for ids, lengths, keys in chunks:
            yield from self._add_chunk(ids, lengths, keys)
        if self.fill:
            yield self._flush_buffer()
        yield from self._flush_dense()

    def _add_chunk(self, ids: np.ndarray, lengths: np.ndarray, keys: np.ndarray) -> Iterator[Block]:
        if ids.size == 0:
            return
        if ids.size != int(lengths.sum()):
            raise InputError(f"{ids.size} ids but document lengths sum to {int(lengths.sum())}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.V:
            bad = lo if lo < 0 else hi
            raise InputError(
                f"token id {bad} is outside [0, {self.V}); the corpus was encoded with "
                "another vocabulary: re-run encode"
            )
        win = None
        if self.keep_prob is not None:
            u = token_uniforms(self.seed, _STREAM_SUBSAMPLE, keys, lengths)
            keep = u < self.keep_prob[ids]
            if not self.symmetric:
                win = self._draw_windows(keys, lengths)[keep]
            cum = np.zeros(ids.size + 1, np.int64)
            np.cumsum(keep, out=cum[1:])
            ends = np.cumsum(lengths)
            lengths = cum[ends] - cum[ends - lengths]
            ids = ids[keep]
        elif not self.symmetric:
            win = self._draw_windows(keys, lengths)
        n = ids.size
        self.tokens_seen += n
        self._grow_dense()
        # rem[p] = tokens from p to the end of its document: the pair (p, p + d) lies
        # inside one document iff rem[p] > d.
        itype = np.int32 if n < (1 << 31) else np.int64
        rem = np.repeat(np.cumsum(lengths).astype(itype), lengths)
        rem -= np.arange(n, dtype=itype)
        # Batches are plain token slices: a batch owns the left ends of its pairs and
        # reads `window` tokens past its end, so no pair is lost or counted twice.
        B = self.batch_tokens
        for s in range(0, n, B):
            e = min(s + B, n)
            t = min(e + self.W, n)
            self._add_batch(ids[s:t], rem[s:t], e - s, None if win is None else win[s:t])
            if self.fill > self.buffer_cap:
                yield self._flush_buffer()

    def _draw_windows(self, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        u = token_uniforms(self.seed, _STREAM_WINDOW, keys, lengths)
        return (1 + np.floor(u * self.W)).astype(np.int32)

    # ---------------------------------------------------------------- one batch

    def _add_batch(
        self, ids: np.ndarray, rem: np.ndarray, n_own: int, win: np.ndarray | None
    ) -> None:
        """Count the pairs whose left position is in ``ids[:n_own]``."""
        n = ids.size
        for d in range(1, self.W + 1):
            P = min(n_own, n - d)
            if P <= 0:
                break
            m = rem[:P] > d
            left = ids[:P]
            right = ids[d : d + P]
            if self.symmetric:
                a = left[m]
                b = right[m]
                self._route(np.minimum(a, b), np.maximum(a, b), d, mirror=True)
            else:
                assert win is not None
                # word2vec: centre p sees q iff |p - q| <= b_p. Left centre -> right
                # context and right centre -> left context, each with its own draw.
                ml = m & (win[:P] >= d)
                self._route(left[ml], right[ml], d, mirror=False)
                mr = m & (win[d : d + P] >= d)
                self._route(right[mr], left[mr], d, mirror=False)

    def _route(self, rows: np.ndarray, cols: np.ndarray, d: int, mirror: bool) -> None:
        """Dense cells get ``np.add.at``; the rest are appended to the sparse buffer."""
        if rows.size == 0:
            return
        if self.cells:
            inside = cols < self.row_end.take(rows)
            idx = self.row_base.take(rows)
            idx += cols
            idx = idx[inside]
            if idx.size:
                np.add.at(self.dense, idx, self.weights[d])
                # Most pairs are inside: gather the few outside ones by index.
                out = np.flatnonzero(~inside)
                rows = rows.take(out)
                cols = cols.take(out)
        if rows.size == 0:
            return
        # Packed sparse key: (row * V + col) << dbits | d, written straight into the
        # buffer. Symmetric counting stores both directions now: sorting them together
        # is cheaper than re-sorting transposed blocks later.
        self._append(rows, cols, d)
        if mirror:
            self._append(cols, rows, d)

    def _append(self, rows: np.ndarray, cols: np.ndarray, d: int) -> None:
        s = self.fill
        out = self.buffer[s : s + rows.size]
        np.multiply(rows, np.int64(self.V), out=out)
        out += cols
        if self.dbits:
            out <<= self.dbits
            out |= d
        self.fill = s + rows.size

    # ---------------------------------------------------------------- flushing

    def _flush_buffer(self) -> Block:
        """Radix-sort the packed sparse keys and sum runs of equal (row, col)."""
        n = self.fill
        self.fill = 0
        ordered = _radix_sort(self.buffer[:n], self.scratch[:n], self.key_bits)
        keys, values = _reduce_packed(ordered, self.dbits, self.reduce_weights)
        if self.out_scale != 1.0:
            values *= self.out_scale
        return keys, values

    def _flush_dense(self) -> Iterator[Block]:
        if not self.cells:
            return
        keys, values, t_keys, t_values = _dense_blocks(
            self.dense, self.row_offset, self.row_base, self.V, self.out_scale, self.symmetric
        )
        self.dense = np.zeros(0, np.float64)
        self.cells = 0
        if keys.size:
            yield keys, values
        if t_keys.size:
            yield t_keys, t_values


# --------------------------------------------------------------------- internals


def _is_strictly_increasing(keys: np.ndarray) -> bool:
    return bool(keys.size < 2 or np.all(keys[1:] > keys[:-1]))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection on uint64 with good avalanche)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _check_window(window: int) -> None:
    if not isinstance(window, int | np.integer) or window < 1:
        raise ConfigError(f"cooccur.window must be an integer >= 1, got {window!r}")


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ConfigError(
            f"cooccur.weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}"
        )


# --------------------------------------------------------------------- numba helpers
# The sparse keys are mostly distinct pairs of rare words, so sorting them is the
# largest cost of counting: an LSD radix sort is ~3x faster than np.sort on them.

_RADIX_BITS = 11


@njit(cache=True, nogil=True)
def _radix_sort(keys: np.ndarray, scratch: np.ndarray, bits: int) -> np.ndarray:
    """Sort non-negative int64 ``keys`` below ``2**bits``; returns ``keys`` or ``scratch``.

    LSD radix sort on 11-bit digits: one pass builds every digit's histogram, then one
    stable scatter per digit (digits equal for all keys are skipped).
    """
    n = keys.size
    nb = 1 << _RADIX_BITS
    mask = nb - 1
    passes = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    hist = np.zeros((passes, nb), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            hist[p, (k >> (p * _RADIX_BITS)) & mask] += 1
    src = keys
    dst = scratch
    for p in range(passes):
        h = hist[p]
        if n == 0 or h.max() == n:
            continue
        total = 0
        for b in range(nb):
            c = h[b]
            h[b] = total
            total += c
        shift = p * _RADIX_BITS
        for i in range(n):
            k = src[i]
            b = (k >> shift) & mask
            dst[h[b]] = k
            h[b] += 1
        src, dst = dst, src
    return src


@njit(cache=True, nogil=True)
def _reduce_packed(
    packed: np.ndarray, dbits: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum sorted packed keys ``pair << dbits | d`` into (pair keys, sum of weights[d])."""
    n = packed.size
    mask = (1 << dbits) - 1
    unique = 0
    prev = -1
    for i in range(n):
        k = packed[i] >> dbits
        if k != prev:
            unique += 1
            prev = k
    keys = np.empty(unique, np.int64)
    values = np.empty(unique, np.float64)
    j = -1
    prev = -1
    for i in range(n):
        s = packed[i]
        k = s >> dbits
        w = weights[s & mask]
        if k != prev:
            j += 1
            keys[j] = k
            values[j] = w
            prev = k
        else:
            values[j] += w
    return keys, values


@njit(cache=True, nogil=True)
def _dense_blocks(
    dense: np.ndarray,
    row_offset: np.ndarray,
    row_base: np.ndarray,
    V: int,
    scale: float,
    symmetric: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells of the dense block as sorted blocks (values times ``scale``).

    Returns ``(keys, values)`` of the stored cells in row-major, i.e. ascending key,
    order and, when ``symmetric`` (cells hold unordered pairs lo <= hi), the strict
    lower triangle ``(t_keys, t_values)`` as well, sorted by a counting sort on the
    column; the diagonal is doubled ((a, a) at distance d is seen from both ends).
    """
    rows = row_offset.size - 1
    nnz = 0
    below = np.zeros(V + 1, np.int64)  # entries per transposed row, then start offsets
    for a in range(rows):
        for idx in range(row_offset[a], row_offset[a + 1]):
            if dense[idx] != 0.0:
                nnz += 1
                c = idx - row_base[a]
                if symmetric and c != a:
                    below[c + 1] += 1
    for c in range(V):
        below[c + 1] += below[c]
    n_low = below[V] if symmetric else 0
    keys = np.empty(nnz, np.int64)
    values = np.empty(nnz, np.float64)
    t_keys = np.empty(n_low, np.int64)
    t_values = np.empty(n_low, np.float64)
    j = 0
    for a in range(rows):
        for idx in range(row_offset[a], row_offset[a + 1]):
            v = dense[idx]
            if v != 0.0:
                c = idx - row_base[a]
                x = v * scale
                if symmetric and c == a:
                    x *= 2.0
                keys[j] = a * V + c
                values[j] = x
                j += 1
                if symmetric and c != a:
                    at = below[c]
                    t_keys[at] = c * V + a
                    t_values[at] = x
                    below[c] = at + 1
    return keys, values, t_keys, t_values


@njit(cache=True, nogil=True)
def _sort_reduce_kv(
    keys: np.ndarray, values: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stable LSD radix sort of (key, value) pairs by key, then sum runs of equal keys.

    ``keys`` and ``values`` are used as scratch space (the caller passes copies).
    """
    n = keys.size
    nb = 1 << _RADIX_BITS
    mask = nb - 1
    passes = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    hist = np.zeros((passes, nb), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            hist[p, (k >> (p * _RADIX_BITS)) & mask] += 1
    src_k = keys
    src_v = values
    dst_k = np.empty_like(keys)
    dst_v = np.empty_like(values)
    for p in range(passes):
        h = hist[p]
        if h.max() == n:
            continue
        total = 0
        for b in range(nb):
            c = h[b]
            h[b] = total
            total += c
        shift = p * _RADIX_BITS
        for i in range(n):
            k = src_k[i]
            b = (k >> shift) & mask
            at = h[b]
            dst_k[at] = k
            dst_v[at] = src_v[i]
            h[b] = at + 1
        src_k, dst_k = dst_k, src_k
        src_v, dst_v = dst_v, src_v
    unique = 0
    prev = -1
    for i in range(n):
        if src_k[i] != prev:
            unique += 1
            prev = src_k[i]
    out_k = np.empty(unique, np.int64)
    out_v = np.empty(unique, np.float64)
    j = -1
    prev = -1
    for i in range(n):
        k = src_k[i]
        if k != prev:
            j += 1
            out_k[j] = k
            out_v[j] = src_v[i]
            prev = k
        else:
            out_v[j] += src_v[i]
    return out_k, out_v


@njit(cache=True, nogil=True)
def _shard_counts(
    keys: np.ndarray, values: np.ndarray, V: int, S: int
) -> tuple[np.ndarray, int, bool, bool]:
    """Entries per shard of a block, the largest key gap inside a shard, whether keys are
    ascending, unique and >= 0, and whether every value is an integer in [0, 2**24)."""
    counts = np.zeros(S, np.int64)
    last = np.full(S, -1, np.int64)
    max_delta = 0
    ordered = keys.size == 0 or keys[0] >= 0
    small_ints = True
    next_row = 0  # keys are sorted: the row (one division) changes only at row ends
    s = 0
    for t in range(keys.size):
        k = keys[t]
        if t > 0 and k <= keys[t - 1]:
            ordered = False
            break
        v = values[t]
        if small_ints and not (v >= 0.0 and v < 16777216.0 and v == np.floor(v)):
            small_ints = False
        if k >= next_row:
            row = k // V
            next_row = (row + 1) * V
            s = row % S
        counts[s] += 1
        if last[s] >= 0 and k - last[s] > max_delta:
            max_delta = k - last[s]
        last[s] = k
    return counts, max_delta, ordered, small_ints


@njit(cache=True, nogil=True)
def _shard_scatter(
    keys: np.ndarray,
    values: np.ndarray,
    V: int,
    S: int,
    pos: np.ndarray,
    first_piece: np.ndarray,
    max_piece: int,
    deltas: np.ndarray,
    out_values: np.ndarray,
    first: np.ndarray,
) -> None:
    """Scatter a sorted block into shard order: key deltas (0 at piece starts) and values."""
    last = np.zeros(S, np.int64)
    seen = np.zeros(S, np.int64)
    next_row = 0
    s = 0
    for t in range(keys.size):
        k = keys[t]
        if k >= next_row:
            row = k // V
            next_row = (row + 1) * V
            s = row % S
        c = seen[s]
        at = pos[s] + c
        if c % max_piece == 0:
            first[first_piece[s] + c // max_piece] = k
            deltas[at] = 0
        else:
            deltas[at] = k - last[s]
        out_values[at] = values[t]
        last[s] = k
        seen[s] = c + 1
