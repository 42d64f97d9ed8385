"""``vocab`` stage: tokenize the corpus, count tokens, filter and rank them.

Extract: Spark reads lines (``source.read_lines``). Transform: ``count_batches``
tokenizes Arrow batches inside ``mapInArrow`` and emits per-chunk partial counts
(Arrow ``value_counts``), so only (token, count) pairs reach the shuffle; Spark sums
them. Load: the kept tokens (count >= min_count, at most max_size) are ranked on the
driver by count descending, ties by token ascending, and written as one Parquet file
``vocab/vocab.parquet`` (``id, token, count``), byte-identical for any partitioning.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedpipe import fsutil, schemas
from embedpipe.config import Config, VocabConfig, to_dict
from embedpipe.errors import InputError
from embedpipe.log import Timer, human_bytes, human_count, logger
from embedpipe.runs import RunDir, StageResult, log_skip, stage_fingerprint
from embedpipe.stages import source
from embedpipe.stages.tokenize import TokenStats, fast_mode, raw_buffers, tokenize

KIND_TOKEN, KIND_STAT, KIND_SPLIT = 0, 1, 2
COUNTS_DDL = "kind byte, key string, count long"
_COUNTS_SCHEMA = pa.schema([("kind", pa.int8()), ("key", pa.string()), ("count", pa.int64())])
#: Tokens buffered before one value_counts call: bigger chunks, fewer partial rows.
CHUNK_TOKENS = 2_000_000
#: Partial (token, count) rows a task holds before merging them and sending them on;
#: bounds task memory (~100 bytes a row) whatever the partition size.
MERGE_ROWS = 4_000_000
VOCAB_FILE = "vocab.parquet"
#: Lines per input split (file, block start): lets ``encode`` number lines without a pass.
SPLITS_FILE = "splits.parquet"
#: More than one invalid UTF-8 sequence per this many bytes: binary, not text (Latin-1
#: text stays well under it, random or compressed bytes are far over it).
BINARY_RATIO = 10
SPLITS_SCHEMA = pa.schema([("file", pa.string()), ("block", pa.int64()), ("lines", pa.int64())])


def split_runs(files: pa.Array, blocks: pa.Array) -> list[tuple[str, int, int, int]]:
    """Runs of equal (file, block) in a batch as (file, block, start row, end row).

    Rows of one input split arrive contiguously and in order, so a batch holds a few runs.
    """
    n = len(files)
    if n == 0:
        return []
    b = blocks.to_numpy(zero_copy_only=False)
    # Nearly every batch lies inside one split: check that in Arrow before making a
    # Python string of every row's file name.
    first = files[0].as_py()
    if b[0] == b[-1] and (b == b[0]).all() and pc.all(pc.equal(files, first)).as_py():
        return [(str(first), int(b[0]), 0, n)]
    f = files.to_numpy(zero_copy_only=False)
    change = np.flatnonzero((f[1:] != f[:-1]) | (b[1:] != b[:-1])) + 1
    bounds = [0, *change.tolist(), n]
    return [(str(f[s]), int(b[s]), s, e) for s, e in itertools.pairwise(bounds)]


def split_key(file: str, block: int) -> str:
    """Key of a split in the partial counts (NUL cannot occur in a path)."""
    return f"{file}\x00{block}"


def _counts_batch(keys: pa.Array, counts: pa.Array) -> pa.RecordBatch:
    kind = pa.array(np.zeros(len(keys), np.int8))
    return pa.RecordBatch.from_arrays([kind, keys, counts.cast(pa.int64())],
                                      schema=_COUNTS_SCHEMA)


class _PartialCounts:
    """Per-task token counts: value_counts per chunk, merged before leaving the task.

    Merging the chunks' counts in the task (an Arrow hash aggregation) sends each
    distinct token of a partition to the shuffle once instead of once per chunk.
    """

    def __init__(self) -> None:
        self.chunks: list[pa.StructArray] = []
        self.rows = 0

    def add(self, flat: list[pa.Array]) -> Iterator[pa.RecordBatch]:
        vc = pc.value_counts(pa.concat_arrays(flat) if len(flat) > 1 else flat[0])
        self.chunks.append(vc)
        self.rows += len(vc)
        if self.rows >= MERGE_ROWS:
            yield from self.drain()

    def drain(self) -> Iterator[pa.RecordBatch]:
        if not self.chunks:
            return
        if len(self.chunks) == 1:
            vc = self.chunks[0]
            batch = _counts_batch(vc.field("values"), vc.field("counts"))
        else:
            table = pa.table({
                "key": pa.chunked_array([c.field("values") for c in self.chunks]),
                "count": pa.chunked_array([c.field("counts") for c in self.chunks]),
            })
            merged = table.group_by("key", use_threads=False).aggregate([("count", "sum")])
            batch = _counts_batch(merged.column("key").combine_chunks(),
                                  merged.column("count_sum").combine_chunks())
        self.chunks, self.rows = [], 0
        yield batch


def _counter_batch(key_off: np.ndarray, keys: np.ndarray, counts: np.ndarray) -> pa.RecordBatch:
    """A drained TokenCounter as partial (kind 0, key, count) rows."""
    arr = pa.Array.from_buffers(pa.string(), len(counts),
                                [None, pa.py_buffer(key_off.astype(np.int32)), pa.py_buffer(keys)])
    return _counts_batch(arr, pa.array(counts))


def count_batches(batches: Iterable[pa.RecordBatch], vcfg: VocabConfig) -> Iterator[pa.RecordBatch]:
    """Arrow batches ``raw, file, block`` -> partial (kind, key, count) batches.

    ASCII rows are tokenized and counted in one fused numba pass
    (``embedpipe.kernels.tokens``); other rows (and custom patterns) take the Arrow
    tokenizer and ``value_counts``. Token rows have kind 0; the partition's
    statistics (documents, tokens, bytes, invalid UTF-8 sequences, long tokens
    dropped) follow as kind-1 rows, and the number of lines of every input split as
    kind-2 rows.
    """
    from embedpipe.kernels import tokens as TK

    stats = TokenStats()
    split_lines: dict[str, int] = {}
    docs = tokens = nbytes = 0
    buffered: list[pa.Array] = []
    n_buffered = 0
    partial = _PartialCounts()
    mode = fast_mode(vcfg.tokenizer.value, vcfg.pattern)
    counter = (TK.TokenCounter(mode, vcfg.lowercase, vcfg.max_token_chars)
               if mode is not None else None)
    for batch in batches:
        raw = batch.column("raw")
        docs += len(raw)
        for f, b, start, end in split_runs(batch.column("file"), batch.column("block")):
            key = split_key(f, b)
            split_lines[key] = split_lines.get(key, 0) + end - start
        if counter is not None:
            raw, offsets, data, ascii_rows = raw_buffers(raw)
            nbytes += int(offsets[-1]) + len(raw)
            n_tok, dropped = counter.add(data, offsets, ascii_rows)
            tokens += n_tok
            stats.long_tokens += dropped
            if len(counter) >= MERGE_ROWS:
                yield _counter_batch(*counter.drain())
            if ascii_rows.all():
                continue
            raw = raw.filter(pa.array(~ascii_rows))
        else:
            nbytes += int(pc.sum(pc.binary_length(raw)).as_py() or 0) + len(raw)
        toks = tokenize(raw, vcfg.tokenizer.value, vcfg.lowercase, vcfg.pattern,
                        vcfg.max_token_chars, stats)
        flat = pc.list_flatten(toks)
        tokens += len(flat)
        if len(flat):
            buffered.append(flat)
            n_buffered += len(flat)
        if n_buffered >= CHUNK_TOKENS:
            yield from partial.add(buffered)
            buffered, n_buffered = [], 0
    if buffered:
        yield from partial.add(buffered)
    yield from partial.drain()
    if counter is not None and len(counter):
        yield _counter_batch(*counter.drain())
    names = ["documents", "tokens", "bytes", "invalid_utf8", "long_tokens_dropped"]
    values = [docs, tokens, nbytes, stats.invalid_utf8, stats.long_tokens]
    kinds = [KIND_STAT] * len(names) + [KIND_SPLIT] * len(split_lines)
    yield pa.RecordBatch.from_arrays(
        [pa.array(kinds, pa.int8()), pa.array(names + list(split_lines)),
         pa.array(values + list(split_lines.values()), pa.int64())],
        schema=_COUNTS_SCHEMA,
    )


#: Token statistics a reduce task adds to its output (kind 3): distinct tokens, max count.
KIND_SUMMARY = 3


def keep_batches(batches: Iterable[pa.RecordBatch], min_count: int) -> Iterator[pa.RecordBatch]:
    """Summed (kind, key, count) batches -> kept tokens, metadata rows and a summary.

    Runs after the shuffle, so that only tokens with ``count >= min_count`` (plus
    one row per reduce task: distinct tokens seen, largest count) reach the driver.
    """
    distinct = max_count = 0
    for batch in batches:
        kind = batch.column("kind").to_numpy(zero_copy_only=False)
        count = batch.column("count").to_numpy(zero_copy_only=False)
        is_tok = kind == KIND_TOKEN
        n_tok = int(is_tok.sum())
        if n_tok:
            distinct += n_tok
            max_count = max(max_count, int(count[is_tok].max()))
        keep = ~is_tok | (count >= min_count)
        if keep.all():
            yield batch
        elif keep.any():
            yield batch.filter(pa.array(keep))
    yield pa.RecordBatch.from_arrays(
        [pa.array([KIND_SUMMARY] * 2, pa.int8()), pa.array(["distinct", "max_count"]),
         pa.array([distinct, max_count], pa.int64())], schema=_COUNTS_SCHEMA)


def splits_table(rows: list[tuple[str, int]]) -> pa.Table:
    """(key, lines) rows of kind 2 -> table ``file, block, lines`` sorted by (file, block)."""
    parsed = sorted((k.split("\x00")[0], int(k.split("\x00")[1]), n) for k, n in rows)
    return pa.table([pa.array([p[0] for p in parsed], pa.string()),
                     pa.array([p[1] for p in parsed], pa.int64()),
                     pa.array([p[2] for p in parsed], pa.int64())], schema=SPLITS_SCHEMA)


def rank(tokens: pa.Array, counts: pa.Array, min_count: int, max_size: int) -> pa.Table:
    """Filter and rank: ids by count descending, ties by token ascending (code point order)."""
    table = pa.table({"token": tokens, "count": counts.cast(pa.int64())})
    table = table.filter(pc.greater_equal(table["count"], min_count))
    table = table.sort_by([("count", "descending"), ("token", "ascending")])
    if max_size and table.num_rows > max_size:
        table = table.slice(0, max_size)
    ids = pa.array(np.arange(table.num_rows, dtype=np.int32))
    return pa.table([ids, table["token"], table["count"]], schema=schemas.VOCAB)


def table_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of a small table (deterministic: same table, same bytes)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _read_small_table(run: RunDir, name: str, schema: pa.Schema) -> pa.Table:
    run.require("vocab")
    uri = run.path("vocab", name)
    try:
        table = pq.read_table(io.BytesIO(fsutil.read_bytes(uri)))
    except pa.ArrowInvalid as e:
        raise InputError(f"{uri}: not a readable Parquet file ({e}); re-run vocab --force") from e
    schemas.check(table.schema, schema, uri)
    return table


def read_vocab(run: RunDir) -> pa.Table:
    """The vocabulary of a finished run as an Arrow table ``id, token, count``, sorted by id."""
    return _read_small_table(run, VOCAB_FILE, schemas.VOCAB)


def read_splits(run: RunDir) -> pa.Table:
    """Lines per input split (``file, block, lines``) recorded by the vocab stage."""
    return _read_small_table(run, SPLITS_FILE, SPLITS_SCHEMA)


def run(spark, cfg: Config, run_dir: RunDir, force: bool = False, **_: Any) -> StageResult:
    """Count and rank the vocabulary of ``cfg.input`` into ``run_dir/vocab``."""
    from pyspark.sql import functions as F

    vcfg = cfg.vocab
    with source.partitioning(spark, cfg.input):
        src = source.line_source(spark, cfg.input)
        files = src.files
        fp = stage_fingerprint(run_dir, "vocab", cfg.section_hash("input", "vocab"), files)
        if not force and run_dir.is_current("vocab", fp):
            return log_skip("vocab", run_dir)
        if not files:
            raise InputError(f"{cfg.input.path}: no input files found (empty directory?)")
        with Timer() as t:
            partials = src.map_batches(lambda it: count_batches(it, vcfg), COUNTS_DDL)
            summed = partials.groupBy("kind", "key").agg(F.sum("count").alias("count"))
            # One job: the reduce tasks filter by min_count themselves, so only kept
            # tokens and a few metadata rows are collected.
            min_count = vcfg.min_count
            result = summed.mapInArrow(lambda it: keep_batches(it, min_count),
                                       COUNTS_DDL).toArrow()
            n_partitions = src.num_partitions
    kind = result.column("kind").to_numpy()
    meta_rows = result.filter(pa.array(kind != KIND_TOKEN)).to_pylist()
    kept = result.filter(pa.array(kind == KIND_TOKEN))
    summary_rows = [r for r in meta_rows if r["kind"] == KIND_SUMMARY]
    distinct_max = (sum(r["count"] for r in summary_rows if r["key"] == "distinct"),
                    max([r["count"] for r in summary_rows if r["key"] == "max_count"] or [0]))
    stats = {r["key"]: int(r["count"]) for r in meta_rows if r["kind"] == KIND_STAT}
    splits = splits_table([(r["key"], int(r["count"])) for r in meta_rows
                           if r["kind"] == KIND_SPLIT])
    distinct, max_count = int(distinct_max[0]), int(distinct_max[1] or 0)
    where = cfg.input.path
    if stats.get("documents", 0) == 0:
        raise InputError(f"{where}: the corpus is empty (0 lines); check input.path")
    if (stats.get("bytes", 0) >= 4096  # too few bytes to judge
            and stats.get("invalid_utf8", 0) * BINARY_RATIO > stats["bytes"]):
        raise InputError(
            f"{where}: does not look like text: {stats['invalid_utf8']:,} invalid UTF-8 "
            f"sequences in {human_bytes(stats['bytes'])} (more than 1 in {BINARY_RATIO} bytes); "
            "is it binary, or compressed without a .gz/.bz2 suffix?"
        )
    if stats.get("tokens", 0) == 0:
        raise InputError(
            f"{where}: the corpus has {stats['documents']} lines but no tokens "
            f"(vocab.tokenizer = {vcfg.tokenizer.value}); is it text?"
        )
    table = rank(kept.column("key"), kept.column("count"), vcfg.min_count, vcfg.max_size)
    if table.num_rows == 0:
        raise InputError(
            f"vocab.min_count = {vcfg.min_count} removes every token (the most frequent occurs "
            f"{max_count} times); lower vocab.min_count"
        )
    kept_tokens = int(pc.sum(table["count"]).as_py())
    tmp = run_dir.begin("vocab")
    fsutil.write_bytes_atomic(fsutil.join(tmp, VOCAB_FILE), table_bytes(table))
    fsutil.write_bytes_atomic(fsutil.join(tmp, SPLITS_FILE), table_bytes(splits))
    rate = stats["tokens"] / max(t.seconds, 1e-9)
    summary = (
        f"{human_count(stats['tokens'])} tokens in {human_count(stats['documents'])} lines "
        f"({human_bytes(stats['bytes'])}), {human_count(distinct)} distinct -> "
        f"{table.num_rows:,} kept (min_count {vcfg.min_count}, {kept_tokens / stats['tokens']:.1%} "
        f"of tokens) in {t.seconds:.1f}s ({human_count(rate)} tokens/s, {n_partitions} partitions, "
        f"{src.reader} reader)"
    )
    if stats.get("invalid_utf8"):
        summary += f"; {stats['invalid_utf8']:,} invalid UTF-8 sequences replaced"
    if stats.get("long_tokens_dropped"):
        summary += (f"; {stats['long_tokens_dropped']:,} tokens longer than "
                    f"{vcfg.max_token_chars} chars dropped")
    record = run_dir.commit("vocab", tmp, {
        "fingerprint": fp,
        "config": {"input": to_dict(cfg.input), "vocab": to_dict(vcfg)},
        "inputs": {"files": files, "reader": src.reader},
        "counts": {
            **stats, "distinct_tokens": distinct, "vocab_size": table.num_rows,
            "kept_tokens": kept_tokens, "input_partitions": n_partitions,
        },
        "timings": {"seconds": round(t.seconds, 3), "tokens_per_second": round(rate)},
        "summary": summary,
    })
    logger.info("vocab    %s", summary)
    return StageResult("vocab", False, record, t.seconds, summary)

