"""Evaluation report: ``<model>.json``, ``<model>.md`` and PNG plots in a reports directory.

Input is the dict :func:`embedpipe.scoring.evaluate_all` returns. Plots are drawn
with matplotlib's object API on the Agg canvas (no pyplot global state, no
display), rendered to bytes and written through :mod:`embedpipe.fsutil`, so the
reports directory may live on HDFS or an object store.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from embedpipe import fsutil
from embedpipe.vectors import Vectors

logger = logging.getLogger(__name__)

_PCA_TEXT = (
    "king queen man woman boy girl father mother son daughter "
    "france paris germany berlin italy rome japan tokyo spain madrid "
    "monday tuesday friday sunday january june december "
    "one two three four five ten hundred "
    "dog cat horse cow bird fish "
    "red green blue black white "
    "walk walked run ran go went eat ate "
    "good better best bad worse worst"
)
#: Words drawn on the PCA map when present: a few clear semantic groups.
PCA_WORDS: tuple[str, ...] = tuple(_PCA_TEXT.split())

_OOV_SHOWN = 30
_METHOD_LABELS = {"3cosadd": "3CosAdd", "3cosmul": "3CosMul"}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _coverage(used: int, total: int) -> str:
    return f"{used}/{total} ({100.0 * used / total:.1f}%)" if total else "0/0"


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(dataset, metric, score, coverage) for every score in ``results``."""
    rows = []
    for name, r in results.get("similarity", {}).items():
        rows.append((name, "Spearman ρ", _fmt(r["spearman"]), _coverage(r["used"], r["pairs"])))
    for name, by_method in results.get("analogy", {}).items():
        for method, r in by_method.items():
            label = _METHOD_LABELS.get(method, method)
            cov = _coverage(r["covered"], r["questions"])
            rows.append((name, f"{label} accuracy", _fmt(r["accuracy"]), cov))
    for name, r in results.get("classification", {}).items():
        score = f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}"
        cov = f"tokens {100.0 * r['token_coverage']:.1f}%"
        rows.append((name, f"accuracy ({r['folds']}-fold)", score, cov))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def headline_table(results: dict[str, Any]) -> str:
    """A compact Markdown table: dataset, metric, score, coverage."""
    return _table(("dataset", "metric", "score", "coverage"), headline_rows(results))


def _markdown(
    results: dict[str, Any], model: str, losses: list[float] | None, images: dict[str, str]
) -> str:
    vec = results.get("vectors", {})
    parts = [
        f"# Evaluation: {model}",
        "",
        f"{vec.get('words', '?')} words × {vec.get('dim', '?')} dimensions.",
        "",
        headline_table(results),
    ]
    for name, r in results.get("similarity", {}).items():
        parts += ["", f"## {name} (word similarity)", ""]
        parts.append(
            f"Spearman ρ {_fmt(r['spearman'], 4)}, Pearson r {_fmt(r['pearson'], 4)} over "
            f"{_coverage(r['used'], r['pairs'])} pairs."
        )
        oov = r.get("oov_pairs", [])
        if oov:
            shown = ", ".join(f"{a}–{b}" for a, b in oov[:_OOV_SHOWN])
            more = (
                f" … and {len(oov) - _OOV_SHOWN} more (see JSON)" if len(oov) > _OOV_SHOWN else ""
            )
            parts.append(f"\nOut-of-vocabulary pairs ({len(oov)}): {shown}{more}.")
    for name, by_method in results.get("analogy", {}).items():
        parts += ["", f"## {name} (analogy)", ""]
        methods = list(by_method)
        first = by_method[methods[0]]
        parts.append(
            f"Questions with all four words among the {first.get('restrict_vocab') or 'all'} "
            f"most frequent words: {_coverage(first['covered'], first['questions'])}."
        )
        parts.append("")
        header = ("section", "covered", *(_METHOD_LABELS.get(m, m) for m in methods))
        rows = []
        for key in ("semantic", "syntactic"):
            rows.append(
                (
                    f"**{key}**",
                    _coverage(first[key]["covered"], first[key]["questions"]),
                    *(_fmt(by_method[m][key]["accuracy"]) for m in methods),
                )
            )
        for i, sec in enumerate(first["sections"]):
            rows.append(
                (
                    sec["section"],
                    _coverage(sec["covered"], sec["questions"]),
                    *(_fmt(by_method[m]["sections"][i]["accuracy"]) for m in methods),
                )
            )
        rows.append(
            (
                "**total**",
                _coverage(first["covered"], first["questions"]),
                *(_fmt(by_method[m]["accuracy"]) for m in methods),
            )
        )
        parts.append(_table(header, rows))
    for name, r in results.get("classification", {}).items():
        parts += ["", f"## {name} (classification)", ""]
        parts.append(
            f"{r['folds']}-fold stratified accuracy {r['accuracy']:.4f} ± {r['accuracy_std']:.4f} "
            f"(seed {r['seed']}, {r['documents']} documents, classes {', '.join(r['classes'])}; "
            f"{100.0 * r['token_coverage']:.1f}% of tokens have a vector, "
            f"{r['empty_documents']} documents have none)."
        )
    if losses:
        parts += ["", "## Training loss", ""]
        parts.append(", ".join(f"{x:.4g}" for x in losses))
    if images:
        parts += ["", "## Plots", ""]
        parts += [f"![{kind}]({_basename(uri)})" for kind, uri in images.items()]
    return "\n".join(parts) + "\n"


