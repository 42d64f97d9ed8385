"""Unit tests for the GloVe kernel (embedpipe.kernels.glove): no Spark, tiny inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from embedpipe.errors import InputError, TrainingDivergedError
from embedpipe.kernels import glove

# Kernel vs reference tolerance. Both do every operation in float64 and round to
# float32 only when storing a parameter, with the same libm log/pow/sqrt, so the only
# difference is the summation order of the float64 dot product (8 fixed lanes in the
# kernel, whatever BLAS does in NumPy): ~1e-16 relative. That changes a stored float32
# only when a value sits on a float32 rounding boundary, by 1 ulp (6e-8 relative), and
# one pass over a tiny matrix does not amplify that beyond a few ulps. (On the machine
# this was written on the results were bit-identical; the tolerance is for other BLAS.)
RTOL, ATOL = 1e-6, 1e-8


# ---------------------------------------------------------------- slow reference


def reference_pass(
    i, j, x, p, order, *, x_max, alpha, eta, bias_eta=None, grad_clip=100.0, context_scale=1.0
):
    """One glove.c-style AdaGrad pass, written as plainly as possible (updates ``p``).

    ``context_scale`` multiplies the steps applied to C and bc, not their AdaGrad squares.
    """
    bias_eta = eta if bias_eta is None else bias_eta
    total = 0.0
    for e in order:
        a, b, xv = int(i[e]), int(j[e]), float(x[e])
        w = p.W[a].astype(np.float64)
        c = p.C[b].astype(np.float64)
        diff = float(np.dot(w, c)) + float(p.bw[a]) + float(p.bc[b]) - math.log(xv)
        f = 1.0 if xv > x_max else (xv / x_max) ** alpha
        total += 0.5 * f * diff * diff
        g = f * diff  # d cost / d (W[a]·C[b] + bw[a] + bc[b])
        step_w = np.clip(g * c, -grad_clip, grad_clip) * eta  # gradient wrt W[a] is g * C[b]
        step_c = np.clip(g * w, -grad_clip, grad_clip) * eta
        step_b = min(max(g, -grad_clip), grad_clip) * bias_eta
        p.W[a] = w - step_w / np.sqrt(p.gW[a].astype(np.float64))
        p.C[b] = c - context_scale * step_c / np.sqrt(p.gC[b].astype(np.float64))
        p.gW[a] = p.gW[a].astype(np.float64) + step_w**2
        p.gC[b] = p.gC[b].astype(np.float64) + step_c**2
        p.bw[a] = float(p.bw[a]) - step_b / math.sqrt(float(p.gbw[a]))
        p.bc[b] = float(p.bc[b]) - context_scale * step_b / math.sqrt(float(p.gbc[b]))
        p.gbw[a] = float(p.gbw[a]) + step_b**2
        p.gbc[b] = float(p.gbc[b]) + step_b**2
    return total


def random_cooc(V: int, n: int, seed: int, x_hi: float = 200.0):
    """Distinct random (i, j) pairs with values on both sides of x_max = 100."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(V * V, size=n, replace=False)
    i, j = (flat // V).astype(np.int32), (flat % V).astype(np.int32)
    x = rng.uniform(0.5, x_hi, size=n).astype(np.float32)
    return i, j, x


def assert_params_equal(a: glove.GloveParams, b: glove.GloveParams, exact: bool = True) -> None:
    for name, u, v in zip(
        ("W", "bw", "gW", "gbw", "C", "bc", "gC", "gbc"), a.arrays(), b.arrays(), strict=True
    ):
        if exact:
            np.testing.assert_array_equal(u, v, err_msg=name)
        else:
            np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL, err_msg=name)


def single_process(i, j, x, params, *, seed, passes, **hyper):
    """Plain one-process training: the kernel over all entries, pass p in order (*seed, p)."""
    p = params.copy()
    losses = [
        glove.adagrad_pass(i, j, x, p, glove.shuffle_order(i.size, (*seed, k)), **hyper)[0]
        for k in range(passes)
    ]
    return p, losses


# ------------------------------------------------------------------------ kernel


