"""GloVe numeric kernel: AdaGrad on a shard of co-occurrence entries, and the merge.

The maths of Pennington et al. (2014) as implemented by Stanford's ``glove.c``: for
every stored entry (i, j, x), with word vector ``W[i]``, context vector ``C[j]`` and
biases ``bw[i]``, ``bc[j]``,

    diff  = W[i] · C[j] + bw[i] + bc[j] - log x
    f     = 1 if x > x_max else (x / x_max) ** alpha
    cost += 0.5 * f * diff ** 2

followed by a per-coordinate AdaGrad step on the four parameters the entry touches.
The step mirrors ``glove.c`` exactly, quirks included:

* the gradient component is clipped to ``[-grad_clip, grad_clip]`` *before* the
  learning rate is applied (``glove.c``'s ``grad_clip_value``, default 100);
* the AdaGrad accumulator starts at 1.0 and sums ``(eta * g) ** 2``, i.e. the
  learning rate is inside the accumulator, so the first step is exactly ``eta * g``;
* the update uses the accumulator *before* the current gradient is added, and both
  ``W[i]`` and ``C[j]`` are updated from the other's *old* value.

One deliberate difference: ``glove.c`` since 2020 (PR #149) updates the biases with
learning rate 1 and no clipping, because the refactor that added clipping dropped
``fdiff *= eta`` for the bias lines (stanfordnlp/GloVe PR #209, still open). We follow
the paper and ``glove.c`` 1.2, which trained the published vectors: biases use
``eta`` and the same clipping. ``bias_eta=1.0`` reproduces current ``glove.c``
(apart from clipping, which at 100 practically never fires for a bias).

The other difference is on purpose too: ``glove.c`` silently skips an entry whose
``diff`` is NaN or infinite. We stop the pass there and report a non-finite loss, so
that a diverged run fails loudly (:class:`~embedpipe.errors.TrainingDivergedError`)
instead of writing garbage vectors.

Distributed use (see DESIGN.md "Training, distributed"): every Spark task calls
:func:`train_shard` on its shard with the broadcast :class:`GloveParams` and returns
a :class:`ShardResult` holding only the rows it touched and their update counts; the
driver folds the results into new parameters with :class:`ParamMerger` (streaming)
or :func:`merge_results`. With the default merge, ``"scaled"``, the shards train with
``context_scale = S``: the one addition to ``glove.c``'s update (see ParamMerger for
why). Nothing here imports Spark.

Parameters are float32 (half the memory and broadcast bytes of ``glove.c``'s
doubles); all arithmetic inside the kernel is float64 like ``glove.c``, rounded to
float32 only when a parameter is stored; the loss is accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from embedpipe.errors import InputError, TrainingDivergedError

__all__ = [
    "GRAD_CLIP",
    "MERGE_MODES",
    "PREFETCH",
    "GloveParams",
    "ParamMerger",
    "RowBlock",
    "ShardResult",
    "adagrad_pass",
    "context_scale",
    "init_params",
    "loss",
    "merge_results",
    "output_vectors",
    "shuffle_order",
    "train_shard",
]

#: ``glove.c``'s default ``grad_clip_value``: gradient components are clipped to ±100.
GRAD_CLIP = 100.0

Seed = int | Sequence[int]


# --------------------------------------------------------------------------- state


@dataclass
class GloveParams:
    """All trainable state of a GloVe model: vectors, biases and AdaGrad sums.

    ``W``/``bw`` are word (row, ``i``) parameters, ``C``/``bc`` context (column,
    ``j``) parameters; ``gW``, ``gbw``, ``gC``, ``gbc`` the matching AdaGrad sums of
    squared steps. Matrices are ``(V, dim)`` float32 C-contiguous, vectors ``(V,)``
    float32. Memory: ``4 * V * (dim + 1) * 4`` bytes.
    """

    W: np.ndarray
    bw: np.ndarray
    gW: np.ndarray  # noqa: N815 - the paper's/glove.c's W, C notation
    gbw: np.ndarray
    C: np.ndarray
    bc: np.ndarray
    gC: np.ndarray  # noqa: N815
    gbc: np.ndarray

    @property
    def vocab_size(self) -> int:
        """Number of rows V."""
        return int(self.W.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.W.shape[1])

    def copy(self) -> GloveParams:
        """A deep copy (the kernels update in place; broadcast values must stay intact)."""
        return GloveParams(*(a.copy() for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The eight arrays in field order ``W, bw, gW, gbw, C, bc, gC, gbc``."""
        return (self.W, self.bw, self.gW, self.gbw, self.C, self.bc, self.gC, self.gbc)

    def all_finite(self) -> bool:
        """True when no parameter or AdaGrad sum is NaN or infinite."""
        return all(bool(np.isfinite(a).all()) for a in self.arrays())


