"""Spark ML API: EmbeddingModel transform, synonyms, persistence (alone and in a PipelineModel)."""

from __future__ import annotations

import numpy as np
import pytest

from embedpipe.errors import InputError
from embedpipe.ml import EmbeddingModel
from embedpipe.vectors import Vectors

WORDS = ["the", "cat", "dog", "sat", "mat", "ran", "far", "a"]


@pytest.fixture(scope="module")
def vectors() -> Vectors:
    rng = np.random.default_rng(7)
    return Vectors(WORDS, rng.normal(size=(len(WORDS), 6)).astype(np.float32),
                   counts=[50, 20, 18, 9, 7, 5, 3, 40])


ROWS = [["the", "cat", "sat"], ["dog", "ran", "far", "unknown"], ["nothing", "known"], [],
        None, ["cat", "cat", "a"]]


def _expected(v: Vectors, rows, normalize=False, sif_a=None):
    m = v.unit if normalize else v.vectors
    w = np.ones(len(v))
    if sif_a is not None:
        p = v.counts / v.counts.sum()
        w = sif_a / (sif_a + p)
    out = []
    for r in rows:
        ids = [v.key_to_index[t] for t in (r or []) if t in v]
        out.append(np.mean([m[i] * w[i] for i in ids], axis=0) if ids else np.zeros(v.dim))
    return np.array(out)


def _df(spark, rows):
    schema = "id long, tokens array<string>"
    return spark.createDataFrame([(i, r) for i, r in enumerate(rows)], schema)


@pytest.mark.parametrize("params,sif", [({}, None), ({"normalizeWords": True}, None),
                                        ({"pooling": "sif", "sifA": 0.01}, 0.01)])
def test_transform_is_the_mean_of_known_word_vectors(spark, vectors, params, sif):
    model = EmbeddingModel.fromVectors(vectors, **params)
    # Sorted on the driver: a Spark sort would evaluate the transform twice (its
    # sampling pass), and the accumulator counts every evaluation.
    out = sorted(model.transform(_df(spark, ROWS)).collect(), key=lambda r: r["id"])
    got = np.array([r["features"].toArray() for r in out])
    want = _expected(vectors, ROWS, params.get("normalizeWords", False), sif)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert model.emptyRows.value == 3  # no known word, empty list, null
    assert [r["tokens"] for r in out] == ROWS  # input columns pass through


def test_find_synonyms_equals_neighbors(spark, vectors):
    model = EmbeddingModel.fromVectors(vectors)
    assert model.findSynonymsArray("cat", 3) == vectors.most_similar("cat", topn=3)
    df = model.findSynonyms("cat", 3).collect()
    assert [(r["word"], r["similarity"]) for r in df] == vectors.most_similar("cat", topn=3)
    got = {r["word"]: r["vector"].toArray() for r in model.getVectors().collect()}
    assert set(got) == set(WORDS)
    np.testing.assert_array_equal(got["dog"], vectors["dog"])


def test_save_load_round_trip(spark, vectors, tmp_path):
    model = EmbeddingModel.fromVectors(vectors, pooling="sif", outputCol="emb")
    path = str(tmp_path / "model")
    model.write().save(path)
    loaded = EmbeddingModel.load(path)
    assert loaded.uid == model.uid
    assert loaded.getPooling() == "sif" and loaded.getOutputCol() == "emb"
    np.testing.assert_array_equal(loaded.vectors.vectors, vectors.vectors)
    np.testing.assert_array_equal(loaded.vectors.counts, vectors.counts)
    a = [r["emb"] for r in model.transform(_df(spark, ROWS)).orderBy("id").collect()]
    b = [r["emb"] for r in loaded.transform(_df(spark, ROWS)).orderBy("id").collect()]
    assert a == b


