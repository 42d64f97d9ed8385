"""``svd`` stage: PPMI of the co-occurrence shards, then a randomized truncated SVD.

The count-based route of Levy, Goldberg & Dagan (2015) at scale: the V × V matrix is never
formed densely and never gathered on one machine; the maths is in
:mod:`embedpipe.kernels.ppmi` and :mod:`embedpipe.kernels.rsvd`, this module only moves
shards and small matrices around. Every step is one Spark task per shard (task k handles
shard k = rows i ≡ k mod S, on any executor).

Extract: task k reads its own cooc file (``cooc/shard=k``, checked against the manifest by
:func:`embedpipe.cooccur.read_shard_table`) into a CSR matrix of the shard's rows (local
row r is global row r·S + k). No shuffle.

Transform:

1. **marginals** (pass 1 over the files): every task returns its row and column sums of
   x; the driver adds them in shard order and computes P_α(j) (``svd.cds``). The row sums
   and P_α are broadcast (2·V float64).
2. **PPMI** (pass 2): every task reads its shard again and keeps its rows of
   max(log(x_ij / (x_i· P_α(j))) − log(svd.shift), 0), positive entries only, as a float32
   CSR (with its transpose, :class:`ShardMatrix`), stored for the SVD in the stage's
   scratch directory (:class:`ShardFiles`).
3. **randomized SVD**: :func:`~embedpipe.kernels.rsvd.randomized_svd_sharded` runs through
   :class:`SparkRunner`, the kernel's five-method ``ShardRunner``: every Y_k and Q_k stays
   with its shard; only the broadcast test matrix, the V × l partial sums AᵀQ_k and the
   l × l Gram matrices travel; the small SVD is done on the driver.
4. **embedding** on the driver: U Σ^eig (``svd.eig``), plus V Σ^eig with ``svd.add_context``.

Load: ``svd/vectors.parquet`` (schema ``VECTORS``, rows by id) and ``svd/model.json``
(settings, singular values, timings, memory, traffic), committed together; the scratch
directory is removed before the commit.

Determinism: the test matrix depends only on ``svd.seed``, every row of A_k M is computed
inside its shard, and :meth:`SparkRunner.sum` adds the per-shard partial sums in shard
order (never in arrival order), so for a fixed S the output is bit-identical run to run
and to :class:`~embedpipe.kernels.rsvd.LocalRunner` on the same shards.

Cost model (l = svd.dim + svd.oversample, q = svd.power_iters; logged and in model.json):

* passes over the data: 2 reads of the cooc files, then 2q + 2 sparse products with the
  PPMI (q + 1 of them A M, q + 1 of them AᵀQ), each a read of the stored shards;
* bytes per product pass: a V·l·8 broadcast (Z: 56 MB at V = 64k, l = 110), Y_k written
  and read back (V·l·8 in all), and for an AᵀQ pass one V·l·8 partial sum per shard read
  by the driver one at a time (above ``SUM_FAN_IN`` shards, tree tasks first add them in
  groups of ``SUM_FAN_IN``); each orthonormalisation round returns S Gram matrices (l²·8);
* driver memory: about ``DRIVER_DENSE_COPIES`` · V·l·8 + 3·V·dim·8 (:func:`driver_memory_need`);
* task memory: its shard (CSR and transpose) plus about ``TASK_DENSE_COPIES`` · V·l·8
  (:func:`task_memory_need`), checked up front against the executor memory.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp

from embedpipe import FORMAT_VERSION, fsutil
from embedpipe import cooccur as layout
from embedpipe import spark as spark_mod
from embedpipe.config import Config, SvdConfig, to_dict
from embedpipe.errors import ConfigError, EmbedpipeError, InputError
from embedpipe.kernels import ppmi as ppmi_kernel
from embedpipe.kernels import rsvd
from embedpipe.log import Timer, human_bytes, human_count, logger
from embedpipe.runs import RunDir, StageResult, log_skip, stage_fingerprint
from embedpipe.stages.vocab import read_vocab
from embedpipe.vectors import Vectors

VECTORS_FILE = "vectors.parquet"
MODEL_FILE = "model.json"
#: Per-shard datasets (PPMI shards, Y, spilled partial sums) live here inside the stage's
#: temporary directory while the stage runs; removed before the commit.
SCRATCH = "_scratch"

#: How Y is orthonormalised ("cholqr2" or "tsqr", see kernels.rsvd). Not a config key yet.
METHOD = "cholqr2"
#: dashSVD's dynamic shift in the power iterations (kernels.rsvd). Not a config key yet.
DYNAMIC_SHIFT = True
#: Up to this many spilled partial sums are read by the driver one by one; above it, tree
#: tasks first add them in groups of this size, each group in shard order.
SUM_FAN_IN = 8
#: Partial sums up to this size come back with their Spark job (Gram matrices, marginals);
#: bigger ones (V × l) are written to scratch and read by the driver one at a time.
SMALL_SUM_BYTES = 1 << 20

#: Bytes per cooc entry a task needs: while it builds its PPMI shard, the Arrow columns
#: (12), the CSR's row ids (4), the kernel's output buffers (12), the float32 result (8), its
#: transpose (8) and the transposition's temporaries (8); later, the shard and its transpose
#: (16), the file bytes they were read from (16) and scipy's float64 copy of the data (8).
TASK_BYTES_PER_ENTRY = 52
#: V × l float64 matrices a task holds at once: the broadcast Z (or Q's factor blocks),
#: its partial AᵀQ_k, the bytes of that partial written to scratch, and the broadcast's
#: pickled bytes while they are read.
TASK_DENSE_COPIES = 4
#: m_k × l float64 matrices a task holds at once: Y_k, Q_k (or a triangular-solve
#: temporary) and the file bytes Y_k was read from.
TASK_ROW_COPIES = 3
#: V × l float64 matrices the driver holds at once: Z, the running sum, one incoming
#: partial, W·r, and the orthonormalisation's Gram-solve temporaries.
DRIVER_DENSE_COPIES = 6


# ------------------------------------------------------------------ cost model


def sketch_width(vocab_size: int, dim: int, oversample: int) -> int:
    """Columns l of the sketch: dim + oversample, capped at V."""
    return min(dim + oversample, vocab_size)


def product_passes(power_iters: int) -> int:
    """Sparse products with the whole matrix: 2·q + 2 (A M and AᵀQ per iteration, plus B)."""
    return 2 * power_iters + 2


def dense_bytes(vocab_size: int, width: int) -> int:
    """Bytes of one V × l float64 matrix (a broadcast test matrix or a partial AᵀQ_k)."""
    return vocab_size * width * 8


def task_memory_need(vocab_size: int, width: int, max_rows: int, max_entries: int) -> int:
    """Memory one task needs: its shard (``TASK_BYTES_PER_ENTRY`` per cooc entry, an upper
    bound for the PPMI entries it keeps) plus ``TASK_DENSE_COPIES`` V × l and
    ``TASK_ROW_COPIES`` m_k × l float64 matrices."""
    return (
        TASK_BYTES_PER_ENTRY * max_entries
        + TASK_DENSE_COPIES * dense_bytes(vocab_size, width)
        + TASK_ROW_COPIES * max_rows * width * 8
    )


def driver_memory_need(vocab_size: int, width: int, dim: int) -> int:
    """Memory the driver needs for the SVD: ``DRIVER_DENSE_COPIES`` V × l matrices plus the
    gathered U, Vᵀ and the output vectors (V × dim each), i.e. O(V·l)."""
    return DRIVER_DENSE_COPIES * dense_bytes(vocab_size, width) + 3 * vocab_size * dim * 8


# -------------------------------------------------------------- task bodies (pure)


def load_shard(run: RunDir, meta: layout.CoocInfo, k: int) -> rsvd.Shard:
    """Read cooc shard ``k`` as a :class:`~embedpipe.kernels.rsvd.Shard` of x (float32 CSR)."""
    table = layout.read_shard_table(run, k, meta)
    csr = layout.table_to_csr(table, meta.vocab_size, meta.shards, k, layout.shard_uri(run, k))
    return rsvd.Shard(k, meta.rows(k).astype(np.int64), csr)


def marginals_step(n_rows: int, shard: rsvd.Shard) -> np.ndarray:
    """The shard's part of the marginals as one (2, V) array: row sums, column sums."""
    row_sums, col_sums = ppmi_kernel.marginals_partial(shard.row_index, shard.matrix, n_rows)
    return np.stack([row_sums, col_sums])


