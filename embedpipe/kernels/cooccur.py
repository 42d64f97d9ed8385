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

How it is fast (glove.c's design, compiled with numba; no Python loop per token):

* One compiled pass over a chunk of documents visits every pair (p, p + d),
  0 < d <= window, inside a document (document ends come from the list offsets).
* Ids are frequency ranks, so most pair *instances* involve two frequent words.
  Pairs with ``(i + 1)(j + 1) <= max_product`` (glove.c's rule: the region holding
  the Zipfian mass in the fewest cells) are summed into a dense float64 block
  (~80 % of the instances of text at window 10). Symmetric counting stores the
  unordered pair (min, max) once and mirrors it when the block is emitted. The
  block is larger than the cache, so its additions are queued and applied in a
  separate tight loop whose cache misses overlap. It grows with the tokens seen, up
  to 40 % of ``memory_mb`` and at most 4M cells (32 MB), so that a small partition
  does not scan (and page-fault) a block sized for a big one.
* The other pairs are appended, both directions, to a buffer of int64 keys
  ``(i * V + j) << bits | d``; when the buffer is full it is radix-sorted (one MSD
  pass, then LSD inside cache-sized buckets; ~4x np.sort on these mostly distinct
  keys), runs of equal pairs are summed in place and the result is a block.

Downstream helpers for a shuffle by row shard: :func:`pack_by_shard` splits a block
into shards and codes key gaps and (integer) values as varints, ~3.3 bytes per
entry instead of 16; :func:`merge_runs` sums packed runs with a k-way merge straight
into final ``(i, j, x)`` chunks.

Exactness: weights are accumulated in units of ``1 / weight_denominator(...)`` (the
lcm of ``1..window`` for harmonic weighting), i.e. as integer-valued float64 sums,
which are exact below 2**53. Results therefore do not depend on chunking, block
sizes, ``memory_mb`` or the order of documents; with ``integer_units=True`` the
emitted partials are those integers, so partials summed across partitions in any
order are exact too (divide by the denominator after the final reduction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
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

# Memory plan (a soft limit, like glove.c's -memory): the dense block <= 40 % (and at
# most 32 MB), the sparse key buffer and its radix-sort twin 2 x 25 %; a flushed block
# is summed in place (keys in the buffer, sums in the twin), chunks take a few MB.
_DENSE_SHARE = 0.40  # the frequent-pair block, float64 cells ...
# ... but no bigger than about the L3 cache: beyond it every added cell is a cache miss
# and costs about what the sparse path does (measured on en-open: 13M cells were ~30 %
# slower than 2-6M; the sparse path then emits only ~5 % more entries).
_MAX_DENSE_CELLS = 1 << 22
# Packed sparse keys, 8 B each. A bigger buffer means fewer flushes, so fewer repeated
# partial entries and fewer runs for the reduce to merge.
_BUFFER_SHARE = 0.25
_QUEUE = 1 << 13  # queued dense additions (cell, offset): 80 kB, stays in the L2 cache
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


class PackedBlock(NamedTuple):
    """A sorted block split by shard, keys gap-coded, as varint bytes (:func:`pack_by_shard`).

    Piece ``p`` belongs to shard ``shard[p]`` and holds ``count[p]`` entries:
    ``key_bytes[key_offsets[p]:key_offsets[p + 1]]`` and the same slice of
    ``value_bytes`` by ``value_offsets``. A shard's pieces are consecutive and form one
    sorted run: concatenated, its keys are ``first[p] + cumsum(gaps)`` (the first gap
    is 0; ``first`` is the same for all pieces of a shard). Gaps and values are LEB128
    varints (values are integer sums, e.g. ``integer_units=True``); values are raw
    little-endian float64, 8 bytes each, when ``raw_values`` (some value is not an
    integer below 2**53).
    """

    shard: np.ndarray  # int32, one per piece
    count: np.ndarray  # int64, entries per piece
    first: np.ndarray  # int64, first key of the piece's run
    key_offsets: np.ndarray  # int64, pieces + 1 byte offsets
    key_bytes: np.ndarray  # uint8
    value_offsets: np.ndarray  # int64, pieces + 1 byte offsets
    value_bytes: np.ndarray  # uint8
    raw_values: bool


def pack_by_shard(
    keys: np.ndarray,
    values: np.ndarray,
    vocab_size: int,
    num_shards: int,
    max_piece: int = 1 << 19,
    alloc: Callable[[int, type], np.ndarray] = np.empty,
    raw_values: bool | None = None,
) -> PackedBlock:
    """Split a sorted block by shard ``(key // vocab_size) mod num_shards`` and pack it.

    The map-side step before a shuffle by shard: three linear passes (numba), no sort,
    since a sorted block holds each row's keys contiguously. Key gaps and integer
    values as varints take ~3.3 bytes per entry on text (most gaps and single
    co-occurrences fit 1-2 bytes) instead of 16 (int64 + float64): the bytes that cross
    the JVM, its compression and the shuffle files. Each shard's run is cut into
    pieces of at most ``max_piece`` entries; ``alloc(n, dtype)`` allocates the two
    byte arrays (e.g. from a memory pool that recycles pages). ``raw_values`` forces
    the value format (None: varints when every value is an integer below 2**53).
    """
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if keys.shape != values.shape:
        raise InputError(f"{keys.size} keys but {values.size} values")
    if num_shards < 1:
        raise ConfigError(f"cooccur.shards must be >= 1, got {num_shards}")
    if max_piece < 1:
        raise ConfigError(f"max_piece must be >= 1, got {max_piece}")
    # Pass 1: entries, key and value bytes per (shard, piece), each shard's first key.
    n = keys.size
    slots = max(1, -(-n // max_piece))
    counts = np.zeros(num_shards, np.int64)
    key_size = np.zeros((num_shards, slots), np.int64)
    value_size = np.zeros((num_shards, slots), np.int64)
    first_key = np.zeros(num_shards, np.int64)
    ordered, integral = _pack_scan(
        keys, values, vocab_size, num_shards, max_piece, counts, key_size, value_size, first_key
    )
    if not ordered:
        raise InputError("pack_by_shard needs ascending unique keys >= 0 (a block)")
    raw = not integral if raw_values is None else bool(raw_values)
    if not raw and not integral:
        raise InputError("pack_by_shard: raw_values=False needs integer values in [0, 2**53)")
    pieces = -(-counts // max_piece)
    first_piece = np.cumsum(pieces) - pieces
    n_pieces = int(pieces.sum())
    used = np.arange(slots) < pieces[:, None]  # row-major: shard order, then piece order
    count = np.minimum(max_piece, counts[:, None] - np.arange(slots) * max_piece)[used]
    key_offsets = np.zeros(n_pieces + 1, np.int64)
    np.cumsum(key_size[used], out=key_offsets[1:])
    value_offsets = np.zeros(n_pieces + 1, np.int64)
    np.cumsum(count * 8 if raw else value_size[used], out=value_offsets[1:])
    key_bytes = alloc(int(key_offsets[-1]), np.uint8)
    value_bytes = alloc(int(value_offsets[-1]), np.uint8)
    # Pass 2: write every entry at its piece's cursor.
    _pack_write(
        keys,
        values,
        vocab_size,
        num_shards,
        first_piece,
        max_piece,
        raw,
        key_offsets[:-1].copy(),
        value_offsets[:-1].copy(),
        key_bytes,
        value_bytes,
    )
    first = np.repeat(first_key, pieces)
    shard = np.repeat(np.arange(num_shards, dtype=np.int32), pieces)
    return PackedBlock(shard, count, first, key_offsets, key_bytes, value_offsets, value_bytes, raw)


def unpack_run(
    first: int, count: int, key_bytes: np.ndarray, value_bytes: np.ndarray, raw_values: bool
) -> Block:
    """Decode one packed run (a shard's pieces of a block, concatenated) into ``(keys, values)``."""
    keys = np.empty(count, np.int64)
    values = np.empty(count, np.float64)
    kpos, vpos = _unpack(first, key_bytes, value_bytes, raw_values, keys, values)
    if kpos != key_bytes.size or vpos != value_bytes.size:
        raise InputError(
            f"packed run of {count} entries has {key_bytes.size - kpos} key and "
            f"{value_bytes.size - vpos} value bytes left over: the bytes are damaged"
        )
    return keys, values


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


class Entries(NamedTuple):
    """A chunk of final matrix entries in (i, j) order (see :func:`merge_runs`)."""

    i: np.ndarray  # int32 rows
    j: np.ndarray  # int32 columns
    x: np.ndarray  # float32 values
    sum_x: float  # sum of x (float64)


def merge_runs(
    first: np.ndarray,
    count: np.ndarray,
    key_bytes: np.ndarray,
    key_start: np.ndarray,
    value_bytes: np.ndarray,
    value_start: np.ndarray,
    raw_values: bool,
    vocab_size: int,
    denominator: float = 1.0,
    min_x: float = 0.0,
    chunk: int = 1 << 20,
    copy: bool = True,
) -> Iterator[Entries]:
    """Sum packed sorted runs of pair keys into final entries, ``chunk`` at a time.

    Run ``r`` has ``count[r]`` entries, keys ``i * vocab_size + j`` starting at
    ``first[r]``, key gaps as varints from ``key_bytes[key_start[r]]`` and values from
    ``value_bytes[value_start[r]]`` (varints, or raw float64 when ``raw_values``): the
    concatenated pieces of :func:`pack_by_shard`. A k-way merge (a loser tree over
    the runs, compiled) adds the values of equal keys, divides the sums by
    ``denominator``, drops those below ``min_x`` and yields ``(i, j, x float32,
    sum_x)`` chunks of exactly ``chunk`` entries (the last one shorter): memory is
    the runs plus one chunk, whatever their size. The order of addition depends only
    on the runs and their order. ``copy=False`` reuses one set of chunk arrays: use
    each chunk before advancing the generator.
    """
    first = np.asarray(first, dtype=np.int64)
    k = first.size
    count = np.asarray(count, dtype=np.int64)
    kpos = np.array(key_start, dtype=np.int64)  # cursors, advanced by the merge
    vpos = np.array(value_start, dtype=np.int64)
    if not (count.shape == kpos.shape == vpos.shape == (k,)):
        raise InputError(f"merge_runs: {k} runs need {k} counts and key and value starts")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    key_bytes = np.asarray(key_bytes, dtype=np.uint8)
    value_bytes = np.asarray(value_bytes, dtype=np.uint8)
    m = 1
    while m < k:
        m *= 2
    cur = np.full(m, _SENTINEL, np.int64)  # head key of each run (leaf)
    head = np.zeros(m, np.float64)  # its value
    left = np.zeros(m, np.int64)  # entries after the head
    left[:k] = count
    for r in range(k):
        _advance(r, first[r], cur, head, left, kpos, vpos, key_bytes, value_bytes, raw_values)
    losers, winner = _build_loser_tree(cur, m)
    state = np.array([winner, -1], np.int64)  # the winner, the pending key
    acc = np.zeros(1, np.float64)  # the pending sum
    out_i = np.empty(chunk, np.int32)
    out_j = np.empty(chunk, np.int32)
    out_x = np.empty(chunk, np.float32)
    while True:
        if copy:
            out_i, out_j, out_x = np.empty_like(out_i), np.empty_like(out_j), np.empty_like(out_x)
        n, done, sum_x = _merge_runs(
            key_bytes,
            value_bytes,
            raw_values,
            kpos,
            vpos,
            left,
            cur,
            head,
            losers,
            m,
            int(vocab_size),
            float(denominator),
            float(min_x),
            state,
            acc,
            out_i,
            out_j,
            out_x,
        )
        if n or not done:
            yield Entries(out_i[:n], out_j[:n], out_x[:n], sum_x)
        if done:
            return


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
    copy: bool = True,
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
    ``copy=False`` yields the sparse blocks as views of the counter's buffers (no
    allocation per block): use each block before advancing the generator.
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
    yield from counter.run(_chunks_from_docs(docs, doc_keys, counter.chunk_tokens), copy)


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
    copy: bool = True,
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
    yield from counter.run(_chunks_from_arrow(lists, doc_keys), copy)


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
    copy: bool = True,
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

    yield from counter.run(
        _chunks_from_arrow_pairs(columns(), use_keys=doc_column is not None), copy
    )


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
        # The counting loop stops before a token could overflow the buffer (2 keys per
        # pair, W pairs per token), so the buffer needs no slack.
        size = max(1024, 4 * self.W, int(_BUFFER_SHARE * budget) // 8)
        # Documents given as NumPy arrays are concatenated in chunks of this many ids.
        self.chunk_tokens = min(1 << 20, max(1 << 12, int(0.05 * budget) // 32))
        self.buffer = np.empty(size, np.int64)
        # Dense additions wait in a small queue (L1/L2-sized) before they are applied.
        self.queue_cells = np.empty(_QUEUE, np.int64)
        self.queue_offsets = np.empty(_QUEUE, np.int16 if self.W < (1 << 15) else np.int32)
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

    def run(self, chunks: Iterable[Chunk], copy: bool = True) -> Iterator[Block]:
        for ids, lengths, keys in chunks:
            for keys_, values in self._add_chunk(ids, lengths, keys):
                yield (keys_.copy(), values.copy()) if copy else (keys_, values)
        if self.fill:
            keys_, values = self._flush_buffer()
            yield (keys_.copy(), values.copy()) if copy else (keys_, values)
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
        if win is None:
            win = np.empty(0, np.int32)
        self.tokens_seen += ids.size
        self._grow_dense()
        offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # One compiled pass over the chunk: dense cells are added in place, other pairs
        # are appended to the sparse buffer; it stops when the buffer is full.
        doc, pos = 0, 0
        while doc < lengths.size:
            doc, pos, self.fill = _count_pairs(
                ids,
                offsets,
                win,
                doc,
                pos,
                self.symmetric,
                self.W,
                self.weights,
                self.row_base,
                self.row_end,
                self.dense,
                self.V,
                self.dbits,
                self.buffer,
                self.fill,
                self.queue_cells,
                self.queue_offsets,
            )
            if doc < lengths.size:
                yield self._flush_buffer()

    def _draw_windows(self, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        u = token_uniforms(self.seed, _STREAM_WINDOW, keys, lengths)
        return (1 + np.floor(u * self.W)).astype(np.int32)

    # ---------------------------------------------------------------- flushing

    def _flush_buffer(self) -> Block:
        """Radix-sort the packed sparse keys and sum runs of equal (row, col)."""
        n = self.fill
        self.fill = 0
        ordered = _radix_sort(self.buffer[:n], self.scratch[:n], self.key_bits)
        # Sums go into the other array (the keys are compacted in place): views of the
        # counter's buffers, valid until the next flush.
        in_buffer = ordered.ctypes.data == self.buffer.ctypes.data
        other = self.scratch if in_buffer else self.buffer
        keys, values = _reduce_packed(
            ordered, self.dbits, self.reduce_weights, other[:n].view(np.float64)
        )
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
_BUCKET_BITS = 14  # MSD buckets of ~16k keys (128 kB + scratch) sort inside the L2 cache


@njit(cache=True, nogil=True)
def _count_pairs(
    ids: np.ndarray,
    offsets: np.ndarray,
    win: np.ndarray,
    doc: int,
    pos: int,
    symmetric: bool,
    W: int,
    weights: np.ndarray,
    row_base: np.ndarray,
    row_end: np.ndarray,
    dense: np.ndarray,
    V: int,
    dbits: int,
    buffer: np.ndarray,
    fill: int,
    cells: np.ndarray,
    offs: np.ndarray,
) -> tuple[int, int, int]:
    """Count the pairs of documents ``doc..`` (``ids[offsets[g]:offsets[g + 1]]``) from ``pos``.

    Every pair (p, p + d), 0 < d <= W, inside one document is visited once. Symmetric
    counting adds ``weights[d]`` to the dense cell of the unordered pair (lo, hi) when
    ``hi < row_end[lo]``, else appends both directed keys ``(row * V + col) << dbits | d``
    to ``buffer``; directed counting (``win``: each centre's own window) routes
    (centre, context) pairs the same way. Returns ``(doc, pos, fill)``: where it stopped
    (``doc == len(offsets) - 1`` when done; earlier when the buffer could overflow).

    Dense additions are queued in ``cells`` / ``offs`` and applied in a separate tight
    loop: its iterations are independent, so the CPU overlaps their cache misses (the
    block is larger than the cache), which the branchy pair loop cannot (~1.5x faster).
    """
    n_docs = offsets.size - 1
    cap = buffer.size - 2 * W
    qcap = cells.size - 2 * W
    tag = 1 if dbits > 0 else 0  # uniform keys carry no offset
    q = 0
    while doc < n_docs:
        end = offsets[doc + 1]
        if pos < offsets[doc]:
            pos = offsets[doc]
        while pos < end:
            if fill > cap:
                break
            if q > qcap:
                _add_queued(dense, cells, offs, weights, q)
                q = 0
            a = ids[pos]
            last = min(W, end - 1 - pos)
            for d in range(1, last + 1):
                b = ids[pos + d]
                dt = d * tag
                if symmetric:
                    lo = min(a, b)
                    hi = max(a, b)
                    if hi < row_end[lo]:
                        cells[q] = row_base[lo] + hi
                        offs[q] = d
                        q += 1
                    else:
                        buffer[fill] = ((lo * V + hi) << dbits) | dt
                        buffer[fill + 1] = ((hi * V + lo) << dbits) | dt
                        fill += 2
                else:
                    # word2vec: centre p sees q iff |p - q| <= its own window.
                    if win[pos] >= d:
                        if b < row_end[a]:
                            cells[q] = row_base[a] + b
                            offs[q] = d
                            q += 1
                        else:
                            buffer[fill] = ((a * V + b) << dbits) | dt
                            fill += 1
                    if win[pos + d] >= d:
                        if a < row_end[b]:
                            cells[q] = row_base[b] + a
                            offs[q] = d
                            q += 1
                        else:
                            buffer[fill] = ((b * V + a) << dbits) | dt
                            fill += 1
            pos += 1
        if pos < end:
            break
        doc += 1
    _add_queued(dense, cells, offs, weights, q)
    return doc, pos, fill


@njit(cache=True, nogil=True)
def _add_queued(
    dense: np.ndarray, cells: np.ndarray, offs: np.ndarray, weights: np.ndarray, n: int
) -> None:
    for t in range(n):
        dense[cells[t]] += weights[offs[t]]


@njit(cache=True, nogil=True)
def _radix_sort(keys: np.ndarray, scratch: np.ndarray, bits: int) -> np.ndarray:
    """Sort non-negative int64 ``keys`` below ``2**bits``; returns ``keys`` or ``scratch``.

    Large inputs: one MSD pass on the top bits into ~16k-key buckets on average, then
    an LSD radix sort of each bucket on the remaining bits, in cache for the small
    buckets (pair keys are skewed: the rows of frequent words share a few big
    buckets). ~1.5x faster than LSD passes over the whole array. Small inputs: LSD
    on 11-bit digits.
    """
    n = keys.size
    hist = np.zeros(((max(bits, 1) + _RADIX_BITS - 1) // _RADIX_BITS, 1 << _RADIX_BITS), np.int64)
    top = 0
    while (n >> (top + _BUCKET_BITS)) > 0 and top < 12:
        top += 1
    if top < 2 or bits <= top + _RADIX_BITS:
        return scratch if _lsd_sort(keys, scratch, 0, n, bits, hist) else keys
    shift = bits - top
    start = _msd_pass(keys, scratch, 0, n, shift, (1 << top) - 1)
    for b in range(1 << top):
        lo, hi = start[b], start[b + 1]
        # Only the low `shift` bits differ inside a bucket; the result goes back to keys.
        if hi > lo and not _lsd_sort(scratch, keys, lo, hi, shift, hist):
            keys[lo:hi] = scratch[lo:hi]
    return keys


@njit(cache=True, nogil=True)
def _msd_pass(
    src: np.ndarray, dst: np.ndarray, lo: int, hi: int, shift: int, mask: int
) -> np.ndarray:
    """Scatter ``src[lo:hi]`` into ``dst[lo:hi]`` by digit ``(key >> shift) & mask`` (stable);
    returns the digit buckets' start offsets (``mask + 2`` of them)."""
    start = np.zeros(mask + 2, np.int64)
    for i in range(lo, hi):
        start[((src[i] >> shift) & mask) + 1] += 1
    start[0] = lo
    for b in range(mask + 1):
        start[b + 1] += start[b]
    at = start[:-1].copy()
    for i in range(lo, hi):
        k = src[i]
        b = (k >> shift) & mask
        dst[at[b]] = k
        at[b] += 1
    return start


@njit(cache=True, nogil=True)
def _lsd_sort(
    src: np.ndarray,
    dst: np.ndarray,
    lo: int,
    hi: int,
    bits: int,
    hist: np.ndarray,
) -> bool:
    """Stable LSD radix sort of ``src[lo:hi]`` on its low ``bits`` bits, 11-bit digits.

    ``dst[lo:hi]`` is the scratch space; returns True when the sorted keys ended in
    ``dst`` (an odd number of passes ran), False when in ``src``. Digits equal for all
    keys are skipped; short ranges use an insertion sort.
    """
    n = hi - lo
    if n <= 32:
        for i in range(lo + 1, hi):
            k = src[i]
            j = i - 1
            while j >= lo and src[j] > k:
                src[j + 1] = src[j]
                j -= 1
            src[j + 1] = k
        return False
    nb = 1 << _RADIX_BITS
    mask = nb - 1
    passes = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    for p in range(passes):
        hist[p, :] = 0
    for i in range(lo, hi):
        k = src[i]
        for p in range(passes):
            hist[p, (k >> (p * _RADIX_BITS)) & mask] += 1
    a = src
    b = dst
    swapped = False
    for p in range(passes):
        h = hist[p]
        shift = p * _RADIX_BITS
        if h[(a[lo] >> shift) & mask] == n:
            continue
        total = lo
        for d in range(nb):
            c = h[d]
            h[d] = total
            total += c
        for i in range(lo, hi):
            k = a[i]
            d = (k >> shift) & mask
            b[h[d]] = k
            h[d] += 1
        a, b = b, a
        swapped = not swapped
    return swapped


@njit(cache=True, nogil=True)
def _reduce_packed(
    packed: np.ndarray, dbits: int, weights: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum sorted packed keys ``pair << dbits | d`` into (pair keys, sum of weights[d]).

    One pass, in place: the pair keys overwrite ``packed`` from the front (there are
    never more of them than keys read), the sums go to ``values`` (at least as long).
    Returns views of their filled parts.
    """
    n = packed.size
    mask = (1 << dbits) - 1
    j = -1
    prev = -1
    for i in range(n):
        s = packed[i]
        k = s >> dbits
        w = weights[s & mask]
        if k != prev:
            j += 1
            packed[j] = k
            values[j] = w
            prev = k
        else:
            values[j] += w
    return packed[: j + 1], values[: j + 1]


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
def _varint_len(x: int) -> int:
    """Bytes of ``0 <= x < 2**63`` as a LEB128 varint (7 bits per byte), without a loop."""
    return (
        1
        + (x >= 1 << 7)
        + (x >= 1 << 14)
        + (x >= 1 << 21)
        + (x >= 1 << 28)
        + (x >= 1 << 35)
        + (x >= 1 << 42)
        + (x >= 1 << 49)
        + (x >= 1 << 56)
    )


@njit(cache=True, nogil=True)
def _put_varint(buf: np.ndarray, at: int, x: int) -> int:
    while x >= 128:
        buf[at] = (x & 127) | 128
        x >>= 7
        at += 1
    buf[at] = x
    return at + 1


@njit(cache=True, nogil=True)
def _get_varint(buf: np.ndarray, at: int) -> tuple[int, int]:
    b = np.int64(buf[at])
    x = b & 127
    shift = 7
    while b >= 128:
        at += 1
        b = np.int64(buf[at])
        x |= (b & 127) << shift
        shift += 7
    return x, at + 1


@njit(cache=True, nogil=True)
def _get_float64(buf: np.ndarray, at: int) -> float:
    bits = np.zeros(1, np.uint64)
    for t in range(8):
        bits[0] |= np.uint64(buf[at + t]) << np.uint64(8 * t)
    return bits.view(np.float64)[0]


@njit(cache=True, nogil=True)
def _pack_scan(
    keys: np.ndarray,
    values: np.ndarray,
    V: int,
    S: int,
    max_piece: int,
    counts: np.ndarray,
    key_size: np.ndarray,
    value_size: np.ndarray,
    first_key: np.ndarray,
) -> tuple[bool, bool]:
    """Entries per shard, varint bytes per (shard, piece) of key gaps and values, each
    shard's first key; returns whether keys are ascending, unique and >= 0 and whether
    every value is an integer in [0, 2**53) (then values are coded as varints)."""
    last = np.zeros(S, np.int64)
    ordered = keys.size == 0 or keys[0] >= 0
    integral = True
    next_row = 0  # keys are sorted: the row (one division) changes only at row ends
    s = 0
    prev = -1
    for t in range(keys.size):
        k = keys[t]
        if k <= prev:
            ordered = False
            break
        prev = k
        if k >= next_row:
            row = k // V
            next_row = (row + 1) * V
            s = row % S
        c = counts[s]
        if c == 0:
            first_key[s] = k
            last[s] = k
        p = c // max_piece
        key_size[s, p] += _varint_len(k - last[s])
        last[s] = k
        counts[s] = c + 1
        v = values[t]
        if integral:
            if v >= 0.0 and v < 9007199254740992.0 and v == np.float64(np.int64(v)):
                value_size[s, p] += _varint_len(np.int64(v))
            else:
                integral = False
    return ordered, integral


@njit(cache=True, nogil=True)
def _pack_write(
    keys: np.ndarray,
    values: np.ndarray,
    V: int,
    S: int,
    first_piece: np.ndarray,
    max_piece: int,
    raw: bool,
    key_at: np.ndarray,
    value_at: np.ndarray,
    key_bytes: np.ndarray,
    value_bytes: np.ndarray,
) -> None:
    """Write each entry's key gap and value at its piece's cursor (see :func:`_pack_sizes`)."""
    last = np.zeros(S, np.int64)
    seen = np.zeros(S, np.int64)
    fbits = values.view(np.uint64)
    next_row = 0
    s = 0
    for t in range(keys.size):
        k = keys[t]
        if k >= next_row:
            row = k // V
            next_row = (row + 1) * V
            s = row % S
        c = seen[s]
        p = first_piece[s] + c // max_piece
        if c == 0:
            last[s] = k
        key_at[p] = _put_varint(key_bytes, key_at[p], k - last[s])
        if raw:
            b = fbits[t]
            at = value_at[p]
            for q in range(8):
                value_bytes[at + q] = (b >> np.uint64(8 * q)) & np.uint64(255)
            value_at[p] = at + 8
        else:
            value_at[p] = _put_varint(value_bytes, value_at[p], np.int64(values[t]))
        last[s] = k
        seen[s] = c + 1


@njit(cache=True, nogil=True)
def _unpack(
    first: int,
    key_bytes: np.ndarray,
    value_bytes: np.ndarray,
    raw: bool,
    keys: np.ndarray,
    values: np.ndarray,
) -> tuple[int, int]:
    """Decode ``keys.size`` entries of one run; returns the byte positions reached."""
    kpos = 0
    vpos = 0
    key = first
    for t in range(keys.size):
        if kpos >= key_bytes.size or vpos >= value_bytes.size:
            return key_bytes.size + 1, value_bytes.size + 1  # truncated
        gap, kpos = _get_varint(key_bytes, kpos)
        key += gap
        keys[t] = key
        if raw:
            values[t] = _get_float64(value_bytes, vpos)
            vpos += 8
        else:
            v, vpos = _get_varint(value_bytes, vpos)
            values[t] = v
    return kpos, vpos


_SENTINEL = np.iinfo(np.int64).max


@njit(cache=True, nogil=True)
def _advance(
    r: int,
    base: int,
    cur: np.ndarray,
    head: np.ndarray,
    left: np.ndarray,
    kpos: np.ndarray,
    vpos: np.ndarray,
    key_bytes: np.ndarray,
    value_bytes: np.ndarray,
    raw: bool,
) -> None:
    """Make run ``r``'s next entry its head (key ``base`` + gap), or mark it exhausted."""
    if left[r] == 0:
        cur[r] = _SENTINEL
        return
    left[r] -= 1
    gap, kpos[r] = _get_varint(key_bytes, kpos[r])
    cur[r] = base + gap
    if raw:
        head[r] = _get_float64(value_bytes, vpos[r])
        vpos[r] += 8
    else:
        v, vpos[r] = _get_varint(value_bytes, vpos[r])
        head[r] = v


@njit(cache=True, nogil=True)
def _build_loser_tree(cur: np.ndarray, m: int) -> tuple[np.ndarray, int]:
    """Loser tree over ``m`` leaves (a power of two): node ``t`` holds the run that lost
    the match there; returns (losers, overall winner)."""
    win = np.zeros(2 * m, np.int64)
    for r in range(m):
        win[m + r] = r
    losers = np.zeros(m, np.int64)
    for t in range(m - 1, 0, -1):
        a = win[2 * t]
        b = win[2 * t + 1]
        if cur[b] < cur[a]:
            win[t] = b
            losers[t] = a
        else:
            win[t] = a
            losers[t] = b
    return losers, win[1]


@njit(cache=True, nogil=True)
def _merge_runs(
    key_bytes: np.ndarray,
    value_bytes: np.ndarray,
    raw: bool,
    kpos: np.ndarray,
    vpos: np.ndarray,
    left: np.ndarray,
    cur: np.ndarray,
    head: np.ndarray,
    losers: np.ndarray,
    m: int,
    V: int,
    denominator: float,
    min_x: float,
    state: np.ndarray,
    acc_state: np.ndarray,
    out_i: np.ndarray,
    out_j: np.ndarray,
    out_x: np.ndarray,
) -> tuple[int, bool, float]:
    """Merge until ``out_*`` are full or the runs are exhausted; see :func:`merge_runs`.

    Between calls ``state`` holds (the winning run, the pending key) and ``acc_state``
    the pending sum. Returns ``(entries written, done, their sum)``.
    """
    cap = out_i.size
    n = 0
    total = 0.0
    w = state[0]
    last = state[1]
    acc = acc_state[0]
    next_row = -1  # keys are ascending: the row changes (one division) only at row ends
    row = 0
    done = False
    while True:
        key = cur[w]
        if key == last:
            acc += head[w]
        else:
            if last >= 0:
                if n == cap:
                    break
                xd = acc / denominator
                if xd >= min_x:
                    x = np.float32(xd)
                    if last >= next_row:
                        row = last // V
                        next_row = (row + 1) * V
                    out_i[n] = row
                    out_j[n] = last - row * V
                    out_x[n] = x
                    total += x
                    n += 1
            if key == _SENTINEL:
                last = -1
                done = True
                break
            last = key
            acc = head[w]
        # Advance run w (written out: numba's inlined _advance is 2x slower here), then
        # replay its path: at each node the smaller head wins and the other stays as
        # the node's loser (one comparison per level).
        if left[w] == 0:
            cur[w] = _SENTINEL
        else:
            left[w] -= 1
            gap, kpos[w] = _get_varint(key_bytes, kpos[w])
            cur[w] = key + gap
            if raw:
                head[w] = _get_float64(value_bytes, vpos[w])
                vpos[w] += 8
            else:
                v, vpos[w] = _get_varint(value_bytes, vpos[w])
                head[w] = v
        c = cur[w]
        t = (w + m) >> 1
        while t > 0:
            other = losers[t]
            if cur[other] < c:
                losers[t] = w
                w = other
                c = cur[other]
            t >>= 1
    state[0] = w
    state[1] = last
    acc_state[0] = acc
    return n, done, total
