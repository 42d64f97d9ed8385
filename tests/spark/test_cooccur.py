"""The cooccur stage on real text: equals a double-loop reference, independent of partitions
and shards, GloVe's semantics on a hand-computed corpus, readers and their errors."""

from __future__ import annotations

import collections
import gzip
import json
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from embedpipe import cooccur as C
from embedpipe import fsutil
from embedpipe.config import Config, CooccurConfig, load_config
from embedpipe.errors import InputError, ResourceError, StageNotFinishedError
from embedpipe.kernels import cooccur as K
from embedpipe.runs import RunDir
from embedpipe.stages import cooccur, encode, vocab
from embedpipe.stages.tokenize import reference_tokenize
from tests.conftest import EN_OPEN_TOK, SAMPLE, head_lines, needs_shared

# ---------------------------------------------------------------- reference and helpers


def reference(docs, window, weighting="harmonic"):
    """glove.c's cooccur as a plain double loop over documents, float64 accumulation."""
    X = collections.defaultdict(float)
    for doc in docs:
        for p in range(len(doc)):
            for q in range(max(0, p - window), min(len(doc), p + window + 1)):
                if q != p:
                    X[(doc[p], doc[q])] += 1.0 / abs(p - q) if weighting == "harmonic" else 1.0
    return dict(X)


def as_dict(m):
    coo = m.tocoo()
    return {(int(i), int(j)): float(x) for i, j, x in zip(coo.row, coo.col, coo.data, strict=True)}


def assert_matches(m, ref):
    """Same entries; every value within 1e-6 (relative) of the float64 reference."""
    got = as_dict(m)
    assert got.keys() == ref.keys()
    want = np.array([ref[k] for k in ref])
    have = np.array([got[k] for k in ref])
    assert np.all(np.abs(have - want) <= 1e-6 * want)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def vocab_index(run):
    table = vocab.read_vocab(run)
    return dict(zip(table.column("token").to_pylist(), table.column("id").to_pylist(), strict=True))


def reference_docs(lines, run, tokenizer="regex", max_doc_tokens=10000):
    """Documents as the contract defines them: lines, OOV removed, cut every max_doc_tokens."""
    index = vocab_index(run)
    docs = []
    for line in lines:
        ids = [index[t] for t in reference_tokenize(line, tokenizer) if t in index]
        docs.extend(ids[s : s + max_doc_tokens] for s in range(0, len(ids), max_doc_tokens))
    return docs


@dataclass
class Base:
    """A run directory with vocab and encode done, and its reference documents."""

    cfg: Config
    run: RunDir
    docs: list[list[int]]
    V: int


def make_base(spark, root, lines, *overrides, tokenizer="regex", max_doc_tokens=10000):
    path = write_lines(root / "corpus.txt", lines)
    cfg = load_config(
        None,
        [
            f"input.path={path}",
            f"vocab.tokenizer={tokenizer}",
            f"encode.max_doc_tokens={max_doc_tokens}",
            *overrides,
        ],
    )
    run = RunDir(str(root / "base"))
    vocab.run(spark, cfg, run)
    encode.run(spark, cfg, run)
    docs = reference_docs(lines, run, tokenizer, max_doc_tokens)
    return Base(cfg, run, docs, run.record("vocab")["counts"]["vocab_size"])


def cooc_run(spark, base, root, name, *overrides):
    """Copy the base run and run cooccur on it with ``overrides``."""
    target = root / name
    shutil.copytree(base.run.uri, target)
    run = RunDir(str(target))
    result = cooccur.run(spark, load_config(None, list(overrides), base=base.cfg), run)
    assert not result.skipped
    return run


@pytest.fixture(scope="module")
def sample(spark, tmp_path_factory):
    """1500 lines of the vendored sample, min_count 2 (so OOV removal matters), many files."""
    root = tmp_path_factory.mktemp("cooc_sample")
    return make_base(
        spark, root, head_lines(SAMPLE, 1500), "vocab.min_count=2", "encode.file_tokens=1000"
    )


@pytest.fixture(scope="module")
def pieces(spark, tmp_path_factory):
    """Documents cut into 7-token rows spread over ~40 files: documents cross partitions."""
    root = tmp_path_factory.mktemp("cooc_pieces")
    return make_base(
        spark,
        root,
        head_lines(SAMPLE, 1200)[200:],
        "vocab.min_count=2",
        "encode.file_tokens=1000",
        max_doc_tokens=7,
    )


