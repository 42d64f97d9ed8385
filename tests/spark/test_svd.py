"""The svd stage through Spark: equals the kernels run in one process, exact at full width,
deterministic, skips when current, refuses what it cannot hold.

Most inputs are co-occurrence run directories written here in the cooc contract
(DESIGN.md and :mod:`embedpipe.cooccur`: ``cooc/shard=k/part-00000.parquet`` with footer
metadata, ``i, j, x`` sorted by ``(i, j)``, a manifest record "cooccur"), so these tests
need no corpus; ``test_end_to_end_sample`` runs the real upstream stages.
"""

from __future__ import annotations

import io
import json
import pickle
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from embedpipe import cooccur as layout
from embedpipe import fsutil, schemas
from embedpipe import spark as spark_mod
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, InputError, ResourceError
from embedpipe.kernels import ppmi, rsvd
from embedpipe.runs import RunDir, fingerprint
from embedpipe.stages import svd
from embedpipe.stages.vocab import table_bytes
from embedpipe.vectors import Vectors
from tests.conftest import SAMPLE, head_lines

# ----------------------------------------------------------------- fixtures


def planted_counts(groups: int = 4, size: int = 10, seed: int = 0) -> sp.csr_matrix:
    """A symmetric co-occurrence matrix with planted word groups (word a is in group a % groups).

    Words of a group co-occur often (x in [5, 40]); 40 % of the other pairs co-occur rarely
    (x in [0.5, 3]); a few words co-occur with themselves (as a real window never does,
    but the stage must not care).
    """
    rng = np.random.default_rng(seed)
    V = groups * size
    group = np.arange(V) % groups
    dense = np.zeros((V, V), np.float32)
    for a in range(V):
        for b in range(a, V):
            if group[a] == group[b] and (a != b or rng.random() < 0.2):
                dense[a, b] = dense[b, a] = rng.uniform(5, 40)
            elif rng.random() < 0.4:
                dense[a, b] = dense[b, a] = rng.uniform(0.5, 3)
    return sp.csr_matrix(dense)


