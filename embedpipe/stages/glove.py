"""``glove`` stage: GloVe trained on row shards with per-epoch parameter averaging.

Extract: one Spark task per training shard ``k`` reads the cooc files of its rows
(``i ≡ k mod S``) with pyarrow, as the cooccur stage's tasks wrote them
(:func:`read_training_shard`), into NumPy arrays sorted by ``(i, j)``; the RDD of
these ``(k, (i, j, x))`` elements, one per partition, is cached ``MEMORY_ONLY``: the
training data is read once and stays on the executors for every epoch. ``S`` is the
cooc's shard count unless the caller asks for another (a divisor of it costs nothing
more; any other number makes every task read every cooc shard).

Transform, epoch ``e = 1..E`` (DESIGN.md "Training, distributed"): the driver
broadcasts the parameters once (W, C, biases and AdaGrad sums); every partition runs
:func:`embedpipe.kernels.glove.train_shard` with ``seed=(glove.seed, e, k)`` for
``glove.local_epochs`` passes and returns only the rows it touched with their update
counts; the driver collects the results in shard order and folds them with
:class:`~embedpipe.kernels.glove.ParamMerger`. Word rows have one owner and are
copied. Context columns are seen by every shard, ~1/S of their entries each:
``glove.merge = "scaled"`` (default) trains them with S-times steps (S times a shard's
gradient estimates the whole column's) and keeps the mean of the shards' changes, the
AdaGrad sums adding up, which tracks S = 1 closely; ``"average"`` (the count-weighted
mean of DESIGN.md) applies ~1/S of a sequential pass's change per epoch, so the
context side learns ~S times slower (bench/RESULTS.md ``glove-merge``). One round trip
through the driver per epoch, or ``glove.rounds_per_epoch`` = R: each round trains the
next 1/R of every shard's entries (in the epoch's seeded order) and merges, which keeps
many shards closer to sequential training at R times the exchange cost; the state
after every epoch is checkpointed (:mod:`embedpipe.training`), so ``--resume``
continues an interrupted run and, every epoch's randomness being a function of
``(seed, epoch, shard)`` only, reaches bit-identical vectors.

Load: ``glove/vectors.parquet`` (``W + C``, schema ``VECTORS``) and ``glove/model.json``
(settings, losses and timings per epoch, exchange bytes), committed together.

Cost per epoch (logged), times R: broadcast ``4·V·(dim+1)·4`` bytes (103 MB at V = 64k,
dim 100); results ``(8·dim + 20)`` bytes per touched row, at most
``(V/S + V)·(8·dim + 20)`` per shard. Memory (checked up front, :func:`check_memory`):
per task :func:`task_memory_need`, times the tasks an executor runs at once; the driver
:func:`driver_memory_need`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe import FORMAT_VERSION, fsutil, schemas, training
from embedpipe import cooccur as cooc_layout
from embedpipe import spark as spark_mod
from embedpipe.config import Config, GloveConfig, GloveSchedule, to_dict
from embedpipe.errors import ConfigError, InputError, ResourceError, TrainingDivergedError
from embedpipe.kernels import glove as kernel
from embedpipe.log import Timer, human_bytes, human_count, logger
from embedpipe.runs import RunDir, StageResult, fingerprint, log_skip, stage_fingerprint
from embedpipe.stages.vocab import read_vocab

VECTORS_FILE = "vectors.parquet"
MODEL_FILE = "model.json"
#: Checkpoints live here, not in the stage's temporary directory (``begin`` wipes that).
CHECKPOINTS = "_checkpoints/glove"
#: Bytes a task needs per shard entry while training: the cached arrays (12), their
#: unpickled copy (12), the pass's order (8), the permuted i, j, x (12) and the compact
#: row ids (8), rounded up.
TASK_BYTES_PER_ENTRY = 56


# ------------------------------------------------------------------ cost model


def param_bytes(vocab_size: int, dim: int) -> int:
    """Bytes of the full parameters (W, C, biases and their AdaGrad sums): the broadcast."""
    return 4 * vocab_size * (dim + 1) * 4


def row_bytes(dim: int) -> int:
    """Bytes per returned row: id (4), count (8), vector and AdaGrad sums, bias and its sum."""
    return 8 * dim + 20


def task_memory_need(vocab_size: int, dim: int, max_shard_entries: int) -> int:
    """Memory a training task needs: the broadcast parameters, the compact copy of the rows
    it touches (at most as big again) and ``TASK_BYTES_PER_ENTRY`` per entry of its shard."""
    return 2 * param_bytes(vocab_size, dim) + TASK_BYTES_PER_ENTRY * max_shard_entries


def driver_memory_need(vocab_size: int, dim: int, shards: int) -> int:
    """Memory the driver needs per epoch: the parameters, the merged copy, the pickled
    broadcast, and the collected results (at most ``(ceil(V/S) + V)`` rows per shard)."""
    results = shards * (math.ceil(vocab_size / shards) + vocab_size) * row_bytes(dim)
    return 3 * param_bytes(vocab_size, dim) + results


@dataclass(frozen=True)
class MemoryPlan:
    """What training needs, in bytes, checked up front (:func:`check_memory`)."""

    #: One task: see :func:`task_memory_need`.
    task: int
    #: Tasks running at once on one executor: each Python worker unpickles its own
    #: copy of the broadcast, so an executor needs ``concurrent * task``.
    concurrent: int
    #: See :func:`driver_memory_need`.
    driver: int

    @property
    def executor(self) -> int:
        """Bytes one executor needs."""
        return self.concurrent * self.task


def memory_plan(vocab_size: int, dim: int, shard_sizes: list[int], concurrent: int) -> MemoryPlan:
    """The :class:`MemoryPlan` of training ``len(shard_sizes)`` shards, ``concurrent`` at a
    time per executor."""
    S = len(shard_sizes)
    return MemoryPlan(
        task_memory_need(vocab_size, dim, max(shard_sizes)),
        max(1, min(S, concurrent)),
        driver_memory_need(vocab_size, dim, S),
    )


def concurrent_tasks(spark: Any) -> int:
    """Tasks one executor runs at once: local[N] runs N, a cluster executor
    ``spark.executor.cores / spark.task.cpus`` (1 when not set, as on YARN)."""
    sc = spark.sparkContext
    if sc.master.startswith("local"):
        return max(1, int(sc.defaultParallelism))
    conf = sc.getConf()
    return max(
        1, int(conf.get("spark.executor.cores", "1")) // int(conf.get("spark.task.cpus", "1"))
    )


def check_memory(spark: Any, plan: MemoryPlan, what: str) -> None:
    """Refuse with a :class:`ResourceError` when the plan does not fit in 80 % of the memory
    configured: executors (``spark.executor.memory``) and the driver (``spark.driver.memory``);
    in local mode the driver process runs both, so they add up."""
    fix = (
        "or lower glove.dim or the vocabulary (vocab.min_count / vocab.max_size), or raise "
        "cooccur.shards (smaller shards); DESIGN.md 'Scale' has the 2-D block schedule for "
        "parameters too big for one executor"
    )
    task_side = (
        f"{plan.concurrent} concurrent task(s) x {human_bytes(plan.task)} (broadcast parameters "
        f"twice + {TASK_BYTES_PER_ENTRY} B per entry of the largest shard)"
    )
    if spark.sparkContext.master.startswith("local"):
        have = spark_mod.task_memory_bytes(spark)
        need = plan.executor + plan.driver
        if need > 0.8 * have:
            raise ResourceError(
                f"{what} needs ~{human_bytes(need)} ({task_side} + driver "
                f"{human_bytes(plan.driver)}) but spark.driver.memory is {human_bytes(have)} "
                f"in local mode; raise spark.driver.memory, {fix}"
            )
        return
    have = spark_mod.task_memory_bytes(spark)
    if plan.executor > 0.8 * have:
        raise ResourceError(
            f"{what} needs ~{human_bytes(plan.executor)} per executor ({task_side}) but "
            f"spark.executor.memory is {human_bytes(have)}; raise spark.executor.memory, "
            f"lower spark.executor.cores, {fix}"
        )
    driver = spark_mod.parse_memory(spark.sparkContext.getConf().get("spark.driver.memory", "1g"))
    if plan.driver > 0.8 * driver:
        raise ResourceError(
            f"{what} needs ~{human_bytes(plan.driver)} on the driver (parameters three times "
            f"+ the shards' results) but spark.driver.memory is {human_bytes(driver)}; raise "
            f"spark.driver.memory, {fix}"
        )


# -------------------------------------------------------------- extract (pure)


def sorted_shard(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, vocab_size: int, where: str = "cooc"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i int32, j int32, x float32)`` sorted by ``(i, j)``, checked.

    A shard made of one cooc file is already sorted (checked in one pass); pieces of
    several files are sorted here, so the result never depends on reading order. A
    repeated ``(i, j)`` or an id outside the vocabulary is an error, not a guess.
    """
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= vocab_size):
        raise InputError(
            f"{where}: ids outside the vocabulary [0, {vocab_size}); the run directory is "
            "stale: re-run cooccur after vocab (embedpipe cooccur --force)"
        )
    key = i.astype(np.int64) * vocab_size + j
    if key.size > 1 and not (key[1:] > key[:-1]).all():
        order = np.argsort(key, kind="stable")
        key, i, j, x = key[order], i[order], j[order], x[order]
        if not (key[1:] > key[:-1]).all():
            dup = int(key[1:][key[1:] == key[:-1]][0])
            raise InputError(
                f"{where}: the entry (i={dup // vocab_size}, j={dup % vocab_size}) occurs "
                "more than once; re-run cooccur --force"
            )
    return (
        np.ascontiguousarray(i, dtype=np.int32),
        np.ascontiguousarray(j, dtype=np.int32),
        np.ascontiguousarray(x, dtype=np.float32),
    )


