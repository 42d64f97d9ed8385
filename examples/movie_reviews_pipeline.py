"""Spark ML Pipeline with embedpipe word vectors: RegexTokenizer -> Word2Vec -> LogisticRegression.

Cross-validated (5 folds) sentiment classification of the bundled movie-review set
(1,000 positive and 1,000 negative reviews, `label<TAB>text`). Our ``Word2Vec``
estimator trains the vectors on the training folds' text inside the pipeline, the
way MLlib's ``Word2Vec`` would be used; ``--mllib`` runs the same pipeline with
MLlib's estimator in its place.

    python examples/movie_reviews_pipeline.py [--mllib] [--epochs 5] [--folds 5]
"""

from __future__ import annotations

import argparse
import gzip
import time
from importlib import resources


def load_reviews(spark, path: str | None = None):
    """DataFrame ``label double, text string`` of the movie-review set."""
    if path is None:
        path = str(resources.files("embedpipe") / "data" / "eval" / "movie_reviews.tsv.gz")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            if text:
                rows.append((1.0 if label.strip() in ("pos", "1", "positive") else 0.0, text))
    return spark.createDataFrame(rows, "label double, text string")


def build_pipeline(embedding, reg_param: float):
    """RegexTokenizer -> ``embedding`` -> StandardScaler -> LogisticRegression; returns (it, lr).

    ``embedding`` is an estimator (ours or MLlib's Word2Vec) or an already fitted
    model, reading ``tokens`` and writing ``features``.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import RegexTokenizer, StandardScaler

    tokenizer = RegexTokenizer(inputCol="text", outputCol="tokens", pattern="\\s+")
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=True,
                            withStd=True)
    lr = LogisticRegression(featuresCol="scaled", regParam=reg_param, maxIter=200)
    return Pipeline(stages=[tokenizer, embedding, scaler, lr]), lr


def word2vec(mllib: bool, dim: int, epochs: int, min_count: int, seed: int):
    """Our Word2Vec estimator or MLlib's, with the same settings."""
    if mllib:
        from pyspark.ml.feature import Word2Vec as MLlibWord2Vec

        return MLlibWord2Vec(inputCol="tokens", outputCol="features", vectorSize=dim,
                             windowSize=5, minCount=min_count, maxIter=epochs, seed=seed,
                             numPartitions=2)
    from embedpipe.ml import Word2Vec

    return Word2Vec(inputCol="tokens", outputCol="features", dim=dim, window=5,
                    minCount=min_count, epochs=epochs, seed=seed, partitions=2,
                    normalizeWords=True)


def cross_validate(df, embedding, folds: int, seed: int) -> tuple[float, float]:
    """(mean k-fold accuracy, seconds) of the pipeline around ``embedding``."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    # regParam 1 / (C n) with C = 1 and n the training documents: the objective our
    # `evaluate` uses (scikit-learn's LogisticRegression(C=1)) in Spark's scaling.
    reg = 1.0 / (df.count() * (folds - 1) / folds)
    pipeline, lr = build_pipeline(embedding, reg)
    cv = CrossValidator(estimator=pipeline,
                        estimatorParamMaps=ParamGridBuilder().addGrid(lr.regParam, [reg]).build(),
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"),
                        numFolds=folds, seed=seed)
    t = time.perf_counter()
    model = cv.fit(df)
    return float(model.avgMetrics[0]), time.perf_counter() - t


def main() -> int:
    """Run the cross-validated pipeline and print its accuracy."""
    from embedpipe.config import load_config
    from embedpipe.spark import build_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mllib", action="store_true", help="MLlib's Word2Vec instead of ours")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    spark = build_session(load_config(None).spark)
    df = load_reviews(spark).cache()
    embedding = word2vec(args.mllib, args.dim, args.epochs, args.min_count, args.seed)
    acc, secs = cross_validate(df, embedding, args.folds, args.seed)
    who = "MLlib Word2Vec" if args.mllib else "embedpipe Word2Vec"
    print(f"{who}: {args.folds}-fold accuracy {acc:.4f} ({secs:.0f} s)")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