def ppmi_step(marginals: Any, shift: float, shard: rsvd.Shard) -> rsvd.Shard:
    """The shard's rows of PPMI from the broadcast ``(row_sums, p_context)``."""
    row_sums, p_context = marginals.value
    matrix = ppmi_kernel.ppmi_shard(shard.row_index, shard.matrix, row_sums, p_context, shift)
    return rsvd.Shard(shard.k, shard.row_index, ShardMatrix(matrix))


def shard_stats(shard: rsvd.Shard) -> tuple[int, int, int]:
    """``(k, rows, stored entries)`` of a shard."""
    return shard.k, int(shard.matrix.shape[0]), int(shard.matrix.nnz)


# -------------------------------------------------------------- per-shard datasets


class CoocShards:
    """The cooc stage's shards as a dataset: record k is :func:`load_shard` of shard k."""

    def __init__(self, run: RunDir, meta: layout.CoocInfo) -> None:
        """Shards of ``run``'s cooc/, described by ``meta`` (read once on the driver)."""
        self.run = run
        self.meta = meta

    def load(self, k: int) -> rsvd.Shard:
        """Shard k of x, read and checked inside the task."""
        return load_shard(self.run, self.meta, k)


class InMemory:
    """A dataset of small records shipped inside every task (tests, tiny inputs)."""

    def __init__(self, records: Sequence[Any]) -> None:
        """Record k is ``records[k]``."""
        self.records = list(records)

    def load(self, k: int) -> Any:
        """Record k."""
        return self.records[k]


