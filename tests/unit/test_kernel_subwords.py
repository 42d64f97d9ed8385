"""Tests of embedpipe.kernels.subwords: fastText's n-grams and hash, and the subword
skip-gram / CBOW kernel against a slow NumPy reference.

The reference below is written from the module docstrings (the random stream of
:mod:`embedpipe.kernels.sgns`, fastText's mean-of-rows input and full gradient to every
row) with Python integers and one NumPy operation per step; it shares no code with the
kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedpipe.errors import ConfigError, InputError
from embedpipe.kernels import sgns
from embedpipe.kernels import subwords as sw

MASK48 = (1 << 48) - 1
MASK64 = (1 << 64) - 1
# Same float32-rounding allowance as the word2vec kernel tests (SIMD order of sums).
ATOL = 2e-6
RTOL = 1e-5

# --------------------------------------------------------------------------- n-grams


def test_ngrams_of_where_as_fasttext():
    # The paper's example (Bojanowski et al. 2017, section 3.2).
    assert sw.char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]
    # 3..6: by start position, then by length; "<where>" has 7 characters > maxn.
    assert sw.char_ngrams("where", 3, 6) == [
        "<wh", "<whe", "<wher", "<where",
        "whe", "wher", "where", "where>",
        "her", "here", "here>",
        "ere", "ere>",
        "re>",
    ]  # fmt: skip


def test_short_words_keep_the_wrapped_word_but_not_lone_marks():
    # fastText skips only the 1-character n-grams "<" and ">", not the whole "<word>".
    assert sw.char_ngrams("a", 3, 6) == ["<a>"]
    assert sw.char_ngrams("a", 1, 3) == ["<a", "<a>", "a", "a>"]
    assert sw.char_ngrams("", 1, 6) == ["<>"]
    assert sw.char_ngrams("ab", 5, 6) == []


def test_characters_are_code_points_not_bytes():
    # "é" is two UTF-8 bytes but one character (fastText counts lead bytes).
    assert sw.char_ngrams("née", 3, 3) == ["<né", "née", "ée>"]
    assert sw.char_ngrams("日本", 3, 4) == ["<日本", "<日本>", "日本>"]


def test_hash_is_fnv1a_with_fasttexts_signed_bytes():
    # Standard 32-bit FNV-1a test vectors (ASCII: the int8 cast changes nothing).
    assert sw.fasttext_hash(b"") == 2166136261
    assert sw.fasttext_hash(b"a") == 0xE40C292C
    assert sw.fasttext_hash(b"foobar") == 0xBF9CF968
    # Byte 0xC3 is int8 -61, xor-ed as 0xFFFFFFC3 (by hand: 0x811C9DC5 ^ 0xFFFFFFC3 =
    # 0x7EE36206; x 16777619 mod 2**32 = 0xC5F34F72). Plain FNV-1a would give 0x460B3072.
    assert sw.fasttext_hash(b"\xc3") == 0xC5F34F72
    assert sw.ngram_buckets("where", 3, 3, 1000).tolist() == [
        sw.fasttext_hash(g.encode()) % 1000 for g in ["<wh", "whe", "her", "ere", "re>"]
    ]


def test_ngrams_and_buckets_equal_gensims_port_of_fasttext():
    ft = pytest.importorskip("gensim.models.fasttext_inner")
    for word in ["where", "a", "naïve", "日本語", "aaaa", "", "café-au-lait", "ß"]:
        grams = [g.decode("utf-8") for g in ft.compute_ngrams_bytes(word, 3, 6)]
        assert sw.char_ngrams(word, 3, 6) == grams
        assert [sw.fasttext_hash(g.encode()) for g in grams] == [
            ft.ft_hash_bytes(g.encode()) for g in grams
        ]


WORDS = ["the", "where", "a", "naïve", "日本語", "aaaa", "", "x", "café-au-lait", "ß", "ab"]


@pytest.mark.parametrize("minn,maxn,buckets", [(3, 6, 2_000_000), (1, 2, 7), (2, 4, 1)])
def test_table_equals_the_per_word_functions(minn, maxn, buckets):
    table = sw.subword_table(WORDS, minn, maxn, buckets)
    assert table.vocab_size == len(WORDS)
    for i, w in enumerate(WORDS):
        got = table.buckets[table.offsets[i] : table.offsets[i + 1]]
        assert got.tolist() == sw.ngram_buckets(w, minn, maxn, buckets).tolist()
    assert table.buckets.min() >= 0 and table.buckets.max() < buckets
    assert np.array_equal(table.used(), np.unique(table.buckets))


def test_input_rows_word_first_then_ngram_rows():
    table = sw.subword_table(["where", "a", "aaaa"], 3, 6, 50)
    V = 3
    off, rows = sw.input_rows(table)
    for w in range(V):
        mine = rows[off[w] : off[w + 1]]
        grams = table.buckets[table.offsets[w] : table.offsets[w + 1]]
        assert mine[0] == w and mine[1:].tolist() == (V + grams).tolist()
    # "aaaa" has "aaa" twice: duplicates stay (fastText adds the row twice).
    assert sw.char_ngrams("aaaa", 3, 3).count("aaa") == 2
    used = table.used()
    c_off, c_rows = sw.input_rows(table, used)
    assert np.array_equal(c_off, off)
    # Compaction maps row V + b to V + index of b in used, nothing else.
    assert np.array_equal(np.where(rows >= V, V + np.searchsorted(used, rows - V), rows), c_rows)
    assert c_rows.max() < V + used.size
    with pytest.raises(InputError, match="missing from 'used'"):
        sw.input_rows(table, used[1:])


def test_compose_is_the_mean_of_the_rows():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((9, 4)).astype(np.float32)
    off = np.array([0, 1, 4, 6], dtype=np.int64)
    rows = np.array([0, 1, 5, 5, 2, 8], dtype=np.int32)
    got = sw.compose(m, off, rows)
    want = np.stack([m[[0]].mean(0), m[[1, 5, 5]].mean(0), m[[2, 8]].mean(0)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_bad_settings():
    with pytest.raises(ConfigError, match="minn"):
        sw.char_ngrams("x", 4, 3)
    with pytest.raises(ConfigError, match=r"word2vec\.buckets"):
        sw.subword_table(["x"], 3, 6, 0)


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
    if x > 6.0:
        return 1.0
    if x < -6.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def reference_train(ids, offsets, syn0, syn1, word_rows, keep, cdf, *, mode, window, negative,
                    alpha_start, alpha_end, words_done_before, total_words, words_scale,
                    seed, share_negatives=False):  # fmt: skip
    """Slow skip-gram / CBOW where a word's input is the mean of its rows ``word_rows[w]``
    (a list of lists) and the input gradient goes in full to every one of those rows."""
    syn0 = syn0.copy()
    syn1 = syn1.copy()
    counts0 = np.zeros(len(syn0), dtype=np.int64)
    counts1 = np.zeros(len(syn1), dtype=np.int64)
    rng = Stream(seed)
    loss_sum, loss_terms, examples = 0.0, 0, 0
    raw_before_doc = 0

    def draw_noise():
        return [
            int(np.searchsorted(cdf, rng.draw() % int(cdf[-1]), side="right"))
            for _ in range(negative)
        ]

    def train_example(rows, centre, alpha, noise):
        nonlocal loss_sum, loss_terms, examples
        h = np.mean(np.stack([syn0[r] for r in rows]), axis=0).astype(np.float32)
        neu1e = np.zeros_like(h)
        targets = [(centre, 1.0)] + [(w, 0.0) for w in noise]
        for target, label in targets:
            if label == 0.0 and target == centre:
                continue
            old = syn1[target].copy()
            x = float(np.dot(h, old))
            f = sigmoid_w2v(x)
            z = x if label == 1.0 else -x
            loss_sum += math.log1p(math.exp(-abs(z))) + max(-z, 0.0)
            loss_terms += 1
            g = np.float32((label - f) * alpha)
            neu1e += g * old
            syn1[target] = old + g * h
            counts1[target] += 1
        for r in rows:  # duplicates included: the row gets the gradient twice
            syn0[r] += neu1e
            counts0[r] += 1
        examples += 1

    for d in range(len(offsets) - 1):
        doc = ids[offsets[d] : offsets[d + 1]]
        kept, raw_pos = [], []
        for t, w in enumerate(doc):
            p_keep = float(keep[w])
            if p_keep < 1.0 and rng.draw() / 2.0**32 >= p_keep:
                continue
            kept.append(int(w))
            raw_pos.append(raw_before_doc + t)
        raw_before_doc += len(doc)
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
                    noise = shared if share_negatives else draw_noise()
                    train_example(word_rows[kept[j]], centre, alpha, noise)
            else:
                rows = [r for j in context for r in word_rows[kept[j]]]
                train_example(rows, centre, alpha, draw_noise())
    return (
        syn0,
        syn1,
        counts0,
        counts1,
        dict(examples=examples, loss_sum=loss_sum, loss_terms=loss_terms, raw_words=raw_before_doc),
    )


# --------------------------------------------------------------------------- fixtures

VOCAB = ["the", "cat", "cats", "sat", "on", "mat", "mats", "a", "hat", "hats", "that", "at"]


@pytest.fixture(scope="module")
def tiny():
    """A tiny Zipf-like corpus over 12 real words; 40 buckets, so n-grams collide and
    many words share n-gram rows (as "at" in cat, sat, mat, hat, that)."""
    rng = np.random.default_rng(7)
    V = len(VOCAB)
    p = 1.0 / np.arange(1, V + 1)
    p /= p.sum()
    lengths = [9, 0, 1, 17, 4, 30, 2, 12]
    ids = rng.choice(V, size=sum(lengths), p=p).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    counts = np.bincount(ids, minlength=V) + 1
    table = sw.subword_table(VOCAB, 2, 4, 40)
    used = table.used()
    sub_off, sub_rows = sw.input_rows(table, used)
    dim = 8
    syn0 = np.vstack([sgns.init_params(V, dim, 3)[0], sw.init_ngrams(used.size, dim, 4)])
    syn1 = (rng.standard_normal((V, dim)) * 0.1).astype(np.float32)
    return dict(ids=ids, offsets=offsets, syn0=syn0, syn1=syn1, sub_off=sub_off,
                sub_rows=sub_rows, keep=sgns.keep_probabilities(counts, 0.01),
                cdf=sgns.noise_cdf(counts), table=table)  # fmt: skip


def run_kernel(c, **kw):
    syn0, syn1 = c["syn0"].copy(), c["syn1"].copy()
    st = sw.train_partition(c["ids"], c["offsets"], syn0, syn1, c["sub_off"], c["sub_rows"],
                            c["keep"], c["cdf"], **kw)  # fmt: skip
    return syn0, syn1, st


def word_rows_of(c) -> list[list[int]]:
    off, rows = c["sub_off"], c["sub_rows"]
    return [rows[off[w] : off[w + 1]].tolist() for w in range(off.size - 1)]


# --------------------------------------------------------------------------- kernel


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
@pytest.mark.parametrize(
    "schedule",
    [
        dict(words_done_before=0, total_words=150, words_scale=1.0),
        dict(words_done_before=40, total_words=300, words_scale=2.5),
    ],
)
@pytest.mark.parametrize("share", [False, True])
def test_kernel_matches_reference(tiny, mode, schedule, share):
    kw = dict(mode=mode, window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=11,
              share_negatives=share, **schedule)  # fmt: skip
    syn0, syn1, st = run_kernel(tiny, **kw)
    r0, r1, rc0, rc1, rst = reference_train(
        tiny["ids"], tiny["offsets"], tiny["syn0"], tiny["syn1"], word_rows_of(tiny),
        tiny["keep"], tiny["cdf"], **kw,
    )  # fmt: skip
    # The stream and the bookkeeping are exact ...
    assert st.raw_words == rst["raw_words"] == tiny["ids"].size
    assert st.examples == rst["examples"] > 0
    assert st.loss_terms == rst["loss_terms"]
    np.testing.assert_array_equal(st.syn0_counts, rc0)
    np.testing.assert_array_equal(st.syn1_counts, rc1)
    # ... the arithmetic equal to float32 rounding.
    np.testing.assert_allclose(syn0, r0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(syn1, r1, rtol=RTOL, atol=ATOL)
    assert st.loss_sum == pytest.approx(rst["loss_sum"], rel=1e-5)
    # n-gram rows were trained, not only word rows.
    V = len(VOCAB)
    assert np.abs(syn0[V:] - tiny["syn0"][V:]).max() > 1e-3
    assert st.syn0_counts[V:].sum() > st.syn0_counts[:V].sum()


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
@pytest.mark.parametrize("share", [False, True])
def test_without_ngrams_it_is_the_word2vec_kernel(tiny, mode, share):
    """A table holding only each word's own row gives sgns.train_partition bit for bit."""
    V = len(VOCAB)
    kw = dict(mode=mode, window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=5,
              share_negatives=share)  # fmt: skip
    a0, a1 = tiny["syn0"][:V].copy(), tiny["syn1"].copy()
    b0, b1 = a0.copy(), a1.copy()
    sa = sgns.train_partition(tiny["ids"], tiny["offsets"], a0, a1, tiny["keep"], tiny["cdf"], **kw)
    own_rows = np.arange(V + 1), np.arange(V, dtype=np.int32)
    sb = sw.train_partition(tiny["ids"], tiny["offsets"], b0, b1, *own_rows, tiny["keep"],
                            tiny["cdf"], **kw)  # fmt: skip
    assert np.array_equal(a0, b0) and np.array_equal(a1, b1)
    assert (sa.loss_sum, sa.examples) == (sb.loss_sum, sb.examples)
    assert np.array_equal(sa.syn0_counts, sb.syn0_counts)