def init_params(vocab_size: int, dim: int, seed: Seed) -> GloveParams:
    """Fresh parameters as ``glove.c`` initialises them, from an explicit seed.

    Vectors *and* biases are uniform in ``[-0.5, 0.5) / dim`` (``glove.c`` draws the
    biases from the same distribution, they live in the same array); AdaGrad sums
    are 1.0 so that the first step size equals ``eta``. Draw order: W, C, bw, bc,
    from ``np.random.Generator(PCG64(seed))``; ``seed`` is an int or a sequence of
    ints (e.g. ``(cfg.seed, 0)``).
    """
    if vocab_size < 1 or dim < 1:
        raise InputError(
            f"GloVe needs vocab_size >= 1 and dim >= 1, got {vocab_size} and {dim}; "
            "check glove.dim and that the vocab stage produced words"
        )
    rng = np.random.Generator(np.random.PCG64(seed))

    def uniform(shape: tuple[int, ...]) -> np.ndarray:
        return ((rng.random(shape) - 0.5) / dim).astype(np.float32)

    W = uniform((vocab_size, dim))
    C = uniform((vocab_size, dim))
    bw = uniform((vocab_size,))
    bc = uniform((vocab_size,))
    ones_m = np.ones((vocab_size, dim), dtype=np.float32)
    ones_v = np.ones(vocab_size, dtype=np.float32)
    return GloveParams(W, bw, ones_m, ones_v.copy(), C, bc, ones_m.copy(), ones_v.copy())


def output_vectors(params: GloveParams) -> np.ndarray:
    """The published embedding ``W + C`` (``glove.c -model 2``), float32 ``(V, dim)``."""
    return params.W + params.C


def shuffle_order(n: int, seed: Seed) -> np.ndarray:
    """A seeded permutation of ``range(n)`` (int64): the visiting order of one pass.

    ``glove.c`` relies on a pre-shuffled file; we shuffle per pass instead, seeded
    from e.g. ``(cfg.seed, epoch, shard, pass)`` so any task can be re-run alone.
    """
    return np.random.Generator(np.random.PCG64(seed)).permutation(n)


# -------------------------------------------------------------------------- kernel


# Kernel compilation notes (measured, see bench/bench_glove_kernel.py):
# * error_model="numpy": numba's default Python error model guards every float division
#   with a ZeroDivisionError branch, which stops LLVM from vectorising the update loops.
#   Division by sqrt(accumulator >= 1) cannot be zero anyway.
# * No fastmath: results stay IEEE-exact and equal across machines. The dot product is
#   summed in 8 fixed lanes (_dot) so that it vectorises without reassociation.
# * The update is split into loops that each write one row, so LLVM can vectorise them
#   (one loop writing W, gW, C and gC rows at once defeats its alias analysis).
# * The rows of the entry ``PREFETCH`` steps ahead are prefetched: with V = 64k the
#   rows do not fit in cache and the shuffled order makes every access a miss.
# Together 1.9x (V = 64k) to 2.6x (V = 4k) faster than the straightforward loop in CPU
# time, with bit-identical results on the inputs we compared.

