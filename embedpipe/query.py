"""Commands that use trained vectors without Spark: neighbors, analogy, export, evaluate."""

from __future__ import annotations

import argparse
import json
from typing import Any

from embedpipe.errors import ConfigError
from embedpipe.runs import RunDir
from embedpipe.vectors import SubwordVectors, Vectors

#: --format names of the CLI -> Vectors.load format names.
_LOAD_FORMATS = {"word2vec": "word2vec", "word2vec-binary": "word2vec-binary",
                 "glove": "glove", "parquet": "parquet"}


def load_model(run_uri: str, model: str) -> Vectors:
    """Vectors of a finished model stage of a run (clear error when it has not finished)."""
    from embedpipe.stages.evaluate import MODELS

    if model not in MODELS:
        raise ConfigError(f"--model {model}: unknown model (use one of {', '.join(MODELS)})")
    run = RunDir(run_uri)
    run.require(model)
    return Vectors.load_model_dir(run.path(model))


def _print(rows: list[tuple[str, float]], as_json: bool, query: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({**query, "results": [{"word": w, "score": s} for w, s in rows]}))
        return
    for w, s in rows:
        print(f"{s:.4f}\t{w}")


def cmd_neighbors(args: argparse.Namespace) -> int:
    """``embedpipe neighbors RUN --model M WORD [-k 10]``."""
    vectors = load_model(args.run_dir, args.model)
    rows = vectors.most_similar(args.word, topn=args.k)
    unseen = args.word not in vectors  # answered from its character n-grams (subwords)
    if unseen and not args.json:
        print(f"# {args.word!r} is not in the vocabulary: vector from its character n-grams")
    _print(rows, args.json, {"word": args.word, "model": args.model,
                             **({"from_ngrams": True} if unseen else {})})  # fmt: skip
    return 0


def cmd_analogy(args: argparse.Namespace) -> int:
    """``embedpipe analogy RUN --model M A B C``: A is to B as C is to ?."""
    a, b, c = args.words
    vectors = load_model(args.run_dir, args.model)
    rows = vectors.analogy(a, b, c, method=args.method, topn=args.k)
    _print(rows, args.json, {"a": a, "b": b, "c": c, "method": args.method, "model": args.model})
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``embedpipe export RUN --model M --format F --to PATH``."""
    vectors = load_model(args.run_dir, args.model)
    if args.format == "subwords":
        if not isinstance(vectors, SubwordVectors):
            raise ConfigError(
                f"--format subwords: {args.run_dir}'s {args.model} model has no n-gram vectors; "
                "train word2vec with --set word2vec.subwords=true"
            )
        vectors.save_model_dir(args.to)
        print(f"wrote {len(vectors):,} x {vectors.dim} vectors and "
              f"{vectors.ngram_buckets.size:,} n-gram vectors (subwords) to {args.to}")
        return 0
    if args.format == "word2vec":
        vectors.save_word2vec(args.to, binary=False)
    elif args.format == "word2vec-binary":
        vectors.save_word2vec(args.to, binary=True)
    elif args.format == "glove":
        vectors.save_glove(args.to)
    else:
        vectors.save_parquet(args.to)
    print(f"wrote {len(vectors):,} x {vectors.dim} vectors ({args.format}) to {args.to}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``embedpipe evaluate RUN [--model M] | --vectors FILE [--format F] [--json]``."""
    from embedpipe.cli import load_cfg
    from embedpipe.report import headline_table
    from embedpipe.stages import evaluate

    cfg = load_cfg(args)
    if args.vectors:
        fmt = _LOAD_FORMATS.get(args.format) if args.format else None
        vectors = Vectors.load(args.vectors, format=fmt)
        results = evaluate.score(vectors, cfg)
        if args.json:
            print(json.dumps({"vectors": args.vectors, **results}))
        else:
            print(f"{args.vectors}: {len(vectors):,} words x {vectors.dim}\n")
            print(headline_table(results))
        return 0
    run = RunDir(args.run_dir or args.out)
    models = args.model or evaluate.trained_models(run)
    if not models:
        raise ConfigError(f"{run.uri}: no trained model to evaluate (run a trainer first)")
    result = evaluate.run(None, cfg, run, force=args.force, models=models)
    if args.json:
        reports = {}
        for m in models:
            from embedpipe import fsutil

            reports[m] = json.loads(fsutil.read_text(run.path("reports", f"{m}.json")))
        print(json.dumps(reports if len(models) > 1 else reports[models[0]]))
    else:
        print(result.extra.get("headline", ""))
    return 0
