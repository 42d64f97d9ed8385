"""``word2vec`` stage: skip-gram / CBOW trained on corpus partitions, merged every round.

Extract: Spark reads ``corpus/`` once, hash-partitions the documents into ``S``
partitions (``repartition(S, "doc")``) and sorts every partition by ``(doc, ids)``
(pieces of a document longer than ``encode.max_doc_tokens`` share its ``doc``; their
contents break the tie), so partition ``p`` holds the same documents in the same order
on every run with the same ``S``. :func:`pack_batches` (inside ``mapInArrow``) turns a
partition into a few rows of raw arrays and :func:`assemble_partition` into one
:class:`PartitionData` (flat int32 ids, int64 document offsets, and the document
bounds of its ``R`` round slices of about equal token counts), cached on the executors
for the whole training. ``R = word2vec.rounds_per_epoch``, by default 1 for ``S = 1``
and otherwise ``S`` (CBOW: ``8 S``), or one round per ~8M corpus words if more
(:func:`resolve_rounds`).

Transform, epoch ``e = 1..E``, round ``r = 0..R-1`` (DESIGN.md "Training, distributed"):
the driver broadcasts ``(syn0, syn1neg)``; every partition copies them, trains its
slice ``r`` with :func:`embedpipe.kernels.sgns.train_partition` (seed
``derive_seed(word2vec.seed, e, r, p)``; learning rate on the global schedule, see
:func:`round_schedule`, times ``S``, see :func:`alpha_scale`) and returns the rows it
touched with their update counts (:func:`~embedpipe.kernels.sgns.row_update`). The
results come back with one ``collect`` when all S fit in :data:`COLLECT_BYTES`, else
they are persisted and streamed in partition order (``toLocalIterator``: one
partition's rows in driver memory at a time); with a local master each task writes its
rows to a file in Spark's scratch directory and returns only the path
(:func:`local_exchange_root`). They are folded by
:func:`~embedpipe.kernels.sgns.merge`: the mean of the S partition models (a partition
holds the broadcast value in the rows it did not touch).

Why ``S · alpha`` and a plain mean (measured on en-open, skip-gram, S = 4): averaging
partitions trained at ``alpha`` advances every row about 1/S as far per round as one
pass over the data would (Spark MLlib's scheme; WS353 0.654 at S = 1 fell to 0.421);
summing the partitions' deltas instead overshoots S-fold on frequent rows, which settle
within a round, and diverged even with 16 rounds per epoch; ``S · alpha`` with the mean
is right in both regimes to first order (rare rows: the mean of S deltas at ``S · alpha``
is the sum at ``alpha``; frequent rows: the mean of S equilibria) and reached S = 1's
quality within the issue's bar (bench/RESULTS.md). With ``word2vec.merge =
"procrustes"`` every partition's update is first rotated onto partition 0's
(orthogonal Procrustes on the most frequent rows both touched, :func:`align_updates`);
both matrices of a partition get the same rotation, which leaves its model's scores
unchanged. With ``S = 1`` the stage is exactly the single-process
kernel run epoch after epoch (tested). The state after every epoch is checkpointed
(:mod:`embedpipe.training`); all randomness being a function of ``(seed, epoch, round,
partition)``, ``--resume`` reaches bit-identical vectors.

Subwords (``word2vec.subwords = true``, fastText; :mod:`embedpipe.kernels.subwords`):
the driver hashes the character n-grams (``word2vec.minn..maxn`` characters) of every
vocabulary word into ``word2vec.buckets`` buckets and builds each word's input rows
(its own, then its n-grams'). Only the ``U`` buckets some vocabulary word has can ever
be trained, so the input matrix is ``(V + U) x dim`` (word rows, then those n-gram rows
in bucket order) rather than fastText's ``(V + buckets) x dim``; its n-gram part costs
``U·dim·4`` bytes per copy, at most ``buckets·dim·4`` (stated in the log before training
and checked against the task memory). The rounds are unchanged: the input matrix is
broadcast, a task returns the word *and* n-gram rows it touched with their update
counts, and the driver merges them with the same mean as the word rows. The checkpoint
holds the n-gram rows too (``ngrams.npy``). The table of input rows is broadcast once.

Load: ``word2vec/vectors.parquet`` (``syn0``, schema ``VECTORS``, rows by id; with
subwords the mean of a word's input rows, fastText's ``getWordVector``), with subwords
``word2vec/ngrams.parquet`` (``bucket, vector``: the U trained n-gram rows, see
:mod:`embedpipe.vectors`), and ``word2vec/model.json`` (settings, ``subwords``: minn,
maxn, buckets, hash; ``losses`` per epoch, the per-round log, words/s, timings),
committed together.

Cost per round (logged): broadcast ``2·V·dim·4`` bytes (49 MiB at V = 64k, dim 100),
``+ U·dim·4`` with subwords; results ``(4·dim + 12)`` bytes per touched row and matrix,
at most ``S·(2·V + U)·(4·dim + 12)``; memory per task see :func:`task_memory_need`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedpipe import FORMAT_VERSION, errors, fsutil, schemas, training
from embedpipe import spark as spark_mod
from embedpipe.config import Config, Merge, W2VMode, Word2VecConfig, to_dict
from embedpipe.errors import ConfigError, InputError, SchemaError, TrainingDivergedError
from embedpipe.kernels import sgns
from embedpipe.kernels import subwords as subword_kernels
from embedpipe.log import Timer, human_bytes, human_count, human_seconds, logger
from embedpipe.runs import RunDir, StageResult, fingerprint, log_skip, stage_fingerprint
from embedpipe.stages.encode import corpus_path
from embedpipe.stages.vocab import read_vocab
from embedpipe.vectors import NGRAMS_FILE, SUBWORD_HASH, ngrams_table

VECTORS_FILE = "vectors.parquet"
MODEL_FILE = "model.json"
#: Checkpoints live here, not in the stage's temporary directory (``begin`` wipes that).
CHECKPOINTS = "_checkpoints/word2vec"
#: Tokens per packed chunk handed from ``mapInArrow`` to the partition cache (16 MB of ids).
CHUNK_TOKENS = 1 << 22
PACKED_DDL = "part int, docs binary, lengths binary, ids binary"
_PACKED_SCHEMA = pa.schema(
    [("part", pa.int32()), ("docs", pa.binary()), ("lengths", pa.binary()), ("ids", pa.binary())]
)
#: Procrustes fits the rotation on at most this many shared rows, most frequent first.
PROCRUSTES_ROWS = 10_000
#: ``rounds_per_epoch = 0`` with S > 1: S rounds per epoch, or one per this many corpus
#: words if that is more. Measured with skip-gram, S = 4, 5 epochs: on en-open (12.9M
#: words) 4 rounds/epoch as good as 8; on half of it 4 better than 2 and 1.
AUTO_ROUND_WORDS = 8_000_000
#: ``rounds_per_epoch = 0`` with S > 1 in CBOW mode: at least this many rounds per
#: partition. Measured on en-open, S = 4, seed 1, analogy vs S = 1 (31.7%): R = 4 -4.2
#: points, 8 -3.8, 16 -3.1, 32 -2.8 (seed 2: -0.8); skip-gram at R = 4: -2.9.
CBOW_ROUNDS_PER_PARTITION = 8
#: Cap on ``alpha × S`` inside a partition (``word2vec.scale_alpha``): stability.
MAX_PARTITION_ALPHA = 0.2
#: A round's results come back with one ``collect`` when they fit in this many bytes,
#: else streamed partition by partition (see ``_train_round``).
COLLECT_BYTES = 256 << 20
#: The per-round loss is estimated on every LOSS_EVERY-th training example (exact loss
#: costs ~15% of the kernel's time).
LOSS_EVERY = 16
#: Default learning rates of word2vec.c / gensim when ``word2vec.alpha = 0``.
DEFAULT_ALPHA = {W2VMode.SKIPGRAM: 0.025, W2VMode.CBOW: 0.05}


# ------------------------------------------------------------------ cost model


def param_bytes(vocab_size: int, dim: int, ngram_rows: int = 0) -> int:
    """Bytes of ``syn0`` and ``syn1neg`` (float32), plus ``ngram_rows`` n-gram rows of
    the input matrix with subwords: what one round broadcasts."""
    return (2 * vocab_size + ngram_rows) * dim * 4


def row_bytes(dim: int) -> int:
    """Bytes per returned row of one matrix: id (4), count (8), vector (4·dim)."""
    return 4 * dim + 12


def task_memory_need(
    vocab_size: int,
    dim: int,
    max_partition_tokens: int,
    ngram_rows: int = 0,
    table_rows: int = 0,
) -> int:
    """Memory a training task needs: the broadcast value, the task's private copy and its
    returned rows (each at most ``param_bytes``), the per-row counts, and its cached
    partition (4 B per id, offsets, plus an unpickled copy); with subwords also the
    broadcast table of ``table_rows`` input rows (4 B each, 8 B per word offset)."""
    rows = 2 * vocab_size + ngram_rows
    return (
        3 * param_bytes(vocab_size, dim, ngram_rows)
        + 8 * rows
        + 2 * 12 * max_partition_tokens
        + 4 * table_rows
        + (8 * (vocab_size + 1) if table_rows else 0)
    )


def ngram_matrix_bound(w: Word2VecConfig) -> int:
    """``buckets·dim·4``: the most one copy of the n-gram matrix can take (issue 9)."""
    return int(w.buckets) * int(w.dim) * 4


@dataclass(frozen=True)
class SubwordPlan:
    """Every vocabulary word's input rows with subwords (built once on the driver).

    Attributes:
        used: int64 sorted buckets some vocabulary word has; n-gram row ``V + k`` of the
            input matrix is bucket ``used[k]``.
        offsets: int64 ``V + 1`` CSR offsets into ``rows``.
        rows: int32 input rows of every word: its id, then its n-grams' rows.
        ngrams: n-gram occurrences over the vocabulary (duplicates counted).
    """

    used: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    ngrams: int

    @property
    def ngram_rows(self) -> int:
        """``U``: rows of the n-gram part of the input matrix."""
        return int(self.used.size)


def subword_plan(tokens: list[str], w: Word2VecConfig) -> SubwordPlan:
    """Hash the n-grams of every token (:func:`~embedpipe.kernels.subwords.subword_table`)
    and lay out the compact input rows (:func:`~embedpipe.kernels.subwords.input_rows`)."""
    table = subword_kernels.subword_table(tokens, w.minn, w.maxn, w.buckets)
    used = table.used()
    offsets, rows = subword_kernels.input_rows(table, used)
    return SubwordPlan(used, offsets, rows, int(table.buckets.size))


# -------------------------------------------------------------- extract (pure)


@dataclass(frozen=True)
class PartitionData:
    """One training partition, cached on the executors.

    Attributes:
        ids: flat int32 token ids of the partition's documents, in ``(doc, ids)`` order.
        offsets: int64 document boundaries into ``ids`` (``n_docs + 1``, from 0).
        bounds: int64 document indices of the ``R`` round slices (``R + 1`` entries):
            slice ``r`` is documents ``bounds[r]:bounds[r+1]``.
    """

    ids: np.ndarray
    offsets: np.ndarray
    bounds: np.ndarray

    def slice_words(self) -> np.ndarray:
        """Raw words of every round slice (int64, ``R`` entries)."""
        return np.diff(self.offsets[self.bounds])

    def slice(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, offsets)`` of round slice ``r`` (offsets absolute into ``ids``)."""
        return self.ids, self.offsets[self.bounds[r] : self.bounds[r + 1] + 1]


