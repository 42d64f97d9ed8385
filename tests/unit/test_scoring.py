"""embedpipe.scoring: readers name bad lines; scores equal gensim's; classification works."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedpipe import scoring
from embedpipe.errors import InputError
from embedpipe.vectors import Vectors

BUNDLED = {d.name: d for d in scoring.default_datasets()}


# --------------------------------------------------------------------------- bundled data


def test_bundled_datasets_parse_with_their_documented_sizes():
    assert len(scoring.read_similarity(BUNDLED["ws353"].path)) == 353
    assert len(scoring.read_similarity(BUNDLED["simlex999"].path)) == 999
    sections = scoring.read_analogy(BUNDLED["google_analogy"].path)
    assert len(sections) == 14
    assert sum(len(s.questions) for s in sections) == 19544
    assert [s.semantic for s in sections].count(True) == 5
    docs, labels = scoring.read_classification(BUNDLED["movie_reviews"].path)
    assert len(docs) == 2000
    assert sorted(set(labels)) == ["neg", "pos"]


def test_datasets_from_files_replaces_one_kind(tmp_path):
    own = tmp_path / "mine.txt"
    own.write_text("a\tb\t1\n")
    got = scoring.datasets_from_files(similarity=[str(own)])
    assert [d.name for d in got if d.kind == "similarity"] == ["mine"]
    assert [d.name for d in got if d.kind == "analogy"] == ["google_analogy"]


# --------------------------------------------------------------------------- malformed files

MALFORMED = [
    ("similarity", "a\tb\t1\nc\td\n", r"f:2: expected 'word1<TAB>word2<TAB>score', found 2"),
    ("similarity", "a\tb\t1\nc\td\thigh\n", r"f:2: score 'high' is not a number"),
    ("similarity", "# only a comment\n\n", r"f: no word pairs found"),
    ("analogy", "a b c d\n", r"f:1: question before the first ': section' line"),
    ("analogy", ": s\na b c d\na b c\n", r"f:3: expected 4 words 'a b c d', found 3"),
    ("analogy", ": s\n", r"f: no analogy questions found"),
    ("analogy", ":  \na b c d\n", r"f:1: empty section name"),
    ("classification", "pos\tgood film\nneg bad film\n", r"f:2: expected 'label<TAB>text'"),
    ("classification", "\n\n", r"f: no documents found"),
]


@pytest.mark.parametrize(("kind", "text", "message"), MALFORMED)
def test_malformed_eval_files_are_named(tmp_path, kind, text, message):
    path = tmp_path / "f"
    path.write_text(text)
    reader = getattr(scoring, f"read_{kind}")
    with pytest.raises(InputError, match=message) as info:
        reader(str(path))
    assert "\n" not in str(info.value)


def test_similarity_reader_accepts_spaces_and_comments(tmp_path):
    (tmp_path / "f").write_text("# header\nold new 1.5\n\nsmart\tintelligent\t9.2\n")
    assert scoring.read_similarity(str(tmp_path / "f")) == [
        ("old", "new", 1.5),
        ("smart", "intelligent", 9.2),
    ]


# --------------------------------------------------------------------------- gensim equality


def _fixture(rng: np.random.Generator, tmp_path, per_section: int = 20, dim: int = 24):
    """Vectors where analogies are partly solvable, with case variants and exact ties.

    Returns (Vectors, analogy file, similarity file).
    """
    sections = scoring.read_analogy(BUNDLED["google_analogy"].path)
    lines, vecs = [], {}
    for sec in sections:
        offset = rng.standard_normal(dim)
        lines.append(f": {sec.name}")
        for a, b, c, d in sec.questions[:per_section]:
            lines.append(f"{a} {b} {c} {d}")
            for x, y in ((a, b), (c, d)):
                x, y = x.lower(), y.lower()
                vecs.setdefault(x, rng.standard_normal(dim))
                vecs.setdefault(y, vecs[x] + offset + 0.9 * rng.standard_normal(dim))
    pairs = scoring.read_similarity(BUNDLED["ws353"].path)[:120]
    for w1, w2, score in pairs:  # cosine grows with the gold score
        vecs.setdefault(w1, rng.standard_normal(dim))
        vecs.setdefault(w2, score / 4 * vecs[w1] + rng.standard_normal(dim))
    words = sorted(vecs)
    rng.shuffle(words)
    words = words[: int(0.93 * len(words))]  # some words out of vocabulary
    tokens = list(words)
    # Capitalised variants, some ranked before their lowercase form (case handling).
    tokens += [w.capitalize() for w in words[::9]]
    matrix = [vecs[w] for w in words] + [rng.standard_normal(dim) for _ in words[::9]]
    # Exact duplicates of other rows: tied scores that only an exact re-rank orders as gensim.
    tokens += [f"twin{i}" for i in range(20)]
    matrix += [vecs[w] for w in words[:20]]
    tokens += [f"filler{i}" for i in range(150)]
    matrix += list(rng.standard_normal((150, dim)))
    order = rng.permutation(len(tokens))
    v = Vectors([tokens[i] for i in order], np.asarray(matrix, np.float32)[order])
    (tmp_path / "analogy.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "sim.txt").write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))
    return v, str(tmp_path / "analogy.txt"), str(tmp_path / "sim.txt")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return _fixture(np.random.default_rng(5), tmp_path_factory.mktemp("eq"))


def _gensim(v: Vectors):
    kv = pytest.importorskip("gensim.models.keyedvectors")
    g = kv.KeyedVectors(v.dim)
    g.add_vectors(v.index_to_key, v.vectors)
    return g


@pytest.mark.parametrize("restrict", [None, 900, 400])
def test_analogy_accuracy_equals_gensim(fixture, restrict):
    v, analogy, _ = fixture
    g = _gensim(v)
    score, sections = g.evaluate_word_analogies(analogy, restrict_vocab=restrict or len(v))
    ours = scoring.evaluate_analogy(v, analogy, restrict_vocab=restrict)
    total = sections[-1]
    assert ours["covered"] == len(total["correct"]) + len(total["incorrect"])
    assert ours["correct"] == len(total["correct"])
    assert abs(ours["accuracy"] - score) <= 1e-12
    assert 0.1 < ours["accuracy"] < 0.9  # the fixture makes the task non-trivial
    for theirs, mine in zip(sections[:-1], ours["sections"], strict=True):
        assert mine["section"] == theirs["section"]
        assert mine["correct"] == len(theirs["correct"])
        assert mine["covered"] == len(theirs["correct"]) + len(theirs["incorrect"])
    assert ours["semantic"]["correct"] + ours["syntactic"]["correct"] == ours["correct"]


def test_exact_reranking_path_equals_gensim_too(fixture, monkeypatch):
    """With a huge tie tolerance every question takes the exact (gensim) code path."""
    v, analogy, _ = fixture
    g = _gensim(v)
    monkeypatch.setattr(scoring, "_TIE_SLACK", 10.0)
    score, _ = g.evaluate_word_analogies(analogy, restrict_vocab=len(v))
    ours = scoring.evaluate_analogy(v, analogy, restrict_vocab=None)
    assert abs(ours["accuracy"] - score) <= 1e-12


def test_case_sensitive_analogies_equal_gensim(fixture):
    v, analogy, _ = fixture
    g = _gensim(v)
    score, _ = g.evaluate_word_analogies(analogy, restrict_vocab=len(v), case_insensitive=False)
    ours = scoring.evaluate_analogy(v, analogy, restrict_vocab=None, case_insensitive=False)
    assert ours["covered"] < scoring.evaluate_analogy(v, analogy, restrict_vocab=None)["covered"]
    assert abs(ours["accuracy"] - score) <= 1e-12


@pytest.mark.parametrize("restrict", [300000, 500])
def test_similarity_spearman_equals_gensim(fixture, restrict):
    v, _, sim = fixture
    g = _gensim(v)
    pearson, spearman, oov_ratio = g.evaluate_word_pairs(sim, restrict_vocab=restrict)
    ours = scoring.evaluate_similarity(v, sim, restrict_vocab=restrict)
    assert abs(ours["spearman"] - spearman.statistic) <= 1e-12
    assert abs(ours["pearson"] - pearson.statistic) <= 1e-6
    assert abs(100 * (1 - ours["coverage"]) - oov_ratio) <= 1e-9
    assert len(ours["oov_pairs"]) == ours["pairs"] - ours["used"] > 0
    assert 0.2 < ours["spearman"] < 0.95  # non-trivial: related pairs were built in


def test_cosmul_batch_equals_single_queries(fixture):
    v, analogy, _ = fixture
    limit = 700
    res = scoring.evaluate_analogy(
        v, analogy, restrict_vocab=limit, method="3cosmul", case_insensitive=False
    )
    correct = covered = 0
    for sec in scoring.read_analogy(analogy):
        for a, b, c, d in sec.questions:
            if all(w in v and v.key_to_index[w] < limit for w in (a, b, c, d)):
                covered += 1
                correct += v.analogy(a, b, c, method="3cosmul", restrict_vocab=limit)[0][0] == d
    assert (res["covered"], res["correct"]) == (covered, correct)
    assert res["accuracy"] > 0.1


# --------------------------------------------------------------------------- classification


def test_stratified_folds_balance_classes():
    labels = np.array([0] * 23 + [1] * 11 + [2] * 6)
    fold = scoring.stratified_folds(labels, 5, seed=3)
    for cls, n in ((0, 23), (1, 11), (2, 6)):
        per_fold = np.bincount(fold[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
        assert per_fold.sum() == n
    assert np.array_equal(fold, scoring.stratified_folds(labels, 5, seed=3))
    assert not np.array_equal(fold, scoring.stratified_folds(labels, 5, seed=4))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_regression_equals_scikit_learn(n_classes):
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6))
    y = np.argmax(X[:, :n_classes] + 0.8 * rng.standard_normal((300, n_classes)), axis=1)
    W, b = scoring.fit_logistic(X, y, n_classes, C=0.5)
    ref = linear_model.LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(W.T, ref.coef_, atol=2e-4)
    # A multinomial intercept is defined up to a constant shift: compare centred.
    np.testing.assert_allclose(
        b - b.mean() * (n_classes > 2),
        ref.intercept_ - ref.intercept_.mean() * (n_classes > 2),
        atol=2e-4,
    )
    assert np.array_equal(scoring.predict_logistic(X, W, b), ref.predict(X))


def test_classification_separable_by_a_known_direction():
    rng = np.random.default_rng(4)
    dim, n_words = 12, 400
    m = rng.standard_normal((n_words, dim)).astype(np.float32)
    side = m[:, 0] > 0  # the label direction is the first coordinate
    words = [f"w{i}" for i in range(n_words)]
    v = Vectors(words, m)
    pos, neg = np.flatnonzero(side), np.flatnonzero(~side)
    docs, labels = [], []
    for k in range(120):
        label = "pos" if k % 2 else "neg"
        pool = pos if label == "pos" else neg
        docs.append([words[i] for i in rng.choice(pool, 15)] + ["unknown"])
        labels.append(label)
    res = scoring.evaluate_classification(v, docs, labels, folds=5, seed=0)
    assert res["accuracy"] >= 0.95
    assert len(res["fold_accuracies"]) == 5
    assert res["token_coverage"] == pytest.approx(15 / 16)
    shuffled = list(np.random.default_rng(1).permutation(labels))
    chance = scoring.evaluate_classification(v, docs, shuffled, folds=5, seed=0)
    assert chance["accuracy"] < res["accuracy"] - 0.2


def test_classification_needs_enough_documents_per_class():
    v = Vectors(["a", "b"], np.eye(2, dtype=np.float32))
    with pytest.raises(InputError, match="5-fold CV needs >= 5 documents per class"):
        scoring.evaluate_classification(v, [["a"]] * 6, ["x"] * 4 + ["y"] * 2)
    with pytest.raises(InputError, match="only one class"):
        scoring.evaluate_classification(v, [["a"]] * 6, ["x"] * 6)


def test_evaluate_all_is_json_serialisable(fixture, tmp_path):
    v, analogy, sim = fixture
    docs = tmp_path / "docs.tsv"
    rng = np.random.default_rng(0)
    words = v.index_to_key[:50]
    docs.write_text(
        "".join(f"{'ab'[k % 2]}\t{' '.join(rng.choice(words, 5))}\n" for k in range(20))
    )
    datasets = [
        scoring.EvalDataset("sim", "similarity", sim),
        scoring.EvalDataset("an", "analogy", analogy),
        scoring.EvalDataset("docs", "classification", str(docs)),
    ]
    res = scoring.evaluate_all(v, datasets, restrict_vocab=800)
    back = json.loads(json.dumps(res))
    assert set(back["analogy"]["an"]) == {"3cosadd", "3cosmul"}
    assert back["analogy"]["an"]["3cosadd"]["restrict_vocab"] == 800
    assert back["similarity"]["sim"]["used"] > 0
    assert back["classification"]["docs"]["folds"] == 5


def test_bundled_sets_read_from_a_zipped_package(tmp_path):
    # spark-submit --py-files embedpipe.zip: the data files have no path on disk.
    import subprocess
    import sys

    from tests.cluster.loopback import package_zip

    z = package_zip(tmp_path / "embedpipe.zip")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import embedpipe.scoring as s; "
            "assert s.__file__.startswith(sys.argv[1]); ds = s.default_datasets(); "
            "print(len(s.read_similarity(ds[0].path)), len(s.read_classification(ds[3].path)[0]))")
    out = subprocess.run([sys.executable, "-c", code, str(z)], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert out.stdout.split() == ["353", "2000"]
