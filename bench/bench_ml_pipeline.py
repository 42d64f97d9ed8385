"""Spark ML Pipeline on the movie reviews: our Word2Vec estimator vs MLlib's (issue 12).

    .venv/bin/python bench/bench_ml_pipeline.py [--epochs 5] [--folds 5]

1. Same vectors, two evaluations: our ``Word2Vec`` estimator is fitted once on all
   review texts; ``embedpipe.scoring.evaluate_classification`` (what ``embedpipe
   evaluate`` reports: mean of unit word vectors, standardised, logistic regression
   with C = 1, stratified 5-fold) is compared with a Spark ``CrossValidator`` over
   ``RegexTokenizer -> EmbeddingModel(normalizeWords) -> StandardScaler ->
   LogisticRegression(regParam = 1 / (C n))`` holding the same fitted vectors.
   Criterion: within 0.015.
2. The estimator inside the pipeline (refitted on every training fold), ours and
   MLlib's ``Word2Vec`` (vectorSize, windowSize 5, minCount, maxIter = epochs,
   numPartitions 2), same folds seed: accuracy and wall time side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command_line, machine, update_section
from examples.movie_reviews_pipeline import cross_validate, load_reviews, word2vec


def main(argv: list[str] | None = None) -> int:
    """Run both parts; write the ``ml-pipeline`` section of RESULTS.md."""
    from pyspark.ml.feature import RegexTokenizer

    from embedpipe import scoring
    from embedpipe.config import load_config
    from embedpipe.spark import build_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    spark = build_session(load_config(None).spark)
    df = load_reviews(spark).cache()
    docs = [r["text"].split() for r in df.select("text").collect()]
    labels = [str(r["label"]) for r in df.select("label").collect()]
    load0 = os.getloadavg()[0]

    # 1. Same vectors, our evaluate vs Spark CrossValidator.
    tokens = RegexTokenizer(inputCol="text", outputCol="tokens", pattern="\\s+").transform(df)
    t = time.perf_counter()
    model = word2vec(False, args.dim, args.epochs, args.min_count, args.seed).fit(tokens)
    fit_s = time.perf_counter() - t
    ours = scoring.evaluate_classification(model.vectors, docs, labels, folds=args.folds,
                                           seed=0)["accuracy"]
    spark_acc, _ = cross_validate(df, model, args.folds, args.seed)
    diff = spark_acc - ours
    print(f"same vectors: evaluate {ours:.4f}, Spark CV {spark_acc:.4f}, diff {diff:+.4f}")

    # 2. Estimator inside the pipeline: ours vs MLlib.
    rows = []
    for mllib in (False, True):
        est = word2vec(mllib, args.dim, args.epochs, args.min_count, args.seed)
        acc, secs = cross_validate(df, est, args.folds, args.seed)
        rows.append(("MLlib `Word2Vec`" if mllib else "embedpipe `Word2Vec`", acc, secs))
        print(rows[-1])
    load1 = os.getloadavg()[0]
    verdict = "PASS" if abs(diff) <= 0.015 else "FAIL"
    md = [
        "## Spark ML Pipeline on the movie reviews (issue 12)", "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}, load average {load0:.1f} / {load1:.1f} (before / after)  ",
        f"Settings: dim {args.dim}, window 5, minCount {args.min_count}, {args.epochs} epochs, "
        f"{args.folds}-fold CV, logistic regression with C = 1 (regParam = 1 / (C n)) on "
        "standardised mean word vectors; vectors trained on the 2,000 review texts.", "",
        "Same vectors (our estimator fitted once on all texts, "
        f"{fit_s:.0f} s), two evaluations:", "",
        "| evaluation | accuracy |", "|---|---|",
        "| `embedpipe evaluate` (scoring.evaluate_classification, stratified folds) | "
        f"{ours:.4f} |",
        f"| Spark `CrossValidator`: RegexTokenizer → EmbeddingModel → StandardScaler → "
        f"LogisticRegression | {spark_acc:.4f} |", "",
        f"Difference {diff:+.4f} (criterion ≤ 0.015: **{verdict}**).", "",
        "Estimator inside the pipeline (refitted on each training fold), same folds:", "",
        "| word vectors | CV accuracy | wall (5 folds + final fit) |", "|---|---|---|",
        *[f"| {n} | {a:.4f} | {s:.0f} s |" for n, a, s in rows],
        "",
        f"Ratio of wall times (ours / MLlib) in this run: {rows[0][2] / rows[1][2]:.2f}.",
    ]
    update_section("ml-pipeline", "\n".join(md))
    spark.stop()
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