class ShardFiles:
    """A dataset kept as one file per shard: record k in ``<uri>/part-<k>.npz``.

    Records are arrays, tuples of ints and arrays, or :class:`~embedpipe.kernels.rsvd.Shard`
    (CSR or dense), stored with ``numpy.savez`` and read with ``allow_pickle=False``.
    """

    def __init__(self, uri: str) -> None:
        """The dataset under directory ``uri``."""
        self.uri = uri

    def path(self, k: int) -> str:
        """URI of record k's file."""
        return fsutil.join(self.uri, f"part-{k:05d}.npz")

    def load(self, k: int) -> Any:
        """Record k (read inside a task)."""
        return decode_record(fsutil.read_bytes(self.path(k)))

    def save(self, k: int, record: Any) -> int:
        """Write record k (atomically: a retried task overwrites it); return its bytes."""
        data = encode_record(record)
        fsutil.write_bytes_atomic(self.path(k), data)
        return len(data)


class ShardMatrix:
    """A shard's PPMI rows A_k as CSR together with the CSR of A_kᵀ.

    The kernels only use ``A_k @ M`` and ``A_k.T @ Q``. scipy computes the second on a CSR
    through its CSC view, scattering into random output rows; on the CSR of A_kᵀ it is a
    row-by-row gather, about 1.7x faster here. Both add the contributions to every output
    row in ascending order of A's row, so the results are bit-identical. Costs a second
    copy of the shard (8 bytes per entry).
    """

    def __init__(self, csr: Any, csr_t: Any = None) -> None:
        """Wrap ``csr``; its transpose is built as CSR unless given."""
        self.csr = sp.csr_array(csr)
        self.csr_t = sp.csr_array(self.csr.T.tocsr()) if csr_t is None else sp.csr_array(csr_t)
        if not self.csr_t.has_sorted_indices:  # the order of additions must be A's row order
            self.csr_t.sort_indices()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows of the shard, columns)."""
        return self.csr.shape

    @property
    def nnz(self) -> int:
        """Stored entries of A_k."""
        return int(self.csr.nnz)

    @property
    def T(self) -> Any:  # noqa: N802 (scipy's name)
        """A_kᵀ as a CSR matrix."""
        return self.csr_t

    def __matmul__(self, other: Any) -> Any:
        return self.csr @ other


def _csr_arrays(m: Any, prefix: str) -> dict[str, np.ndarray]:
    m = sp.csr_array(m)
    return {f"{prefix}data": m.data, f"{prefix}indices": m.indices,
            f"{prefix}indptr": m.indptr, f"{prefix}shape": np.array(m.shape)}  # fmt: skip


def _csr_from(z: Any, prefix: str) -> Any:
    shape = tuple(int(n) for n in z[f"{prefix}shape"])
    return sp.csr_array((z[f"{prefix}data"], z[f"{prefix}indices"], z[f"{prefix}indptr"]),
                        shape=shape)  # fmt: skip


def encode_record(record: Any) -> bytes:
    """Bytes of a record: ``.npy`` for an array, ``.npz`` for a tuple of ints / floats /
    arrays or a Shard (CSR, :class:`ShardMatrix` or dense). No pickle."""
    buf = io.BytesIO()
    if isinstance(record, np.ndarray):
        np.save(buf, record, allow_pickle=False)
        return buf.getvalue()
    arrays: dict[str, np.ndarray] = {}
    if isinstance(record, rsvd.Shard):
        m = record.matrix
        arrays.update(kind=np.array("shard"), k=np.array(record.k), rows=record.row_index)
        if isinstance(m, ShardMatrix):
            arrays.update(_csr_arrays(m.csr, ""), **_csr_arrays(m.csr_t, "t_"))
        elif sp.issparse(m):
            arrays.update(_csr_arrays(m, ""))
        else:
            arrays.update(dense=np.asarray(m))
    elif isinstance(record, tuple) and all(
        isinstance(v, np.ndarray | int | float | np.integer | np.floating) for v in record
    ):
        arrays.update(kind=np.array("tuple"), n=np.array(len(record)))
        for i, v in enumerate(record):
            arrays[f"v{i}"] = np.asarray(v)
            arrays[f"s{i}"] = np.array(not isinstance(v, np.ndarray))  # a scalar, not 0-d array
    else:
        raise TypeError(f"cannot store a {type(record).__name__} record in a shard file")
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_view(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes, without copying (read-only)."""
    f = io.BytesIO(data)
    major, _ = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise InputError("a shard file holds Python objects; it was not written by embedpipe")
    count = math.prod(shape)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def decode_record(data: bytes) -> Any:
    """The record :func:`encode_record` wrote."""
    if data[:6] == b"\x93NUMPY":
        return _npy_view(data)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        kind = str(z["kind"])
        if kind == "tuple":
            return tuple(
                z[f"v{i}"].item() if bool(z[f"s{i}"]) else z[f"v{i}"] for i in range(int(z["n"]))
            )
        if "dense" in z:
            matrix: Any = z["dense"]
        elif "t_data" in z:
            matrix = ShardMatrix(_csr_from(z, ""), _csr_from(z, "t_"))
        else:
            matrix = _csr_from(z, "")
        return rsvd.Shard(int(z["k"]), z["rows"], matrix)


