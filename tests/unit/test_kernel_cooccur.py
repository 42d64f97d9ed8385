"""Unit tests for the co-occurrence kernel (embedpipe.kernels.cooccur): no Spark, tiny inputs."""

from __future__ import annotations

import collections
import gzip
import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedpipe.errors import ConfigError, InputError
from embedpipe.kernels import cooccur as K
from tests.conftest import EN_OPEN_TOK as EN_OPEN

WINDOWS = (1, 2, 5, 10)
WEIGHTINGS = ("harmonic", "uniform")


# ---------------------------------------------------------------- slow reference


def reference_cooccur(docs, window, weighting="harmonic", windows=None):
    """glove.c's cooccur as a plain double loop: every centre p, every q with 0 < |p-q| <= b_p.

    ``windows`` (optional) gives each token's own window b_p (word2vec's dynamic window);
    otherwise b_p = window for every token.
    """
    X = collections.defaultdict(float)
    for n, doc in enumerate(docs):
        doc = [int(t) for t in doc]
        for p in range(len(doc)):
            b = window if windows is None else int(windows[n][p])
            for q in range(max(0, p - b), min(len(doc), p + b + 1)):
                if q != p:
                    d = abs(p - q)
                    X[(doc[p], doc[q])] += 1.0 / d if weighting == "harmonic" else 1.0
    return dict(X)


def as_dict(blocks, V):
    """Merge blocks with the code under test and turn them into {(i, j): x}."""
    keys, values = K.merge_sorted_blocks(blocks)
    i, j = K.keys_to_ij(keys, V)
    return {(int(a), int(b)): float(x) for a, b, x in zip(i, j, values, strict=True)}


def count(docs, V, window, **kw):
    blocks = list(K.count_partition(docs, V, window, **kw))
    for keys, values in blocks:
        assert keys.dtype == np.int64 and values.dtype == np.float64
        assert np.all(np.diff(keys) > 0), "a block must be sorted and unique"
    return blocks


def assert_close(got, want, rtol=1e-12):
    assert got.keys() == want.keys()
    for key, x in want.items():
        assert abs(got[key] - x) <= rtol * abs(x), (key, got[key], x)