@pytest.mark.parametrize(
    "hyper",
    [
        {"x_max": 100.0, "alpha": 0.75, "eta": 0.05},  # glove.c defaults
        {"x_max": 10.0, "alpha": 0.5, "eta": 0.3, "grad_clip": 0.02},  # clipping fires
        {"x_max": 100.0, "alpha": 0.75, "eta": 0.05, "bias_eta": 1.0},  # current glove.c bias
        {"x_max": 100.0, "alpha": 0.75, "eta": 0.05, "context_scale": 4.0},  # merge "scaled"
    ],
)
def test_kernel_matches_reference(hyper):
    V, dim = 12, 5
    i, j, x = random_cooc(V, 60, seed=1)
    start = glove.init_params(V, dim, seed=7)
    order = glove.shuffle_order(i.size, 3)
    kern, ref = start.copy(), start.copy()
    loss_k, done = glove.adagrad_pass(i, j, x, kern, order, **hyper)
    loss_r = reference_pass(i, j, x, ref, order, **hyper)
    assert done == i.size
    assert loss_k == pytest.approx(loss_r, rel=1e-9)
    assert_params_equal(kern, ref, exact=False)
    # The pass did move every touched row (guards against comparing two no-ops).
    assert not np.allclose(kern.W[np.unique(i)], start.W[np.unique(i)])


def test_prefetch_does_not_change_results():
    V, dim = 40, 17  # dim not a multiple of the 8 dot-product lanes
    i, j, x = random_cooc(V, 500, seed=8)
    start = glove.init_params(V, dim, seed=4)
    order = glove.shuffle_order(i.size, 1)
    a, b = start.copy(), start.copy()
    la = glove.adagrad_pass(i, j, x, a, order, prefetch=0)
    lb = glove.adagrad_pass(i, j, x, b, order, prefetch=3)
    assert la == lb
    assert_params_equal(a, b, exact=True)


def test_clipping_bounds_first_step():
    # With AdaGrad sums at 1.0 the first step of a coordinate is exactly
    # clip(grad) * eta, so no coordinate can move by more than grad_clip * eta.
    V, dim = 6, 4
    i, j, x = random_cooc(V, 20, seed=2)
    p = glove.init_params(V, dim, seed=1)
    p.W[:] = 5.0  # large vectors -> large gradients, all clipped
    p.C[:] = 5.0
    before = p.copy()
    order = np.array([0])
    glove.adagrad_pass(i, j, x, p, order, eta=0.1, grad_clip=0.5)
    a, b = i[0], j[0]
    # atol: the parameters are float32 near 5.0, whose ulp is 4.8e-7.
    np.testing.assert_allclose(np.abs(p.W[a] - before.W[a]), 0.05, atol=1e-6)
    np.testing.assert_allclose(np.abs(p.C[b] - before.C[b]), 0.05, atol=1e-6)
    np.testing.assert_allclose(p.gW[a], 1.0 + 0.05**2, rtol=1e-6)


def test_pass_cost_equals_loss_when_entries_share_no_rows():
    # If no two entries share a row or a column, no update can affect a later
    # entry's cost, so the running cost of a pass equals the static loss before it.
    V, dim = 20, 6
    rng = np.random.default_rng(5)
    i = np.arange(V, dtype=np.int32)
    j = rng.permutation(V).astype(np.int32)
    x = rng.uniform(0.5, 300, V).astype(np.float32)
    p = glove.init_params(V, dim, seed=3)
    before = glove.loss(i, j, x, p)
    running, _ = glove.adagrad_pass(i, j, x, p, glove.shuffle_order(V, 0))
    assert running == pytest.approx(before, rel=1e-12)
    assert glove.loss(i, j, x, p) < before


def test_init_params_and_order():
    p = glove.init_params(50, 8, seed=0)
    for a in p.arrays():
        assert a.dtype == np.float32 and a.flags.c_contiguous
    for a in (p.W, p.C, p.bw, p.bc):
        assert np.abs(a).max() <= 0.5 / 8
        assert a.std() > 0.1 / 8  # actually random, not constant
    for a in (p.gW, p.gbw, p.gC, p.gbc):
        assert (a == 1.0).all()
    np.testing.assert_array_equal(glove.output_vectors(p), p.W + p.C)
    order = glove.shuffle_order(1000, (1, 2, 3))
    np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    np.testing.assert_array_equal(order, glove.shuffle_order(1000, (1, 2, 3)))
    assert not np.array_equal(order, glove.shuffle_order(1000, (1, 2, 4)))


