"""Sharded randomized SVD: equals numpy.linalg.svd on toys, scipy's svds on a real PPMI."""

from __future__ import annotations

import gzip
import itertools
import pickle
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from embedpipe.errors import ConfigError
from embedpipe.kernels import rsvd
from embedpipe.kernels.ppmi import context_distribution, marginals_partial, ppmi_shard
from tests.conftest import EN_OPEN_TOK, needs_shared


def decaying_matrix(n_rows: int, n_cols: int, seed: int, decay: float = 0.8) -> np.ndarray:
    """A dense non-symmetric matrix with singular values decay**i in random directions."""
    rng = np.random.default_rng(seed)
    n = min(n_rows, n_cols)
    u = np.linalg.qr(rng.standard_normal((n_rows, n)))[0]
    v = np.linalg.qr(rng.standard_normal((n_cols, n)))[0]
    return (u * decay ** np.arange(n)) @ v.T


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("method", rsvd.METHODS)
@pytest.mark.parametrize("n_shards", [1, 4])
@pytest.mark.parametrize("dynamic_shift", [True, False])
def test_matches_numpy_svd_on_a_decaying_spectrum(method, n_shards, dynamic_shift):
    a = decaying_matrix(60, 60, seed=0)
    u_ref, s_ref, vt_ref = np.linalg.svd(a)
    u, s, vt = rsvd.randomized_svd_sharded(
        rsvd.shard_rows(a, n_shards),
        60,
        k=10,
        oversample=10,
        power_iters=4,
        seed=1,
        method=method,
        dynamic_shift=dynamic_shift,
    )
    assert u.shape == (60, 10) and s.shape == (10,) and vt.shape == (10, 60)
    assert max_rel(s, s_ref[:10]) < 1e-6
    assert rsvd.largest_principal_angle(u, u_ref[:, :10]) < 1e-6
    assert rsvd.largest_principal_angle(vt.T, vt_ref[:10].T) < 1e-6
    np.testing.assert_allclose(u.T @ u, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(vt @ vt.T, np.eye(10), atol=1e-12)
    # Singular pairs match numpy's up to the shared sign of (u_i, v_i).
    np.testing.assert_allclose(np.abs(np.sum(u * u_ref[:, :10], axis=0)), 1.0, atol=1e-8)


@pytest.mark.parametrize("method", rsvd.METHODS)
@pytest.mark.parametrize("shape", [(40, 25), (25, 40)])
def test_full_width_sketch_is_the_exact_svd(method, shape):
    """With l = min(n_rows, n_cols) the range finder spans everything: exact to rounding."""
    a = np.random.default_rng(3).standard_normal(shape)
    n = min(shape)
    u, s, vt = rsvd.randomized_svd_sharded(
        rsvd.shard_rows(a, 3),
        shape[1],
        k=n,
        oversample=5,
        power_iters=0,
        seed=0,
        method=method,
        n_rows=shape[0],
    )
    s_ref = np.linalg.svd(a, compute_uv=False)
    # The Gaussian sketch of a Gaussian matrix has κ(Y) ~ 1e3: the Gram route is exact to
    # u κ² (or takes a second pass), Householder to u κ.
    assert max_rel(s, s_ref) < 1e-11
    np.testing.assert_allclose((u * s) @ vt, a, atol=1e-11)


def test_rank_below_k_reports_zero_singular_values():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
    u, s, vt = rsvd.randomized_svd_sharded(
        rsvd.shard_rows(a, 2), 20, k=4, oversample=2, power_iters=1, n_rows=30, method="tsqr"
    )
    assert max_rel(s[:2], np.linalg.svd(a, compute_uv=False)[:2]) < 1e-12
    assert np.all(s[2:] == 0) and np.all(u[:, 2:] == 0) and np.all(vt[2:] == 0)
    np.testing.assert_allclose((u * s) @ vt, a, atol=1e-12)


def test_fixed_seed_and_shards_is_bitwise_reproducible_and_shards_change_only_rounding():
    a = sp.random_array((80, 70), density=0.2, rng=np.random.default_rng(5), format="csr")
    kwargs = {"k": 8, "oversample": 6, "power_iters": 3, "seed": 11, "n_rows": 80}
    u1, s1, vt1 = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, 4), 70, **kwargs)
    u2, s2, vt2 = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, 4), 70, **kwargs)
    assert np.array_equal(u1, u2) and np.array_equal(s1, s2) and np.array_equal(vt1, vt2)
    # Another S rounds the power iterations' float32 partial sums differently: the
    # (unconverged, flat-spectrum) results then agree to float32 rounding only.
    for n_shards in (1, 5, 9):
        u3, s3, vt3 = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, n_shards), 70, **kwargs)
        np.testing.assert_allclose(s3, s1, rtol=1e-7)
        np.testing.assert_allclose(u3, u1, atol=1e-6)
        np.testing.assert_allclose(vt3, vt1, atol=1e-6)
    u4, _, _ = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, 4), 70, **{**kwargs, "seed": 12})
    assert not np.array_equal(u4, u1)


