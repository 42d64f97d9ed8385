"""``svd`` stage: PPMI of the co-occurrence shards, then a randomized truncated SVD.

The count-based route of Levy, Goldberg & Dagan (2015) at scale: the V × V matrix is never
formed densely and never gathered on one machine; the maths is in
:mod:`embedpipe.kernels.ppmi` and :mod:`embedpipe.kernels.rsvd`, this module only moves
shards and small matrices around. Every step is one Spark job of one task per shard
(task k handles shard k = rows i ≡ k mod S, on any executor).

Extract: task k reads its own cooc file (``cooc/shard=k``, checked against the manifest by
:func:`embedpipe.cooccur.read_shard_table`) into a CSR matrix of the shard's rows (local
row r is global row r·S + k). No shuffle.

Transform:

1. **marginals** (the only read of the cooc files): every task returns its row and column
   sums of x and keeps its CSR of x as raw arrays in the stage's scratch directory; the
   driver adds the sums in shard order and computes P_α(j) (``svd.cds``).
2. **PPMI**: the row sums and P_α (2·V float64) go to every task, which turns its x into
   its rows of max(log(x_ij / (x_i· P_α(j))) − log(svd.shift), 0), positive entries only,
   as float32 CSR of A_k and of A_kᵀ (:class:`~embedpipe.kernels.rsvd.SparseRows`), kept
   in scratch for the SVD.
3. **randomized SVD**: :func:`~embedpipe.kernels.rsvd.randomized_svd_sharded` through
   :class:`SparkRunner`: one job per power iteration (task k computes A_kᵀ(A_k Z) and
   spills its V × l partial sum) and one for the final Rayleigh–Ritz pass, whose tasks
   also leave Y_k = A_k Z in scratch. Only Z (V × l) goes out to the tasks and only the
   partial sums and l × l factors come back; the driver reads Y_k shard by shard only at
   the end, to form its rows of U = Y T Û. The driver's dense algebra runs on one BLAS
   thread (:func:`single_threaded_blas`).
4. **embedding** on the driver: U Σ^eig (``svd.eig``), plus V Σ^eig with ``svd.add_context``.

Load: ``svd/vectors.parquet`` (schema ``VECTORS``, rows by id) and ``svd/model.json``
(settings, singular values, timings with their breakdown, memory, traffic), committed
together; the scratch directory is removed before the commit.

Why files and not RDDs or Spark broadcasts: PySpark keeps a cached Python object in the
JVM as a pickle and ships broadcasts and results through the JVM, so every use of a
shard or a V × l matrix costs a few copies across the Python/JVM boundary (a no-op sum of
four 56 MB partials took 12 s on the benchmark machine). A raw ``.npy`` file is written
once and, on a local filesystem, memory-mapped by every reader: shards are read once
into the page cache and then shared by all Python workers at no cost. On HDFS or an
object store the same code reads the bytes (one copy per use).

Determinism: the test matrix depends only on ``svd.seed``, every row of A_k M is computed
inside its shard, and :meth:`SparkRunner.reduce` adds the per-shard partial sums in shard
order (never in arrival order), so for a fixed S the output is bit-identical run to run
and to :class:`~embedpipe.kernels.rsvd.LocalRunner` on the same shards under
:func:`single_threaded_blas` (Spark's Python workers run one BLAS thread per task).

Cost model (l = svd.dim + svd.oversample, q = svd.power_iters; logged and in model.json):

* one read of the cooc files; q + 1 passes computing A_kᵀ(A_k M): 2q + 2 sparse
  products with the PPMI, as scikit-learn's ``randomized_svd`` (an ill-conditioned
  sketch adds passes; PPMI's does not);
* bytes per pass: a V × l array written once and read by every task, and one V × l
  partial sum per shard written to scratch and read by the driver (above ``SUM_FAN_IN``
  shards, tree tasks first add them in groups of ``SUM_FAN_IN``); float32 in the power
  iterations (V·l·4: 28 MB at V = 64k, l = 110), float64 in the final pass, which also
  writes Y (V·l·8 in all), read once by the driver;
* driver memory: about ``DRIVER_DENSE_COPIES`` · V·l·8 + 3·V·dim·8 (:func:`driver_memory_need`);
* task memory: its shard (CSR and transpose) plus about ``TASK_DENSE_COPIES`` · V·l·8
  (:func:`task_memory_need`), checked up front against the executor memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow.fs as pafs
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
#: Per-shard data (x and PPMI shards, broadcast arrays, spilled partial sums) live here
#: inside the stage's temporary directory while the stage runs; removed before the commit.
SCRATCH = "_scratch"

#: How the final Y is orthonormalised ("cholqr2" or "tsqr", see kernels.rsvd).
METHOD = "cholqr2"
#: dashSVD's dynamic shift in the power iterations (kernels.rsvd).
DYNAMIC_SHIFT = True
#: Up to this many spilled partial sums are read by the driver one by one; above it, tree
#: tasks first add them in groups of this size, each group in shard order.
SUM_FAN_IN = 8
#: Task results up to this size come back with their Spark job (Gram matrices, marginals,
#: shard sizes); bigger arrays (V × l partial sums, rows of U) go through scratch files.
SMALL_SUM_BYTES = 1 << 20

#: Bytes per cooc entry a task needs while it builds its PPMI shard: the Arrow columns
#: (12), the CSR of x (8), the kernel's output buffers (12), the float32 PPMI (8), its
#: transpose (8) and scipy's conversion temporaries (4). The stored shard alone is 16.
TASK_BYTES_PER_ENTRY = 52
#: V × l float64 matrices a task holds at once: the broadcast M (memory-mapped, float32
#: in the power iterations), its partial sum AᵀY_k accumulated in float64, and that
#: partial's float32 copy.
TASK_DENSE_COPIES = 2
#: m_k × l float64 matrices a task holds at once: Y_k and QR / product temporaries.
TASK_ROW_COPIES = 2
#: V × l float64 matrices the driver holds at once: Z, the running sum, one incoming
#: partial (memory-mapped), Bᵀ and the orthonormalisation's temporaries.
DRIVER_DENSE_COPIES = 5


# ------------------------------------------------------------------ cost model


def sketch_width(vocab_size: int, dim: int, oversample: int) -> int:
    """Columns l of the sketch: dim + oversample, capped at V."""
    return min(dim + oversample, vocab_size)


def product_passes(power_iters: int) -> int:
    """Sparse products with the whole matrix: 2·(q + 1), two per pass computing Aᵀ(A M)
    (more only if the sketch needs extra orthonormalisation passes)."""
    return 2 * power_iters + 2


def dense_bytes(vocab_size: int, width: int) -> int:
    """Bytes of one V × l float64 matrix (a broadcast test matrix or a partial AᵀY_k)."""
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
    """Memory the driver needs for the SVD: ``DRIVER_DENSE_COPIES`` V × l matrices plus U,
    Vᵀ and the output vectors (V × dim each), i.e. O(V·l)."""
    return DRIVER_DENSE_COPIES * dense_bytes(vocab_size, width) + 3 * vocab_size * dim * 8


# ------------------------------------------------------------------ array files


def write_npy(uri: str, array: np.ndarray) -> int:
    """Write ``array`` as a ``.npy`` file at ``uri`` atomically, without copying the data.

    Like :func:`embedpipe.fsutil.write_bytes_atomic` (a sibling temporary file renamed
    over the target: a retried task overwrites cleanly) but streamed: header, then the
    array's own buffer. Returns the bytes written.
    """
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError("cannot store Python objects in an .npy scratch file")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    with fsutil.open_output_atomic(uri) as f:
        f.write(header.getvalue())
        if array.size:
            f.write(memoryview(array.reshape(-1)).cast("B"))
    return len(header.getvalue()) + array.nbytes


def _npy_view(buf: Any) -> np.ndarray:
    """The array in ``.npy`` bytes (any buffer), without copying (read-only)."""
    data = memoryview(buf)
    head = io.BytesIO(data[: min(len(data), 1 << 16)].tobytes())
    major, _ = np.lib.format.read_magic(head)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(head)
    if dtype.hasobject:
        raise InputError("a scratch file holds Python objects; it was not written by embedpipe")
    count = math.prod(shape)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=head.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def read_npy(uri: str) -> np.ndarray:
    """Read a ``.npy`` file written by :func:`write_npy` (read-only, no pickle).

    On a local filesystem the file is memory-mapped: nothing is copied, and every process
    reading it shares the same page-cache pages. Elsewhere (HDFS, object stores) its
    bytes are read once.
    """
    fs, path = fsutil.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs = pafs.LocalFileSystem(use_mmap=True)
    try:
        with fs.open_input_file(path) as f:
            buf = f.read_buffer()
    except FileNotFoundError as e:
        raise InputError(f"{uri}: scratch file not found (removed while the stage ran?)") from e
    return _npy_view(buf)


class FileArray:
    """A broadcast: an array written once to scratch, read (memory-mapped) in the tasks."""

    def __init__(self, uri: str) -> None:
        """The array in ``uri``."""
        self.uri = uri
        self._value: np.ndarray | None = None

    @property
    def value(self) -> np.ndarray:
        """The array (read on first use in each process)."""
        if self._value is None:
            self._value = read_npy(self.uri)
        return self._value

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "_value": None}  # ship the name, never the data


# -------------------------------------------------------------- per-shard datasets


def load_shard(run: RunDir, meta: layout.CoocInfo, k: int) -> rsvd.Shard:
    """Read cooc shard ``k`` as a :class:`~embedpipe.kernels.rsvd.Shard` of x (float32 CSR)."""
    table = layout.read_shard_table(run, k, meta)
    csr = layout.table_to_csr(table, meta.vocab_size, meta.shards, k, layout.shard_uri(run, k))
    return rsvd.Shard(k, meta.rows(k).astype(np.int64), csr)


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


_CSR_FIELDS = ("indptr", "indices", "data")
_SPARSE_ROWS_FIELDS = ("indptr", "indices", "data", "t_indptr", "t_indices", "t_data")


class ArrayShards:
    """Sparse shards kept as raw ``.npy`` files: shard k in ``<uri>/shard-<k>/``.

    A shard is its global row ids, its column count and either a CSR matrix or a
    :class:`~embedpipe.kernels.rsvd.SparseRows` (CSR of A_k and of A_kᵀ). Loading
    memory-maps the files on a local filesystem (see :func:`read_npy`).
    """

    def __init__(self, uri: str) -> None:
        """The dataset under directory ``uri``."""
        self.uri = uri

    def _file(self, k: int, name: str) -> str:
        return fsutil.join(self.uri, f"shard-{k:05d}", f"{name}.npy")

    def save(self, shard: rsvd.Shard) -> int:
        """Write ``shard`` (run inside its task); return the bytes written."""
        m = shard.matrix
        if isinstance(m, rsvd.SparseRows):
            arrays = {f: getattr(m, f) for f in _SPARSE_ROWS_FIELDS}
        else:
            m = sp.csr_array(m)
            arrays = {"indptr": m.indptr, "indices": m.indices, "data": m.data}
        arrays["shape"] = np.array(m.shape, dtype=np.int64)
        arrays["rows"] = np.asarray(shard.row_index, dtype=np.int64)
        # shape.npy last: a shard is complete once it exists (a retried task rewrites all).
        return sum(write_npy(self._file(shard.k, name), arrays[name])
                   for name in sorted(arrays, key=lambda n: n == "shape"))  # fmt: skip

    def load(self, k: int) -> rsvd.Shard:
        """Shard k (read inside a task)."""
        n_rows, n_cols = (int(n) for n in read_npy(self._file(k, "shape")))
        rows = read_npy(self._file(k, "rows"))
        if fsutil.exists(self._file(k, "t_data")):
            arrays = [read_npy(self._file(k, f)) for f in _SPARSE_ROWS_FIELDS]
            return rsvd.Shard(k, rows, rsvd.SparseRows(n_rows, n_cols, *arrays))
        indptr, indices, data = (read_npy(self._file(k, f)) for f in _CSR_FIELDS)
        return rsvd.Shard(k, rows, sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols)))


# -------------------------------------------------------------- task bodies (pure)


def marginals_step(
    n_rows: int, keep: ArrayShards | None, shard: rsvd.Shard
) -> tuple[np.ndarray, None]:
    """The shard's part of the marginals as one (2, V) array: row sums, column sums.

    With ``keep``, the shard's x is also stored there for the PPMI step (so the cooc
    Parquet is read and checked once).
    """
    if keep is not None:
        keep.save(shard)
    row_sums, col_sums = ppmi_kernel.marginals_partial(shard.row_index, shard.matrix, n_rows)
    return np.stack([row_sums, col_sums]), None


def ppmi_step(
    marginals: Any, shift: float, out: ArrayShards, shard: rsvd.Shard
) -> tuple[int, int, int]:
    """Store the shard's rows of PPMI (from the broadcast ``[row_sums, p_context]``) in
    ``out`` as :class:`~embedpipe.kernels.rsvd.SparseRows`; return ``(k, rows, entries)``."""
    row_sums, p_context = marginals.value
    matrix = ppmi_kernel.ppmi_shard(shard.row_index, shard.matrix, row_sums, p_context, shift)
    out.save(rsvd.Shard(shard.k, shard.row_index, rsvd.sparse_rows(matrix)))
    return shard.k, int(matrix.shape[0]), int(matrix.nnz)


# ------------------------------------------------------------------ SparkRunner


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass(frozen=True)
class TaskInfo:
    """What a task reports besides its result."""

    peak_rss: int
    load_seconds: float  # reading its records
    compute_seconds: float  # inside the step function (products, kernels)
    write_seconds: float  # spilling its result to scratch
    cpu_seconds: float  # CPU time of the task's Python worker during the task


class _Clock:
    """Times the phases of one task."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.cpu0 = _cpu_seconds()
        self.phases: dict[str, float] = {"load": 0.0, "compute": 0.0, "write": 0.0}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] += now - self.last
        self.last = now

    def info(self) -> TaskInfo:
        p = self.phases
        return TaskInfo(_peak_rss(), p["load"], p["compute"], p["write"],
                        _cpu_seconds() - self.cpu0)  # fmt: skip