# ------------------------------------------------------------------ SparkRunner


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _nbytes(value: Any) -> int:
    """Bytes of the NumPy arrays inside ``value`` (what a broadcast ships)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


#: What a task reports besides its result: (peak RSS bytes, seconds in the kernel step).
TaskInfo = tuple[int, float]


def _map_task(fn: Callable[..., Any], inputs: Sequence[Any], out: ShardFiles,
              k: int) -> tuple[int, int, TaskInfo]:  # fmt: skip
    """Task k of :meth:`SparkRunner.map`: load its records, apply ``fn``, write the result."""
    t0 = time.perf_counter()
    record = fn(*(d.load(k) for d in inputs))
    seconds = time.perf_counter() - t0
    return k, out.save(k, record), (_peak_rss(), seconds)


def _collect_task(fn: Callable[..., Any], inputs: Sequence[Any], k: int) -> tuple[Any, TaskInfo]:
    """Task k of :meth:`SparkRunner.collect`."""
    t0 = time.perf_counter()
    record = fn(*(d.load(k) for d in inputs))
    return record, (_peak_rss(), time.perf_counter() - t0)


def _sum_task(fn: Callable[..., np.ndarray], inputs: Sequence[Any], spill: ShardFiles,
              small_bytes: int, k: int) -> tuple[int, np.ndarray | None, TaskInfo]:  # fmt: skip
    """Task k of :meth:`SparkRunner.sum`: its partial sum, returned when small, else spilled."""
    t0 = time.perf_counter()
    part = np.asarray(fn(*(d.load(k) for d in inputs)))
    seconds = time.perf_counter() - t0
    if part.nbytes <= small_bytes:
        return k, part, (_peak_rss(), seconds)
    spill.save(k, part)
    return k, None, (_peak_rss(), seconds)


def _group_sum_task(parts: ShardFiles, out: ShardFiles, fan_in: int, n: int,
                    g: int) -> tuple[int, None, TaskInfo]:  # fmt: skip
    """One tree node: add partial sums g·fan_in .. g·fan_in + fan_in − 1 in that order."""
    t0 = time.perf_counter()
    total = None
    for k in range(g * fan_in, min(n, (g + 1) * fan_in)):
        part = parts.load(k)
        total = part if total is None else total + part
    out.save(g, total)
    return g, None, (_peak_rss(), time.perf_counter() - t0)


@dataclass
class RunnerStats:
    """What a :class:`SparkRunner` did: for the logs, model.json and the cost model."""

    jobs: int = 0
    broadcasts: int = 0
    broadcast_bytes: int = 0
    sums: int = 0
    sum_bytes: int = 0  # partial sums read by the driver
    stored_bytes: int = 0  # records written by map tasks
    peak_task_rss: int = 0
    task_seconds: float = 0.0  # time inside the kernel steps, all tasks
    sum_seconds: list[float] = field(default_factory=list)  # wall time of every sum

    def tasks(self, infos: Iterable[TaskInfo]) -> None:
        """Record the (rss, seconds) reports of a job's tasks."""
        for rss, seconds in infos:
            self.peak_task_rss = max(self.peak_task_rss, rss)
            self.task_seconds += seconds