# ------------------------------------------------------------------ shard / merge


@pytest.mark.parametrize("merge", glove.MERGE_MODES)
def test_one_shard_train_and_merge_equals_plain_kernel(merge):
    V, dim = 15, 6
    i, j, x = random_cooc(V, 120, seed=4)
    start = glove.init_params(V, dim, seed=11)
    scale = glove.context_scale(merge, 1)
    res = glove.train_shard(i, j, x, start, seed=(9, 0, 0), passes=3, context_scale=scale)
    merged = glove.merge_results(start, [res], merge)
    plain, losses = single_process(i, j, x, start, seed=(9, 0, 0), passes=3)
    assert_params_equal(merged, plain, exact=True)
    np.testing.assert_array_equal(res.losses, losses)
    assert res.entries == i.size and not res.diverged


@pytest.mark.parametrize("merge", ["average", "sum"])
def test_disjoint_shards_equal_sequential_training(merge):
    # Entries only where i ≡ j (mod 2): shard k (rows i ≡ k) also owns all its
    # columns, so the shards share no parameter, merging is a copy, and the merged
    # result equals training the shards one after the other in one process. ("scaled"
    # trains context rows with S-times steps and keeps 1/S of them: equal only to first
    # order, see test_scaled_merge_equals_sequential_for_small_steps.)
    V, dim, S = 16, 4, 2
    i, j, x = random_cooc(V, 200, seed=6)
    keep = (i % S) == (j % S)
    i, j, x = i[keep], j[keep], x[keep]
    start = glove.init_params(V, dim, seed=2)
    results, seq = [], start.copy()
    for k in range(S):
        m = (i % S) == k
        results.append(glove.train_shard(i[m], j[m], x[m], start, seed=(1, 0, k), passes=2))
        seq, _ = single_process(i[m], j[m], x[m], seq, seed=(1, 0, k), passes=2)
    assert_params_equal(glove.merge_results(start, results, merge), seq, exact=True)


def test_train_shard_leaves_params_alone_and_reports_counts():
    V, dim = 10, 3
    i = np.array([1, 1, 4, 4, 4, 7], dtype=np.int32)
    j = np.array([2, 5, 2, 5, 9, 2], dtype=np.int32)
    x = np.full(6, 3.0, dtype=np.float32)
    start = glove.init_params(V, dim, seed=0)
    snapshot = start.copy()
    for a in start.arrays():  # like a broadcast value: any write would raise
        a.flags.writeable = False
    res = glove.train_shard(i, j, x, start, seed=1, passes=2)
    assert_params_equal(start, snapshot, exact=True)
    np.testing.assert_array_equal(res.word.rows, [1, 4, 7])
    np.testing.assert_array_equal(res.word.counts, [4, 6, 2])  # entries x passes
    np.testing.assert_array_equal(res.context.rows, [2, 5, 9])
    np.testing.assert_array_equal(res.context.counts, [6, 4, 2])
    assert res.word.vec.shape == (3, dim) and res.context.gbias.shape == (3,)


def test_rounds_visit_every_entry_once_and_one_round_is_the_whole_shard():
    rng = np.random.default_rng(3)
    V, dim, n = 30, 4, 101
    i = rng.integers(0, V, n).astype(np.int32)
    j = rng.integers(0, V, n).astype(np.int32)
    x = rng.uniform(1, 5, n).astype(np.float32)
    start = glove.init_params(V, dim, seed=0)
    whole = glove.train_shard(i, j, x, start, seed=(1, 2, 0))
    one = glove.train_shard(i, j, x, start, seed=(1, 2, 0), part=(0, 1))
    np.testing.assert_array_equal(whole.word.vec, one.word.vec)
    R = 4
    parts = [glove.train_shard(i, j, x, start, seed=(1, 2, 0), part=(r, R)) for r in range(R)]
    assert sum(p.entries for p in parts) == n
    for side, full in (("word", i), ("context", j)):
        counts = np.zeros(V, dtype=np.int64)
        for p in parts:
            block = getattr(p, side)
            counts[block.rows] += block.counts
        np.testing.assert_array_equal(counts, np.bincount(full, minlength=V))
    # The slices come from the seeded order: another seed cuts them differently.
    other = glove.train_shard(i, j, x, start, seed=(1, 3, 0), part=(0, R))
    assert not np.array_equal(other.word.rows, parts[0].word.rows) or not np.array_equal(
        other.word.counts, parts[0].word.counts
    )
    with pytest.raises(InputError, match="rounds_per_epoch"):
        glove.train_shard(i, j, x, start, seed=1, part=(4, 4))