@dataclass(frozen=True)
class _Spilled:
    """Marks an array a task wrote to scratch instead of returning it."""

    uri: str


def _spill(value: Any, uri: str, small_bytes: int) -> Any:
    """``value`` with every array above ``small_bytes`` (inside tuples too) written to scratch."""
    if isinstance(value, np.ndarray) and value.nbytes > small_bytes:
        write_npy(uri + ".npy", value)
        return _Spilled(uri + ".npy")
    if isinstance(value, tuple):
        return tuple(_spill(v, f"{uri}-{i}", small_bytes) for i, v in enumerate(value))
    return value


def _has_spilled(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_has_spilled(v) for v in value)
    return isinstance(value, _Spilled)


def _unspill(value: Any) -> Any:
    if isinstance(value, _Spilled):
        return read_npy(value.uri)
    if isinstance(value, tuple):
        return tuple(_unspill(v) for v in value)
    return value


def _reduce_task(fn: Callable[[Any], tuple[np.ndarray, Any]], data: Any, spill: str,
                 small_bytes: int, k: int) -> tuple[int, Any, Any, TaskInfo]:  # fmt: skip
    """Task k of :meth:`SparkRunner.reduce`: its (part, extra), big arrays spilled."""
    clock = _Clock()
    record = data.load(k)
    clock.lap("load")
    part, extra = fn(record)
    part = np.asarray(part)
    clock.lap("compute")
    shipped = _spill(part, fsutil.join(spill, f"part-{k:05d}"), small_bytes)
    extra = _spill(extra, fsutil.join(spill, f"extra-{k:05d}"), small_bytes)
    clock.lap("write")
    return k, shipped, extra, clock.info()


