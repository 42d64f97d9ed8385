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
from embedpipe.stages.tokenize import TokenStats, tokenize
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


def encode_batches(
    batches: Iterable[pa.RecordBatch],
    vocab_tokens: pa.Array,
    first_line: dict[tuple[str, int], int],
    vcfg: VocabConfig,
    max_doc_tokens: int,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches ``raw, file, block`` -> ``doc, ids`` batches (see the module docstring)."""
    seen: dict[tuple[str, int], int] = {}
    stats = TokenStats()
    pending: list[tuple[pa.ListArray, np.ndarray]] = []
    n_pending = 0

    def flush() -> pa.RecordBatch:
        lists = pa.concat_arrays([p[0] for p in pending]) if len(pending) > 1 else pending[0][0]
        docs = np.concatenate([p[1] for p in pending])
        flat = pc.list_flatten(lists)
        ids = pc.index_in(flat, value_set=vocab_tokens)  # null = out of vocabulary
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        valid = pc.is_valid(ids).to_numpy(zero_copy_only=False)
        kept_ids = ids.filter(pa.array(valid)).cast(pa.int32())
        counts = np.bincount(parents[valid], minlength=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        new_offsets, new_docs = split_docs(offsets, docs, max_doc_tokens)
        out_lists = pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)), kept_ids)
        return pa.RecordBatch.from_arrays([pa.array(new_docs, pa.int64()), out_lists],
                                          schema=schemas.CORPUS)

    for batch in batches:
        docs = _line_numbers(batch.column("file"), batch.column("block"), first_line, seen)
        toks = tokenize(batch.column("raw"), vcfg.tokenizer.value, vcfg.lowercase,
                        vcfg.pattern, vcfg.max_token_chars, stats)
        pending.append((toks, docs))
        n_pending += len(toks.values)
        if n_pending >= CHUNK_TOKENS:
            yield flush()
            pending, n_pending = [], 0
    if pending:
        yield flush()


def first_lines(rows: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """(file, block, lines) rows -> first corpus line number of every split."""
    first: dict[tuple[str, int], int] = {}
    total = 0
    for f, b, n in sorted(rows):
        first[(f, int(b))] = total
        total += int(n)
    return first


def count_split_lines(lines) -> dict[tuple[str, int], int]:
    """First line number of every split from a JVM-only count (the fallback pass)."""
    counts = lines.groupBy("file", "block").count().collect()
    return first_lines((r["file"], int(r["block"]), int(r["count"])) for r in counts)


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
        lines = source.read_lines(spark, cfg.input)
        files = source.input_files(spark, lines)
        fp = stage_fingerprint(run_dir, "encode", cfg.section_hash("input", "vocab", "encode"),
                               files)
        if not force and run_dir.is_current("encode", fp):
            return log_skip("encode", run_dir)
        vocab = read_vocab(run_dir)
        # Broadcast: shipped once per executor, not inside every task's closure.
        vocab_bc = spark.sparkContext.broadcast(vocab.column("token").combine_chunks())
        vcfg, max_doc = cfg.vocab, cfg.encode.max_doc_tokens
        counts = vocab_rec["counts"]
        tokens_per_doc = max(counts["tokens"] / max(counts["documents"], 1), 1.0)
        rows_per_file = max(int(cfg.encode.file_tokens / min(tokens_per_doc, max_doc)), 1000)
        first_line = first_lines(
            (r["file"], r["block"], r["lines"]) for r in read_splits(run_dir).to_pylist())
        tmp = run_dir.begin("encode")
        out = fsutil.to_spark_uri(tmp)
        recounted = False
        with Timer() as t:
            while True:
                encoded = lines.mapInArrow(
                    lambda it, fl=first_line: encode_batches(it, vocab_bc.value, fl, vcfg, max_doc),
                    schemas.CORPUS_DDL,
                )
                try:
                    (encoded.write.mode("overwrite").option("maxRecordsPerFile", rows_per_file)
                     .parquet(out))
                    break
                except Exception as e:
                    if UNKNOWN_SPLIT not in str(e) or recounted:
                        raise
                    logger.info("encode   input splits differ from the vocab run's; "
                                "counting lines per split again")
                    first_line, recounted = count_split_lines(lines), True
        n_partitions = lines.rdd.getNumPartitions()
        vocab_bc.unpersist()
    n_files, n_rows, kept = _footer_counts(tmp)
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
        "inputs": {"files": files, "vocab": vocab_rec["fingerprint"]},
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