def zipf_docs(seed, n_docs, V, max_len=40):
    """Random documents with Zipfian ids (0 = most frequent), some empty or single-token."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(0, max_len))
        docs.append((np.minimum(rng.zipf(1.3, size=n), V) - 1).astype(np.int32))
    return docs


@pytest.fixture(scope="module")
def small_docs():
    return zipf_docs(1, 300, V=60)


@pytest.fixture(scope="module")
def real_docs():
    """The first 1000 lines of en-open, ids by a Counter vocab (rank by count, ties by token)."""
    if not EN_OPEN.exists():
        pytest.skip(f"{EN_OPEN} is absent (shared corpora not mounted)")
    with gzip.open(EN_OPEN, "rt", encoding="utf-8") as f:
        lines = [line.split() for line in itertools.islice(f, 1000)]
    counts = collections.Counter(t for line in lines for t in line)
    vocab = sorted(counts, key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(vocab)}
    docs = [np.array([index[t] for t in line], dtype=np.int32) for line in lines]
    return docs, len(vocab), np.array([counts[w] for w in vocab])


# ---------------------------------------------------------------- hand-computed


def test_hand_computed_harmonic_window_2():
    # docs: "a b c" and "a a", ids a=0 b=1 c=2, window 2, harmonic weights 1/d.
    #   "a b c": a-b at d=1 -> 1, a-c at d=2 -> 1/2, b-c at d=1 -> 1, each in both directions.
    #   "a a":   a-a at d=1 is seen from both ends -> X[a, a] = 2 (glove.c does the same).
    X = as_dict(count([np.array([0, 1, 2]), np.array([0, 0])], 3, 2), 3)
    assert X == {
        (0, 1): 1.0,
        (1, 0): 1.0,
        (0, 2): 0.5,
        (2, 0): 0.5,
        (1, 2): 1.0,
        (2, 1): 1.0,
        (0, 0): 2.0,
    }


def test_hand_computed_uniform_window_1_and_boundaries():
    # docs "a b c" and "c a", window 1, uniform: only neighbours, never across documents
    # (c at the end of doc 1 and c at the start of doc 2 do not meet).
    #   a-b: 1, b-c: 1 (doc 1); c-a: 1 (doc 2). a-c at distance 2 is out of the window.
    docs = [np.array([0, 1, 2]), np.array([2, 0])]
    X = as_dict(count(docs, 3, 1, weighting="uniform"), 3)
    assert X == {(0, 1): 1, (1, 0): 1, (1, 2): 1, (2, 1): 1, (0, 2): 1, (2, 0): 1}


def test_hand_computed_repeats_add_up():
    # "a b a", window 2, harmonic: a-b at d=1 twice -> X[a, b] = 2; a-a at d=2 -> 2 * 1/2 = 1.
    X = as_dict(count([np.array([0, 1, 0])], 2, 2), 2)
    assert X == {(0, 1): 2.0, (1, 0): 2.0, (0, 0): 1.0}


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("max_product", [None, 0, 40])
def test_equals_reference_small(small_docs, window, weighting, max_product):
    # max_product 0: everything goes through the sparse sort path; 40: both paths;
    # None: sized from memory (the whole 60-word matrix fits the dense block).
    blocks = count(small_docs, 60, window, weighting=weighting, max_product=max_product)
    assert_close(as_dict(blocks, 60), reference_cooccur(small_docs, window, weighting))


@pytest.mark.parametrize("window", WINDOWS)
def test_equals_reference_real_text(real_docs, window):
    docs, V, _ = real_docs
    for weighting in WEIGHTINGS:
        want = reference_cooccur(docs, window, weighting)
        got = as_dict(count(docs, V, window, weighting=weighting, memory_mb=1), V)
        assert_close(got, want)
        # What the stage writes: float32 within float32 rounding of the float64 reference.
        for key, x in itertools.islice(want.items(), 2000):
            assert abs(float(np.float32(got[key])) - x) <= 1e-6 * x


@settings(max_examples=40, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(0, 6), max_size=12), max_size=8),
    window=st.integers(1, 12),
    weighting=st.sampled_from(WEIGHTINGS),
    max_product=st.sampled_from([None, 0, 3, 10]),
    memory_mb=st.sampled_from([1, 8]),
)
def test_equals_reference_any_input(docs, window, weighting, max_product, memory_mb):
    # Empty documents, single tokens, windows longer than every document, V = 7.
    arrays = [np.array(d, dtype=np.int32) for d in docs]
    blocks = count(
        arrays, 7, window, weighting=weighting, max_product=max_product, memory_mb=memory_mb
    )
    assert_close(as_dict(blocks, 7), reference_cooccur(docs, window, weighting))


def test_window_beyond_float_exact_units():
    # lcm(1..20) > 2**24: the kernel falls back to float weights 1/d.
    docs = zipf_docs(2, 40, V=30)
    assert_close(as_dict(count(docs, 30, 20), 30), reference_cooccur(docs, 20))


def test_symmetric(small_docs):
    X = as_dict(count(small_docs, 60, 5, max_product=30), 60)
    assert all(X[(j, i)] == x for (i, j), x in X.items())


# ---------------------------------------------------------------- invariance


def test_partitions_summed_equal_whole(small_docs):
    whole = list(K.count_partition(small_docs, 60, 5, max_product=50, integer_units=True))
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(len(small_docs), size=6, replace=False))
    parts = [
        block
        for group in np.split(np.arange(len(small_docs)), cuts)
        for block in K.count_partition(
            [small_docs[k] for k in group], 60, 5, max_product=50, integer_units=True
        )
    ]
    a, b = K.merge_sorted_blocks(whole), K.merge_sorted_blocks(parts)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])  # integer units: exact in any order
    # Default units: equal up to float64 rounding of the division by lcm(1..window).
    c = K.merge_sorted_blocks(
        block
        for group in np.split(np.arange(len(small_docs)), cuts)
        for block in K.count_partition([small_docs[k] for k in group], 60, 5, max_product=50)
    )
    np.testing.assert_array_equal(c[0], a[0])
    np.testing.assert_allclose(c[1], a[1] / K.weight_denominator(5), rtol=1e-14)


def test_tiny_memory_flushes_many_blocks_same_result(real_docs):
    docs, V, _ = real_docs
    big = list(K.count_partition(docs, V, 10, memory_mb=64, integer_units=True))
    small = list(K.count_partition(docs, V, 10, memory_mb=1, integer_units=True))
    assert len(small) > len(big) and len(small) >= 4
    a, b = K.merge_sorted_blocks(big), K.merge_sorted_blocks(small)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_dense_block_size_does_not_change_result(real_docs):
    docs, V, _ = real_docs
    want = K.merge_sorted_blocks(K.count_partition(docs, V, 5, max_product=0, integer_units=True))
    for mp in (1, 1000, 10**6, None):
        got = K.merge_sorted_blocks(
            K.count_partition(docs, V, 5, max_product=mp, integer_units=True)
        )
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_integer_units_scale():
    docs = zipf_docs(4, 50, V=20)
    x = K.merge_sorted_blocks(K.count_partition(docs, 20, 7))
    n = K.merge_sorted_blocks(K.count_partition(docs, 20, 7, integer_units=True))
    L = K.weight_denominator(7)
    assert L == 420
    np.testing.assert_array_equal(n[1], np.round(n[1]))
    np.testing.assert_allclose(n[1] / L, x[1], rtol=1e-15)


# ---------------------------------------------------------------- randomised options


def _windows_for(docs, keys, seed, window):
    lengths = np.array([len(d) for d in docs])
    u = K.token_uniforms(seed, K._STREAM_WINDOW, np.asarray(keys), lengths)
    b = 1 + np.floor(u * window).astype(np.int64)
    return np.split(b, np.cumsum(lengths)[:-1])


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_dynamic_window_matches_reference_with_same_draws(small_docs, weighting):
    keys = np.arange(len(small_docs)) * 7 + 100
    got = as_dict(
        count(
            small_docs,
            60,
            5,
            weighting=weighting,
            dynamic_window=True,
            seed=9,
            doc_keys=keys,
            max_product=40,
        ),
        60,
    )
    wins = _windows_for(small_docs, keys, 9, 5)
    assert all(w.min() >= 1 and w.max() <= 5 for w in wins if w.size)
    assert_close(got, reference_cooccur(small_docs, 5, weighting, windows=wins))


def test_dynamic_window_is_symmetric_only_in_expectation(small_docs):
    X = as_dict(count(small_docs, 60, 5, dynamic_window=True, seed=1), 60)
    assert any(X.get((j, i)) != x for (i, j), x in X.items())
    full = reference_cooccur(small_docs, 5)
    # Never more than the full window; in total about E[weight kept] of it.
    assert all(x <= full[key] + 1e-9 for key, x in X.items())
    kept = sum(X.values()) / sum(full.values())
    # harmonic: E = sum_d (1/d)(6-d)/5 / sum_d 1/d = 0.6 on long docs; short docs are higher.
    assert 0.5 < kept < 0.8


def test_subsampling_matches_reference_on_kept_tokens(real_docs):
    docs, V, counts = real_docs
    keys = np.arange(len(docs), dtype=np.int64)
    got = as_dict(count(docs, V, 5, subsample=1e-3, counts=counts, seed=5, doc_keys=keys), V)
    lengths = np.array([len(d) for d in docs])
    u = K.token_uniforms(5, K._STREAM_SUBSAMPLE, keys, lengths)
    keep_prob = K.subsample_keep_prob(counts, 1e-3)
    flat = np.concatenate(docs)
    kept = np.split(
        flat[u < keep_prob[flat]],
        np.cumsum(
            np.add.reduceat((u < keep_prob[flat]).astype(np.int64), np.cumsum(lengths) - lengths)
        )[:-1],
    )
    assert 0 < sum(map(len, kept)) < flat.size  # something was dropped, not everything
    assert_close(got, reference_cooccur(kept, 5))


def test_keep_prob_formula():
    counts = np.array([1000, 100, 10, 0])
    p = K.subsample_keep_prob(counts, 1e-2)
    f = counts[:3] / counts.sum()
    np.testing.assert_allclose(p[:3], np.minimum(1, (np.sqrt(f / 1e-2) + 1) * 1e-2 / f))
    assert p[0] < p[1] <= p[2] == 1.0 and p[3] == 1.0


@pytest.mark.parametrize(
    "opts",
    [
        {"dynamic_window": True},
        {"subsample": 1e-3},
        {"dynamic_window": True, "subsample": 1e-3},
    ],
)
def test_random_options_deterministic_and_independent_of_batching(real_docs, opts):
    docs, V, counts = real_docs
    keys = np.arange(len(docs), dtype=np.int64) * 3 + 11
    kw = dict(opts, counts=counts, seed=42, integer_units=True)
    ref = K.merge_sorted_blocks(K.count_partition(docs, V, 5, doc_keys=keys, **kw))
    again = K.merge_sorted_blocks(
        K.count_partition(docs, V, 5, doc_keys=keys, memory_mb=1, max_product=100, **kw)
    )
    # Another partitioning and order of the same documents, keyed by doc.
    perm = np.random.default_rng(0).permutation(len(docs))
    halves = np.array_split(perm, 2)
    split = K.merge_sorted_blocks(
        b
        for h in halves
        for b in K.count_partition([docs[k] for k in h], V, 5, doc_keys=keys[h], **kw)
    )
    for other in (again, split):
        np.testing.assert_array_equal(other[0], ref[0])
        np.testing.assert_array_equal(other[1], ref[1])
    other_seed = K.merge_sorted_blocks(
        K.count_partition(docs, V, 5, doc_keys=keys, **dict(kw, seed=43))
    )
    assert other_seed[0].size != ref[0].size or not np.array_equal(other_seed[1], ref[1])


def test_token_uniforms_look_uniform_and_depend_on_key_and_position():
    lengths = np.array([5000, 5000])
    u = K.token_uniforms(0, 1, np.array([1, 2]), lengths)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    hist = np.bincount((u * 10).astype(int), minlength=10)
    assert hist.min() > 850
    assert not np.array_equal(u[:5000], u[5000:])
    # A document's draws depend only on (seed, stream, key, position).
    alone = K.token_uniforms(0, 1, np.array([2]), np.array([5000]))
    np.testing.assert_array_equal(alone, u[5000:])
    assert not np.array_equal(K.token_uniforms(1, 1, np.array([2]), np.array([5000])), alone)


# ---------------------------------------------------------------- Arrow input


def test_arrow_lists_equal_numpy_docs(small_docs):
    want = as_dict(count(small_docs, 60, 4, max_product=30), 60)
    lists = pa.array([d.tolist() for d in small_docs], type=pa.list_(pa.int32()))
    got = as_dict(K.count_arrow_lists(lists, 60, 4, max_product=30), 60)
    assert got == want
    # Chunks (as record batches arrive) and sliced arrays, with a null list (an empty doc).
    chunks = [lists.slice(0, 100), lists.slice(100, 120), lists.slice(220)]
    with_null = pa.concat_arrays([chunks[0], pa.array([None], type=pa.list_(pa.int32()))])
    got = as_dict(K.count_arrow_lists([with_null, *chunks[1:]], 60, 4, max_product=30), 60)
    assert got == want
    got = as_dict(K.count_arrow_lists(pa.chunked_array(chunks), 60, 4, max_product=30), 60)
    assert got == want


def test_record_batches_with_doc_column(real_docs):
    docs, V, _ = real_docs
    keys = np.arange(len(docs), dtype=np.int64) + 1000
    kw = dict(dynamic_window=True, seed=3, integer_units=True)
    want = K.merge_sorted_blocks(K.count_partition(docs, V, 5, doc_keys=keys, **kw))
    table = pa.table(
        {
            "doc": pa.array(keys, pa.int64()),
            "ids": pa.array([d.tolist() for d in docs], type=pa.list_(pa.int32())),
        }
    )
    got = K.merge_sorted_blocks(
        K.count_record_batches(table.to_batches(max_chunksize=97), V, 5, **kw)
    )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(InputError, match="no column 'doc'"):
        list(K.count_record_batches(table.select(["ids"]).to_batches(), V, 5))


def test_record_batches_without_doc_column(small_docs):
    table = pa.table({"ids": pa.array([d.tolist() for d in small_docs], pa.list_(pa.int32()))})
    got = as_dict(
        K.count_record_batches(table.to_batches(max_chunksize=50), 60, 3, doc_column=None), 60
    )
    assert got == as_dict(count(small_docs, 60, 3), 60)


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("bits", "n"),
    [
        (1, 5000),
        (11, 5000),
        (12, 5000),
        (23, 5000),
        (36, 5000),
        (62, 5000),
        (40, 1 << 17),
        (30, 1 << 17),
    ],
)
def test_radix_sort_equals_np_sort(bits, n):
    # n = 2**17 takes the MSD-then-LSD path; skewed keys fill some buckets far more.
    rng = np.random.default_rng(bits)
    keys = rng.integers(0, 1 << bits, size=n, dtype=np.int64)
    keys[: n // 3] >>= bits // 2
    keys[:100] = keys[0]  # duplicates
    got = K._radix_sort(keys.copy(), np.empty_like(keys), bits)
    np.testing.assert_array_equal(got, np.sort(keys))
    # All keys equal in the high digits: those passes are skipped, still sorted.
    low = (keys & 0xFF) | (1 << (bits - 1))
    np.testing.assert_array_equal(K._radix_sort(low.copy(), np.empty_like(low), bits), np.sort(low))


def test_merge_sorted_blocks_sums_duplicates():
    blocks = [
        (np.array([1, 5, 9]), np.array([1.0, 2.0, 3.0])),
        (np.array([0, 5]), np.array([10.0, 20.0])),
        (np.array([], np.int64), np.array([])),
        (np.array([9, 1]), np.array([0.5, 0.25])),  # unsorted input is still summed
    ]
    keys, values = K.merge_sorted_blocks(blocks)
    assert keys.tolist() == [0, 1, 5, 9]
    assert values.tolist() == [10.0, 1.25, 22.0, 3.5]
    empty = K.merge_sorted_blocks([])
    assert empty[0].size == 0 and empty[0].dtype == np.int64


def test_merge_sorted_blocks_equals_dict_sum():
    rng = np.random.default_rng(7)
    blocks = [(rng.integers(0, 3000, size=n), rng.random(n)) for n in (0, 1, 500, 2000, 10)]
    want = collections.defaultdict(float)
    for keys, values in blocks:
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            want[k] += v
    keys, values = K.merge_sorted_blocks(blocks)
    assert keys.tolist() == sorted(want)
    np.testing.assert_allclose(values, [want[k] for k in sorted(want)], rtol=1e-12)


def packed_runs(blocks, V, S, max_piece, raw):
    """Pack each block by shard and gather, per shard, its runs as merge_runs takes them."""
    per_shard = {k: [] for k in range(S)}
    for keys, values in blocks:
        pb = K.pack_by_shard(keys, values, V, S, max_piece, raw_values=raw)
        assert pb.raw_values == raw and np.all(np.diff(pb.shard) >= 0)
        assert np.all(pb.count <= max_piece) and pb.count.sum() == keys.size
        for k in np.unique(pb.shard):
            ps = np.flatnonzero(pb.shard == k)
            assert len(set(pb.first[ps].tolist())) == 1  # pieces of a run share its first key
            kb = np.concatenate(
                [pb.key_bytes[pb.key_offsets[p] : pb.key_offsets[p + 1]] for p in ps]
            )
            vb = np.concatenate(
                [pb.value_bytes[pb.value_offsets[p] : pb.value_offsets[p + 1]] for p in ps]
            )
            per_shard[int(k)].append((int(pb.first[ps[0]]), int(pb.count[ps].sum()), kb, vb))
    return per_shard


def merged(runs, V, raw, **kw):
    """merge_runs over (first, count, key bytes, value bytes) runs, chunks copied out."""
    kb = np.concatenate([r[2] for r in runs]) if runs else np.empty(0, np.uint8)
    vb = np.concatenate([r[3] for r in runs]) if runs else np.empty(0, np.uint8)
    ks = np.cumsum([0] + [r[2].size for r in runs])[:-1]
    vs = np.cumsum([0] + [r[3].size for r in runs])[:-1]
    chunks = [
        (e.i.copy(), e.j.copy(), e.x.copy(), e.sum_x)
        for e in K.merge_runs(
            [r[0] for r in runs], [r[1] for r in runs], kb, ks, vb, vs, raw, V, **kw
        )
    ]
    return chunks


@pytest.mark.parametrize("S", [1, 3, 16])
@pytest.mark.parametrize("raw", [False, True])
def test_pack_merge_equals_merge_sorted_blocks(S, raw):
    # Several overlapping sorted blocks (a map task's flushes, several tasks), packed by
    # shard into pieces of 7 entries, merged per shard: the sums of merge_sorted_blocks,
    # divided by the denominator, in float32, in (i, j) order, in chunks of exactly 50.
    rng = np.random.default_rng(S)
    V = 300
    blocks = []
    for n in (0, 1, 400, 2000, 3000):
        keys = np.unique(rng.integers(0, V * V, n))
        keys[-1:] = V * V - 1  # a big gap at the end of the last shard
        vals = (rng.random(keys.size) * 5 if raw else rng.integers(1, 2**40, keys.size)) * 1.0
        blocks.append((keys, vals))
    per_shard = packed_runs(blocks, V, S, 7, raw)
    for k in range(S):
        sel = [(b[0][(b[0] // V) % S == k], b[1][(b[0] // V) % S == k]) for b in blocks]
        want_k, want_v = K.merge_sorted_blocks(sel)
        want_x = (want_v / 2520.0).astype(np.float32)
        chunks = merged(per_shard[k], V, raw, denominator=2520.0, chunk=50, copy=False)
        assert all(c[0].size == 50 for c in chunks[:-1])
        i, j = K.keys_to_ij(want_k, V)
        got = [np.concatenate([c[t] for c in chunks]) for t in range(3)]
        np.testing.assert_array_equal(got[0], i)
        np.testing.assert_array_equal(got[1], j)
        np.testing.assert_array_equal(got[2], want_x)
        assert sum(c[3] for c in chunks) == pytest.approx(float(want_x.sum(dtype=np.float64)))
        # min_x drops the small sums (compared before the float32 cast).
        small = merged(per_shard[k], V, raw, denominator=2520.0, min_x=1e6)
        kept = np.concatenate([c[2] for c in small]) if small else np.empty(0, np.float32)
        np.testing.assert_array_equal(kept, want_x[want_v / 2520.0 >= 1e6])


def test_unpack_run_round_trip_and_damage():
    keys = np.array([3, 4, 700, 10**12], np.int64)  # gaps of 1 to 10 varint bytes
    values = np.array([1.0, 2520.0, 2.0**52, 7.0])
    pb = K.pack_by_shard(keys, values, 10**7, 1, max_piece=2)
    assert pb.count.tolist() == [2, 2] and pb.key_bytes.size < 8 * keys.size
    got = K.unpack_run(int(pb.first[0]), 4, pb.key_bytes, pb.value_bytes, False)
    np.testing.assert_array_equal(got[0], keys)
    np.testing.assert_array_equal(got[1], values)
    with pytest.raises(InputError, match="damaged"):
        K.unpack_run(int(pb.first[0]), 3, pb.key_bytes, pb.value_bytes, False)
    with pytest.raises(InputError, match="ascending"):
        K.pack_by_shard(keys[::-1].copy(), values, 10**7, 1)
    with pytest.raises(InputError, match="integer"):
        K.pack_by_shard(keys, values + 0.5, 10**7, 1, raw_values=False)


def test_keys_ij_and_shards_round_trip():
    V = 70_000  # keys beyond int32
    i = np.array([0, 69_999, 12, 69_999], np.int32)
    j = np.array([69_999, 0, 12, 69_999], np.int32)
    keys = K.ij_to_keys(i, j, V)
    assert keys.dtype == np.int64 and keys.max() == 69_999 * V + 69_999
    a, b = K.keys_to_ij(keys, V)
    assert a.dtype == np.int32 and a.tolist() == i.tolist() and b.tolist() == j.tolist()
    assert K.shard_of(i, 4).tolist() == [0, 69_999 % 4, 0, 69_999 % 4]


def test_empty_and_tiny_inputs():
    assert list(K.count_partition([], 5, 3)) == []
    assert list(K.count_partition([np.array([], np.int32), np.array([3])], 5, 3)) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ConfigError, "cooccur.window"),
        ({"weighting": "gaussian"}, ConfigError, "cooccur.weighting"),
        ({"memory_mb": 0}, ConfigError, "cooccur.memory_mb"),
        ({"subsample": 1e-3}, ConfigError, "counts"),
        ({"subsample": 1e-3, "counts": np.ones(3)}, ConfigError, "shape"),
        ({"integer_units": True, "window": 30}, ConfigError, "integer_units"),
        ({"docs": [np.array([0, 5])]}, InputError, "outside"),
        ({"docs": [np.array([0, -1])]}, InputError, "outside"),
        ({"docs": [np.array([0, 2**32 + 1])]}, InputError, "outside"),
        ({"docs": [np.array([0.0, 1.0])]}, InputError, "dtype"),
    ],
)
def test_errors(kwargs, error, match):
    args = {"docs": [np.array([0, 1])], "vocab_size": 5, "window": 2, **kwargs}
    with pytest.raises(error, match=match):
        list(K.count_partition(**args))
