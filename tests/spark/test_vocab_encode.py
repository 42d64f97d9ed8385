"""vocab and encode on real text: exact counts, exact round trip, determinism, bad input."""

from __future__ import annotations

import collections
import gzip
import io

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from embedpipe import fsutil
from embedpipe.cli import main as cli_main
from embedpipe.config import load_config
from embedpipe.runs import RunDir
from embedpipe.stages import encode, vocab
from embedpipe.stages.tokenize import reference_tokenize
from tests.conftest import EN_OPEN_TOK, SAMPLE, head_lines, needs_shared


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def cfg_for(path, *overrides):
    return load_config(None, [f"input.path={path}", *overrides])


def run_both(spark, cfg, run_dir):
    run = RunDir(str(run_dir))
    vocab.run(spark, cfg, run)
    encode.run(spark, cfg, run)
    return run


def read_corpus(run):
    """(doc, ids) rows in corpus order: files in any order, stable sort by doc."""
    table = ds.dataset(run.path("corpus"), format="parquet").to_table()
    order = np.argsort(table.column("doc").to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    return table.column("doc").to_pylist(), table.column("ids").to_pylist()


def vocab_table(run):
    return pq.read_table(io.BytesIO(fsutil.read_bytes(run.path("vocab", "vocab.parquet"))))


@pytest.fixture(scope="module")
def sample_lines():
    return head_lines(SAMPLE, 4000)


def test_counts_and_round_trip_regex(spark, tmp_path, sample_lines):
    path = write_lines(tmp_path / "sample.txt", sample_lines)
    cfg = cfg_for(path, "vocab.min_count=3", "encode.max_doc_tokens=7")
    run = run_both(spark, cfg, tmp_path / "run")
    per_line = [reference_tokenize(line) for line in sample_lines]
    counter = collections.Counter(t for toks in per_line for t in toks)
    table = vocab_table(run)
    expected = sorted(((t, c) for t, c in counter.items() if c >= 3), key=lambda x: (-x[1], x[0]))
    assert table.column("token").to_pylist() == [t for t, _ in expected]
    assert table.column("count").to_pylist() == [c for _, c in expected]
    assert table.column("id").to_pylist() == list(range(len(expected)))
    # Decoding the corpus gives every line's tokens minus OOV, lines as documents.
    tokens = table.column("token").to_pylist()
    docs, ids = read_corpus(run)
    got: dict[int, list[str]] = collections.defaultdict(list)
    for d, row in zip(docs, ids, strict=True):
        assert 1 <= len(row) <= 7
        got[d].extend(tokens[i] for i in row)
    kept = {t for t, _ in expected}
    want = {n: [t for t in toks if t in kept] for n, toks in enumerate(per_line)}
    assert dict(got) == {n: toks for n, toks in want.items() if toks}
    rec = run.record("encode")
    assert rec["counts"]["kept_tokens"] == sum(len(v) for v in want.values())
    assert run.record("vocab")["counts"]["tokens"] == sum(counter.values())


@needs_shared(EN_OPEN_TOK)
def test_whitespace_counts_equal_counter_on_en_open(spark, tmp_path):
    lines = head_lines(EN_OPEN_TOK, 20000)
    path = tmp_path / "tok.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    cfg = cfg_for(str(path), "vocab.tokenizer=whitespace", "vocab.min_count=1",
                  "vocab.max_token_chars=100000")
    run = run_both(spark, cfg, tmp_path / "run")
    counter = collections.Counter(t for line in lines for t in line.split())
    table = vocab_table(run)
    assert dict(zip(table.column("token").to_pylist(), table.column("count").to_pylist(),
                    strict=True)) == dict(counter)
    tokens = table.column("token").to_pylist()
    _, ids = read_corpus(run)
    assert [tokens[i] for row in ids for i in row] == [t for line in lines for t in line.split()]


def test_same_output_for_1_3_8_partitions(spark, tmp_path, sample_lines):
    path = write_lines(tmp_path / "sample.txt", sample_lines)
    vocab_bytes, corpora = [], []
    for n in (1, 3, 8):
        cfg = cfg_for(path, f"input.partitions={n}", "encode.max_doc_tokens=50")
        run = run_both(spark, cfg, tmp_path / f"run{n}")
        assert run.record("vocab")["counts"]["input_partitions"] >= n
        vocab_bytes.append(fsutil.read_bytes(run.path("vocab", "vocab.parquet")))
        corpora.append(read_corpus(run))
    assert vocab_bytes[0] == vocab_bytes[1] == vocab_bytes[2]
    assert corpora[0] == corpora[1] == corpora[2]


