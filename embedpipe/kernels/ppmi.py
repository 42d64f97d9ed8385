"""Positive pointwise mutual information, computed shard by shard.

What is computed (Levy, Goldberg & Dagan 2015, "Improving distributional similarity
with lessons learned from word embeddings", sections 3.1 and 3.2)::

    PMI_α(i, j) = log( P(i, j) / (P(i) · P_α(j)) )
    P(i, j)     = x_ij / N            N    = Σ_ij x_ij
    P(i)        = x_i· / N            x_i· = Σ_j x_ij        (row marginal: the word)
    P_α(j)      = x_·j^α / Σ_k x_·k^α x_·j = Σ_i x_ij        (smoothed context, α = ``cds``)

    PPMI(i, j)  = max( PMI_α(i, j) − log(shift), 0 )

``N`` cancels: P(i, j) / P(i) = x_ij / x_i·, and P_α is already a distribution, so

    PMI_α(i, j) = log( x_ij / (x_i· · P_α(j)) )

which is exactly the formula of issue 7; no total count is needed. With α = 1 it is the
textbook log(x_ij · N / (x_i· · x_·j)). For a symmetric co-occurrence matrix the row
and column marginals are equal, but the smoothed matrix is *not* symmetric when α ≠ 1
(P_α applies to the column only), so nothing downstream may assume symmetry.

Entries with x_ij = 0 have PMI = −∞ and are clipped to 0, so the PPMI matrix has at most
the sparsity pattern of x; :func:`ppmi_shard` keeps only the strictly positive entries.

The stage runs this in two passes over the row shards of x (shard k holds the rows
i ≡ k mod S as a CSR matrix of the shard's rows plus their global row indices):

1. :func:`marginals_partial` per shard, summed on the driver (two V-vectors);
   :func:`context_distribution` on the driver; both V-vectors are broadcast.
2. :func:`ppmi_shard` per shard, which needs only its own rows and the broadcasts.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numba import njit

from embedpipe.errors import ConfigError, InputError

__all__ = ["context_distribution", "marginals_partial", "ppmi_shard"]


def marginals_partial(
    row_index: np.ndarray, csr: sp.csr_array | sp.csr_matrix, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return this shard's contribution to the row and column sums of x.

    Parameters
    ----------
    row_index : int array of shape (m,)
        Global row index of each row of ``csr``.
    csr : sparse CSR of shape (m, n_cols)
        The shard's rows of the co-occurrence matrix x (non-negative).
    n_rows : int
        Number of rows of the whole matrix (V for a co-occurrence matrix).

    Returns
    -------
    row_sums, col_sums : float64 arrays of shape (n_rows,) and (n_cols,)
        x_i· at the shard's rows (zero elsewhere) and the shard's part of x_·j.
        Summing both over all shards gives the marginals of x; they are float64 so
        that counts up to 2^53 add up exactly.
    """
    row_index = np.asarray(row_index)
    if row_index.shape != (csr.shape[0],):
        raise InputError(
            f"shard has {csr.shape[0]} rows but {row_index.shape[0]} row indices; "
            "pass one global row index per CSR row"
        )
    csr = sp.csr_array(csr)
    # A product with a float64 vector accumulates in float64 whatever the stored dtype.
    sums = csr @ np.ones(csr.shape[1], dtype=np.float64)
    row_sums = np.zeros(n_rows)
    np.add.at(row_sums, row_index, sums)
    col_sums = np.bincount(csr.indices, weights=csr.data.astype(np.float64), minlength=csr.shape[1])
    return row_sums, col_sums


def context_distribution(col_sums: np.ndarray, cds: float = 0.75) -> np.ndarray:
    """Return the smoothed context distribution P_α(j) = x_·j^α / Σ_k x_·k^α.

    ``cds`` is α (config ``svd.cds``), 0 < α ≤ 1; α = 1 is the unsmoothed
    distribution. Contexts that never occur keep probability 0 (0^α would be 1 at
    α = 0, which is why α must be positive).
    """
    if not (0.0 < cds <= 1.0) or not math.isfinite(cds):
        raise ConfigError(f"svd.cds = {cds} is out of range; set 0 < svd.cds <= 1 (0.75 is usual)")
    col_sums = np.asarray(col_sums, dtype=np.float64)
    if col_sums.size and (col_sums.min() < 0 or not np.all(np.isfinite(col_sums))):
        raise InputError("column sums must be finite and non-negative; check the cooc input")
    smoothed = np.power(col_sums, cds, out=np.zeros_like(col_sums), where=col_sums > 0)
    total = smoothed.sum()
    if total <= 0:
        raise InputError("the co-occurrence matrix is empty; check the cooc stage output")
    return smoothed / total


