"""Randomized truncated SVD of a matrix held as row shards (Halko, Martinsson & Tropp 2011).

The matrix A (n_rows × n_cols; the PPMI matrix, which is *not* symmetric when the
context distribution is smoothed) is split into row shards: shard k holds some rows of A
as a CSR matrix A_k together with their global row indices. Everything of size
n_rows × l, with l = k + oversample, is kept as per-shard row blocks (Y_k, Q_k, U_k);
everything of size n_cols × l or l × l is small enough for the driver.

Algorithm (scikit-learn's ``randomized_range_finder`` with QR normalisation of every
half-step, its most accurate choice; its default for 3 or more iterations, LU, is not
orthonormal and would need Y gathered on the driver)::

    Ω = gaussian_test_matrix(n_cols, l, seed)                 driver, independent of S
    Z = Ω;  Y_k = A_k Z;  α = 0                               per shard
    repeat power_iters times:
        Y = Q r  (Q_k = Y_k r⁻¹)  orthonormalize: CholeskyQR2 or TSQR, never gathering Y
        W = Σ_k A_kᵀ Q_k                                      per shard, summed (n_cols × l)
        α = max(α, σ_min(r)² / 2)        (dynamic shift, from the 2nd iteration on)
        W = W r − α Z                    = (AᵀA − αI) Z
        Z = orthonormal_columns(W)                            driver: W is already there
        Y_k = A_k Z                                           per shard
    Y = Q r                                                   orthonormalize once more
    Bᵀ = Σ_k A_kᵀ Q_k                                         B = QᵀA, l × n_cols
    Û, s, Vᵀ = svd(B)                                         driver, signs fixed on Vᵀ
    U_k = Q_k Û[:, :k]                                        per shard

The dynamic shift (``dynamic_shift=True``, dashSVD: Feng, Yu, Xie & Lu 2024) is what
differs from scikit-learn; with α = 0 the iteration is exactly its QR-normalised one.
PPMI spectra are flat (σ_k/σ_{k+10} ≈ 1.01 at k = 100), where plain subspace
iteration converges slowly; the shift roughly doubles the progress per iteration there
at the cost of one l × l product on the driver (see :func:`randomized_svd_sharded`).

Passes over A: 2 · power_iters + 2 sparse products per shard; orthonormalisation adds
rounds over the small Y_k only. The driver holds Ω or Z, one sum and Vᵀ: O(n_cols · l).
A task holds its shard, the broadcast Ω or Z and its n_cols × l partial sum.

Orthonormalisation of Y (never gathered):

* ``method="cholqr2"``: CholeskyQR2 (Yamamoto et al. 2015): G = Σ_k Y_kᵀY_k, R₁ = chol(G),
  then once more on Y R₁⁻¹. It is orthonormal to rounding when κ(Y) is below
  1 / (8 √(m l u + l(l+1) u)) (u = unit roundoff; m = n_rows), which Y = A Z meets
  for PPMI (κ ≈ σ₁/σ_l). Above that, or if the Cholesky breaks down, the first
  factor is taken from G + s·I with Fukaya et al.'s (2020) shift s = 11 (m l + l(l+1))
  u ‖Y‖_F², and CholeskyQR2 follows: shifted CholeskyQR3, valid up to κ(Y) ≈ 1/u.
  An exactly rank-deficient Y (rank(A) < l) passes too: the shift makes the first
  factor invertible and the rounding noise in the null directions is orthonormalised
  into harmless extra basis vectors (Y = Q R still holds). If a factorisation breaks
  down all the same, or the last factor is not ≈ orthogonal (κ(Y) far beyond 1/u),
  this orthonormalisation falls back to TSQR, which handles anything. Each round is
  one l × l reduce.
* ``method="tsqr"``: direct TSQR (Benson, Gleich & Demmel 2013): each shard returns R_k
  of Y_k = Q̃_k R_k; the driver factors the stacked R_k = Q' R; shard k's rows of Q are
  Q̃_k Q'_k (Q'_k its block of Q'). One round of S small matrices; unconditionally
  stable, but the driver holds S blocks of l × l.

Determinism: Ω depends only on the seed, and each row of A_k M is computed inside its
row, so only the sums over shards (Gram matrices, AᵀQ) depend on S. :class:`LocalRunner`
adds them in shard order: for a fixed S every result is bitwise reproducible; for a
different S only the order of those additions changes, so results agree to rounding
(tests check 1e-10), and signs are fixed on Vᵀ, which the driver holds whole. A Spark
runner keeps this only if it also adds the partial sums in a fixed order.

:func:`randomized_svd_sharded` runs the algorithm through a small :class:`ShardRunner`
interface (broadcast, map, sum, collect, release). :class:`LocalRunner` implements it
on a Python list; the Spark stage implements the same five methods on an RDD of
:class:`Shard` records and calls the same function, so the order of operations tested
here is the order run on the cluster.
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

from embedpipe.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "LocalRunner",
    "QFactor",
    "Shard",
    "ShardRunner",
    "apply_r_inverse",
    "cholesky_upper",
    "cholqr2_max_condition",
    "cholqr_shift",
    "embed",
    "gaussian_test_matrix",
    "largest_principal_angle",
    "orthonormal_columns",
    "orthonormalize",
    "randomized_svd_sharded",
    "shard_gram",
    "shard_q",
    "shard_qr_r",
    "shard_rows",
    "shard_times",
    "shard_transpose_times",
    "small_svd",
    "tsqr_apply",
    "tsqr_combine",
]

METHODS = ("cholqr2", "tsqr")
_UNIT_ROUNDOFF = np.finfo(np.float64).eps / 2
# The last CholeskyQR factor of a well-orthonormalised Y is I + O(u κ²); anything far
# from orthogonal means the previous passes could not orthonormalise (κ(Y) ≫ 1/u).
_LAST_FACTOR_MAX_COND = 10.0


class Shard(NamedTuple):
    """One row shard of A: ordinal ``k``, global ``row_index`` (m,), ``matrix`` (m × n_cols)."""

    k: int
    row_index: np.ndarray
    matrix: Any  # scipy sparse CSR (or a dense ndarray in small tests)


# --------------------------------------------------------------------------------------
# Per-shard kernels (run in tasks)
# --------------------------------------------------------------------------------------


def gaussian_test_matrix(n_cols: int, width: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """Return Ω, an n_cols × width standard normal matrix drawn from ``seed`` (float64).

    Drawn once on the driver and broadcast, so it does not depend on the sharding.
    """
    return np.random.default_rng(seed).standard_normal((n_cols, width))


def shard_times(a_k: Any, m: np.ndarray) -> np.ndarray:
    """Return the shard's rows of A M, i.e. A_k M (m_k × l, float64)."""
    return np.asarray(a_k @ m, dtype=np.float64)