def pack_batches(
    batches: Iterable[pa.RecordBatch], part: int, chunk: int = CHUNK_TOKENS
) -> Iterator[pa.RecordBatch]:
    """Arrow batches ``doc, ids`` -> rows ``part, docs, lengths, ids`` of raw little-endian
    arrays, each holding about ``chunk`` tokens, in input order.

    A few large binary cells instead of a row per document keep the hand-over from Spark
    SQL to the RDD cache cheap (no per-document Python object).
    """
    docs: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    size = 0

    def emit() -> pa.RecordBatch:
        cells = [np.concatenate(x).tobytes() for x in (docs, lengths, ids)]
        return pa.RecordBatch.from_arrays(
            [pa.array([part], pa.int32())] + [pa.array([c], pa.binary()) for c in cells],
            schema=_PACKED_SCHEMA,
        )

    for batch in batches:
        if batch.num_rows == 0:
            continue
        lists = batch.column("ids")
        off = lists.offsets.to_numpy()
        docs.append(batch.column("doc").to_numpy(zero_copy_only=False).astype("<i8", copy=False))
        lengths.append(np.diff(off).astype("<i4"))
        ids.append(lists.values.to_numpy(zero_copy_only=False)[off[0] : off[-1]].astype("<i4"))
        size += int(off[-1] - off[0])
        if size >= chunk:
            yield emit()
            docs, lengths, ids, size = [], [], [], 0
    if docs:
        yield emit()


