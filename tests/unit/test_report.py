"""embedpipe.report: JSON, Markdown and PNGs are written; the headline table shows every score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedpipe import report, scoring
from embedpipe.vectors import Vectors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Random vectors over the PCA words and a few hundred others, scored on small files."""
    rng = np.random.default_rng(0)
    words = list(report.PCA_WORDS) + [f"w{i}" for i in range(300)]
    v = Vectors(words, rng.standard_normal((len(words), 8)).astype(np.float32))
    d = tmp_path_factory.mktemp("data")
    (d / "sim.txt").write_text("king\tqueen\t8\nman\twoman\t7\ndog\tcat\t6\nred\tzzz\t1\n")
    (d / "an.txt").write_text(": family\nking queen man woman\nboy girl father mother\n")
    docs = "".join(f"{'ab'[k % 2]}\t{' '.join(rng.choice(words, 6))}\n" for k in range(20))
    (d / "docs.tsv").write_text(docs)
    datasets = [
        scoring.EvalDataset("sim", "similarity", str(d / "sim.txt")),
        scoring.EvalDataset("an", "analogy", str(d / "an.txt")),
        scoring.EvalDataset("docs", "classification", str(d / "docs.tsv")),
    ]
    return v, scoring.evaluate_all(v, datasets)


def test_write_report_writes_everything(scored, tmp_path):
    v, results = scored
    out = report.write_report(results, str(tmp_path / "reports"), "glove", [3.0, 2.5, 2.2], v)
    assert set(out) == {"json", "markdown", "loss_png", "similarity_png", "pca_png"}
    for kind in ("loss_png", "similarity_png", "pca_png"):
        with open(out[kind], "rb") as f:
            assert f.read(8) == PNG_MAGIC
    with open(out["json"], encoding="utf-8") as f:
        payload = json.load(f)
    assert payload["model"] == "glove"
    assert payload["losses"] == [3.0, 2.5, 2.2]
    assert payload["similarity"] == json.loads(json.dumps(results["similarity"]))
    assert payload["similarity"]["sim"]["oov_pairs"] == [["red", "zzz"]]
    with open(out["markdown"], encoding="utf-8") as f:
        md = f.read()
    assert report.headline_table(results) in md
    assert "red–zzz" in md  # out-of-vocabulary pairs are listed
    assert "![pca](glove-pca.png)" in md


def test_plots_are_optional(scored, tmp_path):
    _, results = scored
    out = report.write_report(results, str(tmp_path), "svd", None, None)
    assert set(out) == {"json", "markdown", "similarity_png"}
    assert not (tmp_path / "svd-loss.png").exists()


def test_headline_table_has_one_row_per_score(scored):
    _, results = scored
    table = report.headline_table(results).splitlines()
    assert table[0] == "| dataset | metric | score | coverage |"
    body = table[2:]
    assert len(body) == 1 + 2 + 1  # similarity, analogy x 2 methods, classification
    sim = results["similarity"]["sim"]
    assert body[0] == f"| sim | Spearman ρ | {sim['spearman']:.3f} | 3/4 (75.0%) |"
    cls = results["classification"]["docs"]
    assert f"{cls['accuracy']:.3f} ± {cls['accuracy_std']:.3f}" in body[3]


def test_pca_preserves_planar_geometry():
    rng = np.random.default_rng(3)
    plane = rng.standard_normal((2, 10))
    points = rng.standard_normal((30, 2)) @ plane + 5.0
    xy = report.pca_2d(points)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    dist2 = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.testing.assert_allclose(dist2, dist, atol=1e-9)
    assert xy[:, 0].var() >= xy[:, 1].var()