def shard_transpose_times(a_k: Any, q_k: np.ndarray) -> np.ndarray:
    """Return the shard's part A_kᵀ Q_k (n_cols × l) of AᵀQ = Σ_k A_kᵀ Q_k.

    This is also the shard's part of Bᵀ = (QᵀA)ᵀ; the CSR transpose is a free CSC view.
    """
    return np.asarray(a_k.T @ q_k, dtype=np.float64)


def apply_r_inverse(y_k: np.ndarray, r_factors: Sequence[np.ndarray]) -> np.ndarray:
    """Return Y_k R₁⁻¹ R₂⁻¹ …, applying the upper-triangular factors one after another.

    Applying them in turn (not their product at once) is what makes CholeskyQR2 stable:
    each solve only has to undo the conditioning left by the previous one.
    """
    q = np.asarray(y_k, dtype=np.float64)
    for r in r_factors:
        # X R = Y  <=>  Rᵀ Xᵀ = Yᵀ: one triangular solve with many right-hand sides.
        q = sla.solve_triangular(r, q.T, trans="T", lower=False, check_finite=False).T
    return np.ascontiguousarray(q)


def shard_gram(y_k: np.ndarray, r_factors: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Return the shard's Gram matrix QᵀQ (l × l) of Q = Y_k R₁⁻¹ R₂⁻¹ …."""
    q = apply_r_inverse(y_k, r_factors)
    return q.T @ q


def shard_qr_r(y_k: np.ndarray) -> np.ndarray:
    """Return R_k of the shard's Householder QR Y_k = Q̃_k R_k (min(m_k, l) × l)."""
    y_k = np.asarray(y_k, dtype=np.float64)
    if y_k.shape[0] == 0:
        return np.zeros((0, y_k.shape[1]))
    return np.linalg.qr(y_k, mode="r")


def tsqr_apply(y_k: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Return the shard's rows Q̃_k Q'_k of the TSQR basis.

    Recomputes Q̃_k; Householder QR of the same Y_k is deterministic, so it matches the
    R_k that :func:`shard_qr_r` returned earlier.
    """
    y_k = np.asarray(y_k, dtype=np.float64)
    if y_k.shape[0] == 0:
        return np.zeros((0, block.shape[1]))
    q_local = np.linalg.qr(y_k, mode="reduced")[0]
    return q_local @ block


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


def tsqr_combine(r_factors: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Factor the stacked per-shard R_k = Q' R; return (R, the blocks Q'_k in input order)."""
    stacked = np.vstack(r_factors)
    q_prime, r = np.linalg.qr(stacked, mode="reduced")
    bounds = np.cumsum([0] + [rk.shape[0] for rk in r_factors])
    return r, [q_prime[bounds[i] : bounds[i + 1]] for i in range(len(r_factors))]


def small_svd(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the thin SVD (Û, s, Vᵀ) of the small l × n_cols matrix B, with fixed signs.

    Each singular pair's sign is chosen so that the largest-magnitude entry of the row of
    Vᵀ is positive (scikit-learn's ``svd_flip`` decides on U; here Vᵀ is the factor the
    driver holds whole, and it does not depend on the sharding).
    """
    try:
        uhat, s, vt = sla.svd(b, full_matrices=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:  # gesdd can fail to converge where gesvd does not
        uhat, s, vt = sla.svd(b, full_matrices=False, lapack_driver="gesvd")
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

    Datasets are opaque handles with one record per shard (a list locally, an RDD in
    Spark); ``fn`` is a picklable module-level function (``functools.partial``) applied
    to the records of the given datasets zipped together, which share their partitioning.
    """

    def broadcast(self, value: Any) -> Any:
        """Ship ``value`` to every task; return a handle whose ``.value`` is it."""
        ...

    def map(self, fn: Callable[..., Any], *datasets: Any) -> Any:
        """Return a new dataset of fn(records...); it is reused, so keep (persist) it."""
        ...

    def sum(self, fn: Callable[..., np.ndarray], *datasets: Any) -> np.ndarray:
        """Return Σ fn(records...) over shards (reduce arrays of equal shape)."""
        ...

    def collect(self, fn: Callable[..., Any], *datasets: Any) -> list[Any]:
        """Return [fn(records...)] for every shard, in any order."""
        ...

    def release(self, handle: Any) -> None:
        """Forget a dataset returned by ``map`` or a broadcast (unpersist / destroy)."""
        ...


@dataclass(frozen=True)
class _Value:
    value: Any


class LocalRunner:
    """:class:`ShardRunner` on a Python list, summing in shard order (deterministic)."""

    def broadcast(self, value: Any) -> _Value:
        """Wrap ``value`` so that ``.value`` returns it, as a Spark broadcast does."""
        return _Value(value)

    def map(self, fn: Callable[..., Any], *datasets: list[Any]) -> list[Any]:
        """Apply ``fn`` to the zipped records of ``datasets``."""
        return [fn(*records) for records in zip(*datasets, strict=True)]

    def sum(self, fn: Callable[..., np.ndarray], *datasets: list[Any]) -> np.ndarray:
        """Add ``fn`` of every shard's records, in shard order."""
        total = None
        for records in zip(*datasets, strict=True):
            part = fn(*records)
            total = part.copy() if total is None else total + part
        if total is None:
            raise InputError("the matrix has no shards; check the svd stage input")
        return total

    def collect(self, fn: Callable[..., Any], *datasets: list[Any]) -> list[Any]:
        """Return ``fn`` of every shard's records, in shard order."""
        return self.map(fn, *datasets)

    def release(self, handle: Any) -> None:
        """Nothing to free locally."""


@dataclass(frozen=True)
class QFactor:
    """How shard k turns its Y_k into its rows Q_k of an orthonormal basis of range(Y).

    ``kind`` is "cholqr2", "shifted_cholqr3" (Q_k = Y_k R₁⁻¹ R₂⁻¹ … with ``r_factors``)
    or "tsqr" (Q_k = Q̃_k ``blocks[k]``). ``r`` is the l × l triangular factor of
    Y = Q r (the product of the Cholesky factors, or the TSQR R).
    """

    kind: str
    r: np.ndarray
    r_factors: tuple[np.ndarray, ...] = ()
    blocks: dict[int, np.ndarray] | None = None


def shard_q(k: int, y_k: np.ndarray, factor: QFactor) -> np.ndarray:
    """Return shard k's rows Q_k of the orthonormal basis described by ``factor``."""
    if factor.kind == "tsqr":
        assert factor.blocks is not None
        return tsqr_apply(y_k, factor.blocks[k])
    return apply_r_inverse(y_k, factor.r_factors)


# Steps run in tasks: module-level so that Spark (and plain pickle) can ship them. Y
# records are (k, Y_k) so that any step knows its shard without a join.


def _times_step(m: Any, shard: Shard) -> tuple[int, np.ndarray]:
    return shard.k, shard_times(shard.matrix, m.value)


def _gram_step(r_factors: Any, y: tuple[int, np.ndarray]) -> np.ndarray:
    return shard_gram(y[1], r_factors.value)


def _qr_r_step(y: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    return y[0], shard_qr_r(y[1])


def _transpose_times_step(factor: Any, shard: Shard, y: tuple[int, np.ndarray]) -> np.ndarray:
    if shard.k != y[0]:
        raise InputError(f"shard {shard.k} was paired with Y of shard {y[0]}; keep partitioning")
    return shard_transpose_times(shard.matrix, shard_q(y[0], y[1], factor.value))


def _u_rows_step(
    factor: Any, uhat: Any, shard: Shard, y: tuple[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    if shard.k != y[0]:
        raise InputError(f"shard {shard.k} was paired with Y of shard {y[0]}; keep partitioning")
    return shard.row_index, shard_q(y[0], y[1], factor.value) @ uhat.value


def _tsqr(runner: ShardRunner, ys: Any) -> QFactor:
    parts = sorted(runner.collect(_qr_r_step, ys), key=lambda kr: kr[0])
    r, blocks = tsqr_combine([r for _, r in parts])
    return QFactor("tsqr", r, blocks={k: b for (k, _), b in zip(parts, blocks, strict=True)})


def _gram(runner: ShardRunner, ys: Any, r_factors: list[np.ndarray]) -> np.ndarray:
    handle = runner.broadcast(tuple(r_factors))
    try:
        return runner.sum(partial(_gram_step, handle), ys)
    finally:
        runner.release(handle)


def orthonormalize(
    runner: ShardRunner, ys: Any, n_rows: int, width: int, method: str = "cholqr2"
) -> QFactor:
    """Return how every shard gets its rows Q_k of an orthonormal basis of range(Y).

    ``ys`` holds records (k, Y_k). See the module docstring for the CholeskyQR2 →
    shifted CholeskyQR3 → TSQR cascade; every step is an l × l reduce (or, for TSQR,
    a collect of S small R_k).
    """
    if method == "tsqr":
        return _tsqr(runner, ys)
    if method != "cholqr2":
        raise ConfigError(f"unknown orthonormalisation method {method!r}; use one of {METHODS}")
    g = _gram(runner, ys, [])
    r = cholesky_upper(g)
    kind = "cholqr2"
    if r is None or np.linalg.cond(r) > cholqr2_max_condition(n_rows, width):
        kind = "shifted_cholqr3"
        r = cholesky_upper(g + cholqr_shift(g, n_rows) * np.eye(width))
    r_factors = [] if r is None else [r]
    for _ in range(1 if kind == "cholqr2" else 2):
        if r is None:
            break
        r = cholesky_upper(_gram(runner, ys, r_factors))
        if r is not None:
            r_factors.append(r)
    if r is None or np.linalg.cond(r_factors[-1]) > _LAST_FACTOR_MAX_COND:
        logger.warning("CholeskyQR could not orthonormalise Y (kappa > 1/u); using TSQR")
        return _tsqr(runner, ys)
    logger.debug("orthonormalised Y with %s", kind)
    total = r_factors[0]
    for factor in r_factors[1:]:
        total = factor @ total  # Y = Q₁R₁ = Q₂R₂R₁ = …
    return QFactor(kind, total, tuple(r_factors))


def _validate(n_rows: int, n_cols: int, k: int, oversample: int, power_iters: int, method: str):
    if not 1 <= k <= min(n_rows, n_cols):
        raise ConfigError(
            f"svd.dim = {k} is out of range for a {n_rows} x {n_cols} matrix; "
            f"set 1 <= svd.dim <= {min(n_rows, n_cols)}"
        )
    if oversample < 0:
        raise ConfigError(f"svd.oversample = {oversample} is negative; set it >= 0 (10 is usual)")
    if power_iters < 0:
        raise ConfigError(f"svd.power_iters = {power_iters} is negative; set it >= 0 (3 is usual)")
    if method not in METHODS:
        raise ConfigError(f"unknown orthonormalisation method {method!r}; use one of {METHODS}")


def orthonormal_columns(w: np.ndarray, method: str = "cholqr2") -> np.ndarray:
    """Return an orthonormal basis of the columns of a matrix held whole on the driver.

    The same cascade as :func:`orthonormalize` with a single shard: CholeskyQR2 costs a
    Gram matrix and two triangular solves, several times cheaper than Householder QR
    for a tall n_cols × l matrix, and falls back to Householder (TSQR of one block).
    """
    runner = LocalRunner()
    records = [(0, w)]
    factor = orthonormalize(runner, records, w.shape[0], w.shape[1], method)
    return shard_q(0, w, factor)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the rank-k truncated SVD (U, s, Vᵀ) of A, given as row shards.

    Parameters
    ----------
    shards
        Without ``runner``: a sequence of ``(row_index, matrix)`` pairs, shard k at
        position k (``matrix`` CSR of shape (m_k, n_cols)). With ``runner``: a dataset
        of that runner holding :class:`Shard` records.
    n_cols : int
        Number of columns of A.
    k : int
        Rank kept (config ``svd.dim``).
    oversample, power_iters, seed
        Config ``svd.oversample``, ``svd.power_iters``, ``svd.seed``. The sketch has
        l = min(k + oversample, n_rows, n_cols) columns; with l = min(n_rows, n_cols)
        the result is the exact SVD up to rounding.
    method : "cholqr2" or "tsqr"
        How Y is orthonormalised (module docstring).
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

    Returns
    -------
    U : (n_rows, k) float64, rows in global order (rows in no shard are zero)
    s : (k,) singular values, descending
    Vt : (k, n_cols) float64, each row's largest-magnitude entry positive
    """
    n_rows = n_cols if n_rows is None else n_rows
    _validate(n_rows, n_cols, k, oversample, power_iters, method)
    if runner is None:
        runner = LocalRunner()
        shards = [
            Shard(i, np.asarray(row_index, dtype=np.int64), matrix)
            for i, (row_index, matrix) in enumerate(shards)
        ]
    width = min(k + oversample, n_rows, n_cols)

    z = gaussian_test_matrix(n_cols, width, seed)
    m = runner.broadcast(z)
    ys = runner.map(partial(_times_step, m), shards)
    alpha = 0.0
    for iteration in range(power_iters):
        q_factor = orthonormalize(runner, ys, n_rows, width, method)
        factor = runner.broadcast(q_factor)
        w = runner.sum(partial(_transpose_times_step, factor), shards, ys)  # AᵀQ
        for handle in (factor, ys, m):
            runner.release(handle)
        if dynamic_shift and iteration > 0:
            # Z is orthonormal from the second iteration on, so the singular values of
            # r (A Z = Q r) are Ritz values of A: σ_min(r) ≤ σ_l.
            ritz_min = np.linalg.svd(q_factor.r, compute_uv=False)[-1]
            alpha = max(alpha, 0.5 * float(ritz_min) ** 2)
        if alpha > 0.0:
            w = w @ q_factor.r - alpha * z  # (AᵀA − αI) Z, since AᵀQ r = AᵀA Z
        # W is whole on the driver after the reduce: orthonormalise it here.
        z = orthonormal_columns(w, method)
        m = runner.broadcast(z)
        ys = runner.map(partial(_times_step, m), shards)
    factor = runner.broadcast(orthonormalize(runner, ys, n_rows, width, method))
    bt = runner.sum(partial(_transpose_times_step, factor), shards, ys)  # Bᵀ = AᵀQ
    uhat, s, vt = small_svd(bt.T)
    uhat_k = runner.broadcast(np.ascontiguousarray(uhat[:, :k]))
    parts = runner.collect(partial(_u_rows_step, factor, uhat_k), shards, ys)
    # A broadcast is released only after the datasets built from it: Spark ships a
    # persisted RDD's lineage (closures included) with every task that reads it.
    for handle in (factor, uhat_k, ys, m):
        runner.release(handle)

    u = np.zeros((n_rows, k))
    for row_index, u_rows in parts:
        u[row_index] = u_rows
    return u, s[:k], vt[:k]


def shard_rows(matrix: Any, n_shards: int) -> list[tuple[np.ndarray, Any]]:
    """Split a whole matrix into row shards the stage's way (rows i ≡ k mod S); for tests."""
    matrix = sp.csr_array(matrix)
    out = []
    for k in range(n_shards):
        rows = np.arange(k, matrix.shape[0], n_shards, dtype=np.int64)
        out.append((rows, matrix[rows]))
    return out
