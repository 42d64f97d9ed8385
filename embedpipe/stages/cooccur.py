"""``cooccur`` stage: ``corpus/`` -> ``cooc/``, the co-occurrence matrix in S row shards.

Semantics are Stanford GloVe's ``cooccur`` (see ``embedpipe.kernels.cooccur``): a
symmetric window of ``cooccur.window`` tokens, weight ``1/d`` (``harmonic``) or 1
(``uniform``), OOV tokens removed by ``encode`` before windowing, and every corpus
row a document: windows never cross a row. A row is a line of the input unless the
line had more than ``encode.max_doc_tokens`` in-vocabulary tokens; encode then cut it
into several rows (same ``doc``) and windows stop at the cuts too (at most
``window * (window + 1) / 2`` pairs lost per cut; with the default 10,000 this
touches only pathological lines). This keeps the result independent of how the
rows fall into partitions.

Extract, transform, load:

* **map** (``count_partials``, one task per slice of the corpus, ``mapInArrow`` over
  task numbers; the task reads its Parquet row groups with pyarrow): the kernel
  counts the rows and yields sorted partial blocks within ``cooccur.memory_mb`` (no
  Python loop over tokens). Sums are kept in integer units (multiples of
  ``1 / lcm(1..window)``), so partials add up exactly in any order. Each block is
  split by shard ``k = i mod S`` and packed (``K.pack_by_shard``: key gaps and
  values as varints, ~3.3 B per entry) into a few binary rows (*blobs*) of at most
  MAX_BLOB_ENTRIES entries. Only aggregated partial sums cross the shuffle.
* **shuffle**: ``repartition(S, p)``. ``p`` is chosen on the driver so that Spark's
  hash partitioner (Murmur3, seed 42) sends shard k to reduce partition k, so
  each reduce task gets exactly one shard. Correctness does not depend on this:
  a task groups its rows by shard.
* **reduce** (``reduce_partials``, one task per shard): the pieces of one map block
  form a sorted run; ``K.merge_runs`` merges the shard's runs (a compiled k-way
  merge) into sums, divides them by the denominator, drops those below
  ``cooccur.min_x`` and casts them to float32, one row group at a time, written
  with pyarrow straight into ``shard=k/part-00000.parquet``, sorted by (i, j). The
  task returns the shard's statistics (entries, Σx, bytes), so the driver gets
  exact figures without another pass or accumulators (which could double count
  when a task is retried).

Why pyarrow rather than Spark's writer: the merged entries are already sorted and
grouped by shard in Python; sending them back to the JVM would convert every
entry to a row, sort it again and encode it (the per-row cost the map side
avoids). Executors therefore need pyarrow access to the run directory, like every
reader of ``cooc/`` (local disk shared by the driver and executors, HDFS, S3, GCS).

Cost model (logged and recorded), measured at window 10 on en-open and the synthetic
corpus: partial entries ≈ 0.33 · window per kept token (3.3 per token; 1.4-1.8 per
final entry: the sparse tail of the matrix is made of pairs seen once or twice);
shuffle ≈ partial entries × 3.3 B of varints (Spark's lz4 gains little on them);
a map task holds ``memory_mb`` (dense block, sort buffer and its twin) plus one
packed block; a reduce task holds its shard's blobs twice (received, and
concatenated for the merge: ~7 B per partial entry) plus one row group. The
default S keeps that under half of ``memory_mb``: ``S = next power of two >=
partials × 10 B / (memory_mb / 2)``; it depends on the data and settings, never on
the number of cores.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from embedpipe import cooccur as layout
from embedpipe import fsutil, schemas
from embedpipe.config import Config, CooccurConfig, to_dict
from embedpipe.errors import ConfigError, EmbedpipeError, InputError
from embedpipe.kernels import cooccur as K
from embedpipe.log import Timer, human_bytes, human_count, logger
from embedpipe.runs import RunDir, StageResult, fingerprint, log_skip, stage_fingerprint

# ------------------------------------------------------------------ shuffle format

#: Rows the map side emits: data blobs (kind 0) and one statistics row per task (kind 1).
PARTIALS_DDL = (
    "kind byte, p int, shard int, part int, run int, seq int, n long, first long, "
    "kw byte, keys binary, vw byte, vals binary"
)
PARTIALS_SCHEMA = pa.schema(
    [
        ("kind", pa.int8()),
        ("p", pa.int32()),
        ("shard", pa.int32()),
        ("part", pa.int32()),
        ("run", pa.int32()),
        ("seq", pa.int32()),
        ("n", pa.int64()),
        ("first", pa.int64()),
        ("kw", pa.int8()),
        ("keys", pa.binary()),
        ("vw", pa.int8()),
        ("vals", pa.binary()),
    ]
)
#: Rows the reduce side returns to the driver: one per shard (kind 0) plus the map
#: statistics it received (kind 1), forwarded.
STATS_DDL = "kind byte, shard int, nnz long, partials long, sum_x double, bytes long, info string"
STATS_SCHEMA = pa.schema(
    [
        ("kind", pa.int8()),
        ("shard", pa.int32()),
        ("nnz", pa.int64()),
        ("partials", pa.int64()),
        ("sum_x", pa.float64()),
        ("bytes", pa.int64()),
        ("info", pa.string()),
    ]
)
KIND_DATA, KIND_STATS = 0, 1

#: Entries per blob row: ~1 MB of varints, well under Spark's page size.
MAX_BLOB_ENTRIES = 1 << 18
#: Bytes per Arrow batch crossing the JVM/Python boundary (binary offsets are int32).
MAX_BATCH_BYTES = 64 << 20
#: Parquet codec of the shard files: snappy reads fastest and every reader knows it.
COMPRESSION = "snappy"
#: Dictionary-encode i (sorted: a few runs per row group). Not j: hashing V distinct
#: values halves the write speed for 20 % smaller files; x has too many values.
DICTIONARY = ["i"]
#: Rows per Parquet row group: fixed, so the file bytes depend only on the data.
ROW_GROUP = 1 << 20

# Cost-model constants (see the module docstring), measured at window 10 (0.33 and
# ~3.5 B on en-open and synth), with some margin.
PARTIALS_PER_TOKEN_WINDOW = 0.4  # partial entries per kept token per unit of window
#: Held by a reduce task per partial entry: the received blobs and their concatenation,
#: which the merge reads (raw float64 values, window > 17, need about twice that).
BLOB_BYTES_PER_ENTRY = 10
PROGRESS_SECONDS = 30.0


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Plan:
    """Everything a task needs (small, pickled into the closures)."""

    vocab_size: int
    shards: int
    window: int
    weighting: str
    dynamic_window: bool
    subsample: float
    seed: int
    memory_mb: int
    min_x: float
    #: True: the kernel emits integer multiples of 1/denominator (exact in any order).
    integer_units: bool
    #: Reduced sums are divided by this (1 when integer_units is False).
    denominator: int
    #: Value of the partition column ``p`` for each shard (see :func:`partition_keys`).
    pkeys: tuple[int, ...]


def estimate_partials(kept_tokens: int, window: int) -> int:
    """Expected partial entries emitted by the map side (the cost model's first term)."""
    return int(PARTIALS_PER_TOKEN_WINDOW * window * kept_tokens)


def default_shards(kept_tokens: int, window: int, memory_mb: int) -> int:
    """S from the data size: a shard's blobs fill at most half of ``memory_mb``.

    A power of two >= ``partials x BLOB_BYTES_PER_ENTRY / (memory_mb / 2)``; never a
    function of cores.
    """
    need = estimate_partials(kept_tokens, window) * BLOB_BYTES_PER_ENTRY
    budget = max(1, (memory_mb << 20) // 2)
    return 1 << max(0, math.ceil(math.log2(max(1.0, need / budget))))


def make_plan(ccfg: CooccurConfig, vocab_size: int, kept_tokens: int) -> Plan:
    """The plan for ``ccfg`` on a corpus of ``kept_tokens`` ids over ``vocab_size`` words."""
    weighting = ccfg.weighting.value if hasattr(ccfg.weighting, "value") else str(ccfg.weighting)
    shards = ccfg.shards or default_shards(kept_tokens, ccfg.window, ccfg.memory_mb)
    denom = K.weight_denominator(ccfg.window, weighting)
    # lcm(1..window) above 2**24 (window > 17) leaves too little room for exact
    # integer sums: the kernel then emits true units and sums are only nearly exact.
    integer_units = denom <= 1 << 24
    return Plan(
        vocab_size=vocab_size,
        shards=shards,
        window=ccfg.window,
        weighting=weighting,
        dynamic_window=ccfg.dynamic_window,
        subsample=ccfg.subsample,
        seed=ccfg.seed,
        memory_mb=ccfg.memory_mb,
        min_x=ccfg.min_x,
        integer_units=integer_units,
        denominator=denom if integer_units else 1,
        pkeys=tuple(partition_keys(shards)),
    )


# ------------------------------------------------------------------ Spark's hash partitioner

_M32 = 0xFFFF_FFFF


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def spark_hash_int(value: int, seed: int = 42) -> int:
    """Spark's ``Murmur3_x86_32.hashInt(value, seed)`` (what ``hash(int column)`` returns)."""
    k1 = (value & _M32) * 0xCC9E2D51 & _M32
    k1 = _rotl32(k1, 15) * 0x1B873593 & _M32
    h1 = (seed & _M32) ^ k1
    h1 = (_rotl32(h1, 13) * 5 + 0xE6546B64) & _M32
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _M32
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _M32
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x8000_0000 else h1


def partition_keys(num_shards: int) -> list[int]:
    """``p_k`` per shard with ``pmod(hash(p_k), S) == k``: ``repartition(S, p)`` is then 1:1."""
    keys: list[int | None] = [None] * num_shards
    missing = num_shards
    c = 0
    while missing:
        k = spark_hash_int(c) % num_shards  # Python's % is Spark's pmod for n > 0
        if keys[k] is None:
            keys[k] = c
            missing -= 1
        c += 1
    return [int(k) for k in keys]  # type: ignore[arg-type]


# ------------------------------------------------------------------ map input

#: A map task reads at most about this many ids (when input.partitions is 0).
MAX_TASK_TOKENS = 64_000_000


class Slice(NamedTuple):
    """Rows ``[row_start, row_end)`` of row group ``group`` of one corpus file."""

    uri: str
    group: int
    row_start: int
    row_end: int


def corpus_row_groups(corpus_uri: str) -> list[tuple[str, int, int, int]]:
    """``(file uri, row group, rows, ids)`` of every row group of the corpus, from footers."""
    import pyarrow.parquet as pq

    fs, root = fsutil.resolve(corpus_uri)
    prefix = corpus_uri[: len(corpus_uri) - len(root)] if corpus_uri.endswith(root) else ""
    out = []
    for path, _size in fsutil.list_files(corpus_uri):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".parquet") or name.startswith((".", "_")):
            continue
        uri = prefix + path
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as e:
            raise InputError(
                f"{uri}: corpus file is not readable Parquet ({e}); re-run encode --force"
            ) from e
        schemas.check(meta.schema.to_arrow_schema(), schemas.CORPUS, uri)
        col = meta.schema.to_arrow_schema().get_field_index("ids")
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            out.append((uri, g, rg.num_rows, rg.column(col).num_values))
    return out


def plan_slices(groups: list[tuple[str, int, int, int]], num_tasks: int) -> list[list[Slice]]:
    """Cut the corpus into ``num_tasks`` contiguous pieces of about equal ids.

    Task t takes the ids in ``[t * total / n, (t + 1) * total / n)`` of the corpus in
    file order; a row group is cut by rows in proportion to its ids (rows are
    documents of similar length). So tasks are balanced even when files are few
    (Spark's Parquet reader cannot split a file of one row group).
    """
    total = sum(g[3] for g in groups)
    bounds = np.arange(num_tasks + 1, dtype=np.float64) * total / num_tasks
    tasks: list[list[Slice]] = [[] for _ in range(num_tasks)]
    done = 0  # ids before the current row group
    for uri, g, rows, ids in groups:
        if rows == 0:
            continue
        cuts = np.ceil((bounds - done) * rows / max(ids, 1))
        cuts = np.clip(cuts, 0, rows).astype(np.int64)
        cuts[0], cuts[-1] = 0, rows
        for t in np.flatnonzero(cuts[1:] > cuts[:-1]):
            tasks[t].append(Slice(uri, g, int(cuts[t]), int(cuts[t + 1])))
        done += ids
    return tasks


def read_slices(slices: Iterable[Slice]) -> Iterator[pa.RecordBatch]:
    """The corpus rows of ``slices`` as record batches ``doc, ids`` (pyarrow, no JVM)."""
    import pyarrow.parquet as pq

    for sl in slices:
        fs, path = fsutil.resolve(sl.uri)
        with fs.open_input_file(path) as f:
            table = pq.ParquetFile(f).read_row_group(sl.group, columns=["doc", "ids"])
        yield from table.slice(sl.row_start, sl.row_end - sl.row_start).to_batches()


def default_map_tasks(total_ids: int, cores: int) -> int:
    """Map tasks when input.partitions is 0: a multiple of the cores, <= MAX_TASK_TOKENS each."""
    cores = max(1, cores)
    return cores * max(1, math.ceil(total_ids / (cores * MAX_TASK_TOKENS)))


# ------------------------------------------------------------------ map side


def block_to_blobs(
    keys: np.ndarray, values: np.ndarray, plan: Plan, part: int, seq: int, run: int = 0
) -> tuple[list[pa.RecordBatch], int]:
    """One sorted partial block -> blob batches (one row per shard piece); returns (batches, seq).

    A piece holds varint key gaps and values (``K.pack_by_shard``; ``vw`` 8 marks raw
    float64 values). ``run`` numbers the block within the task: a shard's pieces of
    one block, in ``seq`` order, form one sorted run, which the reduce merges whole.
    """
    if keys.size == 0:
        return [], seq
    pb = K.pack_by_shard(
        keys,
        values,
        plan.vocab_size,
        plan.shards,
        MAX_BLOB_ENTRIES,
        alloc=pooled_empty,
        raw_values=not plan.integer_units,  # one format for all runs of a shard
    )
    vw = 8 if pb.raw_values else 0
    out: list[pa.RecordBatch] = []
    koffs, voffs = pb.key_offsets, pb.value_offsets
    m = pb.shard.size
    lo = 0
    while lo < m:
        # Pieces go in batches of at most MAX_BATCH_BYTES (binary offsets are int32).
        hi = lo + 1
        while hi < m and koffs[hi + 1] - koffs[lo] + voffs[hi + 1] - voffs[lo] <= MAX_BATCH_BYTES:
            hi += 1
        count = hi - lo
        ka, ke, va, ve = int(koffs[lo]), int(koffs[hi]), int(voffs[lo]), int(voffs[hi])
        key_arr = pa.Array.from_buffers(
            pa.binary(),
            count,
            [
                None,
                pa.py_buffer((koffs[lo : hi + 1] - ka).astype(np.int32)),
                pa.py_buffer(pb.key_bytes[ka:ke]),
            ],
        )
        val_arr = pa.Array.from_buffers(
            pa.binary(),
            count,
            [
                None,
                pa.py_buffer((voffs[lo : hi + 1] - va).astype(np.int32)),
                pa.py_buffer(pb.value_bytes[va:ve]),
            ],
        )
        sh = pb.shard[lo:hi]
        out.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(np.full(count, KIND_DATA, np.int8)),
                    pa.array(np.asarray(plan.pkeys, np.int32)[sh]),
                    pa.array(sh),
                    pa.array(np.full(count, part, np.int32)),
                    pa.array(np.full(count, run, np.int32)),
                    pa.array(np.arange(seq, seq + count, dtype=np.int32)),
                    pa.array(pb.count[lo:hi]),
                    pa.array(pb.first[lo:hi]),
                    pa.array(np.zeros(count, np.int8)),
                    key_arr,
                    pa.array(np.full(count, vw, np.int8)),
                    val_arr,
                ],
                schema=PARTIALS_SCHEMA,
            )
        )
        seq += count
        lo = hi
    return out, seq