@njit(cache=True, nogil=True)
def _ppmi_kernel(indptr, indices, data, log_row, log_p, log_shift, out_indices, out_data):
    """Fill the positive shifted-PMI entries row by row; return (count, indptr, bad).

    ``bad`` is -1, or the position of the first stored entry that is negative, NaN, or
    positive where a marginal is zero (inconsistent marginals).
    """
    n_out = 0
    out_indptr = np.zeros(indptr.shape[0], dtype=np.int64)
    for r in range(indptr.shape[0] - 1):
        lr = log_row[r]
        for pos in range(indptr[r], indptr[r + 1]):
            x = np.float64(data[pos])  # float32 storage: compute the log in float64
            if not x >= 0.0:  # negative or NaN
                return n_out, out_indptr, pos
            if x == 0.0:
                continue  # an explicit zero: PMI = -inf, clipped away
            j = indices[pos]
            lp = log_p[j]
            if lr == -np.inf or lp == -np.inf:
                return n_out, out_indptr, pos
            v = math.log(x) - lr - lp - log_shift
            if v > 0.0:
                out_indices[n_out] = j
                out_data[n_out] = v
                n_out += 1
        out_indptr[r + 1] = n_out
    return n_out, out_indptr, -1


def ppmi_shard(
    row_index: np.ndarray,
    csr: sp.csr_array | sp.csr_matrix,
    row_sums: np.ndarray,
    p_context: np.ndarray,
    shift: float = 1.0,
    dtype: np.dtype | type = np.float32,
) -> sp.csr_array:
    """Return the shard's rows of the PPMI matrix as CSR, keeping only positive entries.

    Parameters
    ----------
    row_index : int array of shape (m,)
        Global row index of each row of ``csr``.
    csr : sparse CSR of shape (m, n_cols)
        The shard's rows of x, non-negative, column indices sorted within each row.
    row_sums : float array of shape (n_rows,)
        Global row marginals x_i· (the sum over shards of :func:`marginals_partial`).
    p_context : float array of shape (n_cols,)
        P_α from :func:`context_distribution`.
    shift : float
        k of "shifted PPMI" (config ``svd.shift``): log(k) is subtracted before clipping;
        1 means no shift.
    dtype : numpy dtype
        Dtype of the stored values. float32 (default) halves the shard's memory; the SVD
        kernels compute in float64 regardless.

    Returns
    -------
    csr_array of shape (m, n_cols) with max(log(x_ij / (x_i· P_α(j))) − log(shift), 0),
    storing only the strictly positive values, in the row order of ``csr``.

    The total count N is not an input because it cancels (see the module docstring).
    """
    if not (shift >= 1.0) or not math.isfinite(shift):
        raise ConfigError(f"svd.shift = {shift} is out of range; set svd.shift >= 1 (1 = no shift)")
    csr = sp.csr_array(csr)
    if not csr.has_sorted_indices:
        csr = csr.sorted_indices()
    row_index = np.asarray(row_index, dtype=np.int64)
    if row_index.shape != (csr.shape[0],):
        raise InputError(
            f"shard has {csr.shape[0]} rows but {row_index.shape[0]} row indices; "
            "pass one global row index per CSR row"
        )
    p_context = np.asarray(p_context, dtype=np.float64)
    if p_context.shape != (csr.shape[1],):
        raise InputError(
            f"p_context has {p_context.shape[0]} entries but the shard has {csr.shape[1]} "
            "columns; compute it from the column sums of this matrix"
        )
    with np.errstate(divide="ignore"):  # log(0) = -inf marks a zero marginal on purpose
        log_row = np.log(np.asarray(row_sums, dtype=np.float64)[row_index])
        log_p = np.log(p_context)
    out_indices = np.empty(csr.nnz, dtype=csr.indices.dtype)
    out_data = np.empty(csr.nnz, dtype=np.float64)
    n_out, out_indptr, bad = _ppmi_kernel(
        csr.indptr, csr.indices, csr.data, log_row, log_p, math.log(shift), out_indices, out_data
    )
    if bad >= 0:
        r = int(np.searchsorted(csr.indptr, bad, side="right")) - 1
        raise InputError(
            f"co-occurrence entry ({int(row_index[r])}, {int(csr.indices[bad])}) = "
            f"{csr.data[bad]} is negative, NaN or outside the marginals; recompute the "
            "marginals from this same matrix (marginals_partial over all shards)"
        )
    return sp.csr_array(
        (
            out_data[:n_out].astype(dtype),
            out_indices[:n_out].copy(),
            out_indptr.astype(csr.indptr.dtype),
        ),
        shape=csr.shape,
    )