#: How many entries ahead the kernel prefetches rows (0 disables).
PREFETCH = 2


@intrinsic
def _prefetch_row(typingctx, arr, row):  # pragma: no cover - compile-time code
    """Hint the CPU to fetch every cache line of ``arr[row]`` (2-D C-contiguous array)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None
    sig = types.void(arr, row)

    def codegen(context, builder, signature, args):
        aty, rty = signature.args
        ary = context.make_array(aty)(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, ary.shape, 2)
        strides = cgutils.unpack_tuple(builder, ary.strides, 2)
        r = context.cast(builder, args[1], rty, types.intp)
        zero = ir.Constant(ir.IntType(64), 0)
        ptr = cgutils.get_item_pointer2(
            context, builder, ary.data, shape, strides, aty.layout, [r, zero]
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        # declare_intrinsic mangles the name for typed or opaque pointers alike.
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        base = builder.bitcast(ptr, i8p)
        nbytes = builder.mul(shape[1], ir.Constant(ir.IntType(64), aty.dtype.bitwidth // 8))
        step = ir.Constant(ir.IntType(64), 64)  # cache line
        with cgutils.for_range_slice(builder, zero, nbytes, step) as (off, _):
            # (address, write, locality 3 = keep in all caches, data cache)
            args = [builder.gep(base, [off]), i32(1), i32(3), i32(1)]
            builder.call(fn, args)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, error_model="numpy")
def _dot(u, v):  # pragma: no cover - compiled
    """float64 dot product of two float32 rows, summed in 8 fixed lanes (vectorisable)."""
    n = u.shape[0]
    m = n - n % 8
    acc = np.zeros(8)
    for k in range(0, m, 8):
        for lane in range(8):
            acc[lane] += np.float64(u[k + lane]) * np.float64(v[k + lane])
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for k in range(m, n):
        s += np.float64(u[k]) * np.float64(v[k])
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def _adagrad_pass_kernel(
    i,
    j,
    x,
    W,
    bw,
    gW,
    gbw,
    C,
    bc,
    gC,
    gbc,
    x_max,
    alpha,
    eta,
    bias_eta,
    grad_clip,
    ahead,
    context_scale,
):  # pragma: no cover - compiled; covered through adagrad_pass
    """The per-entry loop of glove.c's ``glove_thread`` over entries 0, 1, ... in order.

    ``context_scale`` multiplies the steps of ``C`` and ``bc`` (not what their AdaGrad
    sums accumulate); 1.0 is glove.c exactly (``1.0 * s == s`` in IEEE arithmetic).
    Returns (loss, entries done).
    """
    dim = W.shape[1]
    n = i.shape[0]
    step_w = np.empty(dim)
    step_c = np.empty(dim)
    total = 0.0
    for t in range(n):
        if ahead > 0 and t + ahead < n:
            _prefetch_row(W, i[t + ahead])
            _prefetch_row(gW, i[t + ahead])
            _prefetch_row(C, j[t + ahead])
            _prefetch_row(gC, j[t + ahead])
        a = i[t]
        b = j[t]
        xv = np.float64(x[t])
        w, gw, c, gc = W[a], gW[a], C[b], gC[b]
        diff = _dot(w, c) + np.float64(bw[a]) + np.float64(bc[b]) - math.log(xv)
        fdiff = diff if xv > x_max else math.pow(xv / x_max, alpha) * diff
        cost = 0.5 * fdiff * diff
        total += cost
        if not math.isfinite(cost):
            # glove.c skips such an entry and carries on; we stop so the caller sees it.
            return total, t + 1
        # Both steps from the *old* rows; clip the gradient component, then scale by eta.
        for k in range(dim):
            step_w[k] = min(max(fdiff * np.float64(c[k]), -grad_clip), grad_clip) * eta
            step_c[k] = min(max(fdiff * np.float64(w[k]), -grad_clip), grad_clip) * eta
        # AdaGrad divides by the accumulator *before* this step's square is added.
        for k in range(dim):
            s = step_w[k]
            w[k] = np.float64(w[k]) - s / math.sqrt(np.float64(gw[k]))
            gw[k] = np.float64(gw[k]) + s * s
        for k in range(dim):
            s = step_c[k]
            c[k] = np.float64(c[k]) - context_scale * s / math.sqrt(np.float64(gc[k]))
            gc[k] = np.float64(gc[k]) + s * s
        s = min(max(fdiff, -grad_clip), grad_clip) * bias_eta
        bw[a] = np.float64(bw[a]) - s / math.sqrt(np.float64(gbw[a]))
        bc[b] = np.float64(bc[b]) - context_scale * s / math.sqrt(np.float64(gbc[b]))
        gbw[a] = np.float64(gbw[a]) + s * s
        gbc[b] = np.float64(gbc[b]) + s * s
    return total, n


def _check_entries(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, n_rows: int, n_cols: int | None = None
) -> None:
    """Reject entries the compiled loop cannot take: it has no bounds checks.

    ``i`` must index ``n_rows`` word rows, ``j`` ``n_cols`` (default ``n_rows``)
    context rows; they differ for the compact arrays of :func:`train_shard`.
    """
    n_cols = n_rows if n_cols is None else n_cols
    if not (i.ndim == j.ndim == x.ndim == 1 and i.shape == j.shape == x.shape):
        raise InputError(
            f"co-occurrence columns i, j, x must be 1-D of equal length, got shapes "
            f"{i.shape}, {j.shape}, {x.shape}; check the cooc stage output"
        )
    if i.size == 0:
        return
    for name, col, size in (("i", i, n_rows), ("j", j, n_cols)):
        if not np.issubdtype(col.dtype, np.integer):
            raise InputError(f"co-occurrence column {name} must be integer, got {col.dtype}")
        lo, hi = int(col.min()), int(col.max())
        if lo < 0 or hi >= size:
            raise InputError(
                f"co-occurrence column {name} has ids in [{lo}, {hi}] outside the vocabulary "
                f"[0, {size}); re-run cooccur after vocab (stale run directory?)"
            )
    if not (x > 0).all() or not np.isfinite(x).all():
        raise InputError(
            "co-occurrence values x must be finite and > 0 (GloVe fits log x); "
            "check the cooc stage output and cooccur.min_x"
        )


def _check_hyper(x_max: float, alpha: float, eta: float, grad_clip: float) -> None:
    if not (x_max > 0 and alpha >= 0 and eta > 0 and grad_clip > 0):
        raise InputError(
            f"GloVe needs glove.x_max > 0, glove.alpha >= 0, glove.eta > 0 and grad_clip > 0, "
            f"got {x_max}, {alpha}, {eta}, {grad_clip}"
        )


def adagrad_pass(
    i: np.ndarray,
    j: np.ndarray,
    x: np.ndarray,
    params: GloveParams,
    order: np.ndarray,
    *,
    x_max: float = 100.0,
    alpha: float = 0.75,
    eta: float = 0.05,
    bias_eta: float | None = None,
    grad_clip: float = GRAD_CLIP,
    prefetch: int = PREFETCH,
    context_scale: float = 1.0,
) -> tuple[float, int]:
    """One AdaGrad pass over entries ``order[0], order[1], ...``, updating ``params`` in place.

    ``i``, ``j`` index rows of ``params`` (any integer dtype), ``x`` holds positive
    co-occurrence values. ``bias_eta`` defaults to ``eta`` (see the module docstring).
    Returns ``(loss, done)``: the float64 sum of ``0.5 * f * diff**2`` over the
    entries visited (each evaluated before its own update, as ``glove.c`` reports
    cost) and how many were visited. A non-finite ``loss`` means divergence; the
    pass stopped at entry ``done - 1`` and ``params`` are no longer usable.
    Single-threaded and releases the GIL. ``prefetch`` only affects speed.
    ``context_scale`` multiplies the steps applied to ``C`` and ``bc`` (not the squares
    their AdaGrad sums accumulate): ``S`` for a shard of ``S`` (see :func:`train_shard`),
    1 (default) is ``glove.c``.
    """
    _check_entries(i, j, x, params.W.shape[0], params.C.shape[0])
    _check_hyper(x_max, alpha, eta, grad_clip)
    if not (context_scale > 0 and math.isfinite(context_scale)):
        raise InputError(f"context_scale must be finite and > 0, got {context_scale}")
    order = np.asarray(order, dtype=np.int64)
    if order.size and (order.min() < 0 or order.max() >= i.size):
        raise InputError(f"order must index the {i.size} entries; got values outside the range")
    for a in params.arrays():
        if a.dtype != np.float32 or not a.flags.c_contiguous or not a.flags.writeable:
            raise InputError(
                "GloVe parameters must be writable C-contiguous float32 arrays; "
                "copy broadcast values with GloveParams.copy() first"
            )
    # Permute the entries up front: the kernel then streams through them, and only the
    # parameter rows (which it prefetches) are random accesses.
    total, done = _adagrad_pass_kernel(
        i[order],
        j[order],
        x[order],
        *params.arrays(),
        float(x_max),
        float(alpha),
        float(eta),
        float(eta if bias_eta is None else bias_eta),
        float(grad_clip),
        int(prefetch),
        float(context_scale),
    )
    return float(total), int(done)


def loss(
    i: np.ndarray,
    j: np.ndarray,
    x: np.ndarray,
    params: GloveParams,
    *,
    x_max: float = 100.0,
    alpha: float = 0.75,
    chunk: int = 1 << 16,
) -> float:
    """The full GloVe cost ``sum 0.5 * f(x) * (W[i]·C[j] + bw[i] + bc[j] - log x)**2`` (float64).

    Evaluated at fixed parameters (unlike the running cost of a pass), in chunks of
    ``chunk`` entries so memory stays at ``2 * chunk * dim`` doubles.
    """
    _check_entries(i, j, x, params.vocab_size)
    total = 0.0
    for s in range(0, i.size, chunk):
        ii, jj = i[s : s + chunk], j[s : s + chunk]
        xx = x[s : s + chunk].astype(np.float64)
        dot = np.einsum(
            "nd,nd->n", params.W[ii].astype(np.float64), params.C[jj].astype(np.float64)
        )
        diff = dot + params.bw[ii] + params.bc[jj] - np.log(xx)
        f = np.where(xx > x_max, 1.0, (xx / x_max) ** alpha)
        total += float(0.5 * np.sum(f * diff * diff))
    return total


# ------------------------------------------------------------------- shard / merge


@dataclass
class RowBlock:
    """Touched rows of one side (word or context) of the model, as a shard returns them.

    ``rows`` are unique, increasing int32 row ids; ``counts`` (int64) how many
    updates each row received in the shard (entries touching it × passes), the
    weight of the row in the merge; ``vec``/``gvec`` are ``(n, dim)`` float32
    vectors and AdaGrad sums, ``bias``/``gbias`` ``(n,)`` float32.
    """

    rows: np.ndarray
    counts: np.ndarray
    vec: np.ndarray
    bias: np.ndarray
    gvec: np.ndarray
    gbias: np.ndarray

    def all_finite(self) -> bool:
        """True when none of the values is NaN or infinite."""
        return all(bool(np.isfinite(a).all()) for a in (self.vec, self.bias, self.gvec, self.gbias))


@dataclass
class ShardResult:
    """What one shard sends back to the driver after its local passes.

    ``losses[p]`` is the running cost of local pass ``p`` (float64), ``entries``
    the shard's entry count (so ``sum(losses[-1]) / sum(entries)`` over shards is
    ``glove.c``'s per-iteration cost). ``diverged`` is set when a loss or a
    returned value is non-finite; :class:`ParamMerger` refuses such a result.
    """

    word: RowBlock
    context: RowBlock
    losses: np.ndarray
    entries: int
    diverged: bool


def _gather(
    rows: np.ndarray, vec: np.ndarray, bias: np.ndarray, gvec: np.ndarray, gbias: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return vec[rows], bias[rows], gvec[rows], gbias[rows]


def _compact(ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique ids, local (compact) index of every entry, and per-unique-id entry counts.

    O(n + V) with a V-sized table instead of a sort: shards are big, V is fixed.
    """
    counts_full = np.bincount(ids, minlength=vocab_size)
    rows = np.flatnonzero(counts_full).astype(np.int32)
    local = np.empty(vocab_size, dtype=np.int32)
    local[rows] = np.arange(rows.size, dtype=np.int32)
    return rows, local[ids], counts_full[rows].astype(np.int64)