def _collect_task(fn: Callable[[Any], Any], data: Any, spill: str, small_bytes: int,
                  k: int) -> tuple[int, Any, TaskInfo]:  # fmt: skip
    """Task k of :meth:`SparkRunner.collect`: fn(record k), big arrays spilled."""
    clock = _Clock()
    record = data.load(k)
    clock.lap("load")
    result = fn(record)
    clock.lap("compute")
    shipped = _spill(result, fsutil.join(spill, f"part-{k:05d}"), small_bytes)
    clock.lap("write")
    return k, shipped, clock.info()


def _group_sum_task(level: str, out: str, fan_in: int, n: int,
                    g: int) -> tuple[int, Any, None, TaskInfo]:  # fmt: skip
    """One tree node: add spilled parts g·fan_in .. g·fan_in + fan_in − 1 in that order."""
    clock = _Clock()
    total = None
    for k in range(g * fan_in, min(n, (g + 1) * fan_in)):
        part = read_npy(fsutil.join(level, f"part-{k:05d}.npy"))
        total = part.astype(np.float64) if total is None else total + part
    clock.lap("compute")
    assert total is not None
    write_npy(fsutil.join(out, f"part-{g:05d}.npy"), total)
    clock.lap("write")
    return g, _Spilled(fsutil.join(out, f"part-{g:05d}.npy")), None, clock.info()