def slice_bounds(offsets: np.ndarray, rounds: int) -> np.ndarray:
    """Document indices cutting a partition into ``rounds`` slices of about equal tokens.

    Slice ``r`` ends at the first document boundary at or after ``(r + 1) / rounds`` of
    the partition's tokens; returns ``rounds + 1`` non-decreasing indices from 0 to n_docs.
    """
    n_docs = offsets.size - 1
    total = int(offsets[-1] - offsets[0])
    targets = offsets[0] + (total * np.arange(1, rounds, dtype=np.float64) / rounds)
    inner = np.searchsorted(offsets, targets, side="left")
    return np.concatenate([[0], np.minimum(inner, n_docs), [n_docs]]).astype(np.int64)


def assemble_partition(
    chunks: Iterable[tuple[int, bytes, bytes, bytes]], part: int, rounds: int, vocab_size: int
) -> PartitionData:
    """One partition's packed chunks (in arrival order) -> :class:`PartitionData`.

    Checks what the determinism rests on: every chunk belongs to partition ``part`` and
    documents arrive sorted (Spark's ``sortWithinPartitions``); ids lie in the vocabulary.
    """
    docs_l, len_l, ids_l = [], [], []
    for p, d, n, i in chunks:
        if p != part:
            raise InputError(
                f"word2vec partition {part} received rows of partition {p}: Spark changed the "
                "partitioning (is spark.sql.adaptive.coalescePartitions forced on?)"
            )
        docs_l.append(np.frombuffer(d, "<i8"))
        len_l.append(np.frombuffer(n, "<i4"))
        ids_l.append(np.frombuffer(i, "<i4"))
    docs = np.concatenate(docs_l) if docs_l else np.empty(0, np.int64)
    lengths = np.concatenate(len_l) if len_l else np.empty(0, np.int32)
    ids = np.ascontiguousarray(np.concatenate(ids_l) if ids_l else np.empty(0, np.int32))
    if docs.size > 1 and np.any(docs[1:] < docs[:-1]):
        raise InputError(
            f"word2vec partition {part}: documents arrived out of order; the corpus sort was "
            "dropped by Spark (please report this with your Spark version)"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise InputError(
            f"corpus has ids outside the vocabulary [0, {vocab_size}); the run directory is "
            "stale: re-run encode after vocab (embedpipe encode --force)"
        )
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PartitionData(ids, offsets, slice_bounds(offsets, rounds))


# ------------------------------------------------------------ transform (pure)


def resolve_alpha(w: Word2VecConfig) -> float:
    """``word2vec.alpha``, or the mode's default (0.025 skip-gram, 0.05 CBOW) when 0."""
    return float(w.alpha) if w.alpha > 0 else DEFAULT_ALPHA[w.mode]


def round_schedule(slice_words: np.ndarray, epoch: int) -> list[tuple[int, int]]:
    """``(words_done_before, round_words)`` of every round of ``epoch`` (1-based).

    ``slice_words`` is ``S × R`` (raw words of partition p's slice r). Partitions train a
    round concurrently, so the global word count before round ``r`` is all previous
    epochs plus all partitions' earlier slices; a partition then advances the schedule by
    ``round_words / its slice words`` per local word (``words_scale`` of the kernel).
    """
    per_round = slice_words.sum(axis=0).astype(np.int64)
    corpus = int(per_round.sum())
    done = (epoch - 1) * corpus + np.concatenate([[0], np.cumsum(per_round)[:-1]])
    return [(int(d), int(w)) for d, w in zip(done, per_round, strict=True)]


def alpha_scale(w: Word2VecConfig, partitions: int) -> float:
    """Factor on the learning rate inside a partition: ``S`` with ``word2vec.scale_alpha``.

    A partition sees 1/S of a round's words; trained at ``S · alpha`` it moves a row as
    far as the whole round would at ``alpha`` (to first order), so the mean of the S
    partition models (:func:`~embedpipe.kernels.sgns.merge`) progresses like one
    sequential pass. At ``alpha`` (``scale_alpha = false``, Spark MLlib's choice) the
    mean advances rows ~1/S as far per round and quality falls with S (measured:
    skip-gram S = 4 on en-open, WS353 0.654 -> 0.421). The partition rate is capped at
    :data:`MAX_PARTITION_ALPHA`: CBOW at 8 x 0.05 diverged in our runs.
    """
    if not w.scale_alpha:
        return 1.0
    alpha = resolve_alpha(w)
    return float(max(1.0, min(partitions, MAX_PARTITION_ALPHA / alpha)))


def resolve_rounds(w: Word2VecConfig, partitions: int, corpus_words: int) -> int:
    """``word2vec.rounds_per_epoch``, or when 0 the default: 1 for ``S = 1`` (nothing to
    synchronise), else ``S`` rounds (CBOW: :data:`CBOW_ROUNDS_PER_PARTITION` ``x S``), or
    one per :data:`AUTO_ROUND_WORDS` corpus words if that is more. The fewer words a round
    holds, the less stale the broadcast matrices a partition trains against (it misses
    ``(S - 1) / S`` of the round's progress), at the cost of one broadcast and merge per
    round. CBOW adds a window's whole gradient to each of its ~6 context rows, so its
    partitions drift apart faster than skip-gram's and need the finer rounds: a lower
    partition learning rate instead lost more than it saved (bench/RESULTS.md)."""
    if w.rounds_per_epoch > 0:
        return int(w.rounds_per_epoch)
    if partitions == 1:
        return 1
    per_partition = CBOW_ROUNDS_PER_PARTITION if w.mode == W2VMode.CBOW else 1
    return max(per_partition * partitions, math.ceil(corpus_words / AUTO_ROUND_WORDS))


def alpha_at(alpha: float, min_alpha: float, done: float, total: float) -> float:
    """The linear schedule's learning rate after ``done`` of ``total`` raw words."""
    return max(min_alpha, alpha - (alpha - min_alpha) * done / total)


def _empty_update(dim: int) -> sgns.RowUpdate:
    rows = np.empty(0, np.int32)
    vecs = np.empty((0, dim), np.float32)
    counts = np.empty(0, np.int64)
    return sgns.RowUpdate(rows, vecs, counts, rows, vecs, counts)


def align_updates(
    updates: Iterable[sgns.RowUpdate], top: int = PROCRUSTES_ROWS, info: list | None = None
) -> Iterator[sgns.RowUpdate]:
    """Rotate every partition's rows onto the first non-empty partition's (streaming).

    The rotation of partition ``p`` is the orthogonal Procrustes fit of its ``syn0`` rows
    onto the reference's over the ``top`` most frequent rows (smallest ids: ids are
    frequency ranks) that both touched; the same rotation is applied to its ``syn1neg``
    rows. ``info`` (if given) receives ``‖R - I‖_F`` per rotated partition.
    """
    reference: sgns.RowUpdate | None = None
    for u in updates:
        if reference is None:
            if u.syn0_rows.size:
                reference = u
            yield u
            continue
        shared = np.intersect1d(reference.syn0_rows, u.syn0_rows, assume_unique=True)[:top]
        if shared.size == 0:  # nothing to fit on: leave the partition as it is
            yield u
            continue
        ref = reference.syn0_vectors[np.searchsorted(reference.syn0_rows, shared)]
        mine = u.syn0_vectors[np.searchsorted(u.syn0_rows, shared)]
        rot = sgns.procrustes_rotation(ref, mine, np.arange(shared.size))
        if info is not None:
            info.append(float(np.linalg.norm(rot - np.eye(rot.shape[0]))))
        yield sgns.RowUpdate(
            u.syn0_rows,
            (u.syn0_vectors.astype(np.float64) @ rot).astype(np.float32),
            u.syn0_counts,
            u.syn1_rows,
            (u.syn1_vectors.astype(np.float64) @ rot).astype(np.float32),
            u.syn1_counts,
        )


@dataclass(frozen=True)
class RoundSettings:
    """What a task needs besides its partition and the broadcasts (small, pickled per task)."""

    mode: str
    window: int
    negative: int
    alpha: float
    min_alpha: float
    seed: int
    epoch: int
    partitions: int
    round: int
    alpha_scale: float
    words_done_before: int
    round_words: int
    total_words: int
    dim: int
    subwords: bool = False
    share_negatives: bool = False
    exchange_dir: str | None = None


@dataclass(frozen=True)
class TaskStats:
    """A task's counters (the update itself travels as a RowUpdate)."""

    part: int
    raw_words: int
    trained_words: int
    examples: int
    loss_sum: float
    loss_terms: int
    seconds: float


def train_task(
    items: Iterable[tuple[int, PartitionData]], params_bc: Any, tables_bc: Any, s: RoundSettings
) -> Iterator[tuple[int, sgns.RowUpdate, TaskStats]]:
    """Task body: train round ``s.round``'s slice of the partition from the broadcast matrices.

    Never writes into the broadcast value (shared by the tasks of a Python worker): the
    kernel trains a private copy. ``tables_bc`` holds ``(keep, cdf)``, with subwords also
    the input rows ``(offsets, rows)`` of :class:`SubwordPlan`.
    """
    for p, data in items:
        t0 = time.perf_counter()
        ids, offsets = data.slice(s.round)
        local = int(offsets[-1] - offsets[0])
        if local == 0:
            yield p, _empty_update(s.dim), TaskStats(p, 0, 0, 0, 0.0, 0, 0.0)
            continue
        syn0_b, syn1_b = params_bc.value
        keep, cdf, *table = tables_bc.value
        syn0 = np.array(syn0_b, dtype=np.float32, copy=True, order="C")
        syn1 = np.array(syn1_b, dtype=np.float32, copy=True, order="C")
        kw = dict(
            mode=s.mode, window=s.window, negative=s.negative,
            alpha_start=s.alpha * s.alpha_scale, alpha_end=s.min_alpha * s.alpha_scale,
            words_done_before=s.words_done_before, total_words=s.total_words,
            words_scale=s.round_words / local,
            seed=sgns.derive_seed(s.seed, s.epoch, s.round, p), loss_every=LOSS_EVERY,
            share_negatives=s.share_negatives,
        )  # fmt: skip
        if s.subwords:
            st = subword_kernels.train_partition(
                ids, offsets, syn0, syn1, table[0], table[1], keep, cdf, **kw
            )
        else:
            st = sgns.train_partition(ids, offsets, syn0, syn1, keep, cdf, **kw)
        update = sgns.row_update(syn0, syn1, st)
        yield p, ship_update(update, s.exchange_dir, p), TaskStats(
            p, st.raw_words, st.trained_words, st.examples, st.loss_sum, st.loss_terms,
            time.perf_counter() - t0,
        )  # fmt: skip


def local_exchange_root(sc: Any) -> str | None:
    """Where a round's results go as files instead of through ``collect``, or None.

    Only with a local master (``local[...]``, ``local-cluster[...]``): the driver and
    every task then share one filesystem. A task pickles its rows into Spark's scratch
    directory (``spark.local.dir``, else the system temp directory) and returns the path;
    the driver reads and deletes the file. Spark's own way back (Python worker -> JVM ->
    block manager -> driver JVM -> driver Python) copies the ~100 MiB a round returns at
    V = 64k several times: 0.6 s a round on en-open, 11% of an S = 2 run, against
    ~0.1 s through the page cache. On a cluster the rows still go through Spark.
    """
    if not str(sc.master).startswith("local"):
        return None
    configured = sc.getConf().get("spark.local.dir", None)
    return configured.split(",")[0] if configured else tempfile.gettempdir()


def ship_update(update: sgns.RowUpdate, exchange_dir: str | None, part: int) -> Any:
    """What a task returns for its rows: the update itself, or (local master) the path of
    a file in ``exchange_dir`` holding it, see :func:`local_exchange_root`."""
    if exchange_dir is None:
        return update
    # A fresh name per attempt: a retried or speculative task never overwrites the file
    # of an attempt whose result the driver may already hold.
    path = os.path.join(exchange_dir, f"part-{part:05d}-{uuid.uuid4().hex}.pkl")
    with open(path, "wb") as fh:
        pickle.dump(update, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def receive_update(shipped: Any) -> sgns.RowUpdate:
    """The driver's side of :func:`ship_update`: read (and delete) a shipped file."""
    if not isinstance(shipped, str):
        return shipped
    with open(shipped, "rb") as fh:
        update = pickle.load(fh)
    os.remove(shipped)
    return update


def update_bytes(u: sgns.RowUpdate) -> int:
    """Bytes of the arrays a task sends back."""
    return sum(
        a.nbytes
        for a in (u.syn0_rows, u.syn0_vectors, u.syn0_counts, u.syn1_rows, u.syn1_vectors,
                  u.syn1_counts)
    )  # fmt: skip


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


# ------------------------------------------------------------ Spark plumbing

_WORKER_ERROR = re.compile(r"embedpipe\.errors\.(\w+): ([^\n]+)")


def worker_error(e: BaseException) -> errors.EmbedpipeError | None:
    """The embedpipe error a Python worker raised inside a Spark failure, rebuilt, or None.

    Spark wraps a task's exception in its own (with the worker's traceback as text); the
    user should see the one-line embedpipe message, not a Java stack trace.
    """
    matches = _WORKER_ERROR.findall(str(e))
    if not matches:
        return None
    name, message = matches[-1]  # the innermost error is printed last
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.EmbedpipeError):
        return cls(message.strip())
    return None


def _spark_call(fn: Callable[[], Any]) -> Any:
    """Run a Spark action; an embedpipe error raised in a task is re-raised as itself."""
    try:
        return fn()
    except errors.EmbedpipeError:
        raise
    except Exception as e:
        err = worker_error(e)
        if err is None:
            raise
        raise err from e


def _check_corpus_schema(df: Any, where: str) -> None:
    types = dict(df.dtypes)
    for col, want in (("doc", "bigint"), ("ids", "array<int>")):
        if types.get(col) != want:
            raise SchemaError(
                f"{where}: column '{col}' is {types.get(col, 'missing')}, expected {want} "
                "(contract doc:int64, ids:list<int32>); re-run encode --force"
            )


def _pack_task(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return pack_batches(batches, ctx.partitionId() if ctx is not None else 0)


def load_partitions(
    spark: Any, corpus_uri: str, partitions: int, rounds: int, vocab_size: int
) -> tuple[Any, np.ndarray]:
    """Read ``corpus/`` once into an RDD of one ``(p, PartitionData)`` per partition.

    The RDD is persisted (``MEMORY_AND_DISK``; call ``unpersist`` when done). Returns it
    with the ``S × R`` matrix of raw words per partition and round slice.
    """
    from pyspark import StorageLevel

    df = spark.read.parquet(corpus_uri)
    _check_corpus_schema(df, corpus_uri)
    # An explicit partition count: adaptive execution never coalesces this shuffle.
    ordered = (
        df.select("doc", "ids").repartition(partitions, "doc").sortWithinPartitions("doc", "ids")
    )
    packed = ordered.mapInArrow(_pack_task, PACKED_DDL).rdd
    data = packed.mapPartitionsWithIndex(
        lambda p, it: [(p, assemble_partition((tuple(r) for r in it), p, rounds, vocab_size))],
        preservesPartitioning=True,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    if data.getNumPartitions() != partitions:
        data.unpersist()
        raise InputError(
            f"Spark made {data.getNumPartitions()} partitions instead of word2vec.partitions "
            f"= {partitions}; check the [spark] conf for partition coalescing"
        )
    try:
        sizes = dict(
            _spark_call(data.map(lambda kv: (kv[0], kv[1].slice_words().tolist())).collect)
        )
    except BaseException:
        data.unpersist()
        raise
    words = np.array([sizes[p] for p in range(partitions)], dtype=np.int64).reshape(
        partitions, rounds
    )
    return data, words


def _train_round(
    sc: Any,
    data: Any,
    tables_bc: Any,
    syn0: np.ndarray,
    syn1: np.ndarray,
    s: RoundSettings,
    merge: Merge,
) -> tuple[np.ndarray, np.ndarray, list[TaskStats], int, list[float], float]:
    """One round: broadcast, train every partition, bring the rows back, merge.

    When all S results fit in :data:`COLLECT_BYTES` (at most ``S · 2 · V · row_bytes``)
    they come back with one ``collect``; otherwise they are persisted and streamed one
    partition at a time (``toLocalIterator``, S more jobs), so that the driver never
    holds more than one partition's rows. With a local master the rows themselves travel
    as files (:func:`local_exchange_root`), created in a directory of this round that is
    removed when the round ends, whatever happens. Returns the merged matrices, the tasks'
    stats, the bytes returned, the Procrustes rotation deviations (empty for the
    average merge) and the wall time of the training job (all partitions, queued ones
    included when S exceeds the cores; with ``collect`` also the transfer).
    """
    from pyspark import StorageLevel

    root = local_exchange_root(sc)
    exchange = tempfile.mkdtemp(prefix="embedpipe-word2vec-", dir=root) if root else None
    s = dataclasses.replace(s, exchange_dir=exchange)
    bc = sc.broadcast((syn0, syn1))
    results = None
    try:
        task = functools.partial(train_task, params_bc=bc, tables_bc=tables_bc, s=s)
        t_train = time.perf_counter()
        if s.partitions * 2 * syn0.shape[0] * row_bytes(s.dim) <= COLLECT_BYTES:
            fetched: Iterable[tuple[int, sgns.RowUpdate, TaskStats]] = sorted(
                _spark_call(data.mapPartitions(task).collect), key=lambda x: x[0]
            )
        else:
            # Persist, then count: every partition trains concurrently; toLocalIterator
            # then fetches one partition's rows at a time.
            results = data.mapPartitions(task).persist(StorageLevel.MEMORY_AND_DISK)
            _spark_call(results.count)
            fetched = results.toLocalIterator()
        train_wall = time.perf_counter() - t_train
        stats: list[TaskStats] = []
        returned = [0]
        deviations: list[float] = []

        def updates() -> Iterator[sgns.RowUpdate]:
            for p, shipped, st in fetched:
                if p != len(stats):
                    raise InputError(f"word2vec results arrived out of order (partition {p})")
                u = receive_update(shipped)
                stats.append(st)
                returned[0] += update_bytes(u)
                yield u

        stream = updates()
        if merge == Merge.PROCRUSTES:
            stream = align_updates(stream, info=deviations)
        new0, new1 = sgns.merge(syn0, syn1, stream, s.partitions)
    finally:
        if results is not None:
            results.unpersist()
        bc.destroy()
        if exchange is not None:
            shutil.rmtree(exchange, ignore_errors=True)
    return new0, new1, stats, returned[0], deviations, train_wall


# ----------------------------------------------------------------------- run


#: Training state kept in the checkpoint metadata (per-epoch lists and the round log).
_STATE_KEYS = ("losses", "epoch_seconds", "epoch_words", "trained_words", "rounds",
               "result_bytes", "resumed_from")  # fmt: skip


def _start_state(
    root: str, ckpt_fp: str, resume: bool, V: int, dim: int, w: Word2VecConfig, ngram_rows: int = 0
) -> dict[str, Any]:
    """Fresh matrices (epoch 0), or the last matching checkpoint when resuming.

    ``state["syn0"]`` is the input matrix: ``V`` word rows, then with subwords
    ``ngram_rows`` n-gram rows (checkpointed apart as ``ngrams``).
    """
    state: dict[str, Any] = {k: [] for k in _STATE_KEYS}
    state.update(epoch=0, result_bytes=0, resumed_from=0)
    info = training.latest_info(root)
    if resume:
        ckpt = training.load_checkpoint(root, ckpt_fp)
        if ckpt is not None and ckpt.epoch <= w.epochs:
            syn0 = np.ascontiguousarray(ckpt.arrays["syn0"], np.float32)
            syn1 = np.ascontiguousarray(ckpt.arrays["syn1neg"], np.float32)
            grams = ckpt.arrays.get("ngrams", np.empty((0, dim), np.float32))
            if syn0.shape != (V, dim) or syn1.shape != (V, dim) or grams.shape != (ngram_rows, dim):
                raise InputError(
                    f"{root}: checkpoint shapes {syn0.shape}, {grams.shape} != ({V}, {dim}), "
                    f"({ngram_rows}, {dim}); delete it and re-run without --resume"
                )
            if ngram_rows:
                syn0 = np.ascontiguousarray(np.vstack([syn0, grams]), np.float32)
            state.update({k: ckpt.meta[k] for k in _STATE_KEYS if k in ckpt.meta})
            state.update(epoch=ckpt.epoch, resumed_from=ckpt.epoch, syn0=syn0, syn1=syn1)
            logger.info("word2vec resuming after epoch %d/%d from %s", ckpt.epoch, w.epochs, root)
            return state
        why = (
            "none found"
            if info is None
            else (
                f"the one of epoch {info['epoch']} is for another configuration"
                if info["fingerprint"] != ckpt_fp
                else f"it is past word2vec.epochs = {w.epochs}"
            )
        )
        logger.info("word2vec --resume: no usable checkpoint in %s (%s); starting at epoch 1",
                    root, why)  # fmt: skip
    elif info is not None:
        logger.info("word2vec ignoring the checkpoint of epoch %d in %s (pass --resume to "
                    "continue from it); starting at epoch 1", info["epoch"], root)  # fmt: skip
    # Epoch e, round r, partition p draw from (seed, e, r, p); (seed, 0) initialises the
    # words (the same start as without subwords), (seed, 0, 1) the n-gram rows.
    state["syn0"], state["syn1"] = sgns.init_params(V, dim, sgns.derive_seed(w.seed, 0))
    if ngram_rows:
        grams = subword_kernels.init_ngrams(ngram_rows, dim, sgns.derive_seed(w.seed, 0, 1))
        state["syn0"] = np.ascontiguousarray(np.vstack([state["syn0"], grams]))
    return state


def _validate(w: Word2VecConfig, V: int, rows: int, S: int) -> None:
    """Refuse settings the stage cannot train, with the key to change."""
    if w.subwords:
        subword_kernels.check_settings(w.minn, w.maxn, w.buckets)
    if V < 2:
        raise InputError(
            f"word2vec needs at least 2 vocabulary words, the vocabulary has {V}; lower "
            "vocab.min_count or use a bigger corpus"
        )
    if w.dim >= V:
        # dim >= V gives every word its own axis: a lookup table, not an embedding.
        raise ConfigError(
            f"word2vec.dim = {w.dim} must be smaller than the vocabulary ({V:,} words); "
            "lower word2vec.dim or lower vocab.min_count"
        )
    if rows < S:
        raise ConfigError(
            f"word2vec.partitions = {S} is more than the corpus's {rows} documents; use at "
            f"most {rows}"
        )
    sgns.keep_probabilities(np.ones(1), w.sample)  # raises ConfigError on a bad sample


def run(
    spark: Any,
    cfg: Config,
    run_dir: RunDir,
    force: bool = False,
    resume: bool = False,
    on_epoch: Callable[[int], None] | None = None,
    **_: Any,
) -> StageResult:
    """Train word2vec on ``run_dir/corpus`` into ``run_dir/word2vec``.

    ``on_epoch(e)`` is called after epoch ``e`` is checkpointed (tests use it to
    interrupt a run). ``resume`` continues from the last checkpoint of the same
    configuration.
    """
    w = cfg.word2vec
    vocab_rec = run_dir.require("vocab")
    enc_rec = run_dir.require("encode")
    S = int(w.partitions) or spark_mod.default_parallelism(spark)
    inputs = {"partitions": S}
    fp = stage_fingerprint(run_dir, "word2vec", cfg.section_hash("word2vec"), inputs)
    if not force and run_dir.is_current("word2vec", fp):
        return log_skip("word2vec", run_dir)

    vocab = read_vocab(run_dir)
    V = vocab.num_rows
    counts = vocab.column("count").to_numpy()
    tokens = vocab.column("token").combine_chunks()
    N = int(enc_rec["counts"]["kept_tokens"])
    _validate(w, V, int(enc_rec["counts"]["rows"]), S)
    R = resolve_rounds(w, S, N)
    dim, E = w.dim, w.epochs
    alpha = resolve_alpha(w)
    if w.min_alpha > alpha:
        raise ConfigError(
            f"word2vec.min_alpha = {w.min_alpha:g} exceeds the learning rate {alpha:g}; lower it"
        )
    keep = sgns.keep_probabilities(counts, w.sample)
    cdf = sgns.noise_cdf(counts)
    total_words = N * E

    plan: SubwordPlan | None = None
    U = 0
    if w.subwords:
        with Timer() as t_plan:
            plan = subword_plan(tokens.to_pylist(), w)
        U = plan.ngram_rows
        # Memory up front (issue 9): one copy of the n-gram matrix is bounded by
        # buckets·dim·4; only the buckets some word has are held (the others never train).
        logger.info(
            "word2vec subwords n=%d..%d: %s n-grams over %s words (%.1f per word) fall in %s of "
            "%s buckets (%.1fs); n-gram matrix per copy: at most buckets x dim x 4 = %s, held "
            "%s (%s used buckets x dim x 4); a task holds 3 copies (broadcast, its own, "
            "returned rows)",
            w.minn, w.maxn, human_count(plan.ngrams), f"{V:,}", plan.ngrams / V, f"{U:,}",
            f"{w.buckets:,}", t_plan.seconds, human_bytes(ngram_matrix_bound(w)),
            human_bytes(U * dim * 4), f"{U:,}",
        )  # fmt: skip
    table_rows = int(plan.rows.size) if plan is not None else 0
    need = task_memory_need(V, dim, math.ceil(N / S), U, table_rows)
    what = f"word2vec (V={V:,} x dim {dim}, ~{human_count(N / S)} tokens/partition)"
    if plan is not None:
        what = f"word2vec with subwords (V={V:,} + {U:,} n-gram rows x dim {dim})"
    spark_mod.check_task_memory(
        spark, need, what,
        "word2vec.dim or the vocabulary (vocab.min_count / vocab.max_size)"
        + (" or word2vec.buckets / word2vec.maxn" if plan is not None else ""),
    )  # fmt: skip
    bcast = param_bytes(V, dim, U)
    if w.share_negatives and w.mode == W2VMode.CBOW:
        logger.warning(
            "word2vec.share_negatives = true has no effect with word2vec.mode = cbow (CBOW "
            "draws one set of noise words per window anyway)"
        )
    logger.info(
        "word2vec %s%s V=%s dim=%d S=%d R=%d merge=%s alpha %g (x%g in a partition): %s "
        "words/epoch x %d epochs; per round: broadcast %s (%s·dim·4 B), results <= %s; task "
        "memory ~%s (limit %s)",
        w.mode.value,
        " (shared negatives)" if w.share_negatives and w.mode == W2VMode.SKIPGRAM else "",
        f"{V:,}", dim, S, R, w.merge.value, alpha, alpha_scale(w, S),
        human_count(N), E, human_bytes(bcast), "(2·V + U)" if U else "2·V",
        human_bytes(S * (2 * V + U) * row_bytes(dim)), human_bytes(need),
        human_bytes(spark_mod.task_memory_bytes(spark)),
    )  # fmt: skip

    ckpt_root = run_dir.path(CHECKPOINTS)
    ckpt_fp = fingerprint(
        "word2vec-checkpoint", FORMAT_VERSION, to_dict(w), inputs,
        {u: run_dir.require(u)["fingerprint"] for u in ("vocab", "encode")},
    )  # fmt: skip
    state = _start_state(ckpt_root, ckpt_fp, resume, V, dim, w, U)
    syn0, syn1 = state.pop("syn0"), state.pop("syn1")  # syn0: word rows, then n-gram rows

    sc = spark.sparkContext
    load_seconds = 0.0
    with Timer() as total:
        if state["epoch"] < E:  # (a run killed after its last checkpoint only commits)
            with Timer() as t_load:
                data, slice_words = load_partitions(spark, corpus_path(run_dir), S, R, V)
            load_seconds = t_load.seconds
            tables = (keep, cdf) if plan is None else (keep, cdf, plan.offsets, plan.rows)
            tables_bc = sc.broadcast(tables)
            try:
                if int(slice_words.sum()) != N:
                    raise InputError(
                        f"{run_dir.path('corpus')}: holds {int(slice_words.sum()):,} ids but the "
                        f"encode record says {N:,}; re-run encode --force"
                    )
                per_part = slice_words.sum(axis=1)
                logger.info(
                    "word2vec %d partitions loaded and cached in %.1fs (%s-%s words each)",
                    S, load_seconds, human_count(per_part.min()), human_count(per_part.max()),
                )  # fmt: skip
                for epoch in range(state["epoch"] + 1, E + 1):
                    syn0, syn1 = _train_epoch(
                        sc, data, tables_bc, syn0, syn1, w, alpha, epoch, slice_words,
                        total_words, state,
                    )  # fmt: skip
                    arrays = {"syn0": syn0[:V], "syn1neg": syn1}
                    if U:
                        arrays["ngrams"] = syn0[V:]
                    training.save_checkpoint(
                        ckpt_root, epoch, arrays, ckpt_fp, {k: state[k] for k in _STATE_KEYS},
                    )  # fmt: skip
                    state["epoch"] = epoch
                    if on_epoch is not None:
                        on_epoch(epoch)
            finally:
                tables_bc.destroy()
                data.unpersist()

    tmp = run_dir.begin("word2vec")
    words = syn0 if plan is None else subword_kernels.compose(syn0, plan.offsets, plan.rows)
    fsutil.write_bytes_atomic(
        fsutil.join(tmp, VECTORS_FILE), table_bytes(vectors_table(tokens, words))
    )
    subword_info: dict[str, Any] = {}
    if plan is not None:
        fsutil.write_bytes_atomic(
            fsutil.join(tmp, NGRAMS_FILE), table_bytes(ngrams_table(plan.used, syn0[V:]))
        )
        subword_info = {"subwords": {
            "minn": w.minn, "maxn": w.maxn, "buckets": w.buckets, "hash": SUBWORD_HASH,
            "file": NGRAMS_FILE, "ngram_rows": U, "ngram_occurrences": plan.ngrams,
            "ngram_matrix_bytes": U * dim * 4, "ngram_matrix_bound_bytes": ngram_matrix_bound(w),
            "word_vectors": "mean of the word's own vector and its n-gram vectors",
        }}  # fmt: skip
    ep = state["epoch_seconds"]
    mean_epoch = float(np.mean(ep)) if ep else 0.0
    words_per_second = N / mean_epoch if mean_epoch else 0.0
    model = {
        "format_version": FORMAT_VERSION,
        "model": "word2vec",
        "settings": {**to_dict(w), "alpha": alpha},
        "vocab_size": V,
        "dim": dim,
        "partitions": S,
        "rounds_per_epoch": R,
        "alpha_scale": alpha_scale(w, S),
        "corpus_words": N,
        "total_words": total_words,
        "output": "syn0" if plan is None else "mean of syn0 word row and n-gram rows",
        **subword_info,
        "losses": [float(v) for v in state["losses"]],
        "trained_words": state["trained_words"],
        "rounds": state["rounds"],
        "epoch_seconds": ep,
        "words_per_second": round(words_per_second),
        "exchange_bytes_per_round": {"broadcast": bcast, "results": state["result_bytes"]},
        "resumed_from_epoch": state["resumed_from"],
        "load_seconds": round(load_seconds, 3),
        "seconds": round(total.seconds, 3),
    }
    fsutil.write_text_atomic(
        fsutil.join(tmp, MODEL_FILE), json.dumps(model, indent=2, sort_keys=True)
    )
    final_loss = float(state["losses"][-1]) if state["losses"] else float("nan")
    summary = (
        f"{w.mode.value} V={V:,} dim={dim} S={S} R={R} merge={w.merge.value}: {E} epochs over "
        f"{human_count(N)} words, final loss {final_loss:.5g}, {human_seconds(mean_epoch)}/epoch "
        f"({human_count(words_per_second)} words/s), per round {human_bytes(bcast)} broadcast + "
        f"{human_bytes(state['result_bytes'])} results"
    )
    if plan is not None:
        summary += (
            f"; subwords n={w.minn}..{w.maxn}: {U:,} of {w.buckets:,} buckets, "
            f"n-gram matrix {human_bytes(U * dim * 4)}"
        )
    if state["resumed_from"]:
        summary += f"; resumed after epoch {state['resumed_from']}"
    record = run_dir.commit("word2vec", tmp, {
        "fingerprint": fp,
        "config": {"word2vec": to_dict(w)},
        "inputs": {**inputs, "encode": enc_rec["fingerprint"], "vocab": vocab_rec["fingerprint"]},
        "counts": {"vocab_size": V, "dim": dim, "partitions": S, "rounds_per_epoch": R,
                   "epochs": E, "corpus_words": N, "final_loss": final_loss,
                   **({"ngram_rows": U} if plan is not None else {})},
        "timings": {"seconds": round(total.seconds, 3), "load_seconds": round(load_seconds, 3),
                    "seconds_per_epoch": round(mean_epoch, 3),
                    "words_per_second": round(words_per_second)},
        "summary": summary,
    })  # fmt: skip
    training.clear_checkpoints(ckpt_root)
    logger.info("word2vec %s", summary)
    return StageResult("word2vec", False, record, total.seconds, summary)


def _train_epoch(
    sc: Any,
    data: Any,
    tables_bc: Any,
    syn0: np.ndarray,
    syn1: np.ndarray,
    w: Word2VecConfig,
    alpha: float,
    epoch: int,
    slice_words: np.ndarray,
    total_words: int,
    state: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """All rounds of one epoch; one log line per round and one per epoch."""
    S, R = slice_words.shape
    E = w.epochs
    t_epoch = time.perf_counter()
    loss_sum, loss_terms, raw, trained, exchange = 0.0, 0, 0, 0, 0.0
    for r, (done, round_words) in enumerate(round_schedule(slice_words, epoch)):
        s = RoundSettings(
            mode=w.mode.value, window=w.window, negative=w.negative, alpha=alpha,
            min_alpha=w.min_alpha, seed=w.seed, epoch=epoch, partitions=S, round=r,
            alpha_scale=alpha_scale(w, S), words_done_before=done, round_words=round_words,
            total_words=total_words, dim=w.dim, subwords=bool(w.subwords),
            share_negatives=bool(w.share_negatives),
        )  # fmt: skip
        t0 = time.perf_counter()
        try:
            syn0, syn1, stats, returned, dev, train = _train_round(
                sc, data, tables_bc, syn0, syn1, s, w.merge
            )
        except TrainingDivergedError as e:
            raise TrainingDivergedError(
                f"word2vec diverged at epoch {epoch}/{E} round {r + 1}/{R} ({e}); lower "
                f"word2vec.alpha (now {alpha:g}, try {alpha / 2:g}) or raise "
                "word2vec.rounds_per_epoch, and re-run with --force"
            ) from e
        seconds = time.perf_counter() - t0
        kernel = max((st.seconds for st in stats), default=0.0)
        r_loss = sum(st.loss_sum for st in stats)
        r_terms = sum(st.loss_terms for st in stats)
        loss_sum, loss_terms = loss_sum + r_loss, loss_terms + r_terms
        raw += sum(st.raw_words for st in stats)
        trained += sum(st.trained_words for st in stats)
        exchange += seconds - train
        state["result_bytes"] = returned
        lr = alpha_at(alpha, w.min_alpha, done + round_words, total_words)
        rate = round_words / seconds if seconds > 0 else 0.0
        # ETA from the words still to train at this run's mean rate so far.
        timed = [*state["rounds"][-8:], {"words": round_words, "seconds": seconds}]
        mean_rate = sum(x["words"] for x in timed) / max(sum(x["seconds"] for x in timed), 1e-9)
        eta = (total_words - done - round_words) / mean_rate if mean_rate else 0.0
        r_loss_mean = r_loss / r_terms if r_terms else float("nan")
        state["rounds"].append({
            "epoch": epoch, "round": r + 1, "loss": r_loss_mean, "alpha": lr,
            "words": round_words, "seconds": round(seconds, 3), "train_seconds": round(train, 3),
            "task_seconds_max": round(kernel, 3),
            "words_per_second": round(rate), "result_bytes": returned,
            **({"rotation_deviation_max": max(dev)} if dev else {}),
        })  # fmt: skip
        logger.info(
            "word2vec epoch %d/%d round %d/%d loss %.5g alpha %.5f %s words/s (train %.1fs, "
            "exchange %.1fs, %s back) ETA %s",
            epoch, E, r + 1, R, r_loss_mean, lr, human_count(rate), train, seconds - train,
            human_bytes(returned), human_seconds(eta),
        )  # fmt: skip
    loss = loss_sum / loss_terms if loss_terms else float("nan")
    training.check_loss(loss, epoch, E, "word2vec.alpha", alpha)
    seconds = time.perf_counter() - t_epoch
    state["losses"].append(loss)
    state["epoch_seconds"].append(round(seconds, 3))
    state["epoch_words"].append(raw)
    state["trained_words"].append(trained)
    eta = training.eta_seconds(state["epoch_seconds"][-5:], E - epoch)
    logger.info("word2vec %s", training.epoch_line(epoch, E, loss, raw, seconds, exchange, eta,
                                                   unit="words"))  # fmt: skip
    return syn0, syn1


def model_path(run_dir: RunDir) -> str:
    """URI of a finished run's ``word2vec/`` model directory (vectors.parquet + model.json,
    with subwords also ngrams.parquet)."""
    run_dir.require("word2vec")
    return run_dir.path("word2vec")


__all__ = [
    "PartitionData",
    "RoundSettings",
    "SubwordPlan",
    "TaskStats",
    "align_updates",
    "alpha_at",
    "assemble_partition",
    "load_partitions",
    "model_path",
    "ngram_matrix_bound",
    "pack_batches",
    "param_bytes",
    "resolve_alpha",
    "round_schedule",
    "row_bytes",
    "run",
    "slice_bounds",
    "subword_plan",
    "task_memory_need",
    "train_task",
    "vectors_table",
]