@pytest.fixture(scope="module")
def sample_run(spark, sample, tmp_path_factory):
    """The default settings (harmonic, window 10) on the sample: shared by reader tests."""
    return cooc_run(
        spark, sample, tmp_path_factory.mktemp("cooc_default"), "run", "cooccur.shards=4"
    )


# ---------------------------------------------------------------- exactness


#: (window, weighting, S) of the exactness runs. The default suite covers every window,
#: both weightings and S = 1, 3, 4, 16; `make test-all` adds the other combinations
#: (the kernel tests check every window x weighting against the reference too).
EXACTNESS_RUNS = [
    (1, "harmonic", 1),
    (2, "uniform", 4),
    (5, "harmonic", 16),
    (10, "uniform", 3),
    *(
        pytest.param(w, g, s, marks=pytest.mark.slow)
        for w, g, s in [
            (1, "uniform", 1),
            (2, "harmonic", 4),
            (5, "uniform", 16),
            (10, "harmonic", 3),
        ]
    ),
]


@pytest.mark.parametrize(("window", "weighting", "S"), EXACTNESS_RUNS)
def test_equals_double_loop_reference(spark, sample, tmp_path, weighting, window, S):
    run = cooc_run(
        spark,
        sample,
        tmp_path,
        "run",
        f"cooccur.window={window}",
        f"cooccur.weighting={weighting}",
        f"cooccur.shards={S}",
    )
    m = C.read_matrix(run)
    ref = reference(sample.docs, window, weighting)
    assert_matches(m, ref)
    assert (m != m.T).nnz == 0
    rec = run.record("cooccur")["counts"]
    assert rec["nnz"] == len(ref) and rec["window"] == window and rec["weighting"] == weighting
    assert rec["shards"] == S and len(rec["shard_nnz"]) == S
    assert rec["tokens"] == sum(len(d) for d in sample.docs)
    assert rec["sum_x"] == pytest.approx(sum(ref.values()), rel=1e-6)


def tasks_of_docs(run, parts):
    """{doc: map tasks reading one of its rows} for ``input.partitions=parts``."""
    tasks = cooccur.plan_slices(cooccur.corpus_row_groups(run.path("corpus")), parts)
    seen = collections.defaultdict(set)
    for t, slices in enumerate(tasks):
        for batch in cooccur.read_slices(slices):
            for d in batch.column("doc").to_pylist():
                seen[d].add(t)
    return seen


def test_same_files_for_1_3_8_partitions(spark, pieces, tmp_path):
    # Lines cut into several rows whose rows fall into different map tasks: a line's
    # pieces are counted by different tasks (windows stop at the cuts either way).
    for parts in (3, 8):
        assert max(len(t) for t in tasks_of_docs(pieces.run, parts).values()) > 1
    ref = reference(pieces.docs, 10)
    shard_bytes = {}
    for parts, S in [(1, 4), (3, 4), (8, 4), (3, 16)]:
        run = cooc_run(
            spark,
            pieces,
            tmp_path,
            f"p{parts}s{S}",
            f"input.partitions={parts}",
            f"cooccur.shards={S}",
        )
        rec = run.record("cooccur")["counts"]
        assert rec["shards"] == S
        assert rec["map_tasks"] >= parts and (parts > 1 or rec["map_tasks"] == 1)
        assert_matches(C.read_matrix(run), ref)
        for k in range(S):
            i = pq.read_table(run.path("cooc", C.shard_file(k))).column("i").to_numpy()
            assert np.all(i % S == k)
        if S == 4:
            shard_bytes[parts] = [fsutil.read_bytes(C.shard_uri(run, k)) for k in range(S)]
    # Fixed row groups and exact sums: the files do not depend on the partitioning.
    assert shard_bytes[1] == shard_bytes[3] == shard_bytes[8]