def test_full_layout_equals_compact_layout(tiny):
    """Rows V + bucket (fastText's matrix) and V + index in used train the same values."""
    table = tiny["table"]
    V, used = len(VOCAB), tiny["table"].used()
    off, rows = sw.input_rows(table)
    full = np.zeros((V + table.n_buckets, 8), dtype=np.float32)
    full[:V] = tiny["syn0"][:V]
    full[V + used] = tiny["syn0"][V:]
    syn1 = tiny["syn1"].copy()
    kw = dict(mode="skipgram", window=3, negative=4, alpha_start=0.3, alpha_end=0.01, seed=2)
    st = sw.train_partition(tiny["ids"], tiny["offsets"], full, syn1, off, rows, tiny["keep"],
                            tiny["cdf"], **kw)  # fmt: skip
    compact, c1, cst = run_kernel(tiny, **kw)
    assert np.array_equal(full[V + used], compact[V:]) and np.array_equal(syn1, c1)
    assert np.array_equal(full[:V], compact[:V]) and cst.loss_sum == st.loss_sum
    untouched = np.setdiff1d(np.arange(table.n_buckets), used)
    assert not full[V + untouched].any()  # only buckets some word has are ever trained


def test_row_update_and_merge_take_the_ngram_rows(tiny):
    V = len(VOCAB)
    syn0, syn1, st = run_kernel(tiny, mode="cbow", window=2, negative=3, seed=1)
    u = sgns.row_update(syn0, syn1, st)
    assert u.syn0_rows.max() >= V  # n-gram rows travel with the word rows
    assert np.array_equal(u.syn0_rows, np.flatnonzero(st.syn0_counts))
    new0, new1 = sgns.merge(tiny["syn0"], tiny["syn1"], [u], 1)
    assert np.array_equal(new0, syn0) and np.array_equal(new1, syn1)