def test_direct_reader_equals_spark_reader(spark, tmp_path, sample_lines):
    """Python tasks reading byte ranges (and gzip) give Spark's lines, numbers and counts."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a b.txt").write_bytes("\n".join(sample_lines[:1500]).encode() + b"\r\n\n\nend")
    (d / "b.txt").write_bytes(b"")
    (d / "c.txt.gz").write_bytes(gzip.compress(
        "caf\u00e9 na\u00efve \u4e2d\u6587\n".encode() * 50 + b"bad \xff\xfe bytes\n"
        + "\n".join(sample_lines[1500:]).encode()))
    outs = {}
    for reader, parts in (("spark", 0), ("direct", 0), ("direct", 7)):
        cfg = cfg_for(str(d), f"input.reader={reader}", f"input.partitions={parts}",
                      "vocab.min_count=2", "encode.max_doc_tokens=40")
        run = run_both(spark, cfg, tmp_path / f"run-{reader}-{parts}")
        rec = run.record("vocab")["counts"]
        assert rec["invalid_utf8"] == 2 and rec["documents"] == (1500 + 3) + (50 + 1 + 2500)
        outs[(reader, parts)] = (fsutil.read_bytes(run.path("vocab", "vocab.parquet")),
                                 read_corpus(run), rec)
    ref = outs[("spark", 0)]
    for key, out in outs.items():
        assert out[0] == ref[0], key
        assert out[1] == ref[1], key
        assert {k: v for k, v in out[2].items() if k != "input_partitions"} == {
            k: v for k, v in ref[2].items() if k != "input_partitions"}, key
    # a.txt is cut into ranges; the .gz file is read whole by one task, as Spark does
    assert outs[("direct", 7)][2]["input_partitions"] > outs[("direct", 0)][2]["input_partitions"]


def test_second_run_skips_and_force_reruns(spark, tmp_path, sample_lines):
    path = write_lines(tmp_path / "s.txt", sample_lines[:500])
    cfg = cfg_for(path, "vocab.min_count=2")
    run = RunDir(str(tmp_path / "run"))
    assert not vocab.run(spark, cfg, run).skipped
    assert vocab.run(spark, cfg, run).skipped
    assert not vocab.run(spark, cfg, run, force=True).skipped
    assert not vocab.run(spark, cfg_for(path, "vocab.min_count=3"), run).skipped


def test_parquet_input_and_invalid_utf8(spark, tmp_path):
    pq.write_table(pa.table({"body": ["Alpha beta", "beta gamma", None, "beta"]}),
                   str(tmp_path / "in.parquet"))
    cfg = cfg_for(str(tmp_path / "in.parquet"), "input.format=parquet",
                  "input.text_column=body", "vocab.min_count=1")
    run = run_both(spark, cfg, tmp_path / "run")
    assert vocab_table(run).column("token").to_pylist() == ["beta", "alpha", "gamma"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 ok\nok \xff\xfe\x00 fine\n")
    run = RunDir(str(tmp_path / "run2"))
    vocab.run(spark, cfg_for(str(bad), "vocab.min_count=1"), run)
    assert run.record("vocab")["counts"]["invalid_utf8"] == 3
    assert set(vocab_table(run).column("token").to_pylist()) == {"ok", "fine", "caf"}


def long_line_case(spark, tmp_path, n_tokens):
    words = np.array(["alpha", "beta", "gamma", "delta"])
    line = " ".join(words[np.arange(n_tokens) % 4])  # no newline at the end
    path = tmp_path / "long.txt"
    path.write_text(line)
    cfg = cfg_for(str(path), "vocab.min_count=1")
    run = run_both(spark, cfg, tmp_path / "run")
    docs, ids = read_corpus(run)
    assert set(docs) == {0}
    assert len(ids) == -(-n_tokens // 10000) and max(len(r) for r in ids) == 10000
    assert sum(len(r) for r in ids) == n_tokens


def test_long_line_is_split_into_documents(spark, tmp_path):
    long_line_case(spark, tmp_path, 400_000)  # 2.4 MB on one line


def test_cli_run_and_errors(spark, tmp_path, capsys, sample_lines):
    path = write_lines(tmp_path / "s.txt", sample_lines[:300])
    out = str(tmp_path / "run")
    assert cli_main(["run", "--input", path, "--out", out, "--stages", "vocab,encode",
                     "--set", "vocab.min_count=2"]) == 0
    assert "Run directory" in capsys.readouterr().out
    assert cli_main(["vocab", "--input", path, "--out", out, "--set", "vocab.min_cnt=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("embedpipe: error: unknown config key 'vocab.min_cnt' "
                   "(did you mean 'vocab.min_count'?)")
    assert cli_main(["encode", "--input", path, "--out", str(tmp_path / "fresh")]) == 2
    assert "stage 'vocab' has not finished" in capsys.readouterr().err


def test_encode_recounts_when_splits_differ(spark, tmp_path, sample_lines):
    path = write_lines(tmp_path / "sample.txt", sample_lines[:2000])
    reference = run_both(spark, cfg_for(path), tmp_path / "ref")
    run = RunDir(str(tmp_path / "run"))
    vocab.run(spark, cfg_for(path, "input.partitions=1"), run)
    encode.run(spark, cfg_for(path, "input.partitions=5"), run)
    assert run.record("encode")["counts"]["lines_recounted"] is True
    assert reference.record("encode")["counts"]["lines_recounted"] is False
    assert read_corpus(run) == read_corpus(reference)


def test_directory_and_glob_of_plain_gz_bz2(spark, tmp_path, sample_lines):
    import bz2

    d = tmp_path / "corpus"
    d.mkdir()
    parts = [sample_lines[:700], sample_lines[700:1400], sample_lines[1400:2000]]
    (d / "a.txt").write_text("\n".join(parts[0]) + "\n")
    with gzip.open(d / "b.txt.gz", "wt") as f:
        f.write("\n".join(parts[1]) + "\n")
    (d / "c.txt.bz2").write_bytes(bz2.compress(("\n".join(parts[2]) + "\n").encode()))
    (d / "skip.log").write_text("not matched by the glob\n")
    expected = collections.Counter(t for p in parts for line in p for t in reference_tokenize(line))
    for target in (str(d / "*.txt*"), str(d)):
        run = RunDir(str(tmp_path / f"run{len(target)}"))
        vocab.run(spark, cfg_for(target, "vocab.min_count=1"), run)
        table = vocab_table(run)
        got = dict(zip(table.column("token").to_pylist(), table.column("count").to_pylist(),
                       strict=True))
        if target == str(d):  # the directory also holds skip.log
            got["matched"] -= 1
            for t in ("not", "by", "the", "glob"):
                got[t] -= 1
            got = {t: c for t, c in got.items() if c}
        assert got == dict(expected)
        assert len(run.record("vocab")["inputs"]["files"]) == (3 if "*" in target else 4)