@needs_shared(EN_OPEN_TOK)
def test_en_open_equals_reference_with_documents_across_partitions(spark, tmp_path):
    lines = head_lines(EN_OPEN_TOK, 3000)
    gz = tmp_path / "tok.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    cfg = load_config(
        None,
        [
            f"input.path={gz}",
            "vocab.tokenizer=whitespace",
            "vocab.min_count=2",
            "encode.max_doc_tokens=10",
            "encode.file_tokens=2000",
            "input.partitions=7",
            "cooccur.shards=4",
            "cooccur.memory_mb=16",
        ],
    )
    run = RunDir(str(tmp_path / "run"))
    for stage in (vocab, encode, cooccur):
        stage.run(spark, cfg, run)
    assert run.record("cooccur")["counts"]["map_tasks"] >= 7
    # Long lines were cut into 10-token rows, and some line's rows went to two tasks.
    assert max(len(t) for t in tasks_of_docs(run, 7).values()) > 1
    docs = reference_docs(lines, run, "whitespace", 10)
    assert_matches(C.read_matrix(run), reference(docs, 10))


# ---------------------------------------------------------------- GloVe semantics by hand


def test_glove_semantics_on_a_hand_computed_corpus(spark, tmp_path):
    # min_count 2 drops "x": b and c become neighbours in line 3 (OOV removed before
    # windowing); lines are boundaries (c of line 1 never meets a of line 2); "a a"
    # adds 1 to X[a, a] from each side, as glove.c does.
    base = make_base(
        spark, tmp_path, ["a b c", "a a", "b x c"], "vocab.min_count=2", tokenizer="whitespace"
    )
    idx = vocab_index(base.run)
    a, b, c = idx["a"], idx["b"], idx["c"]
    assert "x" not in idx
    harmonic = {(a, b): 1, (b, a): 1, (b, c): 2, (c, b): 2, (a, c): 0.5, (c, a): 0.5, (a, a): 2}
    for name, overrides, want in [
        ("h2", ["cooccur.window=2"], harmonic),
        (
            "u2",
            ["cooccur.window=2", "cooccur.weighting=uniform"],
            {**harmonic, (a, c): 1, (c, a): 1},
        ),
        (
            "h1",
            ["cooccur.window=1", "cooccur.shards=2"],
            {key: v for key, v in harmonic.items() if key not in ((a, c), (c, a))},
        ),
    ]:
        run = cooc_run(spark, base, tmp_path, name, *overrides)
        assert as_dict(C.read_matrix(run)) == want, name


# ---------------------------------------------------------------- options


def test_min_x_drops_small_entries(spark, sample, tmp_path):
    run = cooc_run(spark, sample, tmp_path, "run", "cooccur.min_x=0.75", "cooccur.window=5")
    ref = {k: v for k, v in reference(sample.docs, 5).items() if v >= 0.75}
    assert_matches(C.read_matrix(run), ref)


def test_dynamic_window_and_subsampling_are_the_kernels_and_seeded(spark, pieces, tmp_path):
    opts = ["cooccur.dynamic_window=true", "cooccur.subsample=1e-3", "cooccur.window=5"]
    a = C.read_matrix(cooc_run(spark, pieces, tmp_path, "a", *opts, "input.partitions=1"))
    b = C.read_matrix(
        cooc_run(spark, pieces, tmp_path, "b", *opts, "input.partitions=5", "cooccur.shards=3")
    )
    c = C.read_matrix(cooc_run(spark, pieces, tmp_path, "c", *opts, "cooccur.seed=2"))
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0
    # The stage adds nothing to the kernel: one kernel call over all rows gives the same.
    table = ds.dataset(pieces.run.path("corpus"), format="parquet").to_table()
    counts = vocab.read_vocab(pieces.run).column("count").to_numpy()
    blocks = K.count_arrow_lists(
        table.column("ids"),
        pieces.V,
        5,
        dynamic_window=True,
        subsample=1e-3,
        counts=counts,
        seed=1,
        doc_keys=table.column("doc"),
        integer_units=True,
    )
    keys, values = K.merge_sorted_blocks(blocks)
    values = values / K.weight_denominator(5)
    i, j = K.keys_to_ij(keys, pieces.V)
    assert as_dict(a) == {
        (int(p), int(q)): float(np.float32(x)) for p, q, x in zip(i, j, values, strict=True)
    }
    assert (a != a.T).nnz > 0  # dynamic windows are symmetric only in expectation


# ---------------------------------------------------------------- manifest, skip, readers