def source_shards(cooc_shards: int, shards: int, k: int) -> tuple[list[int], bool]:
    """Which cooc shards training shard ``k`` of ``shards`` reads, and whether to filter rows.

    When ``shards`` divides the cooc's ``S``, ``i mod shards = (i mod S) mod shards``:
    shard ``k`` is the union of cooc shards ``c ≡ k (mod shards)``, read once in all.
    Otherwise every task reads every cooc shard and keeps ``i mod shards == k``
    (``shards`` times the I/O: prefer a divisor of ``cooccur.shards``).
    """
    if cooc_shards % shards == 0:
        return [c for c in range(cooc_shards) if c % shards == k], False
    return list(range(cooc_shards)), True


def read_training_shard(
    run: RunDir, meta: cooc_layout.CoocInfo, shards: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training shard ``k`` (rows ``i ≡ k mod shards``) from the cooc files, sorted by (i, j).

    Runs inside a Spark task: executors read ``cooc/`` with pyarrow, as the cooccur
    stage's tasks wrote it (each file checked against the manifest).
    """
    sources, filter_rows = source_shards(meta.shards, shards, k)
    parts = []
    for c in sources:
        table = cooc_layout.read_shard_table(run, c, meta)
        i, j, x = (table.column(n).to_numpy() for n in ("i", "j", "x"))
        if filter_rows:
            keep = i % shards == k
            i, j, x = i[keep], j[keep], x[keep]
        parts.append((i, j, x))
    i, j, x = (np.concatenate([p[n] for p in parts]) for n in range(3))
    return sorted_shard(i, j, x, meta.vocab_size, run.path("cooc"))


def epoch_loss(results: Iterable[kernel.ShardResult]) -> float:
    """``glove.c``'s per-entry cost of an epoch: the shards' last-pass costs over all entries."""
    res = list(results)
    entries = sum(r.entries for r in res)
    total = sum(float(r.losses[-1]) for r in res)
    return total / entries if entries else 0.0


def result_bytes(result: kernel.ShardResult) -> int:
    """Bytes of the arrays a shard sends back."""
    blocks = (result.word, result.context)
    return sum(a.nbytes for b in blocks for a in (b.rows, b.counts, b.vec, b.bias, b.gvec, b.gbias))


def vectors_table(tokens: pa.Array, vectors: np.ndarray) -> pa.Table:
    """``id, token, vector`` (schema ``VECTORS``) with ids 0..V-1 in order."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    vec = pa.ListArray.from_arrays(offsets, values)
    ids = pa.array(np.arange(n, dtype=np.int32))
    return pa.Table.from_arrays([ids, tokens, vec], schema=schemas.VECTORS)


def table_bytes(table: pa.Table) -> bytes:
    """Parquet bytes (deterministic: the same table gives the same bytes)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def params_from_arrays(arrays: dict[str, np.ndarray]) -> kernel.GloveParams:
    """GloveParams from the named arrays of a checkpoint (names are the field names)."""
    names = ("W", "bw", "gW", "gbw", "C", "bc", "gC", "gbc")
    return kernel.GloveParams(*(np.ascontiguousarray(arrays[n], np.float32) for n in names))


def params_to_arrays(params: kernel.GloveParams) -> dict[str, np.ndarray]:
    """The named arrays of a checkpoint."""
    names = ("W", "bw", "gW", "gbw", "C", "bc", "gC", "gbc")
    return dict(zip(names, params.arrays(), strict=True))


# ------------------------------------------------------------ Spark plumbing


@dataclass(frozen=True)
class TrainSettings:
    """What a task needs besides its shard and the broadcast (small, pickled per task)."""

    seed: int
    epoch: int
    passes: int
    x_max: float
    alpha: float
    eta: float
    #: Multiplier of the context steps: S with ``glove.merge = scaled``, else 1.
    context_scale: float = 1.0
    #: glove.c's ``-grad-clip``; not a config key (tests lift it to force a divergence).
    grad_clip: float = kernel.GRAD_CLIP
    #: ``(r, R)``: round r of ``glove.rounds_per_epoch`` (see ``kernel.train_shard``).
    part: tuple[int, int] = (0, 1)

    @classmethod
    def of(cls, g: GloveConfig, epoch: int, shards: int) -> TrainSettings:
        """Settings of ``epoch`` (1-based) of ``shards`` shards from the ``[glove]`` table."""
        scale = kernel.context_scale(g.merge.value, shards)
        return cls(g.seed, epoch, g.local_epochs, g.x_max, g.alpha, g.eta, scale)


def train_partition(
    items: Iterable[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]],
    bc: Any,
    settings: TrainSettings,
) -> Iterator[tuple[int, kernel.ShardResult, float, float]]:
    """Task body: train every shard of the partition (one) from the broadcast parameters.

    Yields ``(shard, result, wall seconds, CPU seconds)`` of the kernel call; the CPU
    time is what a shared machine cannot inflate (it does inflate wall time).
    """
    for k, (i, j, x) in items:
        params = bc.value
        t0, c0 = time.perf_counter(), time.thread_time()
        res = kernel.train_shard(
            i, j, x, params,
            seed=(settings.seed, settings.epoch, k), passes=settings.passes,
            x_max=settings.x_max, alpha=settings.alpha, eta=settings.eta,
            grad_clip=settings.grad_clip, context_scale=settings.context_scale,
            part=settings.part,
        )  # fmt: skip
        yield k, res, time.perf_counter() - t0, time.thread_time() - c0


def load_shards(
    sc: Any, run: RunDir, meta: cooc_layout.CoocInfo, shards: int
) -> tuple[Any, list[int]]:
    """The training shards as an RDD of one ``(k, (i, j, x))`` per partition, cached in memory.

    Returns the RDD (``MEMORY_ONLY``, materialised; ``unpersist`` it when done) and the
    number of entries of every shard.
    """
    from pyspark import StorageLevel

    data = (
        sc.parallelize(range(shards), shards)  # element k in partition k
        .map(lambda k: (k, read_training_shard(run, meta, shards, k)))
        .persist(StorageLevel.MEMORY_ONLY)
    )
    sizes = dict(data.map(lambda kv: (kv[0], int(kv[1][0].size))).collect())
    return data, [sizes.get(k, 0) for k in range(shards)]


def shard_sizes(meta: cooc_layout.CoocInfo, shards: int, spark: Any, cooc_uri: str) -> list[int]:
    """Entries per training shard: from the manifest when ``shards`` divides the cooc's S,
    else counted by Spark on column ``i`` only (no training data is loaded for this)."""
    if meta.shards % shards == 0:
        return [sum(meta.shard_nnz[c] for c in source_shards(meta.shards, shards, k)[0])
                for k in range(shards)]  # fmt: skip
    from pyspark.sql import functions as F

    df = spark.read.parquet(cooc_uri)
    rows = df.groupBy(F.pmod(F.col("i"), F.lit(shards)).alias("k")).count().collect()
    got = {int(r["k"]): int(r["count"]) for r in rows}
    return [got.get(k, 0) for k in range(shards)]


# ----------------------------------------------------------------------- run


def _model_json(state: dict[str, Any]) -> str:
    return json.dumps(state, indent=2, sort_keys=True)


def run(
    spark: Any,
    cfg: Config,
    run_dir: RunDir,
    force: bool = False,
    resume: bool = False,
    shards: int | None = None,
    on_epoch: Callable[[int], None] | None = None,
    **_: Any,
) -> StageResult:
    """Train GloVe on ``run_dir/cooc`` into ``run_dir/glove``.

    ``shards`` overrides the number of training shards S (default: the cooc stage's);
    ``on_epoch(e)`` is called after epoch ``e`` is checkpointed (tests use it to
    interrupt a run). ``resume`` continues from the last checkpoint of the same
    configuration.
    """
    g = cfg.glove
    if g.schedule != GloveSchedule.AVERAGE:
        raise ConfigError(f"glove.schedule = {g.schedule.value} is not implemented; use average")
    vocab_rec = run_dir.require("vocab")
    cooc_rec = run_dir.require("cooccur")
    meta = cooc_layout.info(run_dir)
    S = int(shards) if shards else meta.shards
    if S < 1:
        raise ConfigError(f"GloVe needs at least 1 shard, got {S}")
    inputs = {"shards": S}
    fp = stage_fingerprint(run_dir, "glove", cfg.section_hash("glove"), inputs)
    if not force and run_dir.is_current("glove", fp):
        return log_skip("glove", run_dir)

    V = int(vocab_rec["counts"]["vocab_size"])
    if meta.vocab_size != V:
        raise InputError(
            f"{run_dir.path('cooc')}: built for {meta.vocab_size} words but the vocabulary has "
            f"{V}; re-run cooccur --force"
        )
    dim, E = g.dim, g.epochs
    if dim >= V:
        # dim >= V gives every word its own axis: a lookup table, not an embedding.
        raise ConfigError(
            f"glove.dim = {dim} must be smaller than the vocabulary ({V:,} words); "
            "lower glove.dim or lower vocab.min_count"
        )

    # Up front: the shard sizes and the memory check, before any training data moves.
    sizes = shard_sizes(meta, S, spark, run_dir.spark_path("cooc"))
    entries = sum(sizes)
    if entries == 0:
        raise InputError(f"{run_dir.path('cooc')}: no co-occurrence entries; check the corpus")
    plan = memory_plan(V, dim, sizes, concurrent_tasks(spark))
    check_memory(spark, plan, f"GloVe (V={V:,} x dim {dim}, S={S}, largest shard "
                 f"{max(sizes):,} entries)")  # fmt: skip
    # Every round of an epoch broadcasts the parameters and collects the touched rows.
    R = g.rounds_per_epoch
    bcast = param_bytes(V, dim) * R
    logger.info(
        "glove    V=%s dim=%d S=%d R=%d: %s entries (largest shard %s); per epoch: broadcast "
        "%s (R·4·V·(dim+1)·4 B), results <= %s; memory ~%s per task x %d concurrent, driver "
        "~%s (executor limit %s); merge %s",
        f"{V:,}",
        dim,
        S,
        R,
        human_count(entries),
        human_count(max(sizes)),
        human_bytes(bcast),
        human_bytes(R * S * (math.ceil(V / S) + V) * row_bytes(dim)),
        human_bytes(plan.task),
        plan.concurrent,
        human_bytes(plan.driver),
        human_bytes(spark_mod.task_memory_bytes(spark)),
        g.merge.value,
    )

    # Checkpoints depend on everything but the number of epochs (so a run can be extended).
    ckpt_root = run_dir.path(CHECKPOINTS)
    ckpt_fp = fingerprint(
        "glove-checkpoint",
        FORMAT_VERSION,
        {k: v for k, v in to_dict(g).items() if k != "epochs"},
        inputs,
        {u: run_dir.require(u)["fingerprint"] for u in ("vocab", "cooccur")},
    )
    state = _start_state(ckpt_root, ckpt_fp, resume, V, dim, g)
    params: kernel.GloveParams = state.pop("params")
    tokens = read_vocab(run_dir).column("token").combine_chunks()
    if len(tokens) != V:
        raise InputError(f"{run_dir.path('vocab')}: {len(tokens)} tokens but the record says {V}")

    with Timer() as total:
        load_seconds = 0.0
        if state["epoch"] < E:  # (a run killed after its last checkpoint only commits)
            with Timer() as t_load:
                data, loaded = load_shards(spark.sparkContext, run_dir, meta, S)
            load_seconds = t_load.seconds
            try:
                if loaded != sizes:  # the count and the load read the same files
                    raise InputError(
                        f"{run_dir.path('cooc')}: shard sizes changed while reading ({sizes} "
                        f"vs {loaded}); is another job writing it?"
                    )
                logger.info("glove    %d shards loaded and cached in %.1fs", S, load_seconds)
                for epoch in range(state["epoch"] + 1, E + 1):
                    params = _train_epoch(
                        spark.sparkContext, data, S, params, g, epoch, E, entries, state
                    )
                    with Timer() as t_ck:
                        training.save_checkpoint(
                            ckpt_root,
                            epoch,
                            params_to_arrays(params),
                            ckpt_fp,
                            {k: state[k] for k in _STATE_KEYS},
                        )
                    state["checkpoint_seconds"].append(round(t_ck.seconds, 3))
                    state["epoch"] = epoch
                    if on_epoch is not None:
                        on_epoch(epoch)
            finally:
                data.unpersist()

    vectors = kernel.output_vectors(params)
    tmp = run_dir.begin("glove")
    fsutil.write_bytes_atomic(
        fsutil.join(tmp, VECTORS_FILE), table_bytes(vectors_table(tokens, vectors))
    )
    ep = state["epoch_seconds"]
    model = {
        "format_version": FORMAT_VERSION,
        "model": "glove",
        "settings": to_dict(g),
        "schedule": g.schedule.value,
        "vocab_size": V,
        "dim": dim,
        "shards": S,
        "entries": entries,
        "shard_entries": sizes,
        "output": "W + C",
        "losses": [float(v) for v in state["losses"]],
        "exchange_bytes_per_epoch": {"broadcast": bcast, "results": state["result_bytes"]},
        "resumed_from_epoch": state["resumed_from"],
        **{
            k: state[k]
            for k in (
                "epoch_seconds",
                "train_seconds",
                "exchange_seconds",
                "task_cpu_seconds",
                "checkpoint_seconds",
            )
        },
        "load_seconds": round(load_seconds, 3),
    }
    fsutil.write_text_atomic(fsutil.join(tmp, MODEL_FILE), _model_json(model))
    mean_epoch = float(np.mean(ep)) if ep else 0.0
    summary = (
        f"V={V:,} dim={dim} S={S}: {E} epochs over {human_count(entries)} entries, final loss "
        f"{state['losses'][-1]:.5g}, {mean_epoch:.1f}s/epoch "
        f"({human_count(entries / mean_epoch if mean_epoch else 0)} entries/s), exchange "
        f"{float(np.mean(state['exchange_seconds'] or [0])):.2f}s/epoch "
        f"({human_bytes(bcast)} broadcast + {human_bytes(state['result_bytes'])} results)"
    )
    if state["resumed_from"]:
        summary += f"; resumed after epoch {state['resumed_from']}"
    record = run_dir.commit("glove", tmp, {
        "fingerprint": fp,
        "config": {"glove": to_dict(g)},
        "inputs": {**inputs, "cooccur": cooc_rec["fingerprint"], "vocab": vocab_rec["fingerprint"]},
        "counts": {"vocab_size": V, "dim": dim, "shards": S, "entries": entries, "epochs": E,
                   "final_loss": float(state["losses"][-1])},
        "timings": {"seconds": round(total.seconds, 3), "load_seconds": round(load_seconds, 3),
                    "seconds_per_epoch": round(mean_epoch, 3),
                    "entries_per_second": round(entries / mean_epoch) if mean_epoch else 0},
        "summary": summary,
    })  # fmt: skip
    training.clear_checkpoints(ckpt_root)
    logger.info("glove    %s", summary)
    return StageResult("glove", False, record, total.seconds, summary)


#: Training state kept in the checkpoint metadata (per-epoch lists and totals).
_STATE_KEYS = (
    "losses",
    "epoch_seconds",
    "train_seconds",
    "exchange_seconds",
    "task_cpu_seconds",
    "result_bytes",
    "resumed_from",
)


def _start_state(
    root: str, ckpt_fp: str, resume: bool, V: int, dim: int, g: GloveConfig
) -> dict[str, Any]:
    """Fresh parameters (epoch 0), or the last matching checkpoint when resuming."""
    state: dict[str, Any] = {k: [] for k in _STATE_KEYS}
    # checkpoint_seconds: epochs run by this process only (a checkpoint cannot time itself).
    state.update(epoch=0, result_bytes=0, resumed_from=0, checkpoint_seconds=[])
    info = training.latest_info(root)
    if resume:
        ckpt = training.load_checkpoint(root, ckpt_fp)
        if ckpt is not None and ckpt.epoch <= g.epochs:
            params = params_from_arrays(ckpt.arrays)
            if params.vocab_size != V or params.dim != dim:
                raise InputError(f"{root}: checkpoint shape {params.W.shape} != ({V}, {dim})")
            state.update({k: ckpt.meta[k] for k in _STATE_KEYS if k in ckpt.meta})
            state.update(epoch=ckpt.epoch, resumed_from=ckpt.epoch, params=params)
            logger.info("glove    resuming after epoch %d/%d from %s", ckpt.epoch, g.epochs, root)
            return state
        why = (
            "none found"
            if info is None
            else (
                f"the one of epoch {info['epoch']} is for another configuration"
                if info["fingerprint"] != ckpt_fp
                else f"it is past glove.epochs = {g.epochs}"
            )
        )
        logger.info(
            "glove    --resume: no usable checkpoint in %s (%s); starting at epoch 1", root, why
        )
    elif info is not None:
        logger.info(
            "glove    ignoring the checkpoint of epoch %d in %s (pass --resume to "
            "continue from it); starting at epoch 1",
            info["epoch"],
            root,
        )
    # Epoch e draws from (seed, e, shard); (seed, 0) is the initialisation.
    state["params"] = kernel.init_params(V, dim, seed=(g.seed, 0))
    return state


def _train_epoch(
    sc: Any,
    data: Any,
    shards: int,
    params: kernel.GloveParams,
    g: GloveConfig,
    epoch: int,
    epochs: int,
    entries: int,
    state: dict[str, Any],
) -> kernel.GloveParams:
    """One epoch of ``glove.rounds_per_epoch`` rounds (broadcast, train every shard's
    slice, collect, merge); log the epoch line."""
    t0 = time.perf_counter()
    R = g.rounds_per_epoch
    base = TrainSettings.of(g, epoch, shards)
    cost = 0.0
    n_entries = 0
    train = 0.0
    cpu = [0.0] * shards
    sent = 0
    for r in range(R):
        bc = sc.broadcast(params)
        try:
            settings = dataclasses.replace(base, part=(r, R))
            task = functools.partial(train_partition, bc=bc, settings=settings)
            out = sorted(data.mapPartitions(task).collect(), key=lambda o: o[0])
        finally:
            bc.destroy()
        where = f"epoch {epoch}/{epochs}" + (f" round {r + 1}/{R}" if R > 1 else "")
        for k, res, _, _ in out:
            if res.diverged:
                raise TrainingDivergedError(
                    f"GloVe diverged at {where} in shard {k} (loss per pass "
                    f"{res.losses.tolist()}); lower glove.eta (now {g.eta:g}, try {g.eta / 2:g}) "
                    "and re-run with --force; nothing was written"
                )
        if [k for k, _, _, _ in out] != list(range(shards)):
            raise InputError(
                f"expected results of shards 0..{shards - 1}, got {[k for k, *_ in out]}"
            )
        merger = kernel.ParamMerger(params, g.merge.value, shards=shards)
        for k, res, _, _ in out:
            merger.add(res, shard=k)
        try:
            params = merger.result()
        except TrainingDivergedError as e:
            raise TrainingDivergedError(
                f"GloVe parameters became non-finite at {where}; lower glove.eta "
                f"(now {g.eta:g}, try {g.eta / 2:g}) and re-run with --force"
            ) from e
        results = [res for _, res, _, _ in out]
        cost += sum(float(res.losses[-1]) for res in results)
        n_entries += sum(res.entries for res in results)
        sent += sum(result_bytes(res) for res in results)
        # Training's share of the round: the slowest task, or the task time per core when
        # there are more tasks than cores (they run in waves); the rest is exchange/overhead.
        walls = [w for _, _, w, _ in out]
        cores = max(1, min(len(walls), int(sc.defaultParallelism)))
        train += max(max(walls, default=0.0), sum(walls) / cores)
        for k, _, _, c in out:
            cpu[k] += c
    # glove.c's per-entry cost of the epoch (the shards' last passes over all entries).
    loss = cost / n_entries if n_entries else 0.0
    training.check_loss(loss, epoch, epochs, "glove.eta", g.eta)
    seconds = time.perf_counter() - t0
    state["losses"].append(loss)
    state["epoch_seconds"].append(round(seconds, 3))
    state["train_seconds"].append(round(train, 3))
    state["exchange_seconds"].append(round(seconds - train, 3))
    state["task_cpu_seconds"].append([round(c, 3) for c in cpu])
    state["result_bytes"] = sent
    eta = training.eta_seconds(state["epoch_seconds"][-5:], epochs - epoch)
    logger.info(
        "glove    %s",
        training.epoch_line(
            epoch, epochs, loss, entries * g.local_epochs, seconds, seconds - train, eta
        ),
    )
    return params


def model_path(run_dir: RunDir) -> str:
    """URI of a finished run's ``glove/`` model directory (vectors.parquet + model.json)."""
    run_dir.require("glove")
    return run_dir.path("glove")


__all__ = [
    "MemoryPlan",
    "check_memory",
    "concurrent_tasks",
    "driver_memory_need",
    "epoch_loss",
    "load_shards",
    "memory_plan",
    "model_path",
    "param_bytes",
    "read_training_shard",
    "row_bytes",
    "run",
    "shard_sizes",
    "sorted_shard",
    "source_shards",
    "task_memory_need",
    "train_partition",
    "vectors_table",
]