def test_validation_errors(tiny):
    c = tiny
    with pytest.raises(InputError, match="at least one input row per word"):
        sw.train_partition(c["ids"], c["offsets"], c["syn0"].copy(), c["syn1"].copy(),
                           np.zeros(len(VOCAB) + 1, np.int64), np.empty(0, np.int32),
                           c["keep"], c["cdf"])  # fmt: skip
    with pytest.raises(InputError, match="sub_rows must index"):
        sw.train_partition(c["ids"], c["offsets"], c["syn0"][: len(VOCAB) + 1].copy(),
                           c["syn1"].copy(), c["sub_off"], c["sub_rows"], c["keep"],
                           c["cdf"])  # fmt: skip
    with pytest.raises(InputError, match="word rows"):
        sw.train_partition(c["ids"], c["offsets"], c["syn0"][:3].copy(), c["syn1"].copy(),
                           c["sub_off"], c["sub_rows"], c["keep"], c["cdf"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"word2vec\.mode"):
        run_kernel(c, mode="glove")


# --------------------------------------------------------------------------- vectors


@pytest.fixture(scope="module")
def sub_vectors():
    """A hand-made subword model: 4 words, 3..4-grams in 1000 buckets, n-gram rows for
    the buckets of the words (what the stage stores), word vectors composed from them."""
    from embedpipe.vectors import SubwordVectors

    words = ["where", "there", "here", "cat"]
    table = sw.subword_table(words, 3, 4, 1000)
    used = table.used()
    rng = np.random.default_rng(1)
    grams = rng.standard_normal((used.size, 6)).astype(np.float32)
    own = rng.standard_normal((len(words), 6)).astype(np.float32)
    word_vecs = sw.compose(np.vstack([own, grams]), *sw.input_rows(table, used))
    return SubwordVectors(words, word_vecs, used, grams, minn=3, maxn=4, buckets=1000)


def test_unseen_word_vector_is_the_mean_of_its_ngram_rows(sub_vectors):
    v = sub_vectors
    word = "wherever"  # shares <wh, whe, her, ... with "where"; "eve", "ver", ... are unseen
    grams = sw.char_ngrams(word, 3, 4)
    rows = {int(b): i for i, b in enumerate(v.ngram_buckets)}
    want = np.zeros(6, np.float64)
    for g in grams:
        b = sw.fasttext_hash(g.encode()) % 1000
        if b in rows:  # an untrained bucket counts as a zero vector
            want += v.ngram_vectors[rows[b]]
    want /= len(grams)
    assert word not in v and v.has_vector(word)
    np.testing.assert_allclose(v.vector(word), want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(v[word], v.ngram_vector(word))
    # A vocabulary word keeps its stored (composed) row.
    assert np.array_equal(v.vector("cat"), v.vectors[3])
    with pytest.raises(KeyError, match="none of its"):
        v.vector("qqqq")
    assert not v.has_vector("qqqq")


def test_queries_mix_seen_and_unseen_words(sub_vectors):
    v = sub_vectors
    queries = ["wherever", "cat", "theres", "here"]
    batch = v.most_similar_batch(queries, topn=2)
    for q, got in zip(queries, batch, strict=True):
        one = v.most_similar(q, topn=2)
        assert [w for w, _ in got] == [w for w, _ in one]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in one], rtol=1e-5)
    assert all(w != "cat" for w, _ in v.most_similar("cat", topn=3))  # not its own neighbour
    assert v.most_similar("thereabouts", topn=1)[0][0] == "there"
    assert v.similarity("wherever", "where") > v.similarity("wherever", "cat")


def test_full_model_round_trip(sub_vectors, tmp_path):
    from embedpipe.vectors import SubwordVectors, Vectors

    sub_vectors.save_model_dir(str(tmp_path / "m"))
    back = Vectors.load(str(tmp_path / "m"))
    assert isinstance(back, SubwordVectors) and repr(back) == repr(sub_vectors)
    assert np.array_equal(back.vectors, sub_vectors.vectors)
    assert np.array_equal(back.ngram_buckets, sub_vectors.ngram_buckets)
    assert np.array_equal(back.vector("wherever"), sub_vectors.vector("wherever"))
    assert back.meta["subwords"]["hash"] == "fasttext-fnv1a32-int8"