@dataclass
class JobRecord:
    """One Spark job of a :class:`SparkRunner`: its step, wall time and task reports."""

    step: str
    seconds: float
    tasks: list[TaskInfo]


@dataclass
class RunnerStats:
    """What a :class:`SparkRunner` did: for the logs, model.json and the cost model."""

    jobs: list[JobRecord] = field(default_factory=list)
    broadcasts: int = 0
    broadcast_bytes: int = 0
    sums: int = 0
    sum_bytes: int = 0  # partial sums read by the driver
    collected_bytes: int = 0  # spilled collect results and reduce extras (Y_k) read back
    driver_sum_seconds: float = 0.0  # reading and adding partial sums on the driver

    @property
    def peak_task_rss(self) -> int:
        """Largest peak RSS a task's Python worker reported."""
        return max((t.peak_rss for j in self.jobs for t in j.tasks), default=0)

    def total(self, what: str) -> float:
        """Σ over all tasks of one :class:`TaskInfo` field (e.g. "compute_seconds")."""
        return float(sum(getattr(t, what) for j in self.jobs for t in j.tasks))

    def job_seconds(self) -> float:
        """Wall time inside Spark jobs (driver waiting for tasks)."""
        return float(sum(j.seconds for j in self.jobs))

    def spark_overhead(self, slots: int) -> float:
        """Wall time of the jobs not explained by their tasks' own time spread over ``slots``
        parallel task slots: scheduling, Python worker start-up and hand-over, result
        collection. An estimate (tasks are not perfectly balanced)."""
        over = 0.0
        for j in self.jobs:
            busy = [t.load_seconds + t.compute_seconds + t.write_seconds for t in j.tasks]
            over += max(0.0, j.seconds - max(sum(busy) / max(slots, 1), max(busy, default=0)))
        return over