def test_manifest_stats_and_skip(spark, sample, sample_run):
    rec = sample_run.record("cooccur")
    c = rec["counts"]
    meta = C.verify(sample_run)
    assert (meta.vocab_size, meta.shards, meta.window, meta.weighting) == (
        sample.V,
        4,
        10,
        "harmonic",
    )
    sizes = [len(fsutil.read_bytes(C.shard_uri(sample_run, k))) for k in range(4)]
    assert c["shard_bytes"] == sizes and sum(c["shard_nnz"]) == c["nnz"]
    assert c["partial_entries"] >= c["nnz"] and c["shuffle_bytes"] > 0
    assert c["reduce_tasks"] == 4  # the partition keys give every shard its own task
    assert c["tokens"] == sum(len(d) for d in sample.docs)
    assert rec["timings"]["seconds"] > 0 and "tokens/s" in rec["summary"]
    cfg = load_config(None, ["cooccur.shards=4"], base=sample.cfg)
    assert cooccur.run(spark, cfg, sample_run).skipped
    # memory_mb changes speed, not the output: still current.
    assert cooccur.run(spark, cfg.replace(**{"cooccur.memory_mb": "64"}), sample_run).skipped


def test_read_shard_is_the_matrix_rows(sample_run):
    full = C.read_matrix(sample_run)
    meta = C.info(sample_run)
    for k in range(meta.shards):
        m = C.read_shard(sample_run, k)
        rows = meta.rows(k)
        assert m.shape == (rows.size, meta.vocab_size) and m.dtype == np.float32
        assert m.has_sorted_indices
        assert (m != full[rows]).nnz == 0
    with pytest.raises(ResourceError, match="read_shard"):
        C.read_matrix(sample_run, max_nnz=10)
    with pytest.raises(InputError, match="shard 4 does not exist"):
        C.read_shard(sample_run, 4)


def test_files_readable_without_embedpipe(sample_run):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the bench extra")
    import pandas as pd

    root = sample_run.path("cooc")
    c = sample_run.record("cooccur")["counts"]
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == c["nnz"]
    assert set(table.column("shard").to_pylist()) == {0, 1, 2, 3}
    df = pd.read_parquet(root)
    assert len(df) == c["nnz"] and {"i", "j", "x", "shard"} <= set(df.columns)
    assert ((df["i"] % 4) == df["shard"].astype(int)).all()
    n, total, bad = duckdb.sql(
        f"select count(*), sum(x), sum(case when i % 4 != shard then 1 else 0 end) "
        f"from read_parquet('{root}/*/*.parquet', hive_partitioning = true)"
    ).fetchall()[0]
    assert n == c["nnz"] and bad == 0 and total == pytest.approx(c["sum_x"], rel=1e-9)


