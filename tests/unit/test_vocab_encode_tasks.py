"""Task-side pieces of vocab and encode, without Spark: partial counts, filtering, writing."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe import schemas
from embedpipe.config import load_config
from embedpipe.stages import encode, vocab


def _batches(lines: list[str], per_batch: int) -> list[pa.RecordBatch]:
    out = []
    for s in range(0, len(lines), per_batch):
        chunk = lines[s : s + per_batch]
        out.append(pa.RecordBatch.from_pydict({
            "raw": pa.array([x.encode() for x in chunk], pa.binary()),
            "file": pa.array(["f"] * len(chunk)),
            "block": pa.array([0] * len(chunk), pa.int64()),
        }))
    return out


@pytest.fixture
def lines() -> list[str]:
    rng = np.random.default_rng(3)
    words = [f"w{k}" for k in range(500)]
    p = 1.0 / np.arange(1, 501)
    p /= p.sum()
    return [" ".join(rng.choice(words, size=rng.integers(0, 30), p=p)) for _ in range(2000)]


@pytest.mark.parametrize("chunk,merge", [(10**9, 10**9), (100, 50), (1000, 10**9)])
def test_partial_counts_sum_to_counter(monkeypatch, lines, chunk, merge):
    # Small chunk / merge budgets force many value_counts chunks and early merges.
    monkeypatch.setattr(vocab, "CHUNK_TOKENS", chunk)
    monkeypatch.setattr(vocab, "MERGE_ROWS", merge)
    vcfg = load_config(None, ["vocab.tokenizer=whitespace"]).vocab
    got: collections.Counter[str] = collections.Counter()
    meta = {}
    for b in vocab.count_batches(_batches(lines, 97), vcfg):
        for k, key, n in zip(*(b.column(c).to_pylist() for c in ("kind", "key", "count")),
                             strict=True):
            if k == vocab.KIND_TOKEN:
                got[key] += n
            else:
                meta[key] = n
    want = collections.Counter(w for x in lines for w in x.split())
    assert got == want
    assert meta["tokens"] == sum(want.values())
    assert meta["documents"] == len(lines)


def test_keep_batches_filters_tokens_and_summarises():
    batch = pa.RecordBatch.from_pydict({
        "kind": pa.array([0, 0, 0, 1, 2], pa.int8()),
        "key": ["a", "b", "c", "tokens", "f\x000"],
        "count": pa.array([5, 2, 9, 16, 3], pa.int64()),
    }, schema=vocab._COUNTS_SCHEMA)
    out = pa.Table.from_batches(list(vocab.keep_batches([batch], min_count=5))).to_pylist()
    keys = [(r["kind"], r["key"], r["count"]) for r in out]
    assert (0, "b", 2) not in keys
    assert {(0, "a", 5), (0, "c", 9), (1, "tokens", 16), (2, "f\x000", 3)} <= set(keys)
    summary = {r["key"]: r["count"] for r in out if r["kind"] == vocab.KIND_SUMMARY}
    assert summary == {"distinct": 3, "max_count": 9}


def _corpus_batch(docs: list[int], lengths: list[int], start: int) -> pa.RecordBatch:
    ids = np.arange(start, start + sum(lengths), dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.RecordBatch.from_arrays(
        [pa.array(docs, pa.int64()), pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))],
        schema=schemas.CORPUS)


def test_corpus_writer_rolls_files_and_leaves_no_temporaries(tmp_path):
    w = encode.CorpusWriter(str(tmp_path), partition=7, file_tokens=10)
    w.write(_corpus_batch([0, 1], [4, 4], 0))  # 8 ids: file 0 stays open
    w.write(_corpus_batch([2], [5], 8))  # 13 ids: file 0 closes
    w.write(_corpus_batch([3, 4], [1, 2], 13))  # file 1, closed by close()
    summary = w.close().to_pylist()[0]
    assert summary == {"partition": 7, "files": 2, "rows": 5, "ids": 16}
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [encode.part_name(7, 0), encode.part_name(7, 1)]
    first = pq.ParquetFile(tmp_path / names[0])
    assert first.metadata.num_row_groups == 2  # one row group per batch
    table = pa.concat_tables(pq.read_table(tmp_path / n) for n in names)
    assert table.column("doc").to_pylist() == [0, 1, 2, 3, 4]
    assert table.column("ids").combine_chunks().flatten().to_pylist() == list(range(16))


def test_corpus_writer_retry_overwrites_same_names(tmp_path):
    # A retried task attempt writes the same file names with the same content.
    for attempt in (1, 2):
        w = encode.CorpusWriter(str(tmp_path), partition=0, file_tokens=100, attempt=attempt)
        w.write(_corpus_batch([0], [3], 0))
        w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [encode.part_name(0, 0)]
