"""Tests of embedpipe.kernels.sgns: the numba kernel against a slow NumPy reference.

The reference below is written from the specification in the kernel's module docstring
(random stream, window shrink, subsampling, sigmoid, alpha schedule) with Python
integers and one NumPy operation per step, so it shares no code with the kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedpipe.errors import ConfigError, InputError, TrainingDivergedError
from embedpipe.kernels import sgns

MASK48 = (1 << 48) - 1
MASK64 = (1 << 64) - 1

# Kernel vs reference: same random stream, so the same updates in the same order; the
# only difference is float32 rounding (the kernel sums dot products in SIMD order and
# keeps the sigmoid in float32, the reference uses np.dot and float64 scalars). After
# a few thousand updates of values of order 0.1 this stays below 1e-6 absolute; we
# allow 2e-6 absolute + 1e-5 relative.
ATOL = 2e-6
RTOL = 1e-5


# --------------------------------------------------------------------------- reference


class Stream:
    """The kernel's random stream: splitmix64-seeded 48-bit LCG, 32-bit draws."""

    def __init__(self, seed: int) -> None:
        z = (seed + 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        self.state = (z ^ (z >> 31)) & MASK48

    def draw(self) -> int:
        self.state = (self.state * 25214903917 + 11) & MASK48
        return self.state >> 16


def sigmoid_w2v(x: float) -> float:
    """word2vec.c's sigmoid without the table: 0/1 beyond ±6, exact inside."""
    if x > 6.0:
        return 1.0
    if x < -6.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def reference_train(
    ids,
    offsets,
    syn0,
    syn1,
    keep,
    cdf,
    *,
    mode,
    window,
    negative,
    alpha_start,
    alpha_end,
    words_done_before,
    total_words,
    words_scale,
    seed,
    loss_every=1,
    share_negatives=False,
):
    """Slow, obvious skip-gram / CBOW with negative sampling on copies of the matrices;
    the loss counts the terms of examples 0, k, 2k, ... (k = ``loss_every``); with
    ``share_negatives`` a skip-gram centre word draws its noise words once for all its
    context words."""
    syn0 = syn0.copy()
    syn1 = syn1.copy()
    counts0 = np.zeros(len(syn0), dtype=np.int64)
    counts1 = np.zeros(len(syn1), dtype=np.int64)
    rng = Stream(seed)
    loss_sum, loss_terms, examples, trained = 0.0, 0, 0, 0
    raw_before_doc = 0

    def draw_noise():
        return [
            int(np.searchsorted(cdf, rng.draw() % int(cdf[-1]), side="right"))
            for _ in range(negative)
        ]

    def train_example(h, centre, alpha, noise):
        """Centre word + noise words against hidden vector h; returns the input gradient."""
        nonlocal loss_sum, loss_terms
        with_loss = examples % loss_every == 0
        neu1e = np.zeros_like(h)
        targets = [(centre, 1.0)] + [(w, 0.0) for w in noise]
        for target, label in targets:
            if label == 0.0 and target == centre:
                continue
            old = syn1[target].copy()
            x = float(np.dot(h, old))
            f = sigmoid_w2v(x)
            z = x if label == 1.0 else -x
            if with_loss:
                loss_sum += math.log1p(math.exp(-abs(z))) + max(-z, 0.0)
                loss_terms += 1
            g = np.float32((label - f) * alpha)
            neu1e += g * old
            syn1[target] = old + g * h
            counts1[target] += 1
        return neu1e

    for d in range(len(offsets) - 1):
        doc = ids[offsets[d] : offsets[d + 1]]
        kept, raw_pos = [], []
        for t, w in enumerate(doc):
            p_keep = float(keep[w])  # compare in float64, as the kernel does
            if p_keep < 1.0 and rng.draw() / 2.0**32 >= p_keep:
                continue
            kept.append(int(w))
            raw_pos.append(raw_before_doc + t)
        raw_before_doc += len(doc)
        trained += len(kept)
        for i, centre in enumerate(kept):
            progress = (words_done_before + words_scale * raw_pos[i]) / total_words
            alpha = max(alpha_end, alpha_start - (alpha_start - alpha_end) * progress)
            reach = window - rng.draw() % window
            context = [j for j in range(max(0, i - reach), min(len(kept), i + reach + 1)) if j != i]
            if not context:
                continue
            if mode == "skipgram":
                shared = draw_noise() if share_negatives else None
                for j in context:
                    c = kept[j]
                    noise = shared if share_negatives else draw_noise()
                    neu1e = train_example(syn0[c].copy(), centre, alpha, noise)
                    syn0[c] += neu1e
                    counts0[c] += 1
                    examples += 1
            else:
                h = np.mean(np.stack([syn0[kept[j]] for j in context]), axis=0)
                neu1e = train_example(h.astype(np.float32), centre, alpha, draw_noise())
                for j in context:
                    syn0[kept[j]] += neu1e
                    counts0[kept[j]] += 1
                examples += 1
    stats = dict(
        raw_words=raw_before_doc,
        trained_words=trained,
        examples=examples,
        loss_sum=loss_sum,
        loss_terms=loss_terms,
    )
    return syn0, syn1, counts0, counts1, stats


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    """A tiny Zipf-like corpus: 12 words, docs of assorted lengths incl. empty and 1-word."""
    rng = np.random.default_rng(7)
    vocab_size = 12
    p = 1.0 / np.arange(1, vocab_size + 1)
    p /= p.sum()
    lengths = [9, 0, 1, 17, 4, 30, 2, 12]
    ids = rng.choice(vocab_size, size=sum(lengths), p=p).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    counts = np.bincount(ids, minlength=vocab_size) + 1  # +1: no zero counts
    syn0, _ = sgns.init_params(vocab_size, 8, seed=3)
    # A non-zero output matrix so that the first updates already depend on it.
    syn1 = (rng.standard_normal((vocab_size, 8)) * 0.1).astype(np.float32)
    return dict(
        ids=ids,
        offsets=offsets,
        syn0=syn0,
        syn1=syn1,
        # sample = 0.01 makes the frequent words subsampled (keep < 1), rare ones not.
        keep=sgns.keep_probabilities(counts, 0.01),
        cdf=sgns.noise_cdf(counts),
    )


def run_kernel(c, **kw):
    syn0, syn1 = c["syn0"].copy(), c["syn1"].copy()
    st = sgns.train_partition(c["ids"], c["offsets"], syn0, syn1, c["keep"], c["cdf"], **kw)
    return syn0, syn1, st


# --------------------------------------------------------------------------- kernel = reference


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
@pytest.mark.parametrize(
    "schedule",
    [
        dict(words_done_before=0, total_words=150, words_scale=1.0),
        # Mid-training slice of a concurrent round: decays 2.5x faster than local words.
        dict(words_done_before=40, total_words=300, words_scale=2.5),
        # Past the end of the schedule: alpha clamps at alpha_end.
        dict(words_done_before=400, total_words=300, words_scale=1.0),
    ],
)
def test_kernel_matches_reference(tiny, mode, schedule):
    kw = dict(mode=mode, window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=11, **schedule)
    _check_against_reference(tiny, kw)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_shared_negatives_match_reference(tiny, mode):
    """share_negatives: one draw of noise words per centre word (CBOW: unchanged)."""
    kw = dict(mode=mode, window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=11,
              words_done_before=0, total_words=150, words_scale=1.0)  # fmt: skip
    shared = _check_against_reference(tiny, {**kw, "share_negatives": True})
    per_pair = run_kernel(tiny, **kw)
    if mode == "cbow":
        for a, b in zip(shared[:2], per_pair[:2], strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # fewer draws, other noise words: another model
        assert not np.allclose(shared[1], per_pair[1])


def _check_against_reference(tiny, kw):
    syn0, syn1, st = run_kernel(tiny, **kw)
    r0, r1, rc0, rc1, rst = reference_train(
        tiny["ids"], tiny["offsets"], tiny["syn0"], tiny["syn1"], tiny["keep"], tiny["cdf"], **kw
    )
    # The stream and the bookkeeping are exact ...
    assert st.raw_words == rst["raw_words"] == tiny["ids"].size
    assert 0 < st.trained_words == rst["trained_words"] < tiny["ids"].size
    assert st.examples == rst["examples"] > 0
    assert st.loss_terms == rst["loss_terms"]
    np.testing.assert_array_equal(st.syn0_counts, rc0)
    np.testing.assert_array_equal(st.syn1_counts, rc1)
    # ... the arithmetic equal to float32 rounding.
    np.testing.assert_allclose(syn0, r0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(syn1, r1, rtol=RTOL, atol=ATOL)
    assert st.loss_sum == pytest.approx(rst["loss_sum"], rel=1e-5)
    # The training actually moved the parameters (a no-op kernel would fail above only
    # if the reference moved them; make that explicit).
    assert np.abs(syn0 - tiny["syn0"]).max() > 1e-3
    assert np.abs(syn1 - tiny["syn1"]).max() > 1e-3
    return syn0, syn1, st


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_sampled_loss_matches_reference(tiny, mode):
    """loss_every = k counts the terms of examples 0, k, 2k, ... and changes nothing else."""
    kw = dict(mode=mode, window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=5,
              words_done_before=0, total_words=150, words_scale=1.0)  # fmt: skip
    full0, full1, full = run_kernel(tiny, **kw)
    syn0, syn1, st = run_kernel(tiny, loss_every=3, **kw)
    *_, rst = reference_train(
        tiny["ids"], tiny["offsets"], tiny["syn0"], tiny["syn1"], tiny["keep"], tiny["cdf"],
        loss_every=3, **kw,
    )  # fmt: skip
    assert st.loss_terms == rst["loss_terms"]
    assert 0 < st.loss_terms < full.loss_terms
    assert st.loss_sum == pytest.approx(rst["loss_sum"], rel=1e-5)
    np.testing.assert_array_equal(syn0, full0)
    np.testing.assert_array_equal(syn1, full1)
    with pytest.raises(ConfigError, match="loss_every"):
        run_kernel(tiny, loss_every=0, **kw)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
@pytest.mark.parametrize("share", [False, True])
def test_kernel_matches_reference_large_vocab(mode, share):
    """Noise words from a 3000-word, heavy-tailed table (exercises the bucketed bisection)."""
    rng = np.random.default_rng(5)
    vocab_size = 3000
    counts = np.sort(rng.zipf(1.3, vocab_size))[::-1].astype(np.int64)
    counts[-3:] = 0  # words never drawn as noise
    ids = rng.integers(0, vocab_size, 240).astype(np.int32)
    offsets = np.array([0, 100, 240], dtype=np.int64)
    syn0, _ = sgns.init_params(vocab_size, 4, seed=1)
    syn1 = (rng.standard_normal((vocab_size, 4)) * 0.1).astype(np.float32)
    keep, cdf = sgns.keep_probabilities(counts, 1e-3), sgns.noise_cdf(counts)
    kw = dict(mode=mode, window=4, negative=6, alpha_start=0.1, alpha_end=0.01, seed=3,
              share_negatives=share)  # fmt: skip
    k0, k1 = syn0.copy(), syn1.copy()
    st = sgns.train_partition(ids, offsets, k0, k1, keep, cdf, **kw)
    r0, r1, rc0, rc1, rst = reference_train(
        ids, offsets, syn0, syn1, keep, cdf,
        words_done_before=0, total_words=ids.size, words_scale=1.0, **kw,
    )  # fmt: skip
    assert st.loss_terms == rst["loss_terms"]
    np.testing.assert_array_equal(st.syn1_counts, rc1)
    np.testing.assert_array_equal(st.syn0_counts, rc0)
    assert np.count_nonzero(rc1) > (40 if share else 100)  # many distinct noise words
    np.testing.assert_allclose(k0, r0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(k1, r1, rtol=RTOL, atol=ATOL)


def test_counts_follow_definition(tiny):
    """Skip-gram: syn0 counts = pairs (examples); syn1 counts = applied terms = loss terms."""
    _, _, st = run_kernel(tiny, mode="skipgram", window=3, negative=4, seed=5)
    assert st.syn0_counts.sum() == st.examples
    assert st.syn1_counts.sum() == st.loss_terms
    _, _, st = run_kernel(tiny, mode="cbow", window=3, negative=4, seed=5)
    assert st.syn1_counts.sum() == st.loss_terms
    assert st.syn0_counts.sum() >= st.examples  # every window has >= 1 context row


def test_sliced_arrow_offsets(tiny):
    """Offsets need not start at 0 (a sliced Arrow ListArray): same result as a copy."""
    pa = pytest.importorskip("pyarrow")
    docs = pa.ListArray.from_arrays(pa.array(tiny["offsets"], pa.int32()), pa.array(tiny["ids"]))
    part = docs.slice(3, 4)  # documents 3..6
    assert part.offsets[0].as_py() > 0
    s0, s1 = tiny["syn0"].copy(), tiny["syn1"].copy()
    st = sgns.train_partition(
        part.values.to_numpy(), part.offsets.to_numpy(), s0, s1, tiny["keep"], tiny["cdf"], seed=4
    )
    flat = part.flatten().to_numpy()
    lengths = part.value_lengths().to_numpy()
    c = dict(tiny, ids=flat, offsets=np.concatenate([[0], np.cumsum(lengths)]))
    r0, r1, rst = run_kernel(c, seed=4)
    assert st.raw_words == rst.raw_words == flat.size
    np.testing.assert_array_equal(s0, r0)
    np.testing.assert_array_equal(s1, r1)


def test_no_subsampling_keeps_every_word(tiny):
    keep = np.ones_like(tiny["keep"])
    c = dict(tiny, keep=keep)
    _, _, st = run_kernel(c, mode="skipgram", seed=1)
    assert st.trained_words == st.raw_words == tiny["ids"].size


def test_compute_loss_off_changes_nothing_else(tiny):
    a0, a1, sa = run_kernel(tiny, mode="cbow", seed=9)
    b0, b1, sb = run_kernel(tiny, mode="cbow", seed=9, compute_loss=False)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert sb.loss_terms == 0 and math.isnan(sb.loss) and sa.loss > 0


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_deterministic_for_seed(tiny, mode):
    a0, a1, sa = run_kernel(tiny, mode=mode, seed=21)
    b0, b1, sb = run_kernel(tiny, mode=mode, seed=21)
    c0, c1, _ = run_kernel(tiny, mode=mode, seed=22)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(sa.syn1_counts, sb.syn1_counts)
    assert not np.array_equal(a0, c0)
    assert not np.array_equal(a1, c1)


def test_derive_seed_distinct_and_stable():
    seeds = {sgns.derive_seed(1, e, r, p) for e in range(3) for r in range(2) for p in range(4)}
    assert len(seeds) == 24
    assert sgns.derive_seed(1, 2, 3) == sgns.derive_seed(1, 2, 3)
    assert sgns.derive_seed(1, 2, 3) != sgns.derive_seed(2, 2, 3)
    assert all(0 <= s < 2**63 for s in seeds)


# --------------------------------------------------------------------------- tables


def test_keep_probabilities_formula_and_shape():
    counts = np.array([10_000, 1_000, 100, 10, 1])
    sample = 1e-3
    keep = sgns.keep_probabilities(counts, sample)
    assert keep.dtype == np.float32
    t = sample * counts.sum()
    expected = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)
    np.testing.assert_allclose(keep, expected, rtol=1e-6)
    assert np.all(np.diff(keep) >= 0)  # more frequent -> kept less often
    assert keep[-1] == 1.0 and keep[0] < 0.2
    np.testing.assert_array_equal(sgns.keep_probabilities(counts, 0.0), np.ones(5))
    with pytest.raises(ConfigError, match=r"word2vec\.sample"):
        sgns.keep_probabilities(counts, 1.5)


def test_tables_match_gensim():
    """keep probabilities and the noise table equal gensim's sample_int and cum_table."""
    gensim_w2v = pytest.importorskip("gensim.models.word2vec")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    p = 1.0 / np.arange(1, 41) ** 1.1
    sentences = [list(rng.choice(words, size=20, p=p / p.sum())) for _ in range(300)]
    model = gensim_w2v.Word2Vec(vector_size=4, min_count=1, sample=1e-2, workers=1)
    model.build_vocab(sentences)
    counts = np.array([model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key])
    keep = sgns.keep_probabilities(counts, 1e-2)
    sample_int = np.array(
        [model.wv.get_vecattr(w, "sample_int") for w in model.wv.index_to_key], dtype=np.float64
    )
    np.testing.assert_allclose(keep, sample_int / (2**32 - 1), rtol=1e-6)
    np.testing.assert_array_equal(sgns.noise_cdf(counts), model.cum_table.astype(np.int64))


def test_noise_cdf_draws_follow_unigram_power():
    counts = np.array([1000, 300, 50, 10, 1, 0])
    cdf = sgns.noise_cdf(counts)
    assert cdf.dtype == np.int64 and cdf[-1] == sgns.NOISE_DOMAIN
    draws = np.random.default_rng(1).integers(0, cdf[-1], 400_000)
    freq = np.bincount(np.searchsorted(cdf, draws, side="right"), minlength=6) / draws.size
    target = counts**0.75 / (counts**0.75).sum()
    np.testing.assert_allclose(freq, target, atol=3e-3)
    assert freq[-1] == 0.0  # a zero-count word is never drawn
    with pytest.raises(InputError):
        sgns.noise_cdf(np.zeros(3))


def test_init_params():
    syn0, syn1 = sgns.init_params(50, 20, seed=4)
    assert syn0.shape == syn1.shape == (50, 20)
    assert syn0.dtype == syn1.dtype == np.float32
    assert syn0.flags.c_contiguous and syn1.flags.c_contiguous
    assert np.abs(syn0).max() <= 0.5 / 20 and np.abs(syn0).max() > 0.4 / 20
    assert not syn1.any()
    np.testing.assert_array_equal(syn0, sgns.init_params(50, 20, seed=4)[0])
    assert not np.array_equal(syn0, sgns.init_params(50, 20, seed=5)[0])


# --------------------------------------------------------------------------- merge


def test_merge_is_the_mean_of_the_partition_models():
    """Each of S partitions holds ``base`` where it did not train; the merge is their mean."""
    base0 = np.arange(12, dtype=np.float32).reshape(4, 3)
    base1 = -np.arange(12, dtype=np.float32).reshape(4, 3)
    v = lambda *r: np.array(r, dtype=np.float32)  # noqa: E731
    u1 = sgns.RowUpdate(
        syn0_rows=np.array([0, 2], np.int32),
        syn0_vectors=v([1, 1, 1], [10, 10, 10]),
        syn0_counts=np.array([3, 1]),
        syn1_rows=np.array([1], np.int32),
        syn1_vectors=v([4, 4, 4]),
        syn1_counts=np.array([2]),
    )
    u2 = sgns.RowUpdate(
        syn0_rows=np.array([0], np.int32),
        syn0_vectors=v([5, 5, 5]),
        syn0_counts=np.array([1]),
        syn1_rows=np.array([1, 3], np.int32),
        syn1_vectors=v([1, 1, 1], [7, 8, 9]),
        syn1_counts=np.array([1, 5]),
    )
    updates = [u1, u2]
    for S in (2, 3):
        # The reference: materialise every partition's full model, take the plain mean.
        models0, models1 = [], []
        for p in range(S):
            m0, m1 = base0.astype(np.float64), base1.astype(np.float64)
            if p < len(updates):
                m0[updates[p].syn0_rows] = updates[p].syn0_vectors
                m1[updates[p].syn1_rows] = updates[p].syn1_vectors
            models0.append(m0)
            models1.append(m1)
        s0, s1 = sgns.merge(base0, base1, iter(updates), S)  # a one-shot iterator is enough
        np.testing.assert_allclose(s0, np.mean(models0, axis=0), rtol=1e-6)
        np.testing.assert_allclose(s1, np.mean(models1, axis=0), rtol=1e-6)
        np.testing.assert_array_equal(s0[[1, 3]], base0[[1, 3]])  # untouched: base exactly
        assert s0.dtype == s1.dtype == np.float32
    # Never a sum of models: two identical partitions give that partition's model.
    t0, t1 = sgns.merge(base0, base1, [u1, u1], 2)
    one0, one1 = sgns.merge(base0, base1, [u1], 1)
    np.testing.assert_array_equal(t0, one0)
    np.testing.assert_array_equal(t1, one1)
    np.testing.assert_array_equal(one0[u1.syn0_rows], u1.syn0_vectors)  # S = 1: bit for bit
    # The bases are untouched; more updates than partitions is refused.
    np.testing.assert_array_equal(base0, np.arange(12, dtype=np.float32).reshape(4, 3))
    with pytest.raises(InputError, match="partitions"):
        sgns.merge(base0, base1, [u1, u2], 1)


def test_merge_rejects_non_finite():
    base = np.zeros((2, 2), np.float32)
    bad = sgns.RowUpdate(
        syn0_rows=np.array([1], np.int32),
        syn0_vectors=np.array([[np.nan, 0]], np.float32),
        syn0_counts=np.array([1]),
        syn1_rows=np.array([], np.int32),
        syn1_vectors=np.zeros((0, 2), np.float32),
        syn1_counts=np.array([], np.int64),
    )
    with pytest.raises(TrainingDivergedError, match=r"word2vec\.alpha"):
        sgns.merge(base, base, [bad], 1)


def test_partitions_round_trip(tiny):
    """row_update lists exactly the touched rows; merging one partition reproduces it."""
    syn0, syn1, st = run_kernel(tiny, mode="skipgram", seed=2)
    upd = sgns.row_update(syn0, syn1, st)
    np.testing.assert_array_equal(upd.syn0_rows, np.flatnonzero(st.syn0_counts))
    assert np.all(upd.syn0_counts > 0) and np.all(upd.syn1_counts > 0)
    m0, m1 = sgns.merge(tiny["syn0"], tiny["syn1"], [upd], 1)
    np.testing.assert_array_equal(m0, syn0)
    np.testing.assert_array_equal(m1, syn1)


# --------------------------------------------------------------------------- Procrustes


def test_procrustes_recovers_rotation():
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((200, 16))
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    other = reference @ q  # a rotated (and possibly reflected) copy
    aligned = sgns.procrustes_align(reference, other, rows=np.arange(0, 200, 3))
    np.testing.assert_allclose(aligned, reference, atol=1e-10)
    # float32 in, float32 out, aligned to float32 precision.
    aligned32 = sgns.procrustes_align(
        reference.astype(np.float32), other.astype(np.float32), np.arange(50)
    )
    assert aligned32.dtype == np.float32
    np.testing.assert_allclose(aligned32, reference, atol=1e-4)


def test_procrustes_rotation_keeps_shard_scores():
    """One rotation applied to syn0 and syn1neg leaves all scores syn0 · syn1negᵀ as they were."""
    rng = np.random.default_rng(8)
    base = rng.standard_normal((30, 6))
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    shard0 = base @ q + 0.01 * rng.standard_normal((30, 6))  # trained shard, rotated
    shard1 = rng.standard_normal((30, 6))
    r = sgns.procrustes_rotation(base, shard0, np.arange(30))
    np.testing.assert_allclose(r @ r.T, np.eye(6), atol=1e-12)
    np.testing.assert_allclose((shard0 @ r) @ (shard1 @ r).T, shard0 @ shard1.T, atol=1e-10)
    assert np.abs(shard0 @ r - base).max() < 0.1 < np.abs(shard0 - base).max()
    with pytest.raises(InputError, match="shared row"):
        sgns.procrustes_rotation(base, shard0, np.array([], dtype=np.int64))


# --------------------------------------------------------------------------- validation


def test_validation_errors(tiny):
    with pytest.raises(ConfigError, match=r"word2vec\.mode"):
        run_kernel(tiny, mode="glove")
    with pytest.raises(ConfigError, match=r"word2vec\.window"):
        run_kernel(tiny, window=0)
    bad = dict(tiny, ids=tiny["ids"] + 100)
    with pytest.raises(InputError, match="another vocab"):
        run_kernel(bad)
    with pytest.raises(InputError, match="doc_offsets"):
        run_kernel(dict(tiny, offsets=tiny["offsets"][::-1]))
    with pytest.raises(InputError, match="C-contiguous float32"):
        sgns.train_partition(
            tiny["ids"],
            tiny["offsets"],
            np.asfortranarray(tiny["syn0"]),
            tiny["syn1"].copy(),
            tiny["keep"],
            tiny["cdf"],
        )


# --------------------------------------------------------------------------- quality


def _planted_topics(seed: int = 0):
    """400 documents of 15 tokens, each mostly from one of 4 topics of 10 words."""
    rng = np.random.default_rng(seed)
    n_topics, per_topic, doc_len = 4, 10, 15
    vocab_size = n_topics * per_topic
    docs = []
    for _ in range(400):
        doc = rng.integers(0, per_topic, doc_len) + rng.integers(n_topics) * per_topic
        noise = rng.random(doc_len) < 0.3  # 30 % of the tokens from any topic
        doc[noise] = rng.integers(0, vocab_size, noise.sum())
        docs.append(doc)
    ids = np.concatenate(docs).astype(np.int32)
    offsets = np.arange(0, ids.size + 1, doc_len, dtype=np.int64)
    return ids, offsets, vocab_size, per_topic


def _train_merged(ids, offsets, vocab_size, partitions, scale, mode="skipgram", epochs=1,
                  dim=16, rounds=1):  # fmt: skip
    """The stage's loop on arrays: every round, S private copies of the broadcast train
    their slice at alpha × scale on the global schedule; the merge takes their mean."""
    counts = np.bincount(ids, minlength=vocab_size)
    keep, cdf = sgns.keep_probabilities(counts, 0.0), sgns.noise_cdf(counts)
    syn0, syn1 = sgns.init_params(vocab_size, dim, seed=1)
    alpha = 0.025 if mode == "skipgram" else 0.05
    n_docs = offsets.size - 1
    cuts = np.linspace(0, n_docs, partitions * rounds + 1).astype(int)
    losses = []
    for epoch in range(epochs):
        loss_sum, loss_terms = 0.0, 0
        for r in range(rounds):
            updates = []
            for part in range(partitions):
                k = part * rounds + r  # partition p holds slices p*R .. p*R + R-1
                sl = offsets[cuts[k] : cuts[k + 1] + 1]
                s0, s1 = syn0.copy(), syn1.copy()
                st = sgns.train_partition(
                    ids, sl, s0, s1, keep, cdf, mode=mode, window=5, negative=5,
                    alpha_start=alpha * scale, alpha_end=1e-4 * scale,
                    words_done_before=(epoch * rounds + r) * ids.size // rounds,
                    total_words=epochs * ids.size,
                    words_scale=ids.size / rounds / (sl[-1] - sl[0]),
                    seed=sgns.derive_seed(1, epoch, r, part),
                )  # fmt: skip
                updates.append(sgns.row_update(s0, s1, st))
                loss_sum, loss_terms = loss_sum + st.loss_sum, loss_terms + st.loss_terms
            syn0, syn1 = sgns.merge(syn0, syn1, updates, partitions)
        losses.append(loss_sum / loss_terms)
    return syn0, syn1, losses


def test_scaled_partitions_progress_like_one_pass():
    """The mean of S partition models trained at alpha × S moves the rows about as far as
    one pass over all the data; at plain alpha (Spark MLlib's averaging) about 1/S as far.
    syn1neg starts at zero, so its row norms measure the progress. Every topic word is
    split into 10 variants (400 words of ~15 occurrences): rows in the regime of a few
    updates per round, where the difference shows."""
    topic_ids, offsets, vocab_size, _ = _planted_topics()
    variant = np.random.default_rng(1).integers(0, 10, topic_ids.size)
    ids, vocab_size = (topic_ids * 10 + variant).astype(np.int32), vocab_size * 10

    def progress(partitions: int, scale: float) -> float:
        syn1 = _train_merged(ids, offsets, vocab_size, partitions, scale)[1]
        return float(np.linalg.norm(syn1, axis=1).mean())

    one = progress(1, 1.0)
    assert 0.75 < progress(4, 4.0) / one < 1.33
    assert progress(4, 1.0) / one < 0.35


@pytest.mark.parametrize("partitions", [1, 2])
@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_planted_topics_become_neighbours(mode, partitions):
    """Words that co-occur within their topic end up nearest to their topic.

    With 2 partitions this runs the word2vec stage's loop on arrays: broadcast, train
    private copies of each partition's slice on the global alpha schedule at alpha × S,
    ship touched rows, merge by the mean of the partition models.
    """
    ids, offsets, vocab_size, per_topic = _planted_topics()
    syn0, _, losses = _train_merged(ids, offsets, vocab_size, partitions, float(partitions),
                                    mode=mode, epochs=5)  # fmt: skip
    assert losses[-1] < losses[0]
    unit = syn0 / np.linalg.norm(syn0, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    top5 = np.argsort(-sim, axis=1)[:, :5]
    same_topic = (top5 // per_topic) == (np.arange(vocab_size)[:, None] // per_topic)
    assert same_topic.mean() >= 0.9
