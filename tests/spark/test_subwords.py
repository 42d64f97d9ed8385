"""The word2vec stage with ``word2vec.subwords = true`` (fastText) through Spark.

One partition equals the subword kernel run by hand; two partitions are deterministic
and an interrupted run resumes to the same bytes; the saved model answers queries for
unseen and misspelled words (Python API and ``embedpipe neighbors``) and exports.

Inputs are run directories made by the real vocab and encode stages: the first lines
of the vendored sample corpus (real English), and a synthetic corpus of planted word
groups whose words are inflected forms of random stems (``stem``, ``stem+s``,
``stem+ing``, ``stem+ed``): good vectors put a group's words together, and a form never
seen in training (``stem+er``) next to its group through the stem's n-grams.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.dataset as ds
import pytest

from embedpipe import fsutil, training
from embedpipe import spark as spark_mod
from embedpipe.cli import main as cli_main
from embedpipe.config import load_config
from embedpipe.errors import ResourceError
from embedpipe.kernels import sgns
from embedpipe.kernels import subwords as sw
from embedpipe.runs import RunDir
from embedpipe.stages import encode, vocab, word2vec
from embedpipe.stages.vocab import read_vocab
from embedpipe.vectors import NGRAMS_FILE, OutOfVocabularyError, SubwordVectors, Vectors
from tests.conftest import EN_OPEN_TOK, SAMPLE, head_lines, needs_shared

#: Small runs: tiny vectors, few epochs; 50,000 buckets keep the n-gram matrix small.
SMALL = ["word2vec.dim=12", "word2vec.epochs=2", "word2vec.sample=1e-3", "word2vec.seed=7",
         "word2vec.subwords=true", "word2vec.buckets=50000"]  # fmt: skip
SUFFIXES = ("", "s", "ing", "ed")
GROUPS, STEMS, PLAIN = 6, 2, 4


def _prepare(spark, root, text_lines: list[str], *overrides: str) -> list[str]:
    """Write the corpus, run vocab + encode into ``root/run``; return the base overrides."""
    path = root / "corpus.txt"
    path.write_text("\n".join(text_lines) + "\n", encoding="utf-8")
    base = [f"input.path={path}", *overrides]
    cfg = load_config(None, base)
    run = RunDir(str(root / "run"))
    vocab.run(spark, cfg, run)
    encode.run(spark, cfg, run)
    return base


def fresh(src, dst) -> RunDir:
    shutil.copytree(src, dst)
    return RunDir(str(dst))


def cfg_of(base: list[str], *overrides: str):
    return load_config(None, [*base, *SMALL, *overrides])


def model_bytes(run: RunDir) -> tuple[bytes, bytes]:
    return (fsutil.read_bytes(run.path("word2vec", word2vec.VECTORS_FILE)),
            fsutil.read_bytes(run.path("word2vec", NGRAMS_FILE)))  # fmt: skip


def model_json(run: RunDir) -> dict:
    return json.loads(fsutil.read_text(run.path("word2vec", word2vec.MODEL_FILE)))


@pytest.fixture(scope="module")
def sample_run(spark, tmp_path_factory):
    """2,000 lines of the sample corpus; documents cut at 40 tokens."""
    root = tmp_path_factory.mktemp("sub-sample")
    base = _prepare(spark, root, head_lines(SAMPLE, 2000), "vocab.min_count=2",
                    "encode.max_doc_tokens=40")  # fmt: skip
    return root / "run", base


def planted_lines(n_lines: int = 1500, seed: int = 0):
    """Sentences of 10 words from one group each; a group is STEMS random stems with every
    suffix of SUFFIXES plus PLAIN random words. Returns lines, word -> group, held-out
    forms (stem + "er", never in the corpus) -> group."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    group: dict[str, int] = {}
    held_out: dict[str, int] = {}
    for g in range(GROUPS):
        for _ in range(STEMS):
            stem = "".join(rng.choice(letters, 6))
            group.update({stem + s: g for s in SUFFIXES})
            held_out[stem + "er"] = g
        for _ in range(PLAIN):
            group["".join(rng.choice(letters, int(rng.integers(7, 10))))] = g
    members = [[w for w, h in group.items() if h == g] for g in range(GROUPS)]
    lines = []
    for _ in range(n_lines):
        mine = members[int(rng.integers(GROUPS))]
        lines.append(" ".join(mine[int(k)] for k in rng.integers(len(mine), size=10)))
    return lines, group, {w: g for w, g in held_out.items() if w not in group}