def train_shard(
    i: np.ndarray,
    j: np.ndarray,
    x: np.ndarray,
    params: GloveParams,
    *,
    seed: Seed,
    passes: int = 1,
    x_max: float = 100.0,
    alpha: float = 0.75,
    eta: float = 0.05,
    bias_eta: float | None = None,
    grad_clip: float = GRAD_CLIP,
    context_scale: float = 1.0,
    part: tuple[int, int] = (0, 1),
) -> ShardResult:
    """Train ``passes`` AdaGrad passes over one shard's entries, starting from ``params``.

    ``part = (r, R)`` trains only round ``r`` of ``R`` (``glove.rounds_per_epoch``): the
    ``r``-th of ``R`` equal slices of the shard's entries in the order
    ``shuffle_order(n, seed)``, so the ``R`` rounds of an epoch (same ``seed``) visit
    every entry exactly once; the slice is then trained as a shard of its own with seed
    ``(*seed, r)``. ``R = 1`` is the whole shard (the slice is not taken).

    ``params`` is never modified (in Spark it is a broadcast value shared by the
    tasks of an executor): the touched rows are gathered into compact local arrays,
    trained there (which also keeps the working set small and cache-friendly) and
    returned. Pass ``p`` visits the entries in ``shuffle_order(n, (*seed, p))``;
    give ``seed=(cfg.seed, epoch, shard)`` so that every task is reproducible alone.
    Memory beyond the inputs: ``8 * (dim + 1)`` bytes per touched word or context
    row (vector, bias and their AdaGrad sums) plus ``~40`` bytes per entry.
    """
    V = params.vocab_size
    _check_entries(i, j, x, V)
    if passes < 1:
        raise InputError(f"glove.local_epochs must be >= 1, got {passes}")
    seed_t = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    r, R = int(part[0]), int(part[1])
    if R < 1 or not 0 <= r < R:
        raise InputError(f"round {r} of glove.rounds_per_epoch = {R} is out of range")
    if R > 1:
        # Sorted back so the slice keeps the shard's (i, j) order: the rows it touches
        # are compacted the same way, and the passes shuffle it with their own seeds.
        n = i.size
        idx = np.sort(shuffle_order(n, seed_t)[r * n // R : (r + 1) * n // R])
        return train_shard(
            i[idx], j[idx], x[idx], params, seed=(*seed_t, r), passes=passes, x_max=x_max,
            alpha=alpha, eta=eta, bias_eta=bias_eta, grad_clip=grad_clip,
            context_scale=context_scale,
        )  # fmt: skip
    w_rows, li, w_counts = _compact(i, V)
    c_rows, lj, c_counts = _compact(j, V)
    local = GloveParams(
        *_gather(w_rows, params.W, params.bw, params.gW, params.gbw),
        *_gather(c_rows, params.C, params.bc, params.gC, params.gbc),
    )
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    losses = np.zeros(passes, dtype=np.float64)
    diverged = False
    for p in range(passes):
        order = shuffle_order(i.size, (*seed_t, p))
        losses[p], _ = adagrad_pass(
            li,
            lj,
            x32,
            local,
            order,
            x_max=x_max,
            alpha=alpha,
            eta=eta,
            bias_eta=bias_eta,
            grad_clip=grad_clip,
            context_scale=context_scale,
        )
        if not math.isfinite(losses[p]):
            diverged = True
            losses[p + 1 :] = np.nan
            break
    word = RowBlock(w_rows, w_counts * passes, local.W, local.bw, local.gW, local.gbw)
    context = RowBlock(c_rows, c_counts * passes, local.C, local.bc, local.gC, local.gbc)
    # An update can overflow on an entry's last visit without a later loss seeing it.
    diverged = diverged or not (word.all_finite() and context.all_finite())
    return ShardResult(word, context, losses, int(i.size), diverged)


#: How :class:`ParamMerger` combines the context rows of the shards (see there).
MERGE_MODES = ("scaled", "average", "sum")


class ParamMerger:
    """Folds shard results into new parameters, streaming (one result at a time).

    The driver never holds more than the parameters and one result. Word rows have one
    owner (shard ``k`` owns rows ``i ≡ k mod S``) and are copied bit-exactly; untouched
    rows keep their old values. Context rows are combined according to ``merge``:

    * ``"scaled"``: the shards trained with ``context_scale = S`` (see
      :func:`train_shard`), and the new row is ``old + (1/S) sum_k (v_k - old)`` over
      *all* S shards (a shard that did not touch the row adds 0), for ``C`` and ``bc``;
      the AdaGrad sums add the shards' increments, ``g_old + sum_k (g_k - g_old)``.
      Shard k saw a ~1/S sample of every column's entries, so ``S`` times its gradient
      estimates the whole column's: while a row's updates are small (most rows, most
      of the time) the merged change equals one sequential pass over all entries; when
      every shard has converged the row to its own optimum (frequent words), the mean
      of those optima is kept, never their sum. AdaGrad sums grow as sequentially.
    * ``"average"``: ``sum_k n_k v_k / sum_k n_k`` over the shards that touched the row
      (n = update counts), AdaGrad sums likewise; shards trained with
      ``context_scale = 1``. A column's change is then ~1/S of a sequential pass's: the
      context side learns ~S times slower than the word side.
    * ``"sum"``: ``old + sum_k (v_k - old)`` for all four arrays (context_scale 1).
      Right for small changes, but each shard fully corrects a frequent row, so the sum
      overshoots ~S times: it diverges on real corpora (kept for measurements only).

    With ``shards = 1`` every mode copies the one result: bit-identical to plain
    training. Values are combined in float64 and stored as float32; feed results in a
    fixed (shard) order for bit-reproducible runs.
    """

    def __init__(self, params: GloveParams, merge: str = "scaled", shards: int = 1) -> None:
        """Start from ``params`` (not modified; the merger works on a copy).

        ``shards`` is S, the number of results that will be added (``"scaled"`` divides
        by it).
        """
        if merge not in MERGE_MODES:
            raise InputError(f"glove.merge must be one of {', '.join(MERGE_MODES)}, got {merge!r}")
        if shards < 1:
            raise InputError(f"the number of shards must be >= 1, got {shards}")
        self._merge = merge
        self._shards = int(shards)
        self._base = params
        self._out = params.copy()
        V = params.vocab_size
        self._n_word = np.zeros(V, dtype=np.float64)
        self._n_context = np.zeros(V, dtype=np.float64)
        self._results = 0

    @staticmethod
    def _check(block: RowBlock, V: int) -> None:
        rows = block.rows
        if rows.min() < 0 or rows.max() >= V or np.any(np.diff(rows) <= 0):
            raise InputError("a shard result has row ids that are not unique, sorted and < V")
        if np.any(block.counts <= 0):
            raise InputError("a shard result has a touched row with update count <= 0")

    def _fold(
        self,
        block: RowBlock,
        seen: np.ndarray,
        targets: tuple[np.ndarray, ...],
        bases: tuple[np.ndarray, ...],
        merge: str,
    ) -> None:
        rows = block.rows
        if rows.size == 0:
            return
        self._check(block, seen.shape[0])
        n_old = seen[rows]
        n_new = n_old + block.counts
        seen[rows] = n_new
        blocks = (block.vec, block.bias, block.gvec, block.gbias)
        if merge == "scaled" and self._shards > 1:
            # Changes: vector and bias divided by S, AdaGrad increments added in full.
            for n, (target, values, base) in enumerate(zip(targets, blocks, bases, strict=True)):
                acc = target[rows].astype(np.float64)
                delta = values.astype(np.float64) - base[rows]
                target[rows] = (acc + (delta / self._shards if n < 2 else delta)).astype(np.float32)
            return
        # First contribution to a row: copy, so single-owner rows are bit-exact copies.
        first = n_old == 0
        r_first = rows[first]
        for target, values in zip(targets, blocks, strict=True):
            target[r_first] = values[first]
        if first.all():
            return
        later = ~first
        r_later = rows[later]
        if merge == "average":
            # Running mean: mean += n_k / (n_old + n_k) * (v_k - mean), in float64.
            w = (block.counts[later] / n_new[later])[:, None]
            for target, values in zip(targets, blocks, strict=True):
                old = target[r_later].astype(np.float64)
                new = values[later].astype(np.float64)
                ww = w if new.ndim == 2 else w[:, 0]
                target[r_later] = (old + ww * (new - old)).astype(np.float32)
        else:  # "sum", or "scaled" with one shard (a second result for a row: a caller bug)
            for target, values, base in zip(targets, blocks, bases, strict=True):
                acc = target[r_later].astype(np.float64)
                delta = values[later].astype(np.float64) - base[r_later]
                target[r_later] = (acc + delta).astype(np.float32)

    def add(self, result: ShardResult, shard: int | None = None) -> None:
        """Fold one shard's result in; raise :class:`TrainingDivergedError` if it diverged."""
        where = f"shard {shard}" if shard is not None else f"shard result #{self._results}"
        if result.diverged:
            raise TrainingDivergedError(
                f"GloVe training diverged in {where} (loss per pass {result.losses.tolist()}); "
                "lower glove.eta (e.g. halve it) and re-run the glove stage"
            )
        if self._results >= self._shards:
            raise InputError(f"more shard results than the {self._shards} shards announced")
        o, b = self._out, self._base
        dim = o.dim
        if result.word.vec.shape[1:] != (dim,) or result.context.vec.shape[1:] != (dim,):
            raise InputError(f"{where} returned vectors of the wrong dimension (expected {dim})")
        # Word rows: one owner, so every mode copies them (a row seen twice is summed).
        words = "sum" if self._merge == "scaled" else self._merge
        self._fold(
            result.word, self._n_word, (o.W, o.bw, o.gW, o.gbw), (b.W, b.bw, b.gW, b.gbw), words
        )
        self._fold(
            result.context,
            self._n_context,
            (o.C, o.bc, o.gC, o.gbc),
            (b.C, b.bc, b.gC, b.gbc),
            self._merge,
        )
        self._results += 1

    def result(self) -> GloveParams:
        """The merged parameters (raises if they are not finite)."""
        if not self._out.all_finite():
            raise TrainingDivergedError(
                "GloVe parameters became non-finite after merging; lower glove.eta and re-run"
            )
        return self._out


def context_scale(merge: str, shards: int) -> float:
    """The ``context_scale`` shards must train with for ``merge`` (S for ``"scaled"``)."""
    return float(shards) if merge == "scaled" else 1.0


def merge_results(
    params: GloveParams, results: Sequence[ShardResult], merge: str = "scaled"
) -> GloveParams:
    """New parameters from ``params`` and the ``S = len(results)`` shards' results.

    See :class:`ParamMerger`; results in shard order for bit-reproducible runs (a
    single contributor is copied exactly, several are combined up to float32 rounding).
    With ``merge="scaled"`` the shards must have trained with ``context_scale = S``.
    """
    merger = ParamMerger(params, merge, shards=len(results))
    for r in results:
        merger.add(r)
    return merger.result()