def _basename(uri: str) -> str:
    """Last path component of a URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_losses(losses: list[float], model: str) -> bytes:
    """Training loss per epoch as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.plot(range(1, len(losses) + 1), losses, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{model}: training loss")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_similarity(results: dict[str, Any], model: str) -> bytes | None:
    """Scatter of model cosine vs gold score, one panel per similarity dataset."""
    from matplotlib.figure import Figure

    sims = [(n, r) for n, r in results.get("similarity", {}).items() if r.get("scored")]
    if not sims:
        return None
    fig = Figure(figsize=(4.5 * len(sims), 4))
    for k, (name, r) in enumerate(sims, start=1):
        ax = fig.add_subplot(1, len(sims), k)
        gold = [row[2] for row in r["scored"]]
        pred = [row[3] for row in r["scored"]]
        ax.scatter(gold, pred, s=8, alpha=0.6)
        ax.set_xlabel("gold score")
        ax.set_ylabel("cosine similarity")
        ax.set_title(f"{name}: ρ = {_fmt(r['spearman'])} ({r['used']}/{r['pairs']} pairs)")
        ax.grid(alpha=0.3)
    fig.suptitle(model)
    return _png(fig)


def pca_2d(matrix: np.ndarray) -> np.ndarray:
    """Rows projected on their first two principal components (centred SVD)."""
    x = np.asarray(matrix, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :2] * s[:2]


def plot_pca(vectors: Vectors, model: str, words: tuple[str, ...] = PCA_WORDS) -> bytes | None:
    """2-D PCA map of the unit vectors of ``words`` found in the vocabulary (None if < 3)."""
    from matplotlib.figure import Figure

    present = [w for w in words if w in vectors]
    if len(present) < 3:
        return None
    xy = pca_2d(vectors.unit[[vectors.key_to_index[w] for w in present]])
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=10)
    for (x, y), w in zip(xy, present, strict=True):
        ax.annotate(w, (x, y), fontsize=8, xytext=(2, 2), textcoords="offset points")
    ax.set_title(f"{model}: PCA of {len(present)} common words")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def write_report(
    results: dict[str, Any],
    reports_dir_uri: str,
    model: str,
    losses: list[float] | None = None,
    vectors: Vectors | None = None,
) -> dict[str, str]:
    """Write ``<model>.json``, ``<model>.md`` and the plots; returns {kind: uri}.

    Plots: ``<model>-loss.png`` (when ``losses``), ``<model>-similarity.png`` (when a
    similarity set was scored), ``<model>-pca.png`` (when ``vectors`` hold enough
    of :data:`PCA_WORDS`).
    """
    written: dict[str, str] = {}
    images: dict[str, bytes] = {}
    if losses:
        images["loss"] = plot_losses(list(losses), model)
    sim = plot_similarity(results, model)
    if sim is not None:
        images["similarity"] = sim
    if vectors is not None:
        pca = plot_pca(vectors, model)
        if pca is not None:
            images["pca"] = pca
    image_uris = {}
    for kind, png in images.items():
        uri = fsutil.join(reports_dir_uri, f"{model}-{kind}.png")
        fsutil.write_bytes_atomic(uri, png)
        image_uris[kind] = uri
    payload = {"model": model, **results, "losses": list(losses) if losses else None}
    json_uri = fsutil.join(reports_dir_uri, f"{model}.json")
    fsutil.write_text_atomic(json_uri, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    md_uri = fsutil.join(reports_dir_uri, f"{model}.md")
    fsutil.write_text_atomic(md_uri, _markdown(results, model, losses, image_uris))
    written["json"] = json_uri
    written["markdown"] = md_uri
    written.update({f"{kind}_png": uri for kind, uri in image_uris.items()})
    logger.info("report for %s written to %s", model, reports_dir_uri)
    return written