class SparkRunner:
    """:class:`~embedpipe.kernels.rsvd.ShardRunner` for S shards: one Spark task per shard.

    Spark schedules the tasks (task k handles shard k, on any executor), ships broadcasts
    and brings small results back; the per-shard datasets live as files in ``scratch`` (a
    directory of the run, which executors reach as they reach cooc/). Why files and not
    persisted RDDs: PySpark keeps a cached Python object in the JVM as a pickle, so every
    read of a shard or of a V × l partial sum crosses the Python/JVM boundary twice (a
    no-op sum of four 56 MB partials took 12 s on the benchmark machine, and zipping two
    cached RDDs re-pickles both); a file read costs one copy. Datasets are objects with
    ``load(k)``: :class:`ShardFiles` (what ``map`` returns), :class:`CoocShards`,
    :class:`InMemory`; task k loads record k of each, so no zip is ever needed.

    ``sum``: every task computes its partial sum; small ones (at most ``small_bytes``:
    Gram matrices) come back with the job's results, big ones (V × l) are written to
    scratch and read by the driver one at a time. Either way the driver adds them in
    shard order: bit-identical to :class:`~embedpipe.kernels.rsvd.LocalRunner` for a
    fixed S, and the driver holds the running total and one partial. Above ``fan_in``
    big partials, tree nodes (one task each) first add groups of ``fan_in`` files in
    shard order (deterministic, unlike ``treeReduce``'s arrival order).

    ``release`` deletes a dataset's files or destroys a broadcast; :meth:`close` removes
    the scratch directory and every broadcast left (call it in ``finally``).
    """

    def __init__(
        self,
        sc: Any,
        scratch: str,
        n_shards: int,
        fan_in: int = SUM_FAN_IN,
        small_bytes: int = SMALL_SUM_BYTES,
    ) -> None:
        """``n_shards`` tasks per step on SparkContext ``sc``; datasets stored in ``scratch``."""
        if fan_in < 2:
            raise ConfigError(f"SparkRunner fan_in = {fan_in}: must be at least 2")
        if n_shards < 1:
            raise InputError("the matrix has no shards; check the svd stage input")
        self.sc = sc
        self.scratch = scratch
        self.n_shards = n_shards
        self.fan_in = fan_in
        self.small_bytes = small_bytes
        self.stats = RunnerStats()
        self._keys = sc.parallelize(range(n_shards), n_shards)  # element k in partition k
        self._datasets: list[ShardFiles] = []
        self._broadcasts: list[Any] = []
        self._serial = 0

    def _new_dir(self, what: str) -> ShardFiles:
        self._serial += 1
        return ShardFiles(fsutil.join(self.scratch, f"{self._serial:04d}-{what}"))

    def _run(self, task: Callable[[int], Any], n: int | None = None) -> list[Any]:
        """Run ``task(k)`` for k < n (default S) as one Spark job; results in order of k."""
        keys = self._keys if n is None or n == self.n_shards else self.sc.parallelize(range(n), n)
        self.stats.jobs += 1
        t0 = time.perf_counter()
        results = keys.map(task).collect()
        if logger.isEnabledFor(logging.DEBUG):
            fn = task.args[0] if isinstance(task, partial) and task.args else task
            step = getattr(getattr(fn, "func", fn), "__name__", "?")
            infos = [r[-1] for r in results]
            logger.debug("svd      job %d %s(%s): %.2fs wall, %.2fs in tasks (max %.2fs)",
                         self.stats.jobs, getattr(task, "func", task).__name__, step,
                         time.perf_counter() - t0, sum(s for _, s in infos),
                         max((s for _, s in infos), default=0.0))  # fmt: skip
        return results

    def broadcast(self, value: Any) -> Any:
        """``sc.broadcast(value)``; its ``.value`` is ``value`` in every task."""
        handle = self.sc.broadcast(value)
        self._broadcasts.append(handle)
        self.stats.broadcasts += 1
        self.stats.broadcast_bytes += _nbytes(value)
        return handle

    def map(self, fn: Callable[..., Any], *datasets: Any) -> ShardFiles:
        """Compute ``fn(records of shard k)`` now, in task k, into a new :class:`ShardFiles`."""
        out = self._new_dir("map")
        results = self._run(partial(_map_task, fn, datasets, out))
        self.stats.tasks(info for _, _, info in results)
        self.stats.stored_bytes += sum(n for _, n, _ in results)
        self._datasets.append(out)
        return out

    def sum(self, fn: Callable[..., np.ndarray], *datasets: Any) -> np.ndarray:
        """Σ_k fn(records of shard k), added in shard order (see the class docstring)."""
        with Timer() as t:
            spill = self._new_dir("sum")
            try:
                parts = self._run(partial(_sum_task, fn, datasets, spill, self.small_bytes))
                self.stats.tasks(info for _, _, info in parts)
                n = len(parts)
                big = any(p is None for _, p, _ in parts)
                while big and n > self.fan_in:  # a level of the deterministic tree
                    level = self._new_dir("sum")
                    groups = -(-n // self.fan_in)
                    parts = self._run(
                        partial(_group_sum_task, spill, level, self.fan_in, n), groups
                    )
                    self.stats.tasks(info for _, _, info in parts)
                    fsutil.remove(spill.uri)
                    spill, n = level, groups
                total = None
                for k, part, _ in parts:
                    if part is None:
                        part = spill.load(k)
                    self.stats.sum_bytes += int(part.nbytes)
                    if total is None:
                        total = part.copy()  # unpickled arrays may be read-only
                    else:
                        total += part
            finally:
                fsutil.remove(spill.uri)
        if total is None:
            raise InputError("the matrix has no shards; check the svd stage input")
        self.stats.sums += 1
        self.stats.sum_seconds.append(round(t.seconds, 3))
        return total

    def collect(self, fn: Callable[..., Any], *datasets: Any) -> list[Any]:
        """``[fn(records of shard k)]`` in shard order."""
        results = self._run(partial(_collect_task, fn, datasets))
        self.stats.tasks(info for _, info in results)
        return [r for r, _ in results]

    def release(self, handle: Any) -> None:
        """Delete a dataset from :meth:`map` or destroy a broadcast from :meth:`broadcast`."""
        for i, d in enumerate(self._datasets):
            if d is handle:
                del self._datasets[i]
                fsutil.remove(d.uri)
                return
        for i, bc in enumerate(self._broadcasts):
            if bc is handle:
                del self._broadcasts[i]
                bc.destroy()
                return

    def close(self) -> None:
        """Remove the scratch directory and destroy every broadcast still held."""
        self._datasets.clear()
        fsutil.remove(self.scratch)
        while self._broadcasts:
            self.release(self._broadcasts[-1])


# ----------------------------------------------------------------------- errors


def task_error(e: Exception) -> Exception:
    """The embedpipe error a Python task raised, as the same class with its one-line message."""
    from embedpipe import errors

    m = re.search(r"embedpipe\.errors\.(\w+): ([^\n]*)", str(e))
    cls = getattr(errors, m.group(1), None) if m else None
    if m and isinstance(cls, type) and issubclass(cls, EmbedpipeError):
        return cls(m.group(2))
    return e


def check_settings(s: SvdConfig, vocab_size: int) -> None:
    """One-line ConfigErrors for settings the matrix cannot satisfy (before any Spark job)."""
    if s.dim >= vocab_size:
        raise ConfigError(
            f"svd.dim = {s.dim} must be smaller than the vocabulary ({vocab_size:,} words); "
            "lower svd.dim or lower vocab.min_count"
        )
    if not 0.0 < s.cds <= 1.0:
        raise ConfigError(
            f"svd.cds = {s.cds} is out of range; set 0 < svd.cds <= 1 (0.75 is usual)"
        )
    if not s.shift >= 1.0 or not math.isfinite(s.shift):
        raise ConfigError(f"svd.shift = {s.shift} is out of range; set svd.shift >= 1 (1 = none)")


# ----------------------------------------------------------------------- run


@dataclass
class SvdOutput:
    """What :func:`compute` returns: the factors, per-shard sizes, timings and traffic."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    shard_rows: list[int]
    ppmi_entries: list[int]
    timings: dict[str, float]
    stats: RunnerStats


def compute(
    spark: Any,
    run_dir: RunDir,
    meta: layout.CoocInfo,
    s: SvdConfig,
    scratch: str,
    method: str = METHOD,
    dynamic_shift: bool = DYNAMIC_SHIFT,
    fan_in: int = SUM_FAN_IN,
    small_bytes: int = SMALL_SUM_BYTES,
) -> SvdOutput:
    """PPMI of ``run_dir/cooc`` and its rank-``svd.dim`` SVD through Spark (steps 1-3 above).

    ``scratch`` is a directory the executors can write (removed before returning).
    """
    V, S = meta.vocab_size, meta.shards
    runner = SparkRunner(spark.sparkContext, scratch, S, fan_in=fan_in, small_bytes=small_bytes)
    timings: dict[str, float] = {}
    try:
        cooc = CoocShards(run_dir, meta)
        with Timer() as t:
            marginals = runner.sum(partial(marginals_step, V), cooc)
            row_sums, col_sums = marginals[0], marginals[1]
            p_context = ppmi_kernel.context_distribution(col_sums, s.cds)
        timings["marginals_seconds"] = round(t.seconds, 3)
        with Timer() as t:
            bc = runner.broadcast((row_sums, p_context))
            shards = runner.map(partial(ppmi_step, bc, s.shift), cooc)  # reads cooc/ again
            stats = runner.collect(shard_stats, shards)
        timings["ppmi_seconds"] = round(t.seconds, 3)
        entries = [n for _, _, n in stats]
        logger.info(
            "svd      PPMI: %s positive entries of %s (%.1f%%) in %.1fs",
            human_count(sum(entries)),
            human_count(meta.nnz),
            100.0 * sum(entries) / max(meta.nnz, 1),
            t.seconds,
        )
        with Timer() as t:
            u, sv, vt = rsvd.randomized_svd_sharded(
                shards,
                V,
                s.dim,
                s.oversample,
                s.power_iters,
                s.seed,
                method,
                dynamic_shift=dynamic_shift,
                n_rows=V,
                runner=runner,
            )
        timings["svd_seconds"] = round(t.seconds, 3)
    except Exception as e:
        err = task_error(e)
        if err is e:
            raise
        raise err from e
    finally:
        runner.close()
    return SvdOutput(u, sv, vt, [r for _, r, _ in stats], entries, timings, runner.stats)


def run(
    spark: Any,
    cfg: Config,
    run_dir: RunDir,
    force: bool = False,
    method: str = METHOD,
    dynamic_shift: bool = DYNAMIC_SHIFT,
    **_: Any,
) -> StageResult:
    """PPMI + randomized SVD of ``run_dir/cooc`` into ``run_dir/svd``.

    ``method`` ("cholqr2" or "tsqr") and ``dynamic_shift`` choose the kernel's
    orthonormalisation and power-iteration variant (not config keys yet).
    """
    s = cfg.svd
    vocab_rec = run_dir.require("vocab")
    meta = layout.info(run_dir)
    V, S = meta.vocab_size, meta.shards
    if method not in rsvd.METHODS:
        raise ConfigError(f"svd method {method!r} is unknown; use one of {rsvd.METHODS}")
    inputs = {
        "shards": S,
        "method": method,
        "dynamic_shift": bool(dynamic_shift),
        "sum_fan_in": SUM_FAN_IN,
    }
    fp = stage_fingerprint(run_dir, "svd", cfg.section_hash("svd"), inputs)
    if not force and run_dir.is_current("svd", fp):
        return log_skip("svd", run_dir)
    vocab_v = int(vocab_rec["counts"]["vocab_size"])
    if vocab_v != V:
        raise InputError(
            f"{run_dir.path('cooc')}: built for {V:,} words but the vocabulary has {vocab_v:,}; "
            f"re-run `embedpipe cooccur --force --out {run_dir.uri}`"
        )
    check_settings(s, V)
    if meta.nnz == 0:
        raise InputError(f"{run_dir.path('cooc')}: no co-occurrence entries; check the corpus")

    width = sketch_width(V, s.dim, s.oversample)
    max_rows = len(meta.rows(0))
    need = task_memory_need(V, width, max_rows, max(meta.shard_nnz))
    spark_mod.check_task_memory(
        spark, need,
        f"svd (V={V:,}, l={width}, largest shard {max(meta.shard_nnz):,} entries)",
        "svd.dim / svd.oversample, the vocabulary (vocab.min_count) or raise cooccur.shards",
    )  # fmt: skip
    driver_need = driver_memory_need(V, width, s.dim)
    passes = product_passes(s.power_iters)
    dense = dense_bytes(V, width)
    logger.info(
        "svd      V=%s dim=%d l=%d q=%d S=%d: %s cooc entries; 2 reads + %d sparse products; "
        "per product a %s broadcast, per AᵀQ pass %d x %s partial sums to the driver; "
        "task memory ~%s (limit %s), driver ~%s",
        f"{V:,}", s.dim, width, s.power_iters, S, human_count(meta.nnz), passes,
        human_bytes(dense), S, human_bytes(dense), human_bytes(need),
        human_bytes(spark_mod.task_memory_bytes(spark)), human_bytes(driver_need),
    )  # fmt: skip
    tokens = read_vocab(run_dir).column("token").to_pylist()
    if len(tokens) != V:
        raise InputError(f"{run_dir.path('vocab')}: {len(tokens)} tokens but the record says {V}")

    with Timer() as total:
        tmp = run_dir.begin("svd")
        out = compute(spark, run_dir, meta, s, fsutil.join(tmp, SCRATCH), method, dynamic_shift)
        with Timer() as t_write:
            w = rsvd.embed(out.u, out.s, out.vt, s.eig, s.add_context)
            Vectors(tokens, w.astype(np.float32)).save_parquet(fsutil.join(tmp, VECTORS_FILE))
    timings = {
        **out.timings,
        "write_seconds": round(t_write.seconds, 3),
        "seconds": round(total.seconds, 3),
    }
    st = out.stats
    memory = {
        "task_bytes_estimate": need,
        "driver_bytes_estimate": driver_need,
        "peak_task_rss": st.peak_task_rss,
        "driver_peak_rss": _peak_rss(),
        "dense_matrix_bytes": dense,
        # Stored PPMI: CSR and transpose (4-byte values and indices), their row pointers.
        "ppmi_bytes": 16 * sum(out.ppmi_entries) + 4 * (V + S) + 4 * S * (V + 1),
    }
    traffic = {
        "product_passes": passes,
        "file_reads": 2,
        "broadcasts": st.broadcasts,
        "broadcast_bytes": st.broadcast_bytes,
        "sums": st.sums,
        "partial_sum_bytes_to_driver": st.sum_bytes,
        "stored_bytes": st.stored_bytes,
        "spark_jobs": st.jobs,
        "task_seconds": round(st.task_seconds, 3),
        "sum_seconds": st.sum_seconds,
    }
    output = "U Σ^eig + V Σ^eig" if s.add_context else "U Σ^eig"
    model = {
        "format_version": FORMAT_VERSION,
        "model": "svd",
        "settings": to_dict(s),
        "method": method,
        "dynamic_shift": bool(dynamic_shift),
        "vocab_size": V,
        "dim": s.dim,
        "sketch_width": width,
        "shards": S,
        "cooc_entries": meta.nnz,
        "ppmi_entries": sum(out.ppmi_entries),
        "shard_ppmi_entries": out.ppmi_entries,
        "output": output,
        "singular_values": [float(v) for v in out.s],
        "timings": timings,
        "memory": memory,
        "traffic": traffic,
    }
    fsutil.write_text_atomic(
        fsutil.join(tmp, MODEL_FILE), json.dumps(model, indent=2, sort_keys=True)
    )
    summary = (
        f"V={V:,} dim={s.dim} (l={width}, q={s.power_iters}) S={S}: PPMI "
        f"{human_count(sum(out.ppmi_entries))} entries in "
        f"{out.timings['marginals_seconds'] + out.timings['ppmi_seconds']:.1f}s, SVD "
        f"{out.timings['svd_seconds']:.1f}s, σ1={out.s[0]:.4g} σ{s.dim}={out.s[-1]:.4g}; "
        f"{output}, eig={s.eig:g}; peak task RSS {human_bytes(st.peak_task_rss)}"
    )
    record = run_dir.commit("svd", tmp, {
        "fingerprint": fp,
        "config": {"svd": to_dict(s)},
        "inputs": {**inputs, "cooccur": meta.record["fingerprint"],
                   "vocab": vocab_rec["fingerprint"]},
        "counts": {"vocab_size": V, "dim": s.dim, "sketch_width": width, "shards": S,
                   "cooc_entries": meta.nnz, "ppmi_entries": sum(out.ppmi_entries),
                   "product_passes": passes},
        "timings": timings,
        "summary": summary,
    })  # fmt: skip
    logger.info("svd      %s", summary)
    return StageResult("svd", False, record, total.seconds, summary)


def model_path(run_dir: RunDir) -> str:
    """URI of a finished run's ``svd/`` model directory (vectors.parquet + model.json)."""
    run_dir.require("svd")
    return run_dir.path("svd")


__all__ = [
    "CoocShards",
    "InMemory",
    "ShardFiles",
    "ShardMatrix",
    "SparkRunner",
    "SvdOutput",
    "check_settings",
    "compute",
    "decode_record",
    "driver_memory_need",
    "encode_record",
    "load_shard",
    "marginals_step",
    "model_path",
    "ppmi_step",
    "product_passes",
    "run",
    "sketch_width",
    "task_memory_need",
]
