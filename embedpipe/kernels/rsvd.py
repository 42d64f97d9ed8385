"""Randomized truncated SVD of a matrix held as row shards (Halko, Martinsson & Tropp 2011).

The matrix A (n_rows × n_cols; the PPMI matrix, which is *not* symmetric when the
context distribution is smoothed) is split into row shards: shard k holds some rows of A
together with their global row indices. Everything of size n_rows × l, with
l = k + oversample, stays with the shards (Y_k is computed inside its task and only
read back, shard by shard, to form U at the end); everything of size n_cols × l or
l × l is small enough for the driver.

Algorithm (subspace iteration on AᵀA, then Rayleigh–Ritz on range(A Z))::

    Z = Ω = gaussian_test_matrix(n_cols, l, seed)              driver, independent of S
    α = 0
    repeat power_iters times:                                  one pass over the shards
        P = Σ_k A_kᵀ (A_k Z)                                   = AᵀA Z, n_cols × l
        α = max(α, λ_min(ZᵀP) / 2)       (dynamic shift, from the 2nd iteration on)
        Z = orthonormal_columns(P − α Z)                       driver
    M = Z
    repeat (1 pass; more only if Y = A M is ill-conditioned):  one pass over the shards
        Y_k = A_k M;  P = Σ_k A_kᵀ Y_k;  F = Σ_k Y_kᵀY_k (or TSQR of the R_k)
        T = basis(F): Q = Y T has orthonormal columns           driver, l × l
        if Q is orthonormal to ORTHO_TOL: stop, else M = M T
    Bᵀ = Aᵀ Q = P T;  Û, s, Vᵀ = svd(B)                        driver, signs fixed on Vᵀ
    U = Q Û = Y T Û                                            driver, from the last Y_k

In exact arithmetic this is scikit-learn's ``randomized_range_finder`` +
``randomized_svd`` with the same number of power iterations (2·q + 2 products with A),
whatever the normaliser: normalising only changes the basis of each iterate, not the
subspace. Numerically it differs in three ways:

* The half-step A Z is not orthonormalised: each iteration is one pass computing
  AᵀA Z with the shards, and only Z (on the driver) is orthonormalised. This loses
  directions whose singular values are below √u·σ₁ (u = unit roundoff, √u ≈ 1.5e-8);
  it is irrelevant unless σ_l/σ₁ approaches 1e-8 (PPMI: σ₁/σ₁₁₀ ≈ 10). scikit-learn's
  LU normaliser is no better there. What it buys: one pass (one Spark job) per
  iteration instead of three, and no per-shard Y to store between passes.
* The power iterations move Z, Y_k and the partial sums in float32 (as scikit-learn
  does for float32 input; products still accumulate in float64, sums over shards are
  float64): they only have to find the subspace, and rounding Z to float32 perturbs it by
  ~1e-7, which changes the Ritz values of the final pass only to second order. The
  Rayleigh–Ritz pass that yields s, U and Vᵀ is float64 throughout. This halves the
  bytes each product gathers and each task writes and the driver reads.
* The dynamic shift (``dynamic_shift=True``, dashSVD: Feng, Yu, Xie & Lu 2024): iterate
  with AᵀA − αI. PPMI spectra are flat (σ_k/σ_{k+10} ≈ 1.01 at k = 100), where plain
  subspace iteration converges slowly; the shift roughly doubles the progress per
  iteration there at the cost of one l × l product on the driver.

Orthonormalisation of the final Y = A M (never gathered), per pass:

* ``method="cholqr2"``: each shard returns its Gram matrix Y_kᵀY_k; the driver factors
  G = RᵀR (Cholesky) and T = R⁻¹. Q = Y R⁻¹ is orthonormal to about u·κ(Y)²; when that
  exceeds ``ORTHO_TOL`` the pass is repeated with M ← M R⁻¹, i.e. Y ← Y R⁻¹ recomputed
  through A (CholeskyQR2, Yamamoto et al. 2015; rounding in A·(M R⁻¹) is a backward
  error of A, which the result tolerates). If κ(Y) is beyond CholeskyQR2's bound or the
  Cholesky breaks down, that pass uses Fukaya et al.'s (2020) shifted factor and more
  passes follow (shifted CholeskyQR3). For PPMI (κ(Y) ≈ 10) one pass suffices.
* ``method="tsqr"``: each shard returns R_k of its Householder QR Y_k = Q̃_k R_k; the
  driver factors the stacked R_k = Q' R (Benson, Gleich & Demmel 2013) and T = R⁻¹;
  Q = Y R⁻¹ is orthonormal to about u·κ(Y).
* In the last allowed pass, or when Y is numerically rank-deficient (rank(A) < l), T
  is taken from the eigen- (or singular-) decomposition of the factor with the
  directions below rounding level dropped, so that Q = Y T stays orthonormal; fewer
  than l columns may remain (fewer than k only if rank(A) < k: the missing singular
  values are reported as 0).

Cost: power_iters + 1 passes computing A_kᵀ(A_k M) (more only for ill-conditioned Y);
each sends an n_cols × l matrix to every shard and receives an n_cols × l partial sum
from every shard; the last pass also hands over Y_k (m_k × l), which the driver reads
shard by shard after the orthonormalisation to form its rows of U (n_rows × k, the
output). A task holds its shard, M, Y_k and its partial sum. The driver holds
O((n_rows + n_cols) · l).

Determinism: Ω depends only on the seed, each row of A_k M is computed inside its
shard, and :class:`LocalRunner` adds partial sums in shard order: for a fixed S every
result is bitwise reproducible. For a different S the per-shard partial sums differ, and
so does their float32 rounding in the power iterations: results agree to float32
rounding of the subspace (tests check 1e-7 on a flat spectrum, where nothing has
converged); signs are fixed on Vᵀ, which the driver holds whole.
A Spark runner keeps this only if it also adds the partial sums in a fixed order, and
only with the same number of BLAS threads (dense products round differently when split
across threads; the stage uses one on the driver, as Spark does in its tasks).

:func:`randomized_svd_sharded` runs through a small :class:`ShardRunner` interface
(broadcast, reduce, release). :class:`LocalRunner` implements it on a Python
list; the Spark stage implements the same three methods and calls the same function,
so the order of operations tested here is the order run on the cluster.

Sparse shards are products through :class:`SparseRows` (the CSR of A_k and of A_kᵀ,
numba kernels): both products are then row-by-row gathers, A_k M from M and A_kᵀ Y_k
from the small Y_k, instead of scipy's scatter for Aᵀ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from numba import njit

from embedpipe.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_RANGE_PASSES",
    "METHODS",
    "ORTHO_TOL",
    "LocalRunner",
    "RangeBasis",
    "Shard",
    "ShardRunner",
    "SparseRows",
    "as_shard_matrix",
    "cholesky_upper",
    "cholqr2_max_condition",
    "cholqr_shift",
    "embed",
    "gaussian_test_matrix",
    "largest_principal_angle",
    "orthonormal_columns",
    "randomized_svd_sharded",
    "range_basis",
    "shard_qr_r",
    "shard_rows",
    "shard_times",
    "shard_transpose_times",
    "small_svd",
    "sparse_rows",
    "sum_in_order",
]

METHODS = ("cholqr2", "tsqr")
#: Q = Y T is accepted as orthonormal when its estimated ‖QᵀQ − I‖ is below this.
ORTHO_TOL = 1e-10
#: Passes of the final orthonormalisation at most (3 = shifted CholeskyQR3).
MAX_RANGE_PASSES = 3
_UNIT_ROUNDOFF = np.finfo(np.float64).eps / 2
# The last CholeskyQR factor of a well-orthonormalised matrix is I + O(u κ²); anything far
# from orthogonal means the previous passes could not orthonormalise (κ ≫ 1/u).
_LAST_FACTOR_MAX_COND = 10.0


class Shard(NamedTuple):
    """One row shard of A: ordinal ``k``, global ``row_index`` (m,), ``matrix`` (m × n_cols)."""

    k: int
    row_index: np.ndarray
    matrix: Any  # SparseRows, scipy sparse, or a dense ndarray (small tests)


class SparseRows(NamedTuple):
    """A shard's rows A_k as CSR arrays, together with the CSR arrays of A_kᵀ.

    Both products the algorithm needs are then gathers: A_k M reads rows of M, and
    A_kᵀ Y_k reads rows of the shard's small Y_k (m_k × l) instead of scattering into
    an n_cols × l output. The transpose costs a second copy of the shard (8 bytes per
    entry with float32 values and int32 indices). Values may be float32; products
    accumulate in float64. Arrays may be read-only (memory-mapped files).
    """

    n_rows: int
    n_cols: int
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    t_indptr: np.ndarray
    t_indices: np.ndarray
    t_data: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(rows of the shard, columns)."""
        return self.n_rows, self.n_cols

    @property
    def nnz(self) -> int:
        """Stored entries of A_k."""
        return int(self.data.shape[0])

    def to_csr(self) -> sp.csr_array:
        """A_k as a scipy CSR array (shares the arrays)."""
        return sp.csr_array((self.data, self.indices, self.indptr), shape=self.shape)


