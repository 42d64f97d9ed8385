"""PPMI kernel: sharded computation equals a slow dense reference written from Levy et al."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from embedpipe.errors import ConfigError, InputError
from embedpipe.kernels.ppmi import context_distribution, marginals_partial, ppmi_shard


def dense_ppmi_reference(x: np.ndarray, cds: float, shift: float) -> np.ndarray:
    """PPMI straight from the probabilities of Levy et al. (2015), with the total N kept."""
    n = x.sum()
    p_ij = x / n
    p_i = x.sum(axis=1) / n
    c = x.sum(axis=0)
    p_alpha = np.array([cj**cds if cj > 0 else 0.0 for cj in c])
    p_alpha /= p_alpha.sum()
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[i, j] > 0:
                pmi = np.log(p_ij[i, j] / (p_i[i] * p_alpha[j]))
                out[i, j] = max(pmi - np.log(shift), 0.0)
    return out


def random_cooc(n: int, seed: int, density: float = 0.3) -> np.ndarray:
    """A symmetric integer co-occurrence matrix with some all-zero rows and columns."""
    rng = np.random.default_rng(seed)
    upper = rng.poisson(3.0, size=(n, n)) * (rng.random((n, n)) < density)
    x = np.triu(upper) + np.triu(upper, 1).T
    x[[1, n // 2], :] = 0  # words that never co-occur
    x[:, [1, n // 2]] = 0
    return x.astype(np.float64)


def sharded_ppmi(x: np.ndarray, n_shards: int, cds: float, shift: float, dtype=np.float32):
    """Run the two passes the stage runs, over row shards i ≡ k (mod S); return (dense, shards)."""
    n = x.shape[0]
    shards = []
    for k in range(n_shards):
        rows = np.arange(k, n, n_shards)
        shards.append((rows, sp.csr_array(x[rows].astype(np.float32))))
    partials = [marginals_partial(rows, csr, n) for rows, csr in shards]
    row_sums = np.sum([p[0] for p in partials], axis=0)
    col_sums = np.sum([p[1] for p in partials], axis=0)
    p_context = context_distribution(col_sums, cds)
    out = np.zeros((n, x.shape[1]))
    results = []
    for rows, csr in shards:
        a = ppmi_shard(rows, csr, row_sums, p_context, shift, dtype=dtype)
        results.append(a)
        out[rows] = a.toarray()
    return out, results


@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_marginals_summed_over_shards_are_the_matrix_sums(n_shards):
    x = random_cooc(25, seed=n_shards)
    n = x.shape[0]
    partials = [
        marginals_partial(np.arange(k, n, n_shards), sp.csr_array(x[k::n_shards]), n)
        for k in range(n_shards)
    ]
    np.testing.assert_array_equal(np.sum([p[0] for p in partials], axis=0), x.sum(axis=1))
    np.testing.assert_array_equal(np.sum([p[1] for p in partials], axis=0), x.sum(axis=0))


@pytest.mark.parametrize("cds", [1.0, 0.75, 0.5])
@pytest.mark.parametrize("shift", [1.0, 5.0])
@pytest.mark.parametrize("n_shards", [1, 4])
def test_ppmi_equals_dense_reference(cds, shift, n_shards):
    x = random_cooc(30, seed=int(cds * 100 + shift + n_shards))
    got, shards = sharded_ppmi(x, n_shards, cds, shift, dtype=np.float64)
    want = dense_ppmi_reference(x, cds, shift)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # Only the strictly positive entries are stored (clipping keeps the matrix sparse).
    assert sum(a.nnz for a in shards) == np.count_nonzero(want)
    assert all(np.all(a.data > 0) for a in shards)


def test_float32_storage_is_the_rounded_float64_result():
    x = random_cooc(20, seed=3)
    got32, shards = sharded_ppmi(x, 2, 0.75, 1.0, dtype=np.float32)
    got64, _ = sharded_ppmi(x, 2, 0.75, 1.0, dtype=np.float64)
    assert all(a.dtype == np.float32 for a in shards)
    np.testing.assert_array_equal(got32, got64.astype(np.float32))


def test_shift_only_removes_and_lowers_entries():
    x = random_cooc(30, seed=11)
    plain, _ = sharded_ppmi(x, 3, 0.75, 1.0, dtype=np.float64)
    shifted, _ = sharded_ppmi(x, 3, 0.75, 5.0, dtype=np.float64)
    kept = shifted > 0
    np.testing.assert_allclose(shifted[kept], plain[kept] - np.log(5.0), rtol=1e-12)
    assert np.all(plain[~kept] <= np.log(5.0) + 1e-12)
    assert np.count_nonzero(shifted) < np.count_nonzero(plain)


def test_cds_one_is_textbook_pmi_and_smoothing_breaks_symmetry():
    x = random_cooc(30, seed=5)
    n = x.sum()
    got, _ = sharded_ppmi(x, 2, 1.0, 1.0, dtype=np.float64)
    nz = x > 0
    textbook = np.zeros_like(x)
    outer = np.outer(x.sum(axis=1), x.sum(axis=0))
    textbook[nz] = np.maximum(np.log(x[nz] * n / outer[nz]), 0)
    np.testing.assert_allclose(got, textbook, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, got.T, rtol=1e-12, atol=1e-12)
    smoothed, _ = sharded_ppmi(x, 2, 0.75, 1.0, dtype=np.float64)
    assert not np.allclose(smoothed, smoothed.T)


def test_context_distribution_is_a_distribution_that_ignores_unseen_contexts():
    p = context_distribution(np.array([0.0, 1.0, 8.0, 27.0]), cds=1 / 3)
    np.testing.assert_allclose(p, np.array([0.0, 1.0, 2.0, 3.0]) / 6.0, rtol=1e-12)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"svd\.cds"):
            context_distribution(np.ones(3), cds=bad)
    with pytest.raises(InputError):
        context_distribution(np.zeros(3), cds=0.75)


def test_explicit_zeros_and_unsorted_indices_are_handled():
    x = random_cooc(12, seed=2)
    rows = np.arange(12)
    coo = sp.coo_array(x)
    # Same matrix, stored with explicit zeros and columns in reverse order within rows.
    order = np.lexsort((-coo.col, coo.row))
    r = np.concatenate([coo.row[order], [0, 5]])
    c = np.concatenate([coo.col[order], [1, 1]])
    v = np.concatenate([coo.data[order], [0.0, 0.0]])
    indptr = np.searchsorted(np.sort(r), np.arange(13))
    sorted_by_row = np.argsort(r, kind="stable")
    messy = sp.csr_array((v[sorted_by_row], c[sorted_by_row], indptr), shape=x.shape)
    row_sums, col_sums = marginals_partial(rows, messy, 12)
    p_context = context_distribution(col_sums, 0.75)
    got = ppmi_shard(rows, messy, row_sums, p_context, dtype=np.float64)
    np.testing.assert_allclose(got.toarray(), dense_ppmi_reference(x, 0.75, 1.0), rtol=1e-12)
    assert got.has_sorted_indices
    assert np.all(got.data > 0)


def test_bad_inputs_raise_one_line_errors():
    x = random_cooc(10, seed=4)
    rows = np.arange(10)
    csr = sp.csr_array(x)
    row_sums, col_sums = marginals_partial(rows, csr, 10)
    p_context = context_distribution(col_sums, 0.75)
    negative = csr.copy()
    negative.data[3] = -1.0
    with pytest.raises(InputError, match="negative"):
        ppmi_shard(rows, negative, row_sums, p_context)
    with pytest.raises(InputError, match="marginals"):
        ppmi_shard(rows, csr, np.zeros(10), p_context)
    with pytest.raises(InputError, match="row indices"):
        ppmi_shard(rows[:-1], csr, row_sums, p_context)
    with pytest.raises(InputError, match="row indices"):
        marginals_partial(rows[:-1], csr, 10)
    with pytest.raises(InputError, match="columns"):
        ppmi_shard(rows, csr, row_sums, p_context[:-1])
    for bad in (0.5, float("inf")):
        with pytest.raises(ConfigError, match=r"svd\.shift"):
            ppmi_shard(rows, csr, row_sums, p_context, shift=bad)


def test_empty_shard():
    csr = sp.csr_array((0, 6))
    row_sums, col_sums = marginals_partial(np.zeros(0, dtype=np.int64), csr, 6)
    assert not row_sums.any() and not col_sums.any()
    out = ppmi_shard(np.zeros(0, dtype=np.int64), csr, np.ones(6), np.full(6, 1 / 6))
    assert out.shape == (0, 6) and out.nnz == 0