@pytest.fixture(scope="module")
def planted_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("sub-planted")
    lines, group, held_out = planted_lines()
    base = _prepare(spark, root, lines, "vocab.min_count=1")
    return root / "run", base, group, held_out


@pytest.fixture(scope="module")
def english(spark, tmp_path_factory):
    """10,000 lines of the sample corpus (523k tokens), skip-gram with subwords, S = 2."""
    root = tmp_path_factory.mktemp("sub-english")
    base = _prepare(spark, root, head_lines(SAMPLE, 10_000), "vocab.min_count=3")
    run = RunDir(str(root / "run"))
    cfg = load_config(None, [*base, "word2vec.dim=32", "word2vec.epochs=3", "word2vec.seed=1",
                             "word2vec.subwords=true", "word2vec.buckets=200000",
                             "word2vec.partitions=2"])  # fmt: skip
    word2vec.run(spark, cfg, run)
    return run


def kernel_reference(run: RunDir, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """The stage's algorithm with S = 1 and no Spark: documents in (doc, ids) order, one
    subword-kernel call per round slice; returns word vectors, used buckets, n-gram rows
    and the losses."""
    w = cfg.word2vec
    table = ds.dataset(run.path("corpus"), format="parquet").to_table()
    rows = sorted(zip(table.column("doc").to_pylist(), table.column("ids").to_pylist(),
                      strict=True))  # fmt: skip
    ids = np.array([t for _, doc in rows for t in doc], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(doc) for _, doc in rows])]).astype(np.int64)
    voc = read_vocab(run)
    counts = voc.column("count").to_numpy()
    V = counts.size
    sub = sw.subword_table(voc.column("token").to_pylist(), w.minn, w.maxn, w.buckets)
    used = sub.used()
    sub_off, sub_rows = sw.input_rows(sub, used)
    keep, cdf = sgns.keep_probabilities(counts, w.sample), sgns.noise_cdf(counts)
    alpha = word2vec.resolve_alpha(w)
    syn0, syn1 = sgns.init_params(V, w.dim, sgns.derive_seed(w.seed, 0))
    grams = sw.init_ngrams(used.size, w.dim, sgns.derive_seed(w.seed, 0, 1))
    syn0 = np.vstack([syn0, grams])
    n = int(offsets[-1])
    bounds = word2vec.slice_bounds(offsets, w.rounds_per_epoch)
    losses = []
    for e in range(1, w.epochs + 1):
        loss_sum = terms = 0
        done = (e - 1) * n
        for r in range(w.rounds_per_epoch):
            off = offsets[bounds[r] : bounds[r + 1] + 1]
            st = sw.train_partition(
                ids, off, syn0, syn1, sub_off, sub_rows, keep, cdf, mode=w.mode.value,
                window=w.window, negative=w.negative, alpha_start=alpha, alpha_end=w.min_alpha,
                words_done_before=done, total_words=n * w.epochs,
                seed=sgns.derive_seed(w.seed, e, r, 0), loss_every=word2vec.LOSS_EVERY,
            )  # fmt: skip
            done += st.raw_words
            loss_sum += st.loss_sum
            terms += st.loss_terms
        losses.append(loss_sum / terms)
    return sw.compose(syn0, sub_off, sub_rows), used, syn0[V:], losses


# --------------------------------------------------------------------- Spark


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_one_partition_equals_the_kernel(spark, sample_run, tmp_path, mode):
    src, base = sample_run
    run = fresh(src, tmp_path / "run")
    cfg = cfg_of(base, "word2vec.partitions=1", f"word2vec.mode={mode}",
                 "word2vec.rounds_per_epoch=2")  # fmt: skip
    word2vec.run(spark, cfg, run)
    words, used, grams, losses = kernel_reference(run, cfg)
    vec = Vectors.load(run.path("word2vec"))
    assert isinstance(vec, SubwordVectors)
    assert np.array_equal(vec.vectors, words)
    assert np.array_equal(vec.ngram_buckets, used) and np.array_equal(vec.ngram_vectors, grams)
    model = model_json(run)
    np.testing.assert_allclose(model["losses"], losses, rtol=1e-12)
    sub = model["subwords"]
    assert (sub["minn"], sub["maxn"], sub["buckets"]) == (3, 6, 50000)
    assert sub["ngram_rows"] == used.size == run.record("word2vec")["counts"]["ngram_rows"]
    assert sub["ngram_matrix_bytes"] == used.size * 12 * 4 <= sub["ngram_matrix_bound_bytes"]