def test_pipeline_model_round_trip_has_no_pickle(spark, vectors, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import RegexTokenizer

    texts = ["The cat sat on the mat", "a dog ran far", "the dog sat", "a cat ran",
             "far far the mat", "cat dog cat"]
    df = spark.createDataFrame([(t, float(i % 2)) for i, t in enumerate(texts)],
                               "text string, label double")
    pipe = Pipeline(stages=[RegexTokenizer(inputCol="text", outputCol="tokens", pattern="\\W+"),
                            EmbeddingModel.fromVectors(vectors),
                            LogisticRegression(maxIter=5)])
    fitted = pipe.fit(df)
    path = tmp_path / "pipeline"
    fitted.write().save(str(path))
    loaded = PipelineModel.load(str(path))
    assert isinstance(loaded.stages[1], EmbeddingModel)
    cols = ["text", "features", "prediction"]
    assert (fitted.transform(df).select(cols).collect()
            == loaded.transform(df).select(cols).collect())
    for f in path.rglob("*"):
        if f.is_file():
            assert not f.name.endswith((".pkl", ".pickle"))
            assert f.read_bytes()[:1] != b"\x80", f"{f} looks like a pickle"


def test_bad_input_is_one_line(spark, vectors, tmp_path):
    model = EmbeddingModel.fromVectors(vectors)
    with pytest.raises(InputError, match="input column 'tokens' not found"):
        model.transform(spark.createDataFrame([("x",)], "text string"))
    with pytest.raises(InputError, match="has type string, expected array<string>"):
        model.transform(spark.createDataFrame([("x",)], "tokens string"))
    empty = model.transform(_df(spark, ROWS).limit(0))
    assert empty.count() == 0
    not_model = tmp_path / "nothing"
    not_model.mkdir()
    with pytest.raises(InputError, match="not a saved Spark ML model"):
        EmbeddingModel.load(str(not_model))
    from pyspark.ml.feature import RegexTokenizer

    other = tmp_path / "tokenizer"
    RegexTokenizer(inputCol="a", outputCol="b").write().save(str(other))
    with pytest.raises(InputError, match="not an embedpipe EmbeddingModel"):
        EmbeddingModel.load(str(other))


# ---------------------------------------------------------------- estimators


@pytest.fixture(scope="module")
def token_df(spark):
    from pyspark.ml.feature import RegexTokenizer

    from tests.conftest import SAMPLE, head_lines

    lines = head_lines(SAMPLE, 1500)
    df = spark.createDataFrame([(x,) for x in lines], "text string")
    return RegexTokenizer(inputCol="text", outputCol="tokens", pattern="\\W+").transform(df)


def _counter(df, col="tokens"):
    import collections

    return collections.Counter(t for r in df.select(col).collect() for t in r[col])


@pytest.mark.parametrize("estimator,params", [
    ("Word2Vec", {"dim": 12, "epochs": 1, "minCount": 3, "partitions": 2}),
    ("GloVe", {"dim": 12, "epochs": 2, "minCount": 3, "window": 4}),
    ("PPMISVD", {"dim": 12, "minCount": 3, "window": 4}),
])
def test_estimators_fit_the_stages_on_a_column(spark, token_df, tmp_path, estimator, params):
    import embedpipe.ml as ml

    est = getattr(ml, estimator)(workDir=str(tmp_path / "work"), **params)
    model = est.fit(token_df)
    counts = _counter(token_df)
    kept = {t for t, n in counts.items() if n >= 3}
    assert set(model.vectors.index_to_key) == kept
    assert model.vectors.dim == 12
    # Ids are ranks by count: the first word is the most frequent one.
    assert model.vectors.index_to_key[0] == counts.most_common(1)[0][0]
    out = model.transform(token_df).select("features").limit(3).collect()
    assert all(len(r["features"]) == 12 for r in out)
    # The estimator's params persist as Spark ML params (JSON, no pickle).
    path = str(tmp_path / "est")
    est.write().save(path)
    again = type(est).load(path)
    assert again.getOrDefault("dim") == 12 and again.getOrDefault("minCount") == 3


def test_estimator_bad_input(spark, token_df, tmp_path):
    from embedpipe.errors import ConfigError
    from embedpipe.ml import Word2Vec

    with pytest.raises(InputError, match=r"Word2Vec\.fit: input column 'words' not found"):
        Word2Vec(inputCol="words").fit(token_df)
    with pytest.raises(InputError, match="'text' has type string, expected array<string>"):
        Word2Vec(inputCol="text").fit(token_df)
    with pytest.raises(InputError, match="the DataFrame is empty"):
        Word2Vec().fit(token_df.limit(0))
    with pytest.raises(ConfigError, match=r"word2vec\.dim = 0 is out of range"):
        Word2Vec(dim=0, workDir=str(tmp_path / "w")).fit(token_df)


@pytest.mark.slow
def test_transform_of_a_million_rows_stays_on_the_executors(spark, vectors):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    n = 1_000_000
    words = F.array(*[F.lit(w) for w in WORDS])
    df = spark.range(n, numPartitions=4).select(
        F.array(F.element_at(words, (F.col("id") % 8 + 1).cast("int")),
                F.element_at(words, ((F.col("id") + 3) % 8 + 1).cast("int")),
                F.lit("oov")).alias("tokens"))
    out = EmbeddingModel.fromVectors(vectors).transform(df)
    # An aggregation on the executors: only one row comes back to the driver.
    got = np.array(out.select(vector_to_array("features").alias("f"))
                   .agg(F.array(*[F.sum(F.col("f")[k]) for k in range(vectors.dim)]))
                   .first()[0])
    m = vectors.vectors.astype(np.float64)
    per_residue = np.array([(m[r] + m[(r + 3) % 8]) / 2 for r in range(8)])
    want = per_residue.sum(axis=0) * (n // 8)
    np.testing.assert_allclose(got, want, rtol=1e-5)