def pooled_empty(n: int, dtype: type) -> np.ndarray:
    """``np.empty`` from Arrow's memory pool, which recycles freed pages.

    Blob arrays are allocated per block and freed once Spark has read them; fresh
    ``np.empty`` pages would page-fault again each time (~0.3 s of system time per GB).
    """
    dt = np.dtype(dtype)
    return np.frombuffer(pa.allocate_buffer(max(1, n) * dt.itemsize), dt, count=n)


def _stats_batch(plan: Plan, part: int, stats: dict[str, Any]) -> pa.RecordBatch:
    k = part % plan.shards  # spread the statistics rows over the reduce tasks
    return pa.RecordBatch.from_pylist(
        [
            {
                "kind": KIND_STATS,
                "p": plan.pkeys[k],
                "shard": k,
                "part": part,
                "run": -1,
                "seq": -1,
                "n": 0,
                "first": 0,
                "kw": 0,
                "keys": json.dumps(stats).encode(),
                "vw": 0,
                "vals": b"",
            }
        ],
        schema=PARTIALS_SCHEMA,
    )


def _peak_rss() -> int:
    """Peak resident memory of this (Python worker) process in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def count_partials(
    batches: Iterable[pa.RecordBatch], plan: Plan, part: int = 0, counts: np.ndarray | None = None
) -> Iterator[pa.RecordBatch]:
    """Corpus batches ``doc, ids`` -> blob batches (PARTIALS_SCHEMA); the map task.

    The last batch is the task's statistics row (tokens, rows, blocks, partial
    entries, seconds, peak RSS), routed like data so that it reaches the driver
    exactly once even when the task is retried.
    """
    start, cpu = time.perf_counter(), time.process_time()
    stats = {"part": part, "tokens": 0, "rows": 0, "blocks": 0, "entries": 0}

    def counted(it: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in it:
            ids = b.column("ids")
            stats["rows"] += b.num_rows
            if b.num_rows:
                offsets = ids.offsets
                stats["tokens"] += offsets[len(ids)].as_py() - offsets[0].as_py()
            yield b

    seq = 0
    blocks = K.count_record_batches(
        counted(batches),
        plan.vocab_size,
        plan.window,
        plan.weighting,
        dynamic_window=plan.dynamic_window,
        subsample=plan.subsample,
        counts=counts,
        seed=plan.seed,
        memory_mb=plan.memory_mb,
        integer_units=plan.integer_units,
        copy=False,  # each block is split into blobs before the kernel continues
    )
    kernel_cpu = blob_cpu = 0.0
    while True:
        c0 = time.process_time()
        block = next(blocks, None)
        c1 = time.process_time()
        kernel_cpu += c1 - c0
        if block is None:
            break
        keys, values = block
        stats["blocks"] += 1
        stats["entries"] += int(keys.size)
        out, seq = block_to_blobs(keys, values, plan, part, seq, stats["blocks"])
        blob_cpu += time.process_time() - c1
        yield from out  # Spark serialises and ships them before we continue
    stats["seconds"] = round(time.perf_counter() - start, 3)
    stats["cpu"] = round(time.process_time() - cpu, 3)
    stats["kernel_cpu"] = round(kernel_cpu, 3)
    stats["blob_cpu"] = round(blob_cpu, 3)
    stats["rss"] = _peak_rss()
    yield _stats_batch(plan, part, stats)


# ------------------------------------------------------------------ reduce side


class Blob(NamedTuple):
    """One shard piece of a partial block: ``n`` entries as varint bytes (K.pack_by_shard)."""

    part: int  # map task
    run: int  # block within the task
    seq: int  # piece within the task
    first: int  # first key of the run
    n: int
    key_bytes: np.ndarray
    value_bytes: np.ndarray
    raw_values: bool


def _binary_views(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64, data uint8) of a binary array, zero-copy."""
    bufs = arr.buffers()
    offs = np.frombuffer(bufs[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return offs.astype(np.int64), data


def read_blobs(
    batches: Iterable[pa.RecordBatch],
) -> tuple[dict[int, list[Blob]], list[dict[str, Any]]]:
    """Reduce input -> ({shard: blobs}, [map statistics]); blobs are views of the batches."""
    by_shard: dict[int, list[Blob]] = {}
    map_stats: list[dict[str, Any]] = []
    for b in batches:
        if b.num_rows == 0:
            continue
        cols = {
            name: b.column(name).to_numpy(zero_copy_only=False)
            for name in ("kind", "shard", "part", "run", "seq", "n", "first", "kw", "vw")
        }
        koffs, kdata = _binary_views(b.column("keys"))
        voffs, vdata = _binary_views(b.column("vals"))
        for r in range(b.num_rows):
            if cols["kind"][r] == KIND_STATS:
                map_stats.append(json.loads(kdata[koffs[r] : koffs[r + 1]].tobytes()))
                continue
            if cols["kw"][r] != 0 or cols["vw"][r] not in (0, 8):
                raise EmbedpipeError(
                    f"cooccur: unknown partial encoding (kw {cols['kw'][r]}, vw "
                    f"{cols['vw'][r]}): driver and executors run different embedpipe versions"
                )
            by_shard.setdefault(int(cols["shard"][r]), []).append(
                Blob(
                    int(cols["part"][r]),
                    int(cols["run"][r]),
                    int(cols["seq"][r]),
                    int(cols["first"][r]),
                    int(cols["n"][r]),
                    kdata[koffs[r] : koffs[r + 1]],
                    vdata[voffs[r] : voffs[r + 1]],
                    bool(cols["vw"][r] == 8),
                )
            )
    return by_shard, map_stats


def reduce_shard(k: int, blobs: list[Blob], plan: Plan, out_uri: str) -> dict[str, Any]:
    """Sum shard ``k``'s blobs, write ``shard=k/part-00000.parquet`` under ``out_uri``.

    The pieces of one map block are one sorted run: ``K.merge_runs`` merges the runs
    (k-way, compiled) straight into ``(i, j, x)`` row groups of ROW_GROUP entries, so
    the task holds the blobs, their concatenation and one row group. Returns the
    shard's statistics: nnz, partials, sum_x, bytes, info.
    """
    import pyarrow.parquet as pq

    start_t, cpu = time.perf_counter(), time.process_time()
    # Runs in a fixed order: (part, run) then pieces by seq. Summation order is then
    # fixed too (integer units make it irrelevant, true units do not).
    blobs = sorted((b for b in blobs if b.n), key=lambda b: (b.part, b.run, b.seq))
    total = sum(b.n for b in blobs)
    key_bytes = _concat([b.key_bytes for b in blobs])
    value_bytes = _concat([b.value_bytes for b in blobs])
    first, count, key_start, value_start = [], [], [], []
    raw = not plan.integer_units
    ka = va = 0
    prev: Blob | None = None
    for b in blobs:
        if prev is not None and (b.part, b.run) == (prev.part, prev.run):
            count[-1] += b.n  # the next piece of the same run: its bytes follow
        else:
            first.append(b.first)
            count.append(b.n)
            key_start.append(ka)
            value_start.append(va)
            if b.raw_values != raw:
                raise EmbedpipeError(
                    "cooccur: partials of one shard in two value formats; driver and "
                    "executors run different embedpipe versions"
                )
        ka += b.key_bytes.size
        va += b.value_bytes.size
        prev = b
    n_runs = len(first)
    blobs.clear()  # the caller's batches still hold the data; this drops our views
    V, S = plan.vocab_size, plan.shards
    fs, root = fsutil.resolve(out_uri)
    final = f"{root}/{layout.shard_file(k)}"
    tmp = f"{root}/{layout.shard_dir(k)}/.{layout.SHARD_FILE}.{uuid.uuid4().hex[:12]}.tmp"
    fs.create_dir(f"{root}/{layout.shard_dir(k)}", recursive=True)
    nnz, sum_x, max_x, write_cpu = 0, 0.0, 0.0, 0.0
    schema = schemas.COOC.with_metadata(
        layout.shard_metadata(V, S, k, plan.window, plan.weighting, -1)
    )
    entries = K.merge_runs(
        first,
        count,
        key_bytes,
        key_start,
        value_bytes,
        value_start,
        raw,
        V,
        plan.denominator,
        plan.min_x,
        ROW_GROUP,
        copy=False,  # each chunk is written before the merge continues
    )
    with (
        fs.open_output_stream(tmp) as stream,
        pq.ParquetWriter(stream, schema, compression=COMPRESSION, use_dictionary=DICTIONARY) as w,
    ):
        for e in entries:
            if e.x.size:
                c0 = time.process_time()
                w.write_table(pa.table([e.i, e.j, e.x], schema=schema), ROW_GROUP)
                write_cpu += time.process_time() - c0
                nnz += e.x.size
                sum_x += e.sum_x
                max_x = max(max_x, float(e.x.max()))
    fs.move(tmp, final)
    size = fs.get_file_info(final).size
    info = {
        "seconds": round(time.perf_counter() - start_t, 3),
        "cpu": round(time.process_time() - cpu, 3),
        "rss": _peak_rss(),
        "runs": n_runs,
        "max_x": max_x,
        "write_cpu": round(write_cpu, 3),
    }
    return {"shard": k, "nnz": nnz, "partials": total, "sum_x": sum_x, "bytes": size, "info": info}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate blob byte arrays into one pooled array."""
    out = pooled_empty(sum(p.size for p in parts), np.uint8)
    return np.concatenate(parts, out=out) if parts else out


def reduce_partials(
    batches: Iterable[pa.RecordBatch], plan: Plan, out_uri: str, partition: int = -1
) -> Iterator[pa.RecordBatch]:
    """The reduce task: every shard among ``batches`` -> its file; yields STATS_SCHEMA rows."""
    c0 = time.process_time()
    by_shard, map_stats = read_blobs(batches)
    read_cpu = (time.process_time() - c0) / max(1, len(by_shard))
    rows = []
    for k in sorted(by_shard):
        st = reduce_shard(k, by_shard.pop(k), plan, out_uri)  # pop: free each shard's views
        st["info"]["partition"] = partition
        st["info"]["read_cpu"] = round(read_cpu, 3)
        rows.append(
            {
                "kind": KIND_DATA,
                "shard": k,
                "nnz": st["nnz"],
                "partials": st["partials"],
                "sum_x": st["sum_x"],
                "bytes": st["bytes"],
                "info": json.dumps(st["info"]),
            }
        )
    for ms in map_stats:
        rows.append(
            {
                "kind": KIND_STATS,
                "shard": -1,
                "nnz": 0,
                "partials": 0,
                "sum_x": 0.0,
                "bytes": 0,
                "info": json.dumps(ms),
            }
        )
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=STATS_SCHEMA)


def write_empty_shard(out_uri: str, plan: Plan, k: int) -> int:
    """Write shard ``k`` with no entries (no partial reached it); returns its size."""
    import io

    import pyarrow.parquet as pq

    meta = layout.shard_metadata(plan.vocab_size, plan.shards, k, plan.window, plan.weighting, -1)
    buf = io.BytesIO()
    pq.write_table(
        schemas.COOC.with_metadata(meta).empty_table(),
        buf,
        compression=COMPRESSION,
        use_dictionary=DICTIONARY,
    )
    data = buf.getvalue()
    fsutil.write_bytes_atomic(fsutil.join(out_uri, layout.shard_file(k)), data)
    return len(data)


# ------------------------------------------------------------------ Spark plumbing


def _map_task(plan: Plan, tasks: list[list[Slice]], counts: np.ndarray | None):
    def fn(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # The input is spark.range(n, numPartitions=n): one task index per partition.
        for b in batches:
            for t in b.column("id").to_pylist():
                yield from count_partials(read_slices(tasks[t]), plan, int(t), counts)

    return fn


def _reduce_task(plan: Plan, out_uri: str):
    def fn(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        yield from reduce_partials(batches, plan, out_uri, ctx.partitionId() if ctx else -1)

    return fn


@contextlib.contextmanager
def _sql_conf(spark, settings: dict[str, str]) -> Iterator[None]:
    old = {k: spark.conf.get(k, None) for k in settings}
    try:
        for k, v in settings.items():
            spark.conf.set(k, v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


class SparkJobWatch:
    """Tags the stage's Spark jobs with a job group, logs progress, sums stage metrics.

    Metrics come from Spark's status store (``shuffleWriteBytes`` of each stage), the
    same numbers the Spark UI shows; they work with the UI disabled.
    """

    def __init__(self, spark, label: str, interval: float = PROGRESS_SECONDS) -> None:
        self.sc = spark.sparkContext
        self.label = label
        self.group = f"embedpipe-{label}-{uuid.uuid4().hex[:8]}"
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._progress, daemon=True)
        self.start = 0.0

    def __enter__(self) -> SparkJobWatch:
        self.start = time.perf_counter()
        self.sc.setJobGroup(self.group, f"embedpipe {self.label}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sc.setLocalProperty("spark.jobGroup.id", None)
        self.sc.setLocalProperty("spark.job.description", None)

    def stage_ids(self) -> list[int]:
        """Ids of the stages of this group's jobs."""
        tracker = self.sc.statusTracker()
        ids: set[int] = set()
        for job in tracker.getJobIdsForGroup(self.group):
            info = tracker.getJobInfo(job)
            if info is not None:
                ids.update(info.stageIds)
        return sorted(ids)

    def _stage_data(self, sid: int) -> Any:
        try:
            return self.sc._jsc.sc().statusStore().lastStageAttempt(sid)
        except Exception:  # not (yet) in the store: treat as no data
            return None

    def metrics(self, wait: float = 5.0) -> dict[str, float]:
        """Shuffle bytes/records written, task run time and JVM CPU, summed over the stages."""
        deadline = time.perf_counter() + wait
        while True:
            data = [self._stage_data(s) for s in self.stage_ids()]
            done = all(
                d is not None and str(d.status()) in ("COMPLETE", "SKIPPED", "FAILED") for d in data
            )
            if done or time.perf_counter() > deadline:
                break
            time.sleep(0.05)  # the listener bus trails the job's end by a few ms
        out = {
            "shuffle_bytes": 0,
            "shuffle_records": 0,
            "executor_seconds": 0.0,
            "jvm_cpu_seconds": 0.0,
            "stages": 0,
        }
        for d in data:
            if d is None:
                continue
            out["stages"] += 1
            out["shuffle_bytes"] += int(d.shuffleWriteBytes())
            out["shuffle_records"] += int(d.shuffleWriteRecords())
            out["executor_seconds"] += int(d.executorRunTime()) / 1000
            out["jvm_cpu_seconds"] += int(d.executorCpuTime()) / 1e9  # JVM threads only
        return out

    def _progress(self) -> None:
        tracker = self.sc.statusTracker()
        while not self._stop.wait(self.interval):
            try:
                parts = []
                shuffle = 0
                ids = self.stage_ids()
                infos = [i for i in map(tracker.getStageInfo, ids) if i is not None]
                # The first stage is the map, the last the reduce (AQE adds a skipped copy).
                named = list(zip(("map", "reduce"), infos[:1] + infos[1:][-1:], strict=False))
                for name, info in named:
                    parts.append(f"{name} {info.numCompletedTasks}/{info.numTasks} tasks")
                for sid in ids:
                    d = self._stage_data(sid)
                    if d is not None:
                        shuffle += int(d.shuffleWriteBytes())
                logger.info(
                    "%-8s %.0fs: %s, shuffle written %s",
                    self.label,
                    time.perf_counter() - self.start,
                    ", ".join(parts) or "starting",
                    human_bytes(shuffle),
                )
            except Exception as e:  # progress is best effort; never fail the stage for it
                logger.debug("progress poll failed: %s", e)


def config_hash(ccfg: CooccurConfig) -> str:
    """Hash of the settings the output depends on (memory_mb changes speed, not output)."""
    settings = {k: v for k, v in to_dict(ccfg).items() if k != "memory_mb"}
    return fingerprint("cooccur", settings)


def run(spark, cfg: Config, run_dir: RunDir, force: bool = False, **_: Any) -> StageResult:
    """Count co-occurrences of ``run_dir/corpus`` into ``run_dir/cooc``."""
    from embedpipe.spark import check_task_memory, default_parallelism
    from embedpipe.stages.vocab import read_vocab

    vocab_rec = run_dir.require("vocab")
    enc_rec = run_dir.require("encode")
    ccfg = cfg.cooccur
    V = int(vocab_rec["counts"]["vocab_size"])
    if ccfg.shards > V:
        # Shard k holds the rows i with i mod S = k: past V, shards are empty by
        # construction (a task and a file each for nothing); most likely a typo.
        raise ConfigError(
            f"cooccur.shards = {ccfg.shards} exceeds the vocabulary ({V:,} words): shard k "
            f"holds the rows i with i mod S = k, so {ccfg.shards - V:,} shards would be empty; "
            f"set cooccur.shards <= {V} (or 0 to choose it from the data size)"
        )
    fp = stage_fingerprint(run_dir, "cooccur", config_hash(ccfg))
    if not force and run_dir.is_current("cooccur", fp):
        return log_skip("cooccur", run_dir)
    kept = int(enc_rec["counts"]["kept_tokens"])
    plan = make_plan(ccfg, V, kept)
    S = plan.shards
    est = estimate_partials(kept, plan.window)
    # Map: the kernel's soft budget plus one emitted block and its blobs.
    check_task_memory(
        spark, int(1.5 * (plan.memory_mb << 20)), "cooccur counting", "cooccur.memory_mb"
    )
    check_task_memory(
        spark,
        est // S * BLOB_BYTES_PER_ENTRY + (plan.memory_mb << 19),
        f"cooccur reduce of one shard (~{human_count(est / S)} partial entries)",
        "cooccur.memory_mb or raise cooccur.shards",
    )
    counts = None
    if plan.subsample > 0.0:
        counts = read_vocab(run_dir).column("count").to_numpy().astype(np.int64)
    tmp = run_dir.begin("cooccur")
    with (
        _sql_conf(
            spark,
            {
                "spark.sql.execution.arrow.maxBytesPerBatch": str(MAX_BATCH_BYTES),
                # Spark hashes every shuffled row to detect retries that produce other
                # data; a map task here is a pure function of its input, so skip it.
                "spark.sql.shuffle.orderIndependentChecksum.enabled": "false",
            },
        ),
        Timer() as t,
    ):
        groups = corpus_row_groups(run_dir.path("corpus"))
        total_ids = sum(g[3] for g in groups)
        n_tasks = cfg.input.partitions or default_map_tasks(total_ids, default_parallelism(spark))
        tasks = plan_slices(groups, n_tasks)
        partials = spark.range(n_tasks, numPartitions=n_tasks).mapInArrow(
            _map_task(plan, tasks, counts), PARTIALS_DDL
        )
        reduced = partials.repartition(S, "p").mapInArrow(_reduce_task(plan, tmp), STATS_DDL)
        with SparkJobWatch(spark, "cooccur") as watch:
            try:
                rows = reduced.collect()
            except Exception as e:
                raise _task_error(e) from e
            metrics = watch.metrics()
    shards: dict[int, dict[str, Any]] = {}
    map_stats: list[dict[str, Any]] = []
    for r in rows:
        if r["kind"] == KIND_STATS:
            map_stats.append(json.loads(r["info"]))
            continue
        if r["shard"] in shards:
            raise EmbedpipeError(f"cooccur: shard {r['shard']} was reduced twice; report a bug")
        shards[r["shard"]] = {**r.asDict(), "info": json.loads(r["info"])}
    for k in range(S):
        if k not in shards:  # no partial reached it (tiny corpus, more shards than rows)
            shards[k] = {
                "shard": k,
                "nnz": 0,
                "partials": 0,
                "sum_x": 0.0,
                "bytes": write_empty_shard(tmp, plan, k),
                "info": {},
            }
    _remove_stray_files(tmp, S)
    nnz = sum(s["nnz"] for s in shards.values())
    sum_x = math.fsum(shards[k]["sum_x"] for k in range(S))
    partial_entries = sum(s["partials"] for s in shards.values())
    tokens = sum(m["tokens"] for m in map_stats)
    docs = sum(m["rows"] for m in map_stats)
    shard_bytes = [int(shards[k]["bytes"]) for k in range(S)]
    peak_rss = max(
        [m.get("rss", 0) for m in map_stats] + [s["info"].get("rss", 0) for s in shards.values()]
        or [0]
    )
    rate = tokens / max(t.seconds, 1e-9)
    summary = (
        f"{human_count(nnz)} non-zeros (V {V:,}, S {S}, window {plan.window} {plan.weighting}) "
        f"from {human_count(tokens)} tokens in {t.seconds:.1f}s ({human_count(rate)} tokens/s, "
        f"{len(map_stats)} map tasks); {human_count(partial_entries)} partial entries, "
        f"shuffle {human_bytes(metrics['shuffle_bytes'])}, shards "
        f"{human_bytes(min(shard_bytes))}-{human_bytes(max(shard_bytes))} "
        f"({human_bytes(sum(shard_bytes))}), peak task RSS {human_bytes(peak_rss)}"
    )
    if max(s["partials"] for s in shards.values()) * BLOB_BYTES_PER_ENTRY > plan.memory_mb << 20:
        logger.warning(
            "cooccur  the largest shard received %s partial entries, more than "
            "cooccur.memory_mb plans for; raise cooccur.shards (now %d)",
            human_count(max(s["partials"] for s in shards.values())),
            S,
        )
    record = run_dir.commit(
        "cooccur",
        tmp,
        {
            "fingerprint": fp,
            "config": {"cooccur": to_dict(ccfg)},
            "inputs": {"vocab": vocab_rec["fingerprint"], "encode": enc_rec["fingerprint"]},
            "counts": {
                "vocab_size": V,
                "shards": S,
                "window": plan.window,
                "weighting": plan.weighting,
                "dynamic_window": plan.dynamic_window,
                "subsample": plan.subsample,
                "min_x": plan.min_x,
                "weight_denominator": plan.denominator,
                "nnz": nnz,
                "sum_x": sum_x,
                "tokens": tokens,
                "documents": docs,
                "map_tasks": len(map_stats),
                "reduce_tasks": len(
                    {s["info"].get("partition") for s in shards.values() if s["info"]}
                ),
                "partial_entries": partial_entries,
                "partial_entries_estimate": est,
                "shuffle_bytes": metrics["shuffle_bytes"],
                "shuffle_records": metrics["shuffle_records"],
                "bytes": sum(shard_bytes),
                "peak_task_rss": peak_rss,
                "shard_nnz": [int(shards[k]["nnz"]) for k in range(S)],
                "shard_bytes": shard_bytes,
                "shard_partials": [int(shards[k]["partials"]) for k in range(S)],
            },
            "timings": {
                "seconds": round(t.seconds, 3),
                "tokens_per_second": round(rate),
                "map_task_seconds": round(sum(m.get("seconds", 0.0) for m in map_stats), 3),
                "reduce_task_seconds": round(
                    sum(s["info"].get("seconds", 0.0) for s in shards.values()), 3
                ),
                "map_task_cpu_seconds": round(sum(m.get("cpu", 0.0) for m in map_stats), 3),
                "map_kernel_cpu_seconds": round(
                    sum(m.get("kernel_cpu", 0.0) for m in map_stats), 3
                ),
                "map_blob_cpu_seconds": round(sum(m.get("blob_cpu", 0.0) for m in map_stats), 3),
                "reduce_task_cpu_seconds": round(
                    sum(s["info"].get("cpu", 0.0) for s in shards.values()), 3
                ),
                "reduce_read_cpu_seconds": round(
                    sum(s["info"].get("read_cpu", 0.0) for s in shards.values()), 3
                ),
                "reduce_write_cpu_seconds": round(
                    sum(s["info"].get("write_cpu", 0.0) for s in shards.values()), 3
                ),
                "executor_seconds": round(metrics["executor_seconds"], 3),
                "jvm_cpu_seconds": round(metrics["jvm_cpu_seconds"], 3),
            },
            "summary": summary,
        },
    )
    logger.info("cooccur  %s", summary)
    return StageResult("cooccur", False, record, t.seconds, summary)


def _remove_stray_files(out_uri: str, num_shards: int) -> None:
    """Delete anything but the S shard files (temporaries of killed task attempts)."""
    fs, root = fsutil.resolve(out_uri)
    keep = {f"{root}/{layout.shard_file(k)}" for k in range(num_shards)}
    for path, _size in fsutil.list_files(out_uri):
        if path not in keep:
            fs.delete_file(path)


def _task_error(e: Exception) -> Exception:
    """The embedpipe error a Python task raised, re-raised on the driver as one line."""
    import re

    from embedpipe import errors

    m = re.search(r"embedpipe\.errors\.(\w+): ([^\n]*)", str(e))
    cls = getattr(errors, m.group(1), None) if m else None
    if m and isinstance(cls, type) and issubclass(cls, EmbedpipeError):
        return cls(m.group(2))
    return e