def sparse_rows(matrix: Any) -> SparseRows:
    """Return :class:`SparseRows` of a sparse matrix (CSR of it and of its transpose)."""
    csr = sp.csr_array(matrix)
    if not csr.has_sorted_indices:
        csr = csr.sorted_indices()
    # CSC -> CSR of the transpose visits A's rows in order: every row of Aᵀ is sorted, so
    # A_kᵀ Y_k adds the contributions to an output row in ascending order of A's row.
    t = sp.csr_array(csr.T).tocsr()
    if not t.has_sorted_indices:
        t.sort_indices()
    n, m = csr.shape
    return SparseRows(n, m, csr.indptr, csr.indices, csr.data, t.indptr, t.indices, t.data)


def as_shard_matrix(matrix: Any) -> Any:
    """``matrix`` as the kernels use it: sparse -> :class:`SparseRows`, dense -> float64 array."""
    if isinstance(matrix, SparseRows):
        return matrix
    if sp.issparse(matrix):
        return sparse_rows(matrix)
    return np.asarray(matrix, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Per-shard kernels (run in tasks)
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _csr_times_dense(indptr, indices, data, m, out):  # pragma: no cover - compiled
    """out[r] += Σ_p data[p] · m[indices[p]] over row r's entries, in storage order.

    float64 accumulation whatever the dtype of ``data``; the same order of additions as
    scipy's csr_matvecs, so the results are bit-identical to ``csr @ m`` in float64.
    """
    width = m.shape[1]
    for r in range(indptr.shape[0] - 1):
        acc = out[r]
        for p in range(indptr[r], indptr[r + 1]):
            a = np.float64(data[p])
            row = m[indices[p]]
            for c in range(width):
                acc[c] += a * row[c]


def _c_float(m: np.ndarray) -> np.ndarray:
    """C-contiguous float32 or float64 (other dtypes become float64)."""
    m = np.asarray(m)
    return np.ascontiguousarray(m, dtype=m.dtype if m.dtype == np.float32 else np.float64)


def gaussian_test_matrix(n_cols: int, width: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """Return Ω, an n_cols × width standard normal matrix drawn from ``seed`` (float64).

    Drawn once on the driver and sent to every shard, so it does not depend on the sharding.
    """
    return np.random.default_rng(seed).standard_normal((n_cols, width))


def shard_times(a_k: Any, m: np.ndarray) -> np.ndarray:
    """Return the shard's rows of A M, i.e. A_k M (m_k × l, float64).

    ``m`` may be float32 (the power iterations' transport precision): products still
    accumulate in float64.
    """
    if isinstance(a_k, SparseRows):
        m = _c_float(m)
        out = np.zeros((a_k.n_rows, m.shape[1]))
        _csr_times_dense(a_k.indptr, a_k.indices, a_k.data, m, out)
        return out
    return np.asarray(a_k @ m, dtype=np.float64)


def shard_transpose_times(a_k: Any, y_k: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return the shard's part A_kᵀ Y_k (n_cols × l) of AᵀY = Σ_k A_kᵀ Y_k.

    ``out`` (zeros, C-contiguous, n_cols × l) receives the result when given.
    """
    if isinstance(a_k, SparseRows):
        y_k = _c_float(y_k)
        if out is None:
            out = np.zeros((a_k.n_cols, y_k.shape[1]))
        _csr_times_dense(a_k.t_indptr, a_k.t_indices, a_k.t_data, y_k, out)
        return out
    result = np.asarray(a_k.T @ y_k, dtype=np.float64)
    if out is None:
        return result
    out[...] = result
    return out


def shard_qr_r(y_k: np.ndarray) -> np.ndarray:
    """Return R_k of the shard's Householder QR Y_k = Q̃_k R_k, padded to l × l with zeros."""
    y_k = np.asarray(y_k, dtype=np.float64)
    width = y_k.shape[1]
    r = np.zeros((width, width))
    if y_k.shape[0]:
        rk = np.linalg.qr(y_k, mode="r")
        r[: rk.shape[0]] = rk  # zero rows do not change the R of the stack
    return r


# --------------------------------------------------------------------------------------
# Driver-side kernels (small matrices)
# --------------------------------------------------------------------------------------


def cholesky_upper(g: np.ndarray) -> np.ndarray | None:
    """Return upper-triangular R with RᵀR = G, or None when the factorisation breaks down."""
    try:
        r = sla.cholesky(g, lower=False, check_finite=True)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return r if np.all(np.isfinite(r)) else None


def cholqr2_max_condition(n_rows: int, width: int) -> float:
    """Return the κ(Y) up to which CholeskyQR2 is proven orthonormal (Yamamoto et al. 2015)."""
    u = _UNIT_ROUNDOFF
    return 1.0 / (8.0 * math.sqrt(n_rows * width * u + width * (width + 1) * u))


def cholqr_shift(g: np.ndarray, n_rows: int) -> float:
    """Return Fukaya et al.'s shift 11 (m l + l(l+1)) u ‖Y‖_F² for a Gram matrix G = YᵀY."""
    width = g.shape[0]
    return 11.0 * (n_rows * width + width * (width + 1)) * _UNIT_ROUNDOFF * float(np.trace(g))


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    return sla.solve_triangular(r, np.eye(r.shape[0]), lower=False, check_finite=False)


class RangeBasis(NamedTuple):
    """How a pass turns Y into an orthonormal Q = Y T.

    ``t`` is l × r (r ≤ l columns kept), ``error`` the estimate of ‖QᵀQ − I‖ (inf when
    another pass is needed), ``kind`` what was done: "cholesky", "shifted_cholesky",
    "tsqr" or "truncated" (directions at rounding level dropped).
    """

    t: np.ndarray
    error: float
    kind: str


def _truncated(values: np.ndarray, vectors: np.ndarray, floor: float, power: int) -> RangeBasis:
    """T = W_r / σ_r over the singular values σ above ``floor`` (relative to σ₁)."""
    top = float(values.max()) if values.size else 0.0
    keep = values > floor * top if top > 0 else np.zeros(values.shape, bool)
    order = np.argsort(values[keep])[::-1]
    kept = values[keep][order]
    t = vectors[:, keep][:, order] / kept[np.newaxis, :] if kept.size else vectors[:, :0]
    error = _UNIT_ROUNDOFF * (top / kept[-1]) ** power if kept.size else 0.0
    return RangeBasis(t, float(error), "truncated")


def range_basis(factor: np.ndarray, method: str, n_rows: int, last: bool = False) -> RangeBasis:
    """Return the basis change T making Y T orthonormal, from the reduced factor of Y.

    ``factor`` is G = YᵀY (``method="cholqr2"``) or the stacked per-shard R_k
    (``"tsqr"``). ``last``: no further pass will follow, so rank deficiency or a
    failed factorisation is resolved by dropping directions at rounding level.
    """
    width = factor.shape[1]
    u = _UNIT_ROUNDOFF
    if method == "tsqr":
        r = np.linalg.qr(factor, mode="r") if factor.shape[0] else np.zeros((0, width))
        sv = np.linalg.svd(r, compute_uv=False) if r.size else np.zeros(0)
        if r.shape[0] == width and sv.size and sv[-1] > width * u * 1e3 * sv[0]:
            return RangeBasis(_upper_inverse(r), u * float(sv[0] / sv[-1]), "tsqr")
        _, s, wt = np.linalg.svd(r, full_matrices=False)
        return _truncated(s, wt.T, width * u * 10, 1)
    if method != "cholqr2":
        raise ConfigError(f"unknown orthonormalisation method {method!r}; use one of {METHODS}")
    g = 0.5 * (factor + factor.T)
    r = cholesky_upper(g)
    cond = np.linalg.cond(r) if r is not None else math.inf
    if r is not None and cond <= cholqr2_max_condition(n_rows, width):
        return RangeBasis(_upper_inverse(r), u * cond**2, "cholesky")
    if not last:
        r = cholesky_upper(g + cholqr_shift(g, n_rows) * np.eye(width))
        if r is not None:
            return RangeBasis(_upper_inverse(r), math.inf, "shifted_cholesky")
    lam, w = np.linalg.eigh(g)
    sv = np.sqrt(np.clip(lam, 0.0, None))
    # Eigenvalues of a Gram matrix are known to about n·l·u·λ_max: drop what is below.
    return _truncated(sv, w, math.sqrt(n_rows * width * u * 11), 2)


def orthonormal_columns(w: np.ndarray) -> np.ndarray:
    """Return an orthonormal basis of the columns of a matrix held whole on the driver.

    CholeskyQR2 (shifted CholeskyQR3 when ill-conditioned) costs Gram matrices and
    triangular solves, several times cheaper than Householder QR for a tall n × l
    matrix; Householder QR is the fallback when it cannot orthonormalise.
    """
    w = np.asarray(w, dtype=np.float64)
    n, width = w.shape
    q = w
    g = q.T @ q
    r = cholesky_upper(g)
    passes = 2
    if r is None or np.linalg.cond(r) > cholqr2_max_condition(n, width):
        r = cholesky_upper(g + cholqr_shift(g, n) * np.eye(width))
        passes = 3
    for i in range(passes):
        if r is None:
            break
        q = sla.solve_triangular(r, q.T, trans="T", lower=False, check_finite=False).T
        if i + 1 < passes:
            r = cholesky_upper(q.T @ q)
    if r is None or np.linalg.cond(r) > _LAST_FACTOR_MAX_COND:
        logger.warning("CholeskyQR could not orthonormalise Z (kappa > 1/u); using Householder")
        return np.ascontiguousarray(sla.qr(w, mode="economic", check_finite=False)[0])
    return np.ascontiguousarray(q)


def small_svd(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the thin SVD (Û, s, Vᵀ) of the small r × n_cols matrix B, with fixed signs.

    Each singular pair's sign is chosen so that the largest-magnitude entry of the row of
    Vᵀ is positive (scikit-learn's ``svd_flip`` decides on U; here Vᵀ is the factor the
    driver holds whole, and it does not depend on the sharding).
    """
    b = np.asarray(b, dtype=np.float64)
    wide = b.shape[1] > b.shape[0]
    # LAPACK is about twice as fast on the tall Bᵀ as on the wide B (same factors).
    m = b.T if wide else b
    try:
        left, s, right_t = sla.svd(m, full_matrices=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:  # gesdd can fail to converge where gesvd does not
        left, s, right_t = sla.svd(m, full_matrices=False, lapack_driver="gesvd")
    uhat, vt = (right_t.T, np.ascontiguousarray(left.T)) if wide else (left, right_t)
    if vt.shape[0]:
        signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
        signs[signs == 0] = 1.0
        uhat *= signs[np.newaxis, :]
        vt *= signs[:, np.newaxis]
    return uhat, s, vt


def embed(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, eig: float = 0.5, add_context: bool = False
) -> np.ndarray:
    """Return word vectors W = U Σ^eig, or W + C with C = V Σ^eig when ``add_context``.

    As Levy et al.'s hyperwords (``--eig``, ``--w+c``): eig (config ``svd.eig``) is 0, 0.5
    or 1 (any value in [0, 1] is accepted); for w + c both parts carry Σ^eig and are
    added unnormalised (consumers length-normalise). The sign of each (u_i, v_i) pair is
    shared, so W + C is well defined. ``add_context`` needs a square A (words =
    contexts).
    """
    if not (0.0 <= eig <= 1.0):
        raise ConfigError(f"svd.eig = {eig} is out of range; set svd.eig to 0, 0.5 or 1")
    weight = np.power(np.asarray(s, dtype=np.float64), eig)
    w = np.asarray(u, dtype=np.float64) * weight[np.newaxis, :]
    if add_context:
        if vt.shape[1] != u.shape[0]:
            raise ConfigError(
                f"svd.add_context needs as many contexts as words ({vt.shape[1]} != "
                f"{u.shape[0]}); set svd.add_context = false"
            )
        w = w + vt.T * weight[np.newaxis, :]
    return w


def largest_principal_angle(u1: np.ndarray, u2: np.ndarray) -> float:
    """Return the largest principal angle (radians) between the column spaces of u1 and u2."""
    return float(np.max(sla.subspace_angles(u1, u2)))


# --------------------------------------------------------------------------------------
# Running over shards
# --------------------------------------------------------------------------------------


class ShardRunner(Protocol):
    """What :func:`randomized_svd_sharded` needs from wherever the shards live.

    A dataset is an opaque handle with one record per shard (a list locally, files in
    Spark); ``fn`` is a picklable module-level function (``functools.partial``) applied
    to one record.
    """

    def broadcast(self, value: np.ndarray) -> Any:
        """Ship an array to every task; return a handle whose ``.value`` is it."""
        ...

    def reduce(
        self, fn: Callable[[Any], tuple[np.ndarray, Any]], dataset: Any
    ) -> tuple[np.ndarray, list[Any]]:
        """``fn(record)`` is ``(part, extra)``: return (Σ parts, [extras]), both in shard order."""
        ...

    def release(self, handle: Any) -> None:
        """Forget a broadcast."""
        ...


@dataclass(frozen=True)
class _Value:
    value: Any


class LocalRunner:
    """:class:`ShardRunner` on a Python list, summing in shard order (deterministic)."""

    def broadcast(self, value: np.ndarray) -> _Value:
        """Wrap ``value`` so that ``.value`` returns it, as a Spark broadcast does."""
        return _Value(value)

    def reduce(
        self, fn: Callable[[Any], tuple[np.ndarray, Any]], dataset: list[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        """Add the parts of every shard in shard order; extras in shard order."""
        total, extras = None, []
        for record in dataset:
            part, extra = fn(record)
            # float64 sums whatever the parts' dtype (float32 in the power iterations).
            total = np.array(part, dtype=np.float64) if total is None else total + part
            extras.append(extra)
        if total is None:
            raise InputError("the matrix has no shards; check the svd stage input")
        return total, extras

    def release(self, handle: Any) -> None:
        """Nothing to free locally."""


# Steps run in tasks: module-level so that Spark (and plain pickle) can ship them.


def _normal_step(z: Any, shard: Shard) -> tuple[np.ndarray, None]:
    """A_kᵀ (A_k Z): the shard's part of one power iteration.

    Z arrives in float32 and Y_k and the result leave in float32 (products accumulate in
    float64): the power iterations only have to find the subspace, and the float32
    transport halves the bytes gathered, written and summed (module docstring).
    """
    y = shard_times(shard.matrix, z.value).astype(np.float32)
    return shard_transpose_times(shard.matrix, y).astype(np.float32), None


def _range_step(
    m: Any, method: str, shard: Shard
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The shard's part of a Rayleigh–Ritz pass, with Y_k = A_k M:
    (A_kᵀ Y_k, (Y_kᵀY_k or R_k, global row ids, Y_k)). Y_k is only read for the rows of U
    once the basis is final (a Spark runner leaves it in a file)."""
    y = shard_times(shard.matrix, m.value)
    factor = y.T @ y if method == "cholqr2" else shard_qr_r(y)
    return shard_transpose_times(shard.matrix, y), (factor, shard.row_index, y)


def _validate(n_rows: int, n_cols: int, k: int, oversample: int, power_iters: int, method: str):
    if not 1 <= k <= min(n_rows, n_cols):
        raise ConfigError(
            f"svd.dim = {k} is out of range for a {n_rows} x {n_cols} matrix; "
            f"set 1 <= svd.dim <= {min(n_rows, n_cols)}"
        )
    if oversample < 0:
        raise ConfigError(f"svd.oversample = {oversample} is negative; set it >= 0 (10 is usual)")
    if power_iters < 0:
        raise ConfigError(f"svd.power_iters = {power_iters} is negative; set it >= 0")
    if method not in METHODS:
        raise ConfigError(f"unknown orthonormalisation method {method!r}; use one of {METHODS}")


def _pass(runner: ShardRunner, fn: Callable[..., Any], value: np.ndarray, *args: Any) -> Any:
    handle = runner.broadcast(value)
    try:
        return fn(handle, *args)
    finally:
        runner.release(handle)


def randomized_svd_sharded(
    shards: Any,
    n_cols: int,
    k: int,
    oversample: int = 10,
    power_iters: int = 3,
    seed: int = 0,
    method: str = "cholqr2",
    *,
    dynamic_shift: bool = True,
    n_rows: int | None = None,
    runner: ShardRunner | None = None,
    passes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the rank-k truncated SVD (U, s, Vᵀ) of A, given as row shards.

    Parameters
    ----------
    shards
        Without ``runner``: a sequence of ``(row_index, matrix)`` pairs, shard k at
        position k (``matrix`` sparse of shape (m_k, n_cols), :class:`SparseRows` or
        dense). With ``runner``: a dataset of that runner holding :class:`Shard` records.
    n_cols : int
        Number of columns of A.
    k : int
        Rank kept (config ``svd.dim``).
    oversample, power_iters, seed
        Config ``svd.oversample``, ``svd.power_iters``, ``svd.seed``. The sketch has
        l = min(k + oversample, n_rows, n_cols) columns; with l = min(n_rows, n_cols)
        the result is the exact SVD up to rounding.
    method : "cholqr2" or "tsqr"
        How the final Y is orthonormalised (module docstring).
    dynamic_shift : bool
        Iterate with AᵀA − αI instead of AᵀA (dashSVD, Feng et al. 2024), α = σ̃_l²/2
        from the Ritz values of the previous iteration (σ̃_l ≤ σ_l, so the top l
        directions stay dominant). Costs one l × l product on the driver and speeds up
        convergence on flat spectra such as PPMI's: the rate for σ_j becomes
        (σ_{l+1}² − α)/(σ_j² − α) instead of σ_{l+1}²/σ_j², about twice as many
        iterations' worth when σ_j ≈ σ_{l+1}.
    n_rows : int, optional
        Number of rows of A; defaults to ``n_cols`` (a square co-occurrence matrix).
    runner : ShardRunner, optional
        Where the shards live; :class:`LocalRunner` by default.
    passes : list, optional
        Receives the kind of every final orthonormalisation pass (for logs and tests).

    Returns
    -------
    U : (n_rows, k) float64, rows in global order (rows in no shard are zero)
    s : (k,) singular values, descending (0 beyond the numerical rank of A)
    Vt : (k, n_cols) float64, each row's largest-magnitude entry positive
    """
    n_rows = n_cols if n_rows is None else n_rows
    _validate(n_rows, n_cols, k, oversample, power_iters, method)
    if runner is None:
        runner = LocalRunner()
        shards = [
            Shard(i, np.asarray(row_index, dtype=np.int64), as_shard_matrix(matrix))
            for i, (row_index, matrix) in enumerate(shards)
        ]
    width = min(k + oversample, n_rows, n_cols)

    def reduce_with(step: Callable[..., Any]) -> Callable[..., Any]:
        return lambda handle, *args: runner.reduce(partial(step, handle, *args), shards)

    z = gaussian_test_matrix(n_cols, width, seed)
    alpha = 0.0
    for iteration in range(power_iters):
        p, _ = _pass(runner, reduce_with(_normal_step), z.astype(np.float32))  # AᵀA Z
        if dynamic_shift and iteration > 0:
            # Z is orthonormal from the second iteration on, so the eigenvalues of
            # ZᵀAᵀAZ are squared Ritz values of A: λ_min ≤ σ_l².
            ritz_min = float(np.linalg.eigvalsh(0.5 * (z.T @ p + p.T @ z))[0])
            alpha = max(alpha, 0.5 * ritz_min)
        if alpha > 0.0:
            p -= alpha * z  # (AᵀA − αI) Z
        z = orthonormal_columns(p)
        del p

    m = z
    for i in range(MAX_RANGE_PASSES):
        p, extras = _pass(runner, reduce_with(_range_step), m, method)
        factors = [f for f, _, _ in extras]
        factor = sum_in_order(factors) if method == "cholqr2" else np.vstack(factors)
        basis = range_basis(factor, method, n_rows, last=i + 1 == MAX_RANGE_PASSES)
        if passes is not None:
            passes.append(basis.kind)
        logger.debug("range pass %d: %s, orthogonality ~%.1e", i + 1, basis.kind, basis.error)
        if basis.error <= ORTHO_TOL or i + 1 == MAX_RANGE_PASSES:
            break
        m = m @ basis.t
    bt = p @ basis.t  # Bᵀ = AᵀQ with Q = Y T
    uhat, s, vt = small_svd(np.ascontiguousarray(bt.T))
    kept = min(k, s.size)
    u = np.zeros((n_rows, k))
    coefficients = basis.t @ uhat[:, :kept]
    for _, row_index, y in extras:  # U = Q Û = Y T Û, shard by shard
        u[row_index, :kept] = y @ coefficients
    s_out, vt_out = np.zeros(k), np.zeros((k, n_cols))
    s_out[:kept], vt_out[:kept] = s[:kept], vt[:kept]
    return u, s_out, vt_out


def sum_in_order(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Σ parts, added left to right (the shard order)."""
    total = np.array(parts[0], dtype=np.float64)
    for part in parts[1:]:
        total = total + part
    return total


def shard_rows(matrix: Any, n_shards: int) -> list[tuple[np.ndarray, Any]]:
    """Split a whole matrix into row shards the stage's way (rows i ≡ k mod S); for tests."""
    matrix = sp.csr_array(matrix)
    out = []
    for k in range(n_shards):
        rows = np.arange(k, matrix.shape[0], n_shards, dtype=np.int64)
        out.append((rows, matrix[rows]))
    return out
