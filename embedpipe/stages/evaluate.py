"""``evaluate`` stage: score every trained model of a run and write its report.

Runs on the driver (scoring is small next to training): loads
``runs/NAME/<model>/`` with :class:`~embedpipe.vectors.Vectors`, scores it with
:func:`embedpipe.scoring.evaluate_all` on the ``[evaluate]`` datasets (the bundled
WordSim-353, SimLex-999, Google analogy and movie-review sets by default), and
writes ``runs/NAME/reports/<model>.{json,md}`` plus PNG plots.
"""

from __future__ import annotations

from typing import Any

from embedpipe import fsutil
from embedpipe.config import Config, to_dict
from embedpipe.errors import StageNotFinishedError
from embedpipe.log import Timer, logger
from embedpipe.report import headline_table, write_report
from embedpipe.runs import RunDir, StageResult, fingerprint, log_skip
from embedpipe.scoring import datasets_from_files, evaluate_all
from embedpipe.vectors import Vectors

#: Stages whose output is a model directory with vectors.parquet + model.json.
MODELS = ("glove", "svd", "word2vec")


def trained_models(run_dir: RunDir) -> list[str]:
    """Models that finished in this run, in pipeline order."""
    stages = run_dir.manifest()["stages"]
    return [m for m in MODELS if m in stages]


def score(vectors: Vectors, cfg: Config) -> dict[str, Any]:
    """Scores of ``vectors`` on the datasets the ``[evaluate]`` table names."""
    e = cfg.evaluate
    datasets = datasets_from_files(e.similarity, e.analogy, e.classification)
    return evaluate_all(vectors, datasets, restrict_vocab=e.restrict_vocab or None,
                        folds=e.folds, seed=e.seed)


def evaluate_model(run_dir: RunDir, model: str, cfg: Config, reports_uri: str) -> dict[str, Any]:
    """Score one model of the run and write its report into ``reports_uri``."""
    run_dir.require(model)
    vectors = Vectors.load_model_dir(run_dir.path(model))
    with Timer() as t:
        results = score(vectors, cfg)
    losses = vectors.meta.get("losses")
    results["timings"] = {"seconds": round(t.seconds, 3)}
    write_report(results, reports_uri, model, losses=losses, vectors=vectors)
    return results


def run(spark: Any, cfg: Config, run_dir: RunDir, force: bool = False,
        models: list[str] | None = None, **_: Any) -> StageResult:
    """Evaluate ``models`` (default: every trained model of the run)."""
    models = models or trained_models(run_dir)
    if not models:
        logger.info("evaluate nothing to evaluate yet: no trained model in %s", run_dir.uri)
        return StageResult("evaluate", True, {}, summary="no trained model to evaluate yet",
                           extra={"idle": True})
    for m in models:
        if m not in MODELS:
            raise StageNotFinishedError(
                f"--model {m}: not a model (use one of {', '.join(MODELS)})"
            )
    inputs = {m: run_dir.require(m)["fingerprint"] for m in models}
    fp = fingerprint("evaluate", cfg.section_hash("evaluate"), inputs)
    if not force and run_dir.is_current("evaluate", fp):
        result = log_skip("evaluate", run_dir)
        result.extra["headline"] = run_dir.record("evaluate").get("headline", "")
        return result
    tmp = run_dir.begin("evaluate")
    # Keep the reports of models not re-scored this time.
    old = run_dir.record("evaluate") or {}
    keep = [m for m in old.get("models", {}) if m not in models]
    for m in keep:
        for path, _ in fsutil.list_files(run_dir.path("reports")):
            name = path.rsplit("/", 1)[-1]
            if name.startswith(f"{m}.") or name.startswith(f"{m}-"):
                fsutil.write_bytes_atomic(fsutil.join(tmp, name), fsutil.read_bytes(
                    fsutil.join(run_dir.path("reports"), name)))
    headlines, per_model = [], {m: old["models"][m] for m in keep}
    with Timer() as t:
        for m in models:
            results = evaluate_model(run_dir, m, cfg, tmp)
            table = headline_table(results)
            headlines.append(f"{m}:\n{table}")
            per_model[m] = {"fingerprint": inputs[m], "headline": table}
    headline = "\n\n".join(headlines)
    summary = f"scored {', '.join(models)}; reports in {run_dir.path('reports')}"
    record = run_dir.commit("evaluate", tmp, {
        "fingerprint": fp,
        "config": {"evaluate": to_dict(cfg.evaluate)},
        "inputs": inputs,
        "models": per_model,
        "headline": headline,
        "timings": {"seconds": round(t.seconds, 3)},
        "summary": summary,
    })
    logger.info("evaluate %s in %.1fs", summary, t.seconds)
    return StageResult("evaluate", False, record, t.seconds, summary, {"headline": headline})