def write_run(root, x: sp.csr_matrix, shards: int) -> RunDir:
    """A run directory with a committed vocab and ``x`` as cooc in the cooccur contract."""
    run = RunDir(str(root))
    V = x.shape[0]
    tokens = [f"w{a:03d}" for a in range(V)]
    vocab = pa.table(
        [pa.array(np.arange(V, dtype=np.int32)), pa.array(tokens),
         pa.array(np.arange(V, 0, -1, dtype=np.int64))],
        schema=schemas.VOCAB,
    )  # fmt: skip
    tmp = run.begin("vocab")
    fsutil.write_bytes_atomic(fsutil.join(tmp, "vocab.parquet"), table_bytes(vocab))
    run.commit("vocab", tmp, {
        "fingerprint": fingerprint("test-vocab", V), "config": {}, "inputs": {},
        "counts": {"vocab_size": V}, "timings": {}, "summary": "test vocabulary",
    })  # fmt: skip
    coo = x.tocoo()
    order = np.lexsort((coo.col, coo.row))
    i, j, v = (
        coo.row[order].astype(np.int32),
        coo.col[order].astype(np.int32),
        coo.data[order].astype(np.float32),
    )
    tmp = run.begin("cooccur")
    shard_nnz, shard_bytes = [], []
    for k in range(shards):
        sel = i % shards == k
        table = pa.table(
            [pa.array(i[sel]), pa.array(j[sel]), pa.array(v[sel])], schema=schemas.COOC
        )
        table = table.replace_schema_metadata(
            layout.shard_metadata(V, shards, k, 5, "uniform", int(sel.sum()))
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        fsutil.write_bytes_atomic(fsutil.join(tmp, layout.shard_file(k)), buf.getvalue())
        shard_nnz.append(int(sel.sum()))
        shard_bytes.append(len(buf.getvalue()))
    run.commit("cooccur", tmp, {
        "fingerprint": fingerprint("test-cooc", x.toarray().tolist(), shards),
        "config": {}, "inputs": {},
        "counts": {"vocab_size": V, "shards": shards, "window": 5, "weighting": "uniform",
                   "nnz": int(i.size), "sum_x": float(v.sum(dtype=np.float64)),
                   "shard_nnz": shard_nnz, "shard_bytes": shard_bytes},
        "timings": {}, "summary": "test cooc",
    })  # fmt: skip
    return run


def cfg_for(*overrides: str):
    base = ["svd.dim=6", "svd.oversample=4", "svd.power_iters=1", "svd.seed=3"]
    return load_config(None, [*base, *overrides])


def reference(
    x: sp.csr_matrix, shards: int, s, method: str = "cholqr2", dynamic_shift: bool = True
):
    """The stage's algorithm without Spark: kernel calls over the same shards, summed in order.

    Returns (U, singular values, Vt, word vectors as float32).
    """
    V = x.shape[0]
    parts = rsvd.shard_rows(x, shards)
    marg = None
    for rows, m in parts:
        part = np.stack(ppmi.marginals_partial(rows, m, V))
        marg = part.copy() if marg is None else marg + part
    p = ppmi.context_distribution(marg[1], s.cds)
    a = [(rows, ppmi.ppmi_shard(rows, m, marg[0], p, s.shift)) for rows, m in parts]
    # One BLAS thread, as the stage's driver and Spark's tasks: GEMM rounding depends on it.
    with svd.single_threaded_blas():
        u, sv, vt = rsvd.randomized_svd_sharded(
            a, V, s.dim, s.oversample, s.power_iters, s.seed, method, dynamic_shift=dynamic_shift
        )
    return u, sv, vt, rsvd.embed(u, sv, vt, s.eig, s.add_context).astype(np.float32)


def read_model(run: RunDir) -> tuple[Vectors, dict]:
    return (
        Vectors.load_model_dir(run.path("svd")),
        json.loads(fsutil.read_text(run.path("svd", "model.json"))),
    )


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    return planted_counts()


# -------------------------------------------------------------------- pure parts


def test_cost_model_formulas():
    assert svd.sketch_width(50, 10, 10) == 20 and svd.sketch_width(15, 10, 10) == 15
    assert svd.product_passes(3) == 8  # 2 per pass, q + 1 passes: as scikit-learn
    assert svd.dense_bytes(64221, 110) == 64221 * 110 * 8  # 56.5 MB: the design's figure
    need = svd.task_memory_need(100, 20, 25, 1000)
    assert need == (
        svd.TASK_BYTES_PER_ENTRY * 1000
        + svd.TASK_DENSE_COPIES * 100 * 20 * 8
        + svd.TASK_ROW_COPIES * 25 * 20 * 8
    )
    assert svd.driver_memory_need(100, 20, 10) == svd.DRIVER_DENSE_COPIES * 16000 + 3 * 8000


def test_load_shard_matches_the_cooc_reader(tmp_path, counts):
    run = write_run(tmp_path / "run", counts, 3)
    meta = layout.info(run)
    for k in range(3):
        shard = svd.load_shard(run, meta, k)
        assert shard.k == k and shard.row_index.dtype == np.int64
        np.testing.assert_array_equal(shard.row_index, np.arange(k, counts.shape[0], 3))
        np.testing.assert_array_equal(shard.matrix.toarray(), counts[k::3].toarray())


# ------------------------------------------------------------- through Spark


@pytest.mark.parametrize(
    ("shards", "method", "extra"),
    [(1, "cholqr2", []), (3, "tsqr", ["svd.eig=1", "svd.add_context=true"])],
)
def test_spark_equals_the_kernels_in_one_process(spark, tmp_path, counts, shards, method, extra):
    run = write_run(tmp_path / "run", counts, shards)
    cfg = cfg_for("svd.power_iters=2", *extra)
    res = svd.run(spark, cfg, run, method=method)
    assert not res.skipped
    vec, model = read_model(run)
    _, s_ref, _, w_ref = reference(counts, shards, cfg.svd, method)
    # Same shards, same order of every addition: bit-identical, Spark adds nothing.
    np.testing.assert_array_equal(vec.vectors, w_ref)
    assert model["singular_values"] == s_ref.tolist()
    assert vec.index_to_key == [f"w{a:03d}" for a in range(counts.shape[0])]
    assert model["shards"] == shards and model["method"] == method
    assert model["ppmi_entries"] == sum(model["shard_ppmi_entries"]) > 0
    assert model["traffic"]["product_passes"] == 2 * cfg.svd.power_iters + 2
    assert model["traffic"]["range_passes"] == ["cholesky" if method == "cholqr2" else "tsqr"]
    b = model["breakdown"]
    assert b["spark_jobs"] == 2 + cfg.svd.power_iters + 1  # marginals, PPMI, one per pass
    assert set(b["steps"]) == {"marginals_step", "ppmi_step", "normal_step", "range_step"}
    assert b["task_compute_seconds"] > 0 and b["job_seconds"] > 0
    assert model["memory"]["peak_task_rss"] > 0
    assert model["output"] == ("U Σ^eig + V Σ^eig" if extra else "U Σ^eig")


def test_full_width_sketch_is_the_exact_svd(spark, tmp_path, counts):
    V = counts.shape[0]
    run = write_run(tmp_path / "run", counts, 2)
    # dim + oversample >= V: the sketch spans everything and the result is the exact SVD.
    cfg = cfg_for(f"svd.dim={V - 1}", "svd.oversample=5", "svd.eig=0")
    svd.run(spark, cfg, run)
    vec, model = read_model(run)
    x = counts.astype(np.float64)
    p = ppmi.context_distribution(np.asarray(x.sum(axis=0)).ravel(), 0.75)
    row_sums = np.asarray(x.sum(axis=1)).ravel()
    dense = ppmi.ppmi_shard(np.arange(V), counts, row_sums, p).toarray().astype(np.float64)
    u_ref, s_ref, _ = np.linalg.svd(dense)
    s = np.array(model["singular_values"])
    np.testing.assert_allclose(s, s_ref[: V - 1], rtol=0, atol=1e-12 * s_ref[0])
    # eig = 0: the vectors are U. Leading singular vectors agree up to sign.
    top = 10
    u = vec.vectors[:, :top].astype(np.float64)
    assert rsvd.largest_principal_angle(u, u_ref[:, :top]) < 1e-5
    np.testing.assert_allclose(np.abs(np.sum(u * u_ref[:, :top], axis=0)), 1.0, atol=1e-6)


def test_deterministic_and_equal_to_the_kernels(spark, tmp_path, counts):
    runs = [write_run(tmp_path / f"r{n}", counts, 3) for n in range(3)]
    svd.run(spark, cfg_for(), runs[0])
    svd.run(spark, cfg_for(), runs[1])
    svd.run(spark, cfg_for("svd.seed=4"), runs[2])
    raw = [fsutil.read_bytes(r.path("svd", "vectors.parquet")) for r in runs]
    assert raw[0] == raw[1]
    assert raw[0] != raw[2]
    np.testing.assert_array_equal(
        read_model(runs[0])[0].vectors, reference(counts, 3, cfg_for().svd)[3]
    )


def test_eig_scales_the_same_factors(spark, tmp_path, counts):
    shards = 2
    u_run, us_run = (
        write_run(tmp_path / "u", counts, shards),
        write_run(tmp_path / "us", counts, shards),
    )
    svd.run(spark, cfg_for("svd.eig=0"), u_run)
    svd.run(spark, cfg_for("svd.eig=1"), us_run)
    (u_vec, u_model), (us_vec, us_model) = read_model(u_run), read_model(us_run)
    s = np.array(u_model["singular_values"])
    # The SVD does not depend on eig: only the output scaling does.
    assert us_model["singular_values"] == s.tolist()
    np.testing.assert_allclose(us_vec.vectors, u_vec.vectors * s, rtol=1e-6, atol=1e-6)
    # eig = 0 gives U itself: orthonormal columns.
    u = u_vec.vectors.astype(np.float64)
    np.testing.assert_allclose(u.T @ u, np.eye(s.size), atol=1e-6)


def test_skip_on_rerun_and_rerun_on_change(spark, tmp_path, counts):
    run = write_run(tmp_path / "run", counts, 2)
    assert not svd.run(spark, cfg_for(), run).skipped
    assert svd.run(spark, cfg_for(), run).skipped
    assert not svd.run(spark, cfg_for(), run, method="tsqr").skipped
    assert svd.run(spark, cfg_for(), run, method="tsqr").skipped
    assert not svd.run(spark, cfg_for(), run, method="tsqr", force=True).skipped


def _part(p):
    return p, None


@pytest.mark.parametrize("small_bytes", [0, svd.SMALL_SUM_BYTES])
def test_sums_add_in_a_fixed_order(spark, tmp_path, small_bytes):
    # Five partials: small ones come back with the job and are added in shard order; big
    # ones (small_bytes = 0) are spilled and, with fan-in 2, added by a tree of tasks:
    # ((p0 + p1) + (p2 + p3)) + p4 on every run, whatever order the tasks finish in.
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 8, 1000) for _ in range(5)]
    sc = spark.sparkContext
    runner = svd.SparkRunner(sc, str(tmp_path / "s"), 5, fan_in=2, small_bytes=small_bytes)
    got, extras = runner.reduce(_part, svd.InMemory(parts))
    assert extras == [None] * 5
    if small_bytes:
        want = (((parts[0] + parts[1]) + parts[2]) + parts[3]) + parts[4]
        assert len(runner.stats.jobs) == 1 and runner.stats.sum_bytes == 5 * parts[0].nbytes
    else:
        want = ((parts[0] + parts[1]) + (parts[2] + parts[3])) + parts[4]
        assert len(runner.stats.jobs) == 3 and runner.stats.sum_bytes == 2 * parts[0].nbytes
        assert [j.step for j in runner.stats.jobs] == ["part", "tree_sum", "tree_sum"]
    np.testing.assert_array_equal(got, want)
    scratch = str(tmp_path / "s")
    assert not fsutil.exists(scratch) or fsutil.list_files(scratch) == []  # spills removed
    runner.close()