def _block(rows, counts, value, dim):
    n = len(rows)
    return glove.RowBlock(
        np.asarray(rows, dtype=np.int32),
        np.asarray(counts, dtype=np.int64),
        np.full((n, dim), value, dtype=np.float32),
        np.full(n, value, dtype=np.float32),
        np.full((n, dim), 10 * value, dtype=np.float32),
        np.full(n, 10 * value, dtype=np.float32),
    )


def test_average_merge_is_count_weighted():
    V, dim = 6, 2
    start = glove.init_params(V, dim, seed=0)
    # Shard 0 owns word rows {0, 2}, shard 1 owns {1}; both touch context row 3.
    r0 = glove.ShardResult(
        _block([0, 2], [5, 1], 1.0, dim),
        _block([3, 4], [1, 2], 1.0, dim),
        np.array([1.0]),
        3,
        False,
    )
    r1 = glove.ShardResult(
        _block([1], [2], 5.0, dim), _block([3], [3], 5.0, dim), np.array([1.0]), 3, False
    )
    m = glove.merge_results(start, [r0, r1], "average")
    # Word rows: one owner each, copied.
    np.testing.assert_array_equal(m.W[[0, 2]], 1.0)
    np.testing.assert_array_equal(m.W[1], 5.0)
    np.testing.assert_array_equal(m.gbw[[0, 1, 2]], [10.0, 50.0, 10.0])
    # Context row 3: (1 * 1 + 3 * 5) / (1 + 3) = 4 (a sum would give 6 or 16).
    np.testing.assert_allclose(m.C[3], 4.0)
    np.testing.assert_allclose([m.bc[3], m.gbc[3]], [4.0, 40.0])
    np.testing.assert_allclose(m.gC[3], 40.0)
    np.testing.assert_array_equal(m.C[4], 1.0)  # touched by one shard only
    # Untouched rows keep their old values; the input is not modified.
    np.testing.assert_array_equal(m.W[3:], start.W[3:])
    np.testing.assert_array_equal(m.C[[0, 1, 2, 5]], start.C[[0, 1, 2, 5]])
    assert not np.array_equal(start.C[3], m.C[3])
    # Order of results does not matter (beyond float32 rounding).
    assert_params_equal(glove.merge_results(start, [r1, r0], "average"), m, exact=False)


@pytest.mark.parametrize("merge", ["scaled", "sum"])
def test_scaled_and_sum_merges_combine_changes(merge):
    V, dim, S = 6, 2, 2
    start = glove.init_params(V, dim, seed=0)
    # Same shape as above: both shards touch context row 3, only shard 0 row 4.
    r0 = glove.ShardResult(
        _block([0, 2], [5, 1], 1.0, dim), _block([3, 4], [1, 2], 1.0, dim),
        np.array([1.0]), 3, False,
    )  # fmt: skip
    r1 = glove.ShardResult(
        _block([1], [2], 5.0, dim), _block([3], [3], 5.0, dim), np.array([1.0]), 3, False
    )
    m = glove.merge_results(start, [r0, r1], merge)
    np.testing.assert_array_equal(m.W[[0, 2]], 1.0)  # word rows: copied in every mode
    np.testing.assert_array_equal(m.gbw[1], 50.0)
    old = start.copy()
    d3 = (1.0 - old.C[3].astype(np.float64)) + (5.0 - old.C[3])  # the two changes of C[3]
    d4 = 1.0 - old.C[4].astype(np.float64)
    g3 = (10.0 - old.gC[3].astype(np.float64)) + (50.0 - old.gC[3])
    share = 1 / S if merge == "scaled" else 1.0  # "scaled": the mean over all S shards
    np.testing.assert_allclose(m.C[3], old.C[3] + share * d3, rtol=1e-6)
    np.testing.assert_allclose(m.C[4], old.C[4] + share * d4, rtol=1e-6)
    np.testing.assert_allclose(m.bc[3], old.bc[3] + share * ((1.0 - old.bc[3]) + (5.0 - old.bc[3])))
    # AdaGrad sums: the increments add up in both modes (as in one sequential pass).
    np.testing.assert_allclose(m.gC[3], old.gC[3] + g3, rtol=1e-6)
    np.testing.assert_allclose(m.gbc[4], old.gbc[4] + (10.0 - old.gbc[4]), rtol=1e-6)
    np.testing.assert_array_equal(m.C[[0, 1, 2, 5]], start.C[[0, 1, 2, 5]])
    with pytest.raises(InputError, match="more shard results"):
        merger = glove.ParamMerger(start, merge, shards=1)
        merger.add(r0)
        merger.add(r1)