@pytest.mark.parametrize("dynamic_shift", [True, False])
def test_cholqr2_and_tsqr_compute_the_same_subspaces(dynamic_shift):
    # A flat spectrum (random sparse): nothing has converged, so the two orthonormalisations
    # agree only because they span the same spaces at every step, not because both are exact.
    a = sp.random_array((120, 100), density=0.1, rng=np.random.default_rng(8), format="csr")
    results = [
        rsvd.randomized_svd_sharded(
            rsvd.shard_rows(a, 5),
            100,
            k=10,
            oversample=5,
            power_iters=2,
            seed=3,
            method=method,
            n_rows=120,
            dynamic_shift=dynamic_shift,
        )
        for method in rsvd.METHODS
    ]
    (u1, s1, vt1), (u2, s2, vt2) = results
    np.testing.assert_allclose(s1, s2, rtol=1e-10)
    np.testing.assert_allclose(u1, u2, atol=1e-8)
    np.testing.assert_allclose(vt1, vt2, atol=1e-8)


@pytest.mark.parametrize(
    ("singular_values", "method", "kinds"),
    [
        (np.linspace(1.0, 0.1, 8), "cholqr2", ["cholesky"]),
        (np.logspace(0, -4, 8), "cholqr2", ["cholesky", "cholesky"]),  # u κ² > ORTHO_TOL
        (np.logspace(0, -10, 8), "cholqr2", ["shifted_cholesky", "cholesky", "cholesky"]),
        (np.array([1.0, 0.5, 0.2, 0, 0, 0, 0, 0]), "tsqr", ["truncated"]),  # rank 3
        (np.logspace(0, -10, 8), "tsqr", ["tsqr", "tsqr"]),  # u κ > ORTHO_TOL
    ],
)
def test_range_passes_orthonormalise_any_sketch(singular_values, method, kinds):
    """Y = A M with a prescribed spectrum: the passes end with an orthonormal Q = Y T that
    spans Y's numerically significant directions, recomputing Y through A as needed."""
    rng = np.random.default_rng(0)
    left = np.linalg.qr(rng.standard_normal((200, 8)))[0]
    right = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    a = (left * singular_values) @ right.T  # 200 × 8: A itself is the sketch when M = I
    shards = [rsvd.Shard(k, rows, m) for k, (rows, m) in enumerate(rsvd.shard_rows(a, 4))]
    m, got = np.eye(8), []
    for i in range(rsvd.MAX_RANGE_PASSES):
        _, extras = rsvd.LocalRunner().reduce(
            partial(rsvd._range_step, rsvd.LocalRunner().broadcast(m), method), shards
        )
        f = [e[0] for e in extras]
        factor = rsvd.sum_in_order(f) if method == "cholqr2" else np.vstack(f)
        basis = rsvd.range_basis(factor, method, 200, last=i + 1 == rsvd.MAX_RANGE_PASSES)
        got.append(basis.kind)
        if basis.error <= rsvd.ORTHO_TOL:
            break
        m = m @ basis.t
    assert got == kinds
    q = np.zeros((200, basis.t.shape[1]))
    for _, rows, y in extras:
        q[rows] = y @ basis.t
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-12)
    # The strongest directions of Y lie in range(Q) (to u / σ₃ at worst).
    np.testing.assert_allclose(q @ (q.T @ left[:, :3]), left[:, :3], atol=1e-9)


def test_cholqr2_threshold_and_shift_follow_their_formulas():
    u = np.finfo(np.float64).eps / 2
    assert rsvd.cholqr2_max_condition(1000, 10) == pytest.approx(
        1 / (8 * np.sqrt(1000 * 10 * u + 10 * 11 * u))
    )
    g = np.diag([4.0, 1.0])
    assert rsvd.cholqr_shift(g, 50) == pytest.approx(11 * (50 * 2 + 2 * 3) * u * 5.0)
    assert rsvd.cholesky_upper(np.diag([1.0, -1.0])) is None


