"""``encode`` stage: corpus -> ``corpus/`` Parquet ``doc:int64, ids:list<int32>``.

Every line of the corpus gets a document number ``doc``: its 0-based position in
the corpus (files in path order, lines in file order), whatever the partitioning.
Spark does not number lines, so a first JVM-only pass counts the lines of each
input split (file, block start); prefix sums of those counts give each split's
first line number, and inside ``mapInArrow`` a line's number is its split's first
line plus its position in the split.

Tokens are mapped to vocabulary ids with Arrow's hash lookup (``index_in``);
out-of-vocabulary tokens are dropped, lines with no token left are dropped, and a
line with more than ``encode.max_doc_tokens`` ids becomes several consecutive rows
with the same ``doc`` (so reading a file in order restores the token stream).
"""

from __future__ import annotations

import itertools
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
from embedpipe.stages.vocab import read_vocab

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


def _line_numbers(files: pa.Array, blocks: pa.Array, first_line: dict[tuple[str, int], int],
                  seen: dict[tuple[str, int], int]) -> np.ndarray:
    """Corpus line number of every row; ``seen`` carries positions across batches."""
    n = len(files)
    out = np.empty(n, dtype=np.int64)
    f = files.to_numpy(zero_copy_only=False)
    b = blocks.to_numpy(zero_copy_only=False)
    # Rows of one split are contiguous: loop over runs of equal (file, block), not rows.
    change = np.flatnonzero((f[1:] != f[:-1]) | (b[1:] != b[:-1])) + 1
    bounds = np.concatenate([[0], change, [n]])
    for s, e in itertools.pairwise(bounds):
        key = (str(f[s]), int(b[s]))
        if key not in first_line:
            raise InputError(
                f"{key[0]}: input changed while encoding (split at byte {key[1]} was not "
                "counted); re-run encode"
            )
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


def split_first_lines(spark, lines) -> dict[tuple[str, int], int]:
    """First corpus line number of every (file, block) split, from a JVM-only count."""
    counts = lines.groupBy("file", "block").count().collect()
    first: dict[tuple[str, int], int] = {}
    total = 0
    for r in sorted(counts, key=lambda r: (r["file"], r["block"])):
        first[(r["file"], int(r["block"]))] = total
        total += int(r["count"])
    return first


def run(spark, cfg: Config, run_dir: RunDir, force: bool = False, **_: Any) -> StageResult:
    """Encode ``cfg.input`` with the run's vocabulary into ``run_dir/corpus``."""
    from pyspark.sql import functions as F

    vocab_rec = run_dir.require("vocab")
    with source.partitioning(spark, cfg.input):
        lines = source.read_lines(spark, cfg.input)
        files = source.input_files(spark, lines)
        fp = stage_fingerprint(run_dir, "encode", cfg.section_hash("input", "vocab", "encode"),
                               files)
        if not force and run_dir.is_current("encode", fp):
            return log_skip("encode", run_dir)
        vocab = read_vocab(run_dir)
        vocab_tokens = vocab.column("token").combine_chunks()
        vcfg, max_doc = cfg.vocab, cfg.encode.max_doc_tokens
        with Timer() as t:
            first_line = split_first_lines(spark, lines)
            counts = vocab_rec["counts"]
            tokens_per_doc = max(counts["tokens"] / max(counts["documents"], 1), 1.0)
            rows_per_file = max(int(cfg.encode.file_tokens / min(tokens_per_doc, max_doc)), 1000)
            encoded = lines.mapInArrow(
                lambda it: encode_batches(it, vocab_tokens, first_line, vcfg, max_doc),
                schemas.CORPUS_DDL,
            )
            tmp = run_dir.begin("encode")
            out = fsutil.to_spark_uri(tmp)
            (encoded.write.mode("overwrite").option("maxRecordsPerFile", rows_per_file)
             .parquet(out))
            written = spark.read.parquet(out).agg(
                F.count("*").alias("rows"), F.sum(F.size("ids")).alias("ids"),
                F.countDistinct("doc").alias("docs"),
            ).collect()[0]
        n_partitions = lines.rdd.getNumPartitions()
    kept = int(written["ids"] or 0)
    if kept == 0:
        raise InputError(f"{cfg.input.path}: no in-vocabulary token in the corpus")
    total_tokens = counts["tokens"]
    oov_rate = 1.0 - kept / total_tokens if total_tokens else 0.0
    n_files = len(_list_parquet(tmp))
    rate = total_tokens / max(t.seconds, 1e-9)
    summary = (
        f"{human_count(kept)} ids in {human_count(int(written['docs']))} documents "
        f"({human_count(int(written['rows']))} rows, {n_files} files), OOV rate {oov_rate:.2%}, "
        f"in {t.seconds:.1f}s ({human_count(rate)} tokens/s, {n_partitions} partitions)"
    )
    record = run_dir.commit("encode", tmp, {
        "fingerprint": fp,
        "config": {"encode": to_dict(cfg.encode)},
        "inputs": {"files": files, "vocab": vocab_rec["fingerprint"]},
        "counts": {
            "kept_tokens": kept, "documents": int(written["docs"]),
            "rows": int(written["rows"]), "files": n_files, "oov_rate": round(oov_rate, 6),
            "input_partitions": n_partitions,
        },
        "timings": {"seconds": round(t.seconds, 3), "tokens_per_second": round(rate)},
        "summary": summary,
    })
    logger.info("encode   %s", summary)
    return StageResult("encode", False, record, t.seconds, summary)


def _list_parquet(uri: str) -> list[str]:
    return [p for p, _ in fsutil.list_files(uri) if p.endswith(".parquet")]


def corpus_path(run_dir: RunDir) -> str:
    """Spark URI of a finished run's encoded corpus dataset."""
    run_dir.require("encode")
    return run_dir.spark_path("corpus")