def _context_change_error(merge: str, S: int) -> float:
    """Relative error of the merged context change vs one sequential pass, small steps."""
    V, dim = 24, 6
    i, j, x = random_cooc(V, 400, seed=12, x_hi=50.0)
    start = glove.init_params(V, dim, seed=5)
    start.W[:] *= 50  # |W| ~ 0.1 (a trained size) so that C gets non-trivial gradients
    hyper = {"eta": 1e-4}
    seq, _ = single_process(i, j, x, start, seed=(1, 0, 0), passes=1, **hyper)
    results = [
        glove.train_shard(
            i[i % S == k], j[i % S == k], x[i % S == k], start, seed=(1, 0, k),
            context_scale=glove.context_scale(merge, S), **hyper,
        )
        for k in range(S)
    ]  # fmt: skip
    merged = glove.merge_results(start, results, merge)
    want = seq.C.astype(np.float64) - start.C
    got = merged.C.astype(np.float64) - start.C
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_scaled_merge_equals_sequential_for_small_steps():
    # While steps are small, a pass's change of C[j] is (to first order) the sum of
    # its entries' gradients, whatever their order: S shards with S-times context steps,
    # averaged, give the sequential change; count-weighted averaging gives ~1/S of it.
    S = 4
    scaled, average = _context_change_error("scaled", S), _context_change_error("average", S)
    assert scaled < 0.02, scaled
    assert average > 0.5, average  # about 1 - 1/S
    assert _context_change_error("scaled", 1) == 0.0  # S = 1 is the sequential pass itself


# --------------------------------------------------------------- learning, seeds


def planted_groups(groups: int = 3, size: int = 10, seed: int = 0):
    """Word pairs co-occur ~40 times inside a group and ~1 time across groups."""
    rng = np.random.default_rng(seed)
    V = groups * size
    ii, jj = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
    off = ii != jj
    same = (ii // size) == (jj // size)
    x = np.where(same, rng.uniform(30, 50, (V, V)), rng.uniform(0.5, 1.5, (V, V)))
    return ii[off].astype(np.int32), jj[off].astype(np.int32), x[off].astype(np.float32), V


def distributed_train(
    i, j, x, V, *, dim, epochs, shards, seed, local_epochs=1, merge="scaled", **hyper
):
    """The glove stage's loop without Spark: shard by i mod S, train, merge."""
    params = glove.init_params(V, dim, seed=(seed, 0))
    running, full = [], []
    for epoch in range(epochs):
        results = []
        for k in range(shards):
            m = (i % shards) == k
            results.append(
                glove.train_shard(
                    i[m], j[m], x[m], params, seed=(seed, epoch, k), passes=local_epochs,
                    context_scale=glove.context_scale(merge, shards), **hyper,
                )
            )  # fmt: skip
        params = glove.merge_results(params, results, merge)
        running.append(sum(r.losses[-1] for r in results) / i.size)
        full.append(
            glove.loss(i, j, x, params, **{k: hyper[k] for k in ("x_max", "alpha") if k in hyper})
            / i.size
        )
    return params, running, full


def test_planted_groups_are_learned():
    i, j, x, V = planted_groups()
    params, running, full = distributed_train(i, j, x, V, dim=10, epochs=40, shards=3, seed=1)
    assert all(b < a for a, b in itertools.pairwise(running[:5])), running[:5]
    assert all(b < a for a, b in itertools.pairwise(full[:5])), full[:5]
    # The scaled merge keeps S = 3 on the loss curve of S = 1; averaging C lags far behind.
    _, _, one = distributed_train(i, j, x, V, dim=10, epochs=40, shards=1, seed=1)
    _, _, avg = distributed_train(i, j, x, V, dim=10, epochs=40, shards=3, seed=1, merge="average")
    assert full[-1] < 1.1 * one[-1], (full[-1], one[-1])
    assert avg[-1] > 3 * one[-1], (avg[-1], one[-1])
    v = glove.output_vectors(params).astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1)[:, :9]
    group = np.arange(V) // 10
    assert (group[nearest] == group[:, None]).all()


