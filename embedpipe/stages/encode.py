"""``encode`` stage: corpus -> ``corpus/`` Parquet ``doc:int64, ids:list<int32>``.

Every line of the corpus gets a document number ``doc``: its 0-based position in
the corpus (files in path order, lines in file order), whatever the partitioning.
Spark does not number lines, but the ``vocab`` stage records how many lines each
input split (file, block start) has; prefix sums of those counts give each split's
first line number, and inside ``mapInArrow`` a line's number is its split's first
line plus its position in the split. Should Spark split the files differently this
time (another cluster size, say), a JVM-only pass counts the lines per split again.

Tokens are mapped to vocabulary ids with Arrow's hash lookup (``index_in``);
out-of-vocabulary tokens are dropped, lines with no token left are dropped, and a
line with more than ``encode.max_doc_tokens`` ids becomes several consecutive rows
with the same ``doc`` (so reading a file in order restores the token stream).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedpipe import fsutil, schemas
from embedpipe.config import Config, VocabConfig, to_dict
from embedpipe.errors import InputError
from embedpipe.log import Timer, human_count, logger
from embedpipe.runs import RunDir, StageResult, log_skip, stage_fingerprint
from embedpipe.stages import source
from embedpipe.stages.tokenize import (
    TokenStats,
    fast_mode,
    raw_buffers,
    string_buffers,
    tokenize,
)
from embedpipe.stages.vocab import read_splits, read_vocab, split_runs

#: Tokens encoded per index_in call: the vocabulary hash table is built once per chunk.
CHUNK_TOKENS = 2_000_000


def split_docs(
    offsets: np.ndarray, docs: np.ndarray, max_doc_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut rows longer than ``max_doc_tokens`` into pieces; drop empty rows.

    ``offsets`` (n + 1) delimit the rows of a flat id array. Returns the new offsets
    and the document number of every new row (pieces repeat their row's number).
    """
    lengths = np.diff(offsets)
    pieces = -(-lengths // max_doc_tokens)  # ceil; 0 for empty rows
    total = int(pieces.sum())
    row = np.repeat(np.arange(len(lengths)), pieces)
    first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
    starts = offsets[:-1][row] + (np.arange(total) - first_piece) * max_doc_tokens
    new_offsets = np.empty(total + 1, dtype=np.int64)
    new_offsets[:-1] = starts
    new_offsets[-1] = offsets[-1]
    return new_offsets, docs[row]


#: Marks the error a task raises when it meets a split the line counts do not know.
UNKNOWN_SPLIT = "[embedpipe:unknown-split]"


def _line_numbers(files: pa.Array, blocks: pa.Array, first_line: dict[tuple[str, int], int],
                  seen: dict[tuple[str, int], int]) -> np.ndarray:
    """Corpus line number of every row; ``seen`` carries positions across batches."""
    out = np.empty(len(files), dtype=np.int64)
    # Rows of one split are contiguous: loop over runs of equal (file, block), not rows.
    for f, b, s, e in split_runs(files, blocks):
        key = (f, b)
        if key not in first_line:
            raise InputError(f"{UNKNOWN_SPLIT} {f}: split at byte {b} has no line count")
        pos = seen.get(key, 0)
        out[s:e] = first_line[key] + pos + np.arange(e - s)
        seen[key] = pos + (e - s)
    return out


def _index_tokens(tokens: pa.ListArray, vocab_tokens: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(kept ids per row, flat int32 ids) of a tokenized batch via Arrow's hash lookup."""
    flat = pc.list_flatten(tokens)
    ids = pc.index_in(flat, value_set=vocab_tokens)  # null = out of vocabulary
    parents = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    valid = pc.is_valid(ids).to_numpy(zero_copy_only=False)
    kept = ids.filter(pa.array(valid)).cast(pa.int32()).to_numpy(zero_copy_only=False)
    return np.bincount(parents[valid], minlength=len(tokens)), kept


class _Encoder:
    """Tokens -> ids for one task: the fused ASCII kernel, Arrow for everything else."""

    def __init__(self, vocab_tokens: pa.Array, vcfg: VocabConfig) -> None:
        from embedpipe.kernels import tokens as TK

        self.vocab_tokens, self.vcfg = vocab_tokens, vcfg
        self.stats = TokenStats()
        self.mode = fast_mode(vcfg.tokenizer.value, vcfg.pattern)
        if self.mode is not None:
            voc = vocab_tokens.cast(pa.string()) if not pa.types.is_string(
                vocab_tokens.type) else vocab_tokens
            self.voc_off, self.voc_data = string_buffers(voc)
            self.slots, self.ent = TK.build_lookup(self.voc_off, self.voc_data)
            self.tables = TK.byte_tables(self.mode, vcfg.lowercase)

    def _arrow(self, raw: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        from embedpipe.kernels import tokens as TK

        v = self.vcfg
        toks = tokenize(raw, v.tokenizer.value, v.lowercase, v.pattern, v.max_token_chars,
                        self.stats)
        if self.mode is None:
            return _index_tokens(toks, self.vocab_tokens)
        # A few non-ASCII rows per batch: look their tokens up in the task's table
        # (index_in would rebuild a hash table of the whole vocabulary per call).
        flat = pc.list_flatten(toks)
        if len(flat) == 0:
            return np.zeros(len(toks), np.int64), np.empty(0, np.int32)
        offsets, data = string_buffers(flat)
        ids = TK.lookup_strings(offsets, data, self.slots, self.ent, self.voc_data)
        parents = pc.list_parent_indices(toks).to_numpy(zero_copy_only=False)
        valid = ids >= 0
        return np.bincount(parents[valid], minlength=len(toks)), ids[valid]

    def rows(self, raw: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(kept ids per row, flat int32 ids in row order) of a batch of raw lines."""
        from embedpipe.kernels import tokens as TK

        if self.mode is None:
            return self._arrow(raw)
        raw, offsets, data, ascii_rows = raw_buffers(raw)
        ids, counts, _n, dropped = TK.encode_tokens(
            data, offsets, ascii_rows, self.mode, self.vcfg.max_token_chars, *self.tables,
            self.slots, self.ent, self.voc_data)
        self.stats.long_tokens += int(dropped)
        if ascii_rows.all():
            return counts, ids
        other = np.flatnonzero(~ascii_rows)
        counts_u, ids_u = self._arrow(raw.take(pa.array(other)))
        counts[other] = counts_u
        # Both id streams are in row order: an id's row says which stream it comes from.
        from_ascii = np.repeat(ascii_rows, counts)
        merged = np.empty(from_ascii.size, np.int32)
        merged[from_ascii] = ids
        merged[~from_ascii] = ids_u
        return counts, merged


def encode_batches(
    batches: Iterable[pa.RecordBatch],
    vocab_tokens: pa.Array,
    first_line: dict[tuple[str, int], int],
    vcfg: VocabConfig,
    max_doc_tokens: int,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches ``raw, file, block`` -> ``doc, ids`` batches (see the module docstring)."""
    seen: dict[tuple[str, int], int] = {}
    encoder = _Encoder(vocab_tokens, vcfg)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_pending = 0

    def flush() -> pa.RecordBatch:
        counts = np.concatenate([p[0] for p in pending])
        ids = np.concatenate([p[1] for p in pending])
        docs = np.concatenate([p[2] for p in pending])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        new_offsets, new_docs = split_docs(offsets, docs, max_doc_tokens)
        out_lists = pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)),
                                             pa.array(ids, pa.int32()))
        return pa.RecordBatch.from_arrays([pa.array(new_docs, pa.int64()), out_lists],
                                          schema=schemas.CORPUS)

    for batch in batches:
        docs = _line_numbers(batch.column("file"), batch.column("block"), first_line, seen)
        counts, ids = encoder.rows(batch.column("raw"))
        pending.append((counts, ids, docs))
        n_pending += len(ids)
        if n_pending >= CHUNK_TOKENS:
            yield flush()
            pending, n_pending = [], 0
    if pending:
        yield flush()


#: Codec of the corpus files: fast to decode, which the trainers do every epoch.
COMPRESSION = "snappy"
#: One row per task returned to the driver: what the task wrote.
WRITTEN_DDL = "partition int, files int, rows long, ids long"
_WRITTEN_SCHEMA = pa.schema([("partition", pa.int32()), ("files", pa.int32()),
                             ("rows", pa.int64()), ("ids", pa.int64())])


def part_name(partition: int, seq: int) -> str:
    """File name of a task's ``seq``-th corpus file; the names sort in corpus order."""
    return f"part-{partition:05d}-{seq:05d}.parquet"


class CorpusWriter:
    """Writes one task's encoded batches as ``part-PPPPP-SSSSS.parquet`` files.

    Each batch becomes one row group (readers split work by row groups) and a file
    is closed once it holds ``file_tokens`` ids. A file is written under a hidden
    temporary name (Spark and our readers skip names starting with ``.``) and then
    renamed: a retried or speculative task writes the same names with the same bytes,
    so whichever attempt renames last, every file is whole.
    """

    def __init__(self, out_uri: str, partition: int, file_tokens: int, attempt: int = 0) -> None:
        self.fs, self.root = fsutil.resolve(out_uri)
        self.partition, self.file_tokens, self.attempt = partition, file_tokens, attempt
        self.files = self.rows = self.ids = 0
        self._writer = None
        self._tmp = self._final = ""
        self._file_ids = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a ``doc, ids`` batch (one row group)."""
        import pyarrow.parquet as pq

        if batch.num_rows == 0:
            return
        if self._writer is None:
            name = part_name(self.partition, self.files)
            self._final = f"{self.root}/{name}"
            self._tmp = f"{self.root}/.{name}.{self.attempt}.tmp"
            self._stream = self.fs.open_output_stream(self._tmp)
            self._writer = pq.ParquetWriter(self._stream, schemas.CORPUS, compression=COMPRESSION)
        self._writer.write_batch(batch, row_group_size=batch.num_rows)
        n = len(batch.column("ids").values)
        self.rows += batch.num_rows
        self.ids += n
        self._file_ids += n
        if self._file_ids >= self.file_tokens:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stream.close()
        self.fs.move(self._tmp, self._final)
        self._writer = None
        self.files += 1
        self._file_ids = 0

    def close(self) -> pa.RecordBatch:
        """Finish the last file; returns the task's one-row summary (WRITTEN_DDL)."""
        self._close_file()
        return pa.RecordBatch.from_arrays(
            [pa.array([self.partition], pa.int32()), pa.array([self.files], pa.int32()),
             pa.array([self.rows], pa.int64()), pa.array([self.ids], pa.int64())],
            schema=_WRITTEN_SCHEMA,
        )


def encode_and_write(
    batches: Iterable[pa.RecordBatch],
    vocab_tokens: pa.Array,
    first_line: dict[tuple[str, int], int],
    vcfg: VocabConfig,
    max_doc_tokens: int,
    out_uri: str,
    file_tokens: int,
) -> Iterator[pa.RecordBatch]:
    """The encode task: encode its lines and write them straight to Parquet files.

    Writing from Python avoids handing every id back to the JVM (whose Arrow to row
    to Parquet conversion of list columns cost more than the encoding itself).
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    partition = ctx.partitionId() if ctx else 0
    attempt = ctx.taskAttemptId() if ctx else 0
    writer = CorpusWriter(out_uri, partition, file_tokens, attempt)
    for batch in encode_batches(batches, vocab_tokens, first_line, vcfg, max_doc_tokens):
        writer.write(batch)
    yield writer.close()


def first_lines(rows: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """(file, block, lines) rows -> first corpus line number of every split."""
    first: dict[tuple[str, int], int] = {}
    total = 0
    for f, b, n in sorted(rows):
        first[(f, int(b))] = total
        total += int(n)
    return first


def _split_line_counts(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    counts: dict[tuple[str, int], int] = {}
    for b in batches:
        for f, blk, s, e in split_runs(b.column("file"), b.column("block")):
            counts[(f, blk)] = counts.get((f, blk), 0) + e - s
    yield pa.RecordBatch.from_arrays(
        [pa.array([k[0] for k in counts], pa.string()),
         pa.array([k[1] for k in counts], pa.int64()),
         pa.array(list(counts.values()), pa.int64())],
        names=["file", "block", "lines"],
    )


def count_split_lines(src: source.LineSource) -> dict[tuple[str, int], int]:
    """First line number of every split from a counting pass (the fallback)."""
    rows = src.map_batches(_split_line_counts, "file string, block long, lines long").collect()
    total: dict[tuple[str, int], int] = {}
    for r in rows:  # a split read by two tasks cannot happen, but adding is harmless
        key = (r["file"], int(r["block"]))
        total[key] = total.get(key, 0) + int(r["lines"])
    return first_lines((f, b, n) for (f, b), n in total.items())


def _remove_temporaries(uri: str) -> None:
    """Delete the hidden temporaries that killed task attempts may have left."""
    fs, _ = fsutil.resolve(uri)
    for path, _size in fsutil.list_files(uri):
        if path.rsplit("/", 1)[-1].startswith("."):
            fs.delete_file(path)


def _footer_counts(uri: str) -> tuple[int, int, int]:
    """(files, rows, ids) of a written corpus dataset, from the Parquet footers alone."""
    import pyarrow.parquet as pq

    fs, _ = fsutil.resolve(uri)
    files = rows = ids = 0
    for path, _size in fsutil.list_files(uri):
        if not path.endswith(".parquet"):
            continue
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        files += 1
        rows += meta.num_rows
        col = meta.schema.to_arrow_schema().get_field_index("ids")
        # Rows are never empty (empty documents are dropped), so leaf values = ids.
        ids += sum(meta.row_group(g).column(col).num_values for g in range(meta.num_row_groups))
    return files, rows, ids


def run(spark, cfg: Config, run_dir: RunDir, force: bool = False, **_: Any) -> StageResult:
    """Encode ``cfg.input`` with the run's vocabulary into ``run_dir/corpus``."""
    vocab_rec = run_dir.require("vocab")
    with source.partitioning(spark, cfg.input):
        src = source.line_source(spark, cfg.input)
        files = src.files
        fp = stage_fingerprint(run_dir, "encode", cfg.section_hash("input", "vocab", "encode"),
                               files)
        if not force and run_dir.is_current("encode", fp):
            return log_skip("encode", run_dir)
        vocab = read_vocab(run_dir)
        # Broadcast: shipped once per executor, not inside every task's closure.
        vocab_bc = spark.sparkContext.broadcast(vocab.column("token").combine_chunks())
        vcfg, max_doc = cfg.vocab, cfg.encode.max_doc_tokens
        counts = vocab_rec["counts"]
        first_line = first_lines(
            (r["file"], r["block"], r["lines"]) for r in read_splits(run_dir).to_pylist())
        tmp = run_dir.begin("encode")
        fsutil.makedirs(tmp)
        recounted = False
        file_tokens = cfg.encode.file_tokens
        with Timer() as t:
            while True:
                encoded = src.map_batches(
                    lambda it, fl=first_line: encode_and_write(
                        it, vocab_bc.value, fl, vcfg, max_doc, tmp, file_tokens),
                    WRITTEN_DDL,
                )
                try:
                    written = encoded.collect()
                    break
                except Exception as e:
                    if UNKNOWN_SPLIT not in str(e) or recounted:
                        raise
                    logger.info("encode   input splits differ from the vocab run's; "
                                "counting lines per split again")
                    first_line, recounted = count_split_lines(src), True
                    fsutil.remove(tmp)  # files of the failed attempt
                    fsutil.makedirs(tmp)
        _remove_temporaries(tmp)
        n_partitions = src.num_partitions
        vocab_bc.unpersist()
    n_files, n_rows, kept = _footer_counts(tmp)
    if (n_files, n_rows, kept) != (sum(r["files"] for r in written),
                                   sum(r["rows"] for r in written), sum(r["ids"] for r in written)):
        raise InputError(f"{tmp}: the written corpus files do not add up to what the tasks "
                         "wrote (another writer in this directory?); re-run encode --force")
    if kept == 0:
        raise InputError(f"{cfg.input.path}: no in-vocabulary token in the corpus")
    total_tokens = counts["tokens"]
    oov_rate = 1.0 - kept / total_tokens if total_tokens else 0.0
    rate = total_tokens / max(t.seconds, 1e-9)
    summary = (
        f"{human_count(kept)} ids in {human_count(n_rows)} documents ({n_files} files), "
        f"OOV rate {oov_rate:.2%}, in {t.seconds:.1f}s ({human_count(rate)} tokens/s, "
        f"{n_partitions} partitions)"
    )
    record = run_dir.commit("encode", tmp, {
        "fingerprint": fp,
        "config": {"encode": to_dict(cfg.encode)},
        "inputs": {"files": files, "vocab": vocab_rec["fingerprint"], "reader": src.reader},
        "counts": {
            "kept_tokens": kept, "rows": n_rows, "files": n_files,
            "oov_rate": round(oov_rate, 6), "lines_recounted": recounted,
            "input_partitions": n_partitions,
        },
        "timings": {"seconds": round(t.seconds, 3), "tokens_per_second": round(rate)},
        "summary": summary,
    })
    logger.info("encode   %s", summary)
    return StageResult("encode", False, record, t.seconds, summary)



def corpus_path(run_dir: RunDir) -> str:
    """Spark URI of a finished run's encoded corpus dataset."""
    run_dir.require("encode")
    return run_dir.spark_path("corpus")