class SparkRunner:
    """:class:`~embedpipe.kernels.rsvd.ShardRunner` for S shards: one Spark task per shard.

    Spark only schedules tasks (task k handles shard k, on any executor) and brings back
    small results; shards, broadcast arrays and big results are ``.npy`` files in
    ``scratch``, a directory of the run that executors reach as they reach cooc/ (see the
    module docstring for why). Datasets are objects with ``load(k)``:
    :class:`ArrayShards`, :class:`CoocShards`, :class:`InMemory`.

    ``reduce``: every task computes (part, extra); parts up to ``small_bytes`` (Gram
    matrices, marginals) come back with the job's results, bigger ones (V × l) are written
    to scratch and read by the driver one at a time (memory-mapped). Either way the
    driver adds them in shard order: bit-identical to
    :class:`~embedpipe.kernels.rsvd.LocalRunner` for a fixed S, and the driver holds the
    running total and one partial. Above ``fan_in`` big partials, tree nodes (one task
    each) first add groups of ``fan_in`` files in shard order (deterministic, unlike
    ``treeReduce``'s arrival order).

    ``release`` deletes a broadcast's file; :meth:`close` removes the scratch directory
    (call it in ``finally``).
    """

    def __init__(
        self,
        sc: Any,
        scratch: str,
        n_shards: int,
        fan_in: int = SUM_FAN_IN,
        small_bytes: int = SMALL_SUM_BYTES,
    ) -> None:
        """``n_shards`` tasks per step on SparkContext ``sc``; files stored in ``scratch``."""
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
        self._serial = 0

    def new_dir(self, what: str) -> str:
        """A fresh directory URI inside scratch (not created until written to)."""
        self._serial += 1
        return fsutil.join(self.scratch, f"{self._serial:04d}-{what}")

    def run_tasks(self, task: Callable[[int], Any], step: str, n: int | None = None) -> list[Any]:
        """Run ``task(k)`` for k < n (default S) as one Spark job; results in order of k.

        Every result's last element is the task's :class:`TaskInfo`.
        """
        keys = self._keys if n is None or n == self.n_shards else self.sc.parallelize(range(n), n)
        t0 = time.perf_counter()
        results = sorted(keys.map(task).collect(), key=lambda r: r[0])
        seconds = time.perf_counter() - t0
        infos = [r[-1] for r in results]
        self.stats.jobs.append(JobRecord(step, seconds, infos))
        logger.debug("svd      job %d %s: %.2fs wall; tasks %.2fs load, %.2fs compute, "
                     "%.2fs write, %.2f CPU s", len(self.stats.jobs), step, seconds,
                     sum(t.load_seconds for t in infos), sum(t.compute_seconds for t in infos),
                     sum(t.write_seconds for t in infos),
                     sum(t.cpu_seconds for t in infos))  # fmt: skip
        return results

    def broadcast(self, value: np.ndarray) -> FileArray:
        """Write ``value`` to scratch; its handle's ``.value`` reads it in every task."""
        uri = self.new_dir("broadcast") + ".npy"
        self.stats.broadcasts += 1
        self.stats.broadcast_bytes += write_npy(uri, np.asarray(value))
        return FileArray(uri)

    def reduce(
        self, fn: Callable[[Any], tuple[np.ndarray, Any]], data: Any
    ) -> tuple[np.ndarray, list[Any]]:
        """(Σ_k part_k, [extra_k]) of ``fn(record k) = (part_k, extra_k)``, in shard order."""
        spill = self.new_dir("sum")
        try:
            results = self.run_tasks(
                partial(_reduce_task, fn, data, spill, self.small_bytes), _step_name(fn)
            )
            # Mapped (or read) now: the tree below removes this job's spill directory.
            extras = [_unspill(extra) for _, _, extra, _ in results]
            self.stats.collected_bytes += sum(
                _nbytes(_unspill(e)) for _, _, e, _ in results if _has_spilled(e)
            )
            parts = [part for _, part, _, _ in results]
            n = len(parts)
            while n > self.fan_in and any(isinstance(p, _Spilled) for p in parts):
                # A level of the deterministic tree (only big, hence spilled, parts).
                if not all(isinstance(p, _Spilled) for p in parts):
                    for k, p in enumerate(parts):
                        if not isinstance(p, _Spilled):
                            write_npy(fsutil.join(spill, f"part-{k:05d}.npy"), p)
                level = self.new_dir("sum")
                groups = -(-n // self.fan_in)
                results = self.run_tasks(
                    partial(_group_sum_task, spill, level, self.fan_in, n), "tree_sum", groups
                )
                fsutil.remove(spill)
                spill, parts, n = level, [p for _, p, _, _ in results], groups
            with Timer() as t:
                total = None
                for part in parts:
                    array = _unspill(part)
                    self.stats.sum_bytes += int(array.nbytes)
                    # Partials come back read-only (memory-mapped or unpickled): copy once.
                    total = np.array(array, np.float64) if total is None else total + array
                    del array
        finally:
            fsutil.remove(spill)
        if total is None:
            raise InputError("the matrix has no shards; check the svd stage input")
        self.stats.sums += 1
        self.stats.driver_sum_seconds += t.seconds
        return total, extras

    def collect(self, fn: Callable[[Any], Any], data: Any) -> list[Any]:
        """``[fn(record k)]`` in shard order (big arrays in the results come via scratch)."""
        spill = self.new_dir("collect")
        try:
            results = self.run_tasks(
                partial(_collect_task, fn, data, spill, self.small_bytes), _step_name(fn)
            )
            out = []
            for _, shipped, _ in results:
                value = _unspill(shipped)
                self.stats.collected_bytes += _nbytes(value)
                out.append(_copy_arrays(value))  # the files are removed below
        finally:
            fsutil.remove(spill)
        return out

    def release(self, handle: Any) -> None:
        """Delete a broadcast's file."""
        if isinstance(handle, FileArray):
            fsutil.remove(handle.uri)

    def close(self) -> None:
        """Remove the scratch directory."""
        fsutil.remove(self.scratch)


def _step_name(fn: Any) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__name__", "?").lstrip("_")


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    return 0


def _copy_arrays(value: Any) -> Any:
    if isinstance(value, np.ndarray) and not value.flags.owndata:
        return np.array(value)
    if isinstance(value, tuple):
        return tuple(_copy_arrays(v) for v in value)
    return value


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the driver's dense algebra on one BLAS thread.

    The driver's matrices are small (V × l): one thread takes a fraction of a second per
    product, while OpenBLAS's default of one thread per core degrades 5-10x as soon as
    other processes (Spark's workers, other jobs) compete for the cores (measured: an
    l × l Gram of a 64k × 110 matrix 0.03 s on one thread, 0.5 s on two under load 7).
    Uses threadpoolctl when installed; otherwise leaves BLAS as it is.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


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
    range_passes: list[str]
    breakdown: dict[str, Any]


def breakdown(stats: RunnerStats, seconds: float, slots: int) -> dict[str, Any]:
    """Where the wall time of :func:`compute` went: Spark jobs (their tasks' loading,
    computing and writing, and the rest: scheduling and hand-over) and the driver.

    Task seconds are summed over tasks, which run ``slots`` at a time.
    """
    steps: dict[str, dict[str, float]] = {}
    for job in stats.jobs:
        names = ("jobs", "seconds", "task_compute_seconds", "task_io_seconds", "task_cpu_seconds")
        d = steps.setdefault(job.step, dict.fromkeys(names, 0.0))
        d["jobs"] += 1
        d["seconds"] += job.seconds
        for t in job.tasks:
            d["task_compute_seconds"] += t.compute_seconds
            d["task_io_seconds"] += t.load_seconds + t.write_seconds
            d["task_cpu_seconds"] += t.cpu_seconds
    job_seconds = stats.job_seconds()
    return {
        "slots": slots,
        "spark_jobs": len(stats.jobs),
        "job_seconds": round(job_seconds, 3),
        "task_compute_seconds": round(stats.total("compute_seconds"), 3),
        "task_load_seconds": round(stats.total("load_seconds"), 3),
        "task_write_seconds": round(stats.total("write_seconds"), 3),
        "task_cpu_seconds": round(stats.total("cpu_seconds"), 3),
        "spark_overhead_seconds": round(stats.spark_overhead(slots), 3),
        "driver_seconds": round(max(0.0, seconds - job_seconds), 3),
        "driver_sum_seconds": round(stats.driver_sum_seconds, 3),
        "steps": {
            k: {n: int(v) if n == "jobs" else round(v, 3) for n, v in d.items()}
            for k, d in steps.items()
        },
    }


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
    passes: list[str] = []
    try:
        with Timer() as total:
            with Timer() as t:
                x_shards = ArrayShards(runner.new_dir("x"))
                marginals, _ = runner.reduce(
                    partial(marginals_step, V, x_shards), CoocShards(run_dir, meta)
                )
                p_context = ppmi_kernel.context_distribution(marginals[1], s.cds)
            timings["marginals_seconds"] = round(t.seconds, 3)
            with Timer() as t:
                bc = runner.broadcast(np.stack([marginals[0], p_context]))
                shards = ArrayShards(runner.new_dir("ppmi"))
                stats = runner.collect(partial(ppmi_step, bc, s.shift, shards), x_shards)
                runner.release(bc)
                fsutil.remove(x_shards.uri)
            timings["ppmi_seconds"] = round(t.seconds, 3)
            entries = [n for _, _, n in stats]
            logger.info(
                "svd      PPMI: %s positive entries of %s (%.1f%%) in %.1fs",
                human_count(sum(entries)),
                human_count(meta.nnz),
                100.0 * sum(entries) / max(meta.nnz, 1),
                timings["marginals_seconds"] + timings["ppmi_seconds"],
            )
            with Timer() as t, single_threaded_blas():
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
                    passes=passes,
                )
            timings["svd_seconds"] = round(t.seconds, 3)
    except Exception as e:
        err = task_error(e)
        if err is e:
            raise
        raise err from e
    finally:
        runner.close()
    slots = spark_mod.default_parallelism(spark)
    return SvdOutput(u, sv, vt, [r for _, r, _ in stats], entries, timings, runner.stats,
                     passes, breakdown(runner.stats, total.seconds, slots))  # fmt: skip


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
    orthonormalisation and power-iteration variant (not config keys).
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
        "svd      V=%s dim=%d l=%d q=%d S=%d: %s cooc entries; 1 read + %d sparse products in "
        "%d passes; per power iteration a %s float32 array to every task and %d x %s "
        "partial sums back; task memory ~%s (limit %s), driver ~%s",
        f"{V:,}", s.dim, width, s.power_iters, S, human_count(meta.nnz), passes,
        s.power_iters + 1, human_bytes(dense // 2), S, human_bytes(dense // 2),
        human_bytes(need),
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
        "product_passes": 2 * (s.power_iters + len(out.range_passes)),
        "range_passes": out.range_passes,
        "file_reads": 1,
        "broadcasts": st.broadcasts,
        "broadcast_bytes": st.broadcast_bytes,
        "sums": st.sums,
        "partial_sum_bytes_to_driver": st.sum_bytes,
        "collected_bytes_to_driver": st.collected_bytes,
        "spark_jobs": len(st.jobs),
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
        "breakdown": out.breakdown,
        "memory": memory,
        "traffic": traffic,
    }
    fsutil.write_text_atomic(
        fsutil.join(tmp, MODEL_FILE), json.dumps(model, indent=2, sort_keys=True)
    )
    b = out.breakdown
    summary = (
        f"V={V:,} dim={s.dim} (l={width}, q={s.power_iters}) S={S}: PPMI "
        f"{human_count(sum(out.ppmi_entries))} entries in "
        f"{out.timings['marginals_seconds'] + out.timings['ppmi_seconds']:.1f}s, SVD "
        f"{out.timings['svd_seconds']:.1f}s ({b['spark_jobs']} Spark jobs: "
        f"{b['task_compute_seconds']:.1f}s computing in tasks, {b['driver_seconds']:.1f}s "
        f"on the driver), σ1={out.s[0]:.4g} σ{s.dim}={out.s[-1]:.4g}; {output}, "
        f"eig={s.eig:g}; peak task RSS {human_bytes(st.peak_task_rss)}"
    )
    record = run_dir.commit("svd", tmp, {
        "fingerprint": fp,
        "config": {"svd": to_dict(s)},
        "inputs": {**inputs, "cooccur": meta.record["fingerprint"],
                   "vocab": vocab_rec["fingerprint"]},
        "counts": {"vocab_size": V, "dim": s.dim, "sketch_width": width, "shards": S,
                   "cooc_entries": meta.nnz, "ppmi_entries": sum(out.ppmi_entries),
                   "product_passes": traffic["product_passes"]},
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
    "ArrayShards",
    "CoocShards",
    "FileArray",
    "InMemory",
    "RunnerStats",
    "SparkRunner",
    "SvdOutput",
    "breakdown",
    "check_settings",
    "compute",
    "driver_memory_need",
    "load_shard",
    "marginals_step",
    "model_path",
    "ppmi_step",
    "product_passes",
    "read_npy",
    "run",
    "single_threaded_blas",
    "sketch_width",
    "task_memory_need",
    "write_npy",
]
