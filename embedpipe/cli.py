"""The ``embedpipe`` command line (a contract: tests, docs and schedulers rely on it).

::

    embedpipe run       [--conf FILE] [--input URI] [--out RUN] [--set KEY=VALUE ...]
                        [--stages vocab,encode,...] [--force] [--resume] [--verbose]
    embedpipe STAGE     same options, one stage
    embedpipe neighbors RUN --model M WORD [-k 10]
    embedpipe analogy   RUN --model M A B C
    embedpipe export    RUN --model M --format F --to PATH
    embedpipe evaluate  RUN --model M | --vectors FILE [--format F] [--json]
    embedpipe config    [--conf FILE] [--set ...]     print the effective configuration

Errors that embedpipe raises on purpose print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from embedpipe import config as config_mod
from embedpipe.errors import EmbedpipeError
from embedpipe.log import logger, setup

#: Pipeline stages in the order ``embedpipe run`` runs them, and the module of each.
#: A stage whose module is not importable yet (a later issue) is not offered.
PIPELINE = ["vocab", "encode", "cooccur", "glove", "svd", "word2vec", "evaluate"]
DEFAULT_OUT = "runs/default"


def available_stages() -> list[str]:
    """Stages whose implementation exists in this installation."""
    out = []
    for name in PIPELINE:
        try:
            mod = importlib.import_module(f"embedpipe.stages.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(mod, "run"):
            out.append(name)
    return out


def _stage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", "--conf-file", dest="conf", metavar="FILE",
                   help="TOML config file (defaults for every key live in embedpipe.config)")
    p.add_argument("--input", metavar="URI", help="corpus path (overrides input.path)")
    p.add_argument("--out", metavar="RUN", default=None,
                   help=f"run directory (default {DEFAULT_OUT})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set glove.epochs=50 (repeatable)")
    p.add_argument("--force", action="store_true", help="re-run stages even if up to date")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted training from its last checkpoint")
    p.add_argument("--verbose", "-v", action="store_true", help="show Spark's own logs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="embedpipe", description="Spark-native word embeddings from big text corpora."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the pipeline stages in order")
    _stage_options(p)
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to run (default: all available)")
    for name in PIPELINE:
        if name == "evaluate":
            continue
        _stage_options(sub.add_parser(name, help=f"run the {name} stage"))

    p = sub.add_parser("evaluate", help="score vectors: a run's model or any vectors file")
    _stage_options(p)
    p.add_argument("run_dir", nargs="?", metavar="RUN", help="run directory")
    p.add_argument("--model", action="append", default=None, help="model(s) to score")
    p.add_argument("--vectors", metavar="FILE", help="score this vectors file instead of a run")
    p.add_argument("--format", choices=["word2vec", "word2vec-binary", "glove", "parquet"])
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("neighbors", help="nearest neighbours of a word")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("word")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("analogy", help="A is to B as C is to ?")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("words", nargs=3, metavar="WORD")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--method", choices=["3cosadd", "3cosmul"], default="3cosadd")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="write a run's vectors in another format")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True,
                   choices=["word2vec", "word2vec-binary", "glove", "parquet", "subwords"],
                   help="subwords: the full subword model as a directory (word2vec.subwords)")
    p.add_argument("--to", required=True, metavar="PATH")

    p = sub.add_parser("config", help="print the effective configuration")
    _stage_options(p)
    p.add_argument("--list", action="store_true", help="list every key with its default")
    return parser


def load_cfg(args: argparse.Namespace) -> config_mod.Config:
    """The effective config: defaults, --conf file, --input, --set."""
    overrides = list(args.overrides)
    if getattr(args, "input", None):
        overrides.append(f"input.path={args.input}")
    return config_mod.load_config(args.conf, overrides)


def _run_dir(args: argparse.Namespace):
    from embedpipe.runs import RunDir

    return RunDir(getattr(args, "out", None) or getattr(args, "run_dir", None) or DEFAULT_OUT)


def run_stages(stages: list[str], cfg: config_mod.Config, run_dir: Any, force: bool = False,
               resume: bool = False, verbose: bool = False, spark: Any = None) -> list[Any]:
    """Run ``stages`` in pipeline order with one Spark session; return their results."""
    from embedpipe.log import Timer
    from embedpipe.spark import build_session

    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()  # e.g. a test's or a notebook's session
    own = spark is None
    results = []
    with Timer() as total:
        if own:
            with Timer() as t:
                spark = build_session(cfg.spark, verbose)
            logger.info("spark    session up in %.1fs (master %s, %d cores)", t.seconds,
                        spark.sparkContext.master, spark.sparkContext.defaultParallelism)
        try:
            for name in stages:
                mod = importlib.import_module(f"embedpipe.stages.{name}")
                results.append(mod.run(spark, cfg, run_dir, force=force, resume=resume))
        finally:
            if own:
                spark.stop()
    done = [r for r in results if not r.skipped]
    logger.info("done     %d stage(s) run, %d skipped, %.1fs in all; outputs in %s",
                len(done), len(results) - len(done), total.seconds, run_dir.uri)
    return results


def _print_summary(results: list[Any], run_dir: Any) -> None:
    print(f"\nRun directory: {run_dir.uri}")
    for r in results:
        if r.extra.get("idle"):
            state = "nothing to do"
        else:
            state = "skipped (up to date)" if r.skipped else f"done in {r.seconds:.1f}s"
        print(f"  {r.stage:<9} {state}: {r.summary}")
        if r.extra.get("headline"):
            print()
            print(r.extra["headline"])


def cmd_stages(args: argparse.Namespace) -> int:
    """``embedpipe run`` and ``embedpipe STAGE``."""
    cfg = load_cfg(args)
    available = available_stages()
    if args.command == "run":
        wanted = args.stages.split(",") if args.stages else available
        unknown = [s for s in wanted if s not in PIPELINE]
        if unknown:
            raise config_mod.ConfigError(
                f"--stages: unknown stage(s) {', '.join(unknown)} (known: {', '.join(PIPELINE)})"
            )
        missing = [s for s in wanted if s not in available]
        if missing:
            raise config_mod.ConfigError(
                f"--stages: {', '.join(missing)} not available in this version "
                f"(available: {', '.join(available)})"
            )
        stages = [s for s in PIPELINE if s in wanted]
    else:
        if args.command not in available:
            raise config_mod.ConfigError(f"stage '{args.command}' is not available in this version")
        stages = [args.command]
    run_dir = _run_dir(args)
    results = run_stages(stages, cfg, run_dir, args.force, args.resume, args.verbose)
    _print_summary(results, run_dir)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """``embedpipe config``: print the effective configuration (or every key)."""
    if args.list:
        print(config_mod.describe())
        return 0
    print(json.dumps(config_mod.to_dict(load_cfg(args)), indent=2))
    return 0


def _query_command(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            mod = importlib.import_module("embedpipe.query")
        except ModuleNotFoundError:
            raise EmbedpipeError(f"'{name}' is not available in this version") from None
        return getattr(mod, f"cmd_{name}")(args)

    return handler


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": cmd_config,
    "neighbors": _query_command("neighbors"),
    "analogy": _query_command("analogy"),
    "export": _query_command("export"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedpipe`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup(getattr(args, "verbose", False))
    try:
        if args.command == "evaluate" and (args.vectors or args.run_dir):
            return _query_command("evaluate")(args)
        handler = HANDLERS.get(args.command, cmd_stages)
        return handler(args)
    except EmbedpipeError as e:
        print(f"embedpipe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embedpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
