"""The bad-input matrix (issue 10): every case gets a one-line error naming the problem,
or is handled as documented, and nothing half-written is ever marked finished.

README "Troubleshooting" lists the same errors.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe import fsutil
from embedpipe.config import load_config
from embedpipe.errors import ArtifactVersionError, ConfigError, EmbedpipeError, InputError
from embedpipe.runs import RunDir
from embedpipe.stages import encode, vocab
from embedpipe.vectors import Vectors


def _cfg(path, *overrides):
    return load_config(None, [f"input.path={path}", *overrides])


def _one_line(e: pytest.ExceptionInfo, message: str) -> None:
    text = str(e.value)
    assert message in text, text
    assert "\n" not in text


# ------------------------------------------------------------------ the corpus


def _write(target, setup):
    if setup == "empty_dir":
        target.mkdir()
    elif setup == "zero_byte":
        target.mkdir()
        (target / "a.txt").write_bytes(b"")
        (target / "b.txt").write_bytes(b"")
    elif setup == "punctuation":
        target.write_text("... !!! ???\n-- ,,, ;;\n")
    elif setup == "rare":
        target.write_text("one two three\nfour five\n")
    elif setup == "binary":
        rng = np.random.default_rng(0)
        target.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 200_000, np.uint8).tobytes())
    elif setup == "parquet_no_col":
        pq.write_table(pa.table({"body": ["a b c"]}), str(target))
    elif setup == "parquet_int_col":
        pq.write_table(pa.table({"text": [1, 2]}), str(target))


@pytest.mark.parametrize(("setup", "overrides", "message"), [
    ("missing", [], "input path does not exist"),
    ("empty_dir", [], "no input files found"),
    ("zero_byte", [], "the corpus is empty"),
    ("punctuation", [], "but no tokens"),
    ("binary", [], "does not look like text"),
    ("rare", ["vocab.min_count=50"], "vocab.min_count = 50 removes every token"),
    ("parquet_no_col", ["input.format=parquet"], "has no column 'text'"),
    ("parquet_int_col", ["input.format=parquet"], "column 'text' has type bigint"),
])
def test_bad_corpus(spark, tmp_path, setup, overrides, message):
    target = tmp_path / "in"
    _write(target, setup)
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(InputError) as e:
        vocab.run(spark, _cfg(target, *overrides), run)
    _one_line(e, message)
    assert run.record("vocab") is None
    assert not fsutil.exists(run.path("vocab"))


def test_invalid_utf8_and_nul_bytes_are_handled(spark, tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"caf\xe9 ok\nok \xff\xfe fine\nnul\x00separated words ok\n")
    run = RunDir(str(tmp_path / "run"))
    vocab.run(spark, _cfg(path, "vocab.min_count=1"), run)
    encode.run(spark, _cfg(path, "vocab.min_count=1"), run)
    counts = run.record("vocab")["counts"]
    assert counts["invalid_utf8"] == 3  # replaced and counted, not fatal
    tokens = set(vocab.read_vocab(run).column("token").to_pylist())
    # NUL separates tokens in the default (regex) tokenizer.
    assert {"nul", "separated", "ok", "fine", "caf"} <= tokens
    assert not any("\x00" in t for t in tokens)


def test_a_1mb_token_is_dropped_and_counted(spark, tmp_path):
    path = tmp_path / "long-token.txt"
    path.write_text("alpha beta " + "x" * (1 << 20) + " gamma\nalpha beta\n")
    run = RunDir(str(tmp_path / "run"))
    vocab.run(spark, _cfg(path, "vocab.min_count=1"), run)
    assert run.record("vocab")["counts"]["long_tokens_dropped"] == 1
    assert set(vocab.read_vocab(run).column("token").to_pylist()) == {"alpha", "beta", "gamma"}


@pytest.mark.slow
def test_a_200mb_line_is_split_into_documents(spark, tmp_path):
    n = 34_000_000  # ~200 MB on one line, no newline at the end
    words = np.array(["alpha", "beta", "gamma", "delta"])
    (tmp_path / "long.txt").write_text(" ".join(words[np.arange(n) % 4]))
    cfg = _cfg(tmp_path / "long.txt", "vocab.min_count=1")
    run = RunDir(str(tmp_path / "run"))
    vocab.run(spark, cfg, run)
    encode.run(spark, cfg, run)
    rec = run.record("encode")["counts"]
    assert rec["kept_tokens"] == n and rec["rows"] == -(-n // 10000)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(("overrides", "message"), [
    (["vocab.min_cout=3"], "unknown config key 'vocab.min_cout' (did you mean"),
    (["glove.dim=0"], "glove.dim = 0 is out of range"),
    (["word2vec.dim=0"], "word2vec.dim = 0 is out of range"),
    (["cooccur.window=0"], "cooccur.window = 0 is out of range"),
    (["word2vec.window=0"], "word2vec.window = 0 is out of range"),
    (["glove.eta=-0.05"], "glove.eta = -0.05 is out of range"),
    (["word2vec.alpha=-0.1"], "word2vec.alpha = -0.1 is out of range"),
    (["svd.eig=2"], "svd.eig = 2.0 must be one of"),
    (["glove.epochs=many"], "glove.epochs"),
])
def test_bad_config(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    _one_line(e, message)


def test_config_file_typo(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("[vocab]\nmin_count = 3\n[glov]\ndim = 50\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(conf))
    _one_line(e, "unknown config table [glov]")


# ------------------------------------------------------------------ artifacts


def test_truncated_and_malformed_vectors_files(tmp_path):
    v = Vectors(["a", "b", "c"], np.arange(12, dtype=np.float32).reshape(3, 4))
    binary = tmp_path / "v.bin"
    v.save_word2vec(str(binary), binary=True)
    data = binary.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 7])
    with pytest.raises(InputError) as e:
        Vectors.load(str(tmp_path / "cut.bin"), "word2vec-binary")
    _one_line(e, "cut.bin")
    text = tmp_path / "v.txt"
    text.write_text("3 4\na 1 2 3 4\nb 1 2 3\nc 1 2 3 4\n")
    with pytest.raises(InputError) as e:
        Vectors.load(str(text), "word2vec")
    _one_line(e, "v.txt:3")


def test_run_directory_from_another_version(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    fsutil.write_text_atomic(run.path("manifest.json"),
                             json.dumps({"format_version": 999, "stages": {}}))
    with pytest.raises(ArtifactVersionError) as e:
        run.manifest()
    _one_line(e, "format_version 999")
    fsutil.write_text_atomic(run.path("manifest.json"), "{not json")
    with pytest.raises(ArtifactVersionError) as e:
        RunDir(str(tmp_path / "run")).manifest()
    _one_line(e, "manifest is not valid JSON")


@pytest.fixture(scope="module")
def tiny_run(spark, tmp_path_factory):
    from embedpipe.stages import cooccur
    from tests.conftest import SAMPLE, head_lines

    root = tmp_path_factory.mktemp("bad-artifacts")
    (root / "c.txt").write_text("\n".join(head_lines(SAMPLE, 400)) + "\n")
    cfg = _cfg(root / "c.txt", "vocab.min_count=3", "cooccur.shards=2", "cooccur.window=3")
    run = RunDir(str(root / "run"))
    for stage in (vocab, encode, cooccur):
        stage.run(spark, cfg, run)
    return cfg, run


def test_corrupted_and_missing_cooc_shard(tiny_run):
    from embedpipe import cooccur as cooc

    _, run = tiny_run
    files = sorted(p for p, _ in fsutil.list_files(run.path("cooc")) if p.endswith(".parquet"))
    shard = files[0]
    good = fsutil.read_bytes(shard)
    try:
        fsutil.write_bytes_atomic(shard, good[: len(good) // 2])
        with pytest.raises(EmbedpipeError) as e:
            cooc.read_shard(run, 0)
        assert "\n" not in str(e.value) and "shard" in str(e.value)
        fsutil.remove(shard)
        with pytest.raises(EmbedpipeError) as e:
            cooc.read_shard(run, 0)
        assert "\n" not in str(e.value)
    finally:
        fsutil.write_bytes_atomic(shard, good)


@pytest.mark.parametrize("stage,setting", [("svd", "svd.dim"), ("glove", "glove.dim"),
                                           ("word2vec", "word2vec.dim")])
def test_vocabulary_smaller_than_the_dimension(spark, tiny_run, stage, setting):
    import importlib

    cfg, run = tiny_run
    V = run.record("vocab")["counts"]["vocab_size"]
    cfg = load_config(None, [f"input.path={cfg.input.path}", "vocab.min_count=3",
                             "cooccur.shards=2", "cooccur.window=3", f"{setting}={V + 1}"])
    mod = importlib.import_module(f"embedpipe.stages.{stage}")
    with pytest.raises(EmbedpipeError) as e:
        mod.run(spark, cfg, run)
    _one_line(e, setting)
    assert run.record(stage) is None


def test_more_shards_than_words(spark, tiny_run):
    # Shard k holds the rows i with i mod S = k: S > V means empty shards by construction.
    from embedpipe.stages import cooccur

    cfg, run = tiny_run
    V = run.record("vocab")["counts"]["vocab_size"]
    before = run.record("cooccur")
    settings = ["vocab.min_count=3", "cooccur.window=3", f"cooccur.shards={V + 1}"]
    cfg = load_config(None, [f"input.path={cfg.input.path}", *settings])
    with pytest.raises(ConfigError) as e:
        cooccur.run(spark, cfg, run)
    _one_line(e, f"cooccur.shards = {V + 1} exceeds the vocabulary")
    assert run.record("cooccur") == before  # the finished matrix is untouched


def test_fewer_entries_than_shards(spark, tmp_path):
    # 10 words, one co-occurring pair, 8 shards: most shards are empty, which the matrix
    # readers and both trainers of cooc/ accept.
    from embedpipe import cooccur as cooc
    from embedpipe.stages import cooccur, glove, svd

    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"w{i}" for i in range(10)) + "\nw0 w1\n")
    opts = ["vocab.min_count=1", "cooccur.shards=8", "cooccur.window=2", "glove.dim=2"]
    opts += ["glove.epochs=1", "svd.dim=2", "svd.oversample=2", "svd.power_iters=1"]
    cfg = _cfg(path, *opts)
    run = RunDir(str(tmp_path / "run"))
    for stage in (vocab, encode, cooccur):
        stage.run(spark, cfg, run)
    meta = cooc.info(run)
    assert meta.vocab_size == 10 and meta.nnz == 2 and meta.shard_nnz.count(0) == 6
    for k in range(meta.shards):
        m = cooc.read_shard(run, k)
        assert m.shape == (len(meta.rows(k)), 10) and m.nnz == meta.shard_nnz[k]
    glove.run(spark, cfg, run)
    svd.run(spark, cfg, run)
    for model in ("glove", "svd"):
        v = Vectors.load_model_dir(run.path(model))
        assert v.vectors.shape == (10, 2) and np.isfinite(v.vectors).all()