def test_tree_sum_through_the_whole_svd(spark, tmp_path, counts):
    run = write_run(tmp_path / "run", counts, 3)
    s = cfg_for().svd
    out = svd.compute(spark, run, layout.info(run), s, str(tmp_path / "scratch"), fan_in=2,
                      small_bytes=0)  # fmt: skip
    _, s_ref, vt_ref, _ = reference(counts, 3, s)
    np.testing.assert_allclose(out.s, s_ref, rtol=1e-12)  # another order of additions: rounding
    assert rsvd.largest_principal_angle(out.vt.T, vt_ref.T) < 1e-8
    assert out.shard_rows == [14, 13, 13] and len(out.ppmi_entries) == 3
    assert not fsutil.exists(str(tmp_path / "scratch"))


def test_memory_refusal(spark, tmp_path, counts, monkeypatch):
    run = write_run(tmp_path / "run", counts, 2)
    monkeypatch.setattr(spark_mod, "task_memory_bytes", lambda _spark: 4096)
    with pytest.raises(ResourceError, match=r"spark\.executor\.memory.*svd\.dim"):
        svd.run(spark, cfg_for(), run)
    assert run.record("svd") is None


@pytest.mark.parametrize(("override", "match"), [
    ("svd.dim=40", r"svd\.dim = 40 must be smaller than the vocabulary \(40 words\)"),
    ("svd.dim=100", r"svd\.dim = 100 must be smaller"),
    ("svd.cds=0", r"svd\.cds = 0\.0 is out of range"),
])  # fmt: skip
def test_bad_settings_are_one_line_errors(spark, tmp_path, counts, override, match):
    run = write_run(tmp_path / "run", counts, 2)
    with pytest.raises(ConfigError, match=match) as info:
        svd.run(spark, cfg_for(override), run)
    assert "\n" not in str(info.value)
    assert run.record("svd") is None and not fsutil.exists(run.path("svd"))