@pytest.mark.parametrize("scale", [1.0, 1e-9])
def test_orthonormal_columns(scale):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((300, 12)) * np.logspace(0, np.log10(scale), 12)
    q = rsvd.orthonormal_columns(w)
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-13)
    np.testing.assert_allclose(q @ (q.T @ w), w, atol=1e-12 * np.linalg.norm(w))


def test_sparse_rows_products_equal_scipy_bit_for_bit():
    rng = np.random.default_rng(0)
    a = sp.random_array((37, 50), density=0.2, rng=rng, format="csr", dtype=np.float32)
    rows = rsvd.sparse_rows(a)
    assert rows.shape == (37, 50) and rows.nnz == a.nnz
    m = rng.standard_normal((50, 7))
    y = rng.standard_normal((37, 7))
    a64 = a.astype(np.float64)
    # Same order of additions as scipy's CSR product on both sides.
    np.testing.assert_array_equal(rsvd.shard_times(rows, m), a64 @ m)
    np.testing.assert_array_equal(
        rsvd.shard_transpose_times(rows, y), sp.csr_array(a64.T).tocsr() @ y
    )
    np.testing.assert_allclose(rsvd.shard_transpose_times(rows, y), a64.T @ y, rtol=1e-12)
    np.testing.assert_array_equal(rows.to_csr().toarray(), a.toarray())
    # Read-only inputs (memory-mapped files in the stage) work the same.
    frozen = rsvd.SparseRows(*(v.copy() if isinstance(v, np.ndarray) else v for v in rows))
    for v in frozen:
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    m.flags.writeable = False
    np.testing.assert_array_equal(rsvd.shard_times(frozen, m), a64 @ m)


class PicklingRunner(rsvd.LocalRunner):
    """Ships every function and record through pickle, as Spark does."""

    @staticmethod
    def _roundtrip(obj):
        return pickle.loads(pickle.dumps(obj))

    def reduce(self, fn, dataset):
        fn = self._roundtrip(fn)
        return super().reduce(fn, [self._roundtrip(r) for r in dataset])


@pytest.mark.parametrize("method", rsvd.METHODS)
def test_runner_interface_survives_pickling(method):
    a = sp.random_array((50, 50), density=0.2, rng=np.random.default_rng(2), format="csr")
    args = {"k": 5, "oversample": 5, "power_iters": 2, "seed": 4, "method": method}
    u1, s1, vt1 = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, 3), 50, **args)
    shards = [
        rsvd.Shard(k, rows, rsvd.sparse_rows(m))
        for k, (rows, m) in enumerate(rsvd.shard_rows(a, 3))
    ]
    u2, s2, vt2 = rsvd.randomized_svd_sharded(shards, 50, **args, runner=PicklingRunner())
    assert np.array_equal(u1, u2) and np.array_equal(s1, s2) and np.array_equal(vt1, vt2)


@pytest.mark.parametrize("method", rsvd.METHODS)
def test_rank_deficient_matrix_and_empty_shards(method):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((6, 3)) @ rng.standard_normal((3, 30))
    u, s, vt = rsvd.randomized_svd_sharded(
        rsvd.shard_rows(a, 9),
        30,
        k=3,
        oversample=4,
        power_iters=2,
        seed=0,
        method=method,
        n_rows=6,
    )
    assert max_rel(s, np.linalg.svd(a, compute_uv=False)[:3]) < 1e-10
    np.testing.assert_allclose((u * s) @ vt, a, atol=1e-10)


def test_small_svd_signs_and_factorisation():
    b = np.random.default_rng(9).standard_normal((6, 20))
    uhat, s, vt = rsvd.small_svd(b)
    np.testing.assert_allclose((uhat * s) @ vt, b, atol=1e-12)
    assert np.all(vt[np.arange(6), np.argmax(np.abs(vt), axis=1)] > 0)
    uhat2, _, vt2 = rsvd.small_svd(-b)
    np.testing.assert_allclose(vt2, vt, atol=1e-12)  # the sign rule depends on Vᵀ only
    np.testing.assert_allclose(uhat2, -uhat, atol=1e-12)