def test_same_seed_same_result_other_seed_differs():
    i, j, x, V = planted_groups(size=5)
    a, la, _ = distributed_train(i, j, x, V, dim=4, epochs=2, shards=2, seed=3, local_epochs=2)
    b, lb, _ = distributed_train(i, j, x, V, dim=4, epochs=2, shards=2, seed=3, local_epochs=2)
    c, _, _ = distributed_train(i, j, x, V, dim=4, epochs=2, shards=2, seed=4, local_epochs=2)
    assert_params_equal(a, b, exact=True)
    assert la == lb
    assert not np.array_equal(a.W, c.W)


# -------------------------------------------------------------------- divergence


def test_divergence_is_reported_and_merge_refuses():
    i, j, x, V = planted_groups(size=5)
    start = glove.init_params(V, 4, seed=0)
    p = start.copy()
    total, done = glove.adagrad_pass(
        i, j, x, p, glove.shuffle_order(i.size, 0), eta=1e30, grad_clip=math.inf
    )
    assert not math.isfinite(total)
    assert done < i.size  # the pass stopped at the first non-finite cost
    res = glove.train_shard(i, j, x, start, seed=0, passes=3, eta=1e30, grad_clip=math.inf)
    assert res.diverged and not np.isfinite(res.losses).all()
    with pytest.raises(TrainingDivergedError, match=r"glove\.eta"):
        glove.merge_results(start, [res])
    # With glove.c's clipping the steps stay finite, but the float32 AdaGrad sums
    # overflow: that is divergence too, and it is caught.
    res = glove.train_shard(i, j, x, start, seed=0, passes=3, eta=1e30)
    assert res.diverged


def test_default_clipping_keeps_a_large_eta_finite_for_a_while():
    # glove.c added grad_clip_value so that a too-large eta does not overflow at once.
    i, j, x, V = planted_groups(size=5)
    res = glove.train_shard(i, j, x, glove.init_params(V, 4, seed=0), seed=0, passes=2, eta=5.0)
    assert not res.diverged


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("i", "j", "x", "match"),
    [
        ([0, 10], [1, 2], [1.0, 1.0], "outside the vocabulary"),
        ([0, 1], [-1, 2], [1.0, 1.0], "outside the vocabulary"),
        ([0, 1], [1, 2], [1.0, 0.0], "> 0"),
        ([0, 1], [1, 2], [1.0, np.nan], "> 0"),
        ([0, 1], [1], [1.0, 1.0], "equal length"),
    ],
)
def test_bad_entries_are_rejected(i, j, x, match):
    p = glove.init_params(10, 3, seed=0)
    i, j, x = np.array(i, np.int32), np.array(j, np.int32), np.array(x, np.float32)
    with pytest.raises(InputError, match=match):
        glove.adagrad_pass(i, j, x, p, np.arange(min(i.size, j.size)))
    with pytest.raises(InputError, match=match):
        glove.train_shard(i, j, x, p, seed=0)


def test_float64_or_readonly_params_are_rejected():
    p = glove.init_params(10, 3, seed=0)
    i, j, x = np.array([0], np.int32), np.array([1], np.int32), np.array([2.0], np.float32)
    p.W.flags.writeable = False
    with pytest.raises(InputError, match="writable"):
        glove.adagrad_pass(i, j, x, p, np.arange(1))