class KilledError(RuntimeError):
    """Stands for the process dying right after a checkpoint."""


def test_partitions_are_deterministic_and_resume(spark, sample_run, tmp_path):
    """S = 2: a run killed after epoch 2 and resumed gives the bytes of an uninterrupted
    run (which also makes the training a function of seed and S alone); the checkpoint
    holds the n-gram rows."""
    src, base = sample_run
    cfg = cfg_of(base, "word2vec.partitions=2", "word2vec.epochs=3", "word2vec.rounds_per_epoch=1")
    whole = fresh(src, tmp_path / "whole")
    word2vec.run(spark, cfg, whole)
    run = fresh(src, tmp_path / "killed")

    def kill(epoch: int) -> None:
        if epoch == 2:
            raise KilledError

    with pytest.raises(KilledError):
        word2vec.run(spark, cfg, run, on_epoch=kill)
    root = run.path(word2vec.CHECKPOINTS)
    info = training.latest_info(root)
    assert info["epoch"] == 2 and fsutil.exists(fsutil.join(root, info["dir"], "ngrams.npy"))
    word2vec.run(spark, cfg, run, resume=True)
    assert model_bytes(run) == model_bytes(whole)
    assert model_json(run)["resumed_from_epoch"] == 2
    assert model_json(run)["losses"] == model_json(whole)["losses"]
    # The rounds returned n-gram rows: the n-gram matrix moved away from its start.
    vec = Vectors.load(whole.path("word2vec"))
    start = sw.init_ngrams(vec.ngram_buckets.size, 12, sgns.derive_seed(7, 0, 1))
    assert np.abs(vec.ngram_vectors - start).max() > 1e-3


def test_planted_groups_and_unseen_forms(spark, planted_run, tmp_path):
    """In-vocabulary words find their group; inflected forms never seen in training find
    it through their stem's n-grams."""
    src, base, group, held_out = planted_run
    run = fresh(src, tmp_path / "run")
    cfg = cfg_of(base, "word2vec.partitions=2", "word2vec.epochs=3", "word2vec.sample=0",
                 "word2vec.dim=16", "word2vec.window=3")  # fmt: skip
    word2vec.run(spark, cfg, run)
    vec = Vectors.load(run.path("word2vec"))
    hits = [group[vec.most_similar(w, topn=1)[0][0]] == g for w, g in group.items()]
    assert np.mean(hits) >= 0.9
    assert all(w not in vec and vec.has_vector(w) for w in held_out)
    unseen = [group[vec.most_similar(w, topn=1)[0][0]] == g for w, g in held_out.items()]
    assert np.mean(unseen) >= 0.9
    # A string none of whose n-grams any word has: a clear error, not a zero vector.
    with pytest.raises(OutOfVocabularyError, match=r"none of its .* character n-grams"):
        vec.vector("zzzzqqqq")


def _misspell(word: str) -> str:
    """A common typo: the middle letter doubled ("government" -> "goverrnment")."""
    m = len(word) // 2
    return word[:m] + word[m] + word[m:]


def test_misspelled_words_find_the_word(english):
    """The 30 most frequent words of 8+ letters, misspelled: the word itself is the nearest
    neighbour for most, and among the nearest five for nearly all (gensim's FastText on
    the same tokens and settings: 0.50 and 0.88 for 40 such words)."""
    vec = Vectors.load(english.path("word2vec"))
    words = [w for w in vec.index_to_key if len(w) >= 8 and w.isalpha()][:30]
    typos = [_misspell(w) for w in words]
    assert not any(t in vec for t in typos)
    found = [[x for x, _ in row] for row in vec.most_similar_batch(typos, topn=5)]
    assert [r[0] for r in found] == [vec.most_similar(t, topn=1)[0][0] for t in typos]
    assert np.mean([r[0] == w for r, w in zip(found, words, strict=True)]) >= 0.4
    assert np.mean([w in r for r, w in zip(found, words, strict=True)]) >= 0.75
    # In-vocabulary vectors: a word's n-gram part points the way of the whole vector.
    cos = [float(np.dot(vec.unit[vec.index(w)], vec.ngram_vector(w)) /
                 np.linalg.norm(vec.ngram_vector(w))) for w in words]  # fmt: skip
    assert min(cos) > 0.5