def test_a_damaged_shard_is_a_one_line_error_from_the_task(spark, tmp_path, counts):
    run = write_run(tmp_path / "run", counts, 2)
    uri = layout.shard_uri(run, 1)
    fsutil.write_bytes_atomic(uri, fsutil.read_bytes(uri)[:-10])
    with pytest.raises(InputError, match=r"shard=1/part-00000\.parquet: shard file has") as info:
        svd.run(spark, cfg_for(), run)
    assert "\n" not in str(info.value)
    assert run.record("svd") is None


def _rows_times(m, shard):
    return shard.k, rsvd.shard_times(shard.matrix, m.value)


def test_runner_broadcast_collect_release_and_close(spark, tmp_path, counts):
    sc = spark.sparkContext
    runner = svd.SparkRunner(sc, str(tmp_path / "scratch"), 2, small_bytes=100)
    store = svd.ArrayShards(str(tmp_path / "scratch" / "shards"))
    for k, (r, m) in enumerate(rsvd.shard_rows(counts, 2)):
        store.save(rsvd.Shard(k, r, rsvd.sparse_rows(m)))
    ones = np.ones((counts.shape[0], 3))
    bc = runner.broadcast(ones)
    assert fsutil.exists(bc.uri) and runner.stats.broadcast_bytes > ones.nbytes
    got = runner.collect(partial(_rows_times, bc), store)  # 20 x 3 floats > 100 B: spilled
    assert [k for k, _ in got] == [0, 1]
    np.testing.assert_array_equal(got[1][1], counts[1::2] @ ones)
    assert runner.stats.collected_bytes == 2 * 20 * 3 * 8
    runner.release(bc)
    assert not fsutil.exists(bc.uri)
    runner.close()
    assert not fsutil.exists(str(tmp_path / "scratch"))