def test_embed_powers_and_context():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 30))
    a = x @ x.T  # symmetric PSD: right singular vectors equal left ones
    u, s, vt = rsvd.randomized_svd_sharded(rsvd.shard_rows(a, 2), 30, 30, 0, 0, seed=0)
    np.testing.assert_allclose(rsvd.embed(u, s, vt, eig=1.0), a @ vt.T, atol=1e-9)
    w0 = rsvd.embed(u, s, vt, eig=0.0)
    np.testing.assert_allclose(w0.T @ w0, np.eye(30), atol=1e-10)
    w = rsvd.embed(u, s, vt, eig=0.5)
    np.testing.assert_allclose(w @ w.T, a, atol=1e-9)
    np.testing.assert_allclose(rsvd.embed(u, s, vt, eig=0.5, add_context=True), 2 * w, atol=1e-9)
    with pytest.raises(ConfigError, match=r"svd\.eig"):
        rsvd.embed(u, s, vt, eig=2.0)
    with pytest.raises(ConfigError, match=r"svd\.add_context"):
        rsvd.embed(u[:10], s, vt, add_context=True)


def test_invalid_settings_raise_config_errors():
    shards = rsvd.shard_rows(np.eye(5), 2)
    with pytest.raises(ConfigError, match=r"svd\.dim"):
        rsvd.randomized_svd_sharded(shards, 5, k=6)
    with pytest.raises(ConfigError, match=r"svd\.oversample"):
        rsvd.randomized_svd_sharded(shards, 5, k=2, oversample=-1)
    with pytest.raises(ConfigError, match=r"svd\.power_iters"):
        rsvd.randomized_svd_sharded(shards, 5, k=2, power_iters=-1)
    with pytest.raises(ConfigError, match="method"):
        rsvd.randomized_svd_sharded(shards, 5, k=2, method="householder")


def cooccurrence(path: Path, n_lines: int, min_count: int, window: int) -> sp.csr_array:
    """Uniform-window symmetric counts over the first lines of a tokenized corpus.

    OOV tokens are dropped before windowing, as the encode stage drops them.
    """
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.split() for line in itertools.islice(f, n_lines)]
    counts = Counter(t for line in lines for t in line)
    vocab = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(vocab)}
    encoded = [[index[t] for t in line if t in index] for line in lines]
    ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64)
    doc = np.repeat(np.arange(len(encoded)), [len(e) for e in encoded])
    rows, cols = [], []
    for dist in range(1, window + 1):
        same = doc[dist:] == doc[:-dist]
        left, right = ids[:-dist][same], ids[dist:][same]
        rows += [left, right]
        cols += [right, left]
    r, c = np.concatenate(rows), np.concatenate(cols)
    x = sp.coo_array((np.ones(r.size), (r, c)), shape=(len(vocab), len(vocab))).tocsr()
    x.sum_duplicates()
    return x


@needs_shared(EN_OPEN_TOK)
def test_real_ppmi_top20_matches_svds():
    x = cooccurrence(EN_OPEN_TOK, 20_000, min_count=5, window=5)
    n = x.shape[0]
    raw = rsvd.shard_rows(x, 4)
    partials = [marginals_partial(rows, m, n) for rows, m in raw]
    row_sums = np.sum([p[0] for p in partials], axis=0)
    p_context = context_distribution(np.sum([p[1] for p in partials], axis=0), 0.75)
    shards = [(rows, ppmi_shard(rows, m, row_sums, p_context)) for rows, m in raw]
    whole = sp.vstack([m for _, m in shards]).tocsr()[np.argsort(np.hstack([r for r, _ in shards]))]

    u_ref, s_ref, _ = spla.svds(whole.astype(np.float64), k=20, random_state=0)
    order = np.argsort(s_ref)[::-1]
    u_ref, s_ref = u_ref[:, order], s_ref[order]
    # PPMI's spectrum is flat (here σ₂₀/σ₃₀ ≈ 1.09): the defaults (oversample 10,
    # 3 power iterations) leave σ₂₀ several per cent low, so this uses more iterations.
    u, s, _ = rsvd.randomized_svd_sharded(shards, n, k=20, oversample=10, power_iters=10, seed=0)
    assert max_rel(s, s_ref) < 0.005
    assert np.all(s <= s_ref * (1 + 1e-9))  # Ritz values never exceed the true ones
    assert rsvd.largest_principal_angle(u[:, :10], u_ref[:, :10]) < 1e-3  # radians