def test_cli_neighbors_and_export(english, tmp_path, capsys):
    typo = "congresss"
    assert cli_main(["neighbors", english.uri, "--model", "word2vec", typo, "-k", "3",
                     "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["from_ngrams"] is True and out["results"][0]["word"] == "congress"
    # The full model (word vectors + n-gram vectors + metadata) reads back as it was.
    dest = tmp_path / "full"
    assert cli_main(["export", english.uri, "--model", "word2vec", "--format", "subwords",
                     "--to", str(dest)]) == 0  # fmt: skip
    a = Vectors.load(english.path("word2vec"))
    b = Vectors.load(str(dest))
    assert isinstance(b, SubwordVectors) and np.array_equal(a.vectors, b.vectors)
    assert np.array_equal(a.ngram_vector(typo), b.ngram_vector(typo))
    assert json.loads((dest / "model.json").read_text())["subwords"]["hash"] == (
        "fasttext-fnv1a32-int8"
    )
    # The word vectors still export to the word formats.
    w2v = tmp_path / "v.txt"
    assert cli_main(["export", english.uri, "--model", "word2vec", "--format", "word2vec",
                     "--to", str(w2v)]) == 0  # fmt: skip
    plain = Vectors.load(str(w2v), format="word2vec")
    assert type(plain) is Vectors and np.array_equal(plain.vectors, a.vectors)


def test_word_only_model_refuses_unseen_words_and_subword_export(spark, sample_run, tmp_path,
                                                                 capsys):  # fmt: skip
    src, base = sample_run
    run = fresh(src, tmp_path / "run")
    word2vec.run(spark, cfg_of(base, "word2vec.subwords=false", "word2vec.partitions=1"), run)
    vec = Vectors.load(run.path("word2vec"))
    assert type(vec) is Vectors and not fsutil.exists(run.path("word2vec", NGRAMS_FILE))
    with pytest.raises(OutOfVocabularyError, match=r"word2vec\.subwords = true"):
        vec.most_similar("qwxzvy")
    assert cli_main(["neighbors", run.uri, "--model", "word2vec", "qwxzvy"]) == 2
    assert cli_main(["export", run.uri, "--model", "word2vec", "--format", "subwords", "--to",
                     str(tmp_path / "x")]) == 2  # fmt: skip
    assert "word2vec.subwords=true" in capsys.readouterr().err


def test_memory_check_names_the_buckets(spark, sample_run, tmp_path, monkeypatch):
    src, base = sample_run
    run = fresh(src, tmp_path / "run")
    monkeypatch.setattr(spark_mod, "task_memory_bytes", lambda _spark: 1 << 20)
    with pytest.raises(ResourceError, match=r"word2vec\.buckets") as info:
        word2vec.run(spark, cfg_of(base, "word2vec.dim=200"), run)
    assert "\n" not in str(info.value)
    assert run.record("word2vec") is None


# -------------------------------------------------------------------- quality


@pytest.mark.quality
@needs_shared(EN_OPEN_TOK)
def test_quality_on_real_text(spark, tmp_path):
    """200k lines of en-open (~3.8M tokens), skip-gram with subwords, S = 2, 3 epochs:
    similarity clearly better than chance, and misspellings of frequent words find the
    word (gensim's FastText on the same lines and settings: WS353 0.40; the misspelled
    word among the 5 nearest for 0.92 of the 50 words)."""
    from embedpipe.scoring import default_datasets, evaluate_similarity

    base = _prepare(spark, tmp_path, head_lines(EN_OPEN_TOK, 200_000), "vocab.min_count=5",
                    "vocab.tokenizer=whitespace")  # fmt: skip
    run = RunDir(str(tmp_path / "run"))
    cfg = load_config(None, [*base, "word2vec.partitions=2", "word2vec.epochs=3",
                             "word2vec.subwords=true"])  # fmt: skip
    word2vec.run(spark, cfg, run)
    vec = Vectors.load(run.path("word2vec"))
    ws353 = next(d for d in default_datasets() if d.name == "ws353")
    assert evaluate_similarity(vec, ws353.path, None, True, name="ws353")["spearman"] > 0.35
    words = [w for w in vec.index_to_key if len(w) >= 8 and w.isalpha()][:50]
    found = [[x for x, _ in r] for r in vec.most_similar_batch([_misspell(w) for w in words])]
    assert np.mean([w in r[:5] for r, w in zip(found, words, strict=True)]) >= 0.8