def test_npy_files_round_trip_without_pickle(tmp_path, counts):
    a = np.arange(12.0).reshape(3, 4)
    for i, arr in enumerate((a, np.asfortranarray(a), np.arange(5, dtype=np.int32),
                             np.zeros((0, 3)))):  # fmt: skip
        uri = str(tmp_path / f"a{i}.npy")
        assert svd.write_npy(uri, arr) == len(fsutil.read_bytes(uri))
        back = svd.read_npy(uri)
        np.testing.assert_array_equal(back, arr)
        assert back.dtype == arr.dtype and not back.flags.writeable
        np.testing.assert_array_equal(np.load(uri, allow_pickle=False), arr)  # plain .npy
    with pytest.raises(TypeError, match="Python objects"):
        svd.write_npy(str(tmp_path / "o.npy"), np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="scratch file not found"):
        svd.read_npy(str(tmp_path / "missing.npy"))
    handle = svd.FileArray(str(tmp_path / "a0.npy"))
    np.testing.assert_array_equal(handle.value, a)
    assert pickle.loads(pickle.dumps(handle))._value is None  # ships the name only
    store = svd.ArrayShards(str(tmp_path / "shards"))
    rows = np.arange(0, 40, 2)
    for k, matrix in enumerate((counts[::2], rsvd.sparse_rows(counts[::2]))):
        store.save(rsvd.Shard(k, rows, matrix))
        shard = store.load(k)
        assert shard.k == k and type(shard.matrix) is (rsvd.SparseRows if k else sp.csr_matrix)
        np.testing.assert_array_equal(shard.row_index, rows)
        dense = shard.matrix.to_csr() if k else shard.matrix
        np.testing.assert_array_equal(dense.toarray(), counts[::2].toarray())


def test_end_to_end_sample(spark, tmp_path):
    from embedpipe.stages import cooccur, encode, vocab

    path = tmp_path / "sample.txt"
    path.write_text("\n".join(head_lines(SAMPLE, 3000)) + "\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            f"input.path={path}",
            "vocab.min_count=5",
            "cooccur.shards=2",
            "cooccur.window=5",
            "cooccur.weighting=uniform",
            "svd.dim=16",
        ],
    )
    run = RunDir(str(tmp_path / "run"))
    for stage in (vocab, encode, cooccur):
        stage.run(spark, cfg, run)
    res = svd.run(spark, cfg, run)
    vec, model = read_model(run)
    V = run.record("vocab")["counts"]["vocab_size"]
    assert len(vec) == V and vec.dim == 16
    s = np.array(model["singular_values"])
    assert np.all(np.diff(s) <= 0) and s[-1] > 0
    assert res.record["counts"]["shards"] == 2
    assert model["cooc_entries"] == run.record("cooccur")["counts"]["nnz"]
    # The same run read whole and computed in one process gives the same vectors.
    _, _, _, w_ref = reference(layout.read_matrix(run), 2, cfg.svd)
    np.testing.assert_array_equal(vec.vectors, w_ref)