def damaged_copy(sample_run, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(sample_run.uri, target)
    return RunDir(str(target))


def test_missing_and_corrupted_shards_name_the_file(sample_run, tmp_path):
    run = damaged_copy(sample_run, tmp_path, "missing")
    path = C.shard_uri(run, 2)
    fsutil.remove(path)
    for read in (lambda: C.read_shard(run, 2), lambda: C.read_matrix(run), lambda: C.verify(run)):
        with pytest.raises(InputError) as e:
            read()
        assert path in str(e.value) and "missing" in str(e.value) and "\n" not in str(e.value)

    run = damaged_copy(sample_run, tmp_path, "garbled")  # same size, garbage bytes
    path = C.shard_uri(run, 1)
    size = len(fsutil.read_bytes(path))
    fsutil.write_bytes_atomic(path, b"\x00" * size)
    for read in (lambda: C.read_shard(run, 1), lambda: C.verify(run)):
        with pytest.raises(InputError) as e:
            read()
        assert path in str(e.value) and "not readable Parquet" in str(e.value)
        assert "\n" not in str(e.value)

    run = damaged_copy(sample_run, tmp_path, "truncated")
    path = C.shard_uri(run, 0)
    fsutil.write_bytes_atomic(path, fsutil.read_bytes(path)[:-100])
    with pytest.raises(InputError) as e:
        C.read_shard(run, 0)
    assert path in str(e.value) and "bytes" in str(e.value) and "\n" not in str(e.value)

    run = damaged_copy(sample_run, tmp_path, "swapped")  # a valid file of another shard
    data0, data3 = (fsutil.read_bytes(C.shard_uri(run, k)) for k in (0, 3))
    fsutil.write_bytes_atomic(C.shard_uri(run, 0), data3)
    if len(data0) == len(data3):
        with pytest.raises(InputError, match="another run"):
            C.read_shard(run, 0)


def test_unfinished_stage_is_never_read(sample_run, tmp_path):
    run = damaged_copy(sample_run, tmp_path, "unfinished")
    run.forget("cooccur")  # the files are all there, the commit record is not
    with pytest.raises(StageNotFinishedError, match="cooccur"):
        C.read_shard(run, 0)
    with pytest.raises(StageNotFinishedError):
        C.read_matrix(run)


# ---------------------------------------------------------------- plumbing (no Spark job)


def test_spark_hash_partitioner_is_reproduced(spark):
    from pyspark.sql import functions as F

    values = [0, 1, 2, 7, 42, -1, -7, 2**31 - 1, -(2**31), 123456789]
    cases = [(p, S, k) for S in (1, 4, 16, 37) for k, p in enumerate(cooccur.partition_keys(S))]
    rows = [(v, 1, -1) for v in values] + cases
    got = (
        spark.createDataFrame(rows, "v int, S int, k int")
        .select(F.hash("v").alias("h"), F.pmod(F.hash("v"), F.col("S")).alias("m"), "k")
        .collect()
    )
    assert [r["h"] for r in got[: len(values)]] == [cooccur.spark_hash_int(v) for v in values]
    assert [r["m"] for r in got[len(values) :]] == [k for _, _, k in cases]


def test_small_blobs_and_row_groups_equal_one_merge(sample, tmp_path, monkeypatch):
    """Blocks cut into many small blobs give the same files as whole blocks (runs chain)."""
    table = ds.dataset(sample.run.path("corpus"), format="parquet").to_table()
    outs = {}
    for name, blob in [("one", 1 << 20), ("many", 999)]:
        monkeypatch.setattr(cooccur, "MAX_BLOB_ENTRIES", blob)
        monkeypatch.setattr(cooccur, "ROW_GROUP", 5000)
        plan = cooccur.make_plan(CooccurConfig(shards=3, memory_mb=16), sample.V, 1)
        batches = list(cooccur.count_partials(table.to_batches(max_chunksize=500), plan, 0))
        batches += list(cooccur.count_partials(table.to_batches(max_chunksize=300), plan, 1))
        stats = [
            r
            for b in cooccur.reduce_partials(batches, plan, str(tmp_path / name))
            for r in b.to_pylist()
        ]
        data = [r for r in stats if r["kind"] == cooccur.KIND_DATA]
        assert sorted(r["shard"] for r in data) == [0, 1, 2]
        blob_rows = sum(1 for b in batches for k in b.column("kind").to_pylist() if k == 0)
        runs = sum(json.loads(r["info"])["runs"] for r in data)
        assert runs >= 2 * 3 * 2  # two tasks, each a dense and a sparse block per shard
        assert (blob_rows > 3 * runs) == (name == "many")
        outs[name] = [pq.read_table(tmp_path / name / C.shard_file(k)) for k in range(3)]
        groups = [pq.ParquetFile(tmp_path / name / C.shard_file(k)).metadata for k in range(3)]
        assert all(g.row_group(0).num_rows == 5000 for g in groups if g.num_rows > 5000)
        tokens = sum(
            json.loads(r["info"])["tokens"] for r in stats if r["kind"] == cooccur.KIND_STATS
        )
        assert tokens == 2 * sum(len(d) for d in sample.docs)
    for a, b in zip(outs["one"], outs["many"], strict=True):
        assert a.equals(b)
    merged = pa.concat_tables(outs["one"])
    ref = reference(sample.docs, 10)
    got = {
        (i, j): x for i, j, x in zip(*(merged.column(c).to_pylist() for c in "ijx"), strict=True)
    }
    assert got.keys() == ref.keys()
    assert all(abs(got[k] - 2 * ref[k]) <= 2e-6 * ref[k] for k in ref)


def test_default_shards_follow_the_data_not_the_cores():
    small = cooccur.default_shards(1_000_000, 10, 512)
    big = cooccur.default_shards(200_000_000, 10, 512)
    assert small == 1 and big > small and big & (big - 1) == 0
    assert cooccur.default_shards(200_000_000, 10, 2048) < big
