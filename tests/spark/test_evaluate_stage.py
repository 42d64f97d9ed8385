"""The evaluate stage and the query commands on tiny vectors trained by the test.

Until a trainer stage lands, the test trains its own small vectors (truncated SVD of
log co-occurrence counts of the encoded sample corpus) and commits them as a model
directory exactly as a trainer would, to exercise the whole reporting path.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from embedpipe import fsutil, schemas
from embedpipe.cli import main as cli_main
from embedpipe.config import load_config
from embedpipe.runs import RunDir
from embedpipe.stages import encode, evaluate, vocab
from tests.conftest import SAMPLE, head_lines


def train_tiny_vectors(run: RunDir, dim: int = 16) -> None:
    """SVD of log(1 + co-occurrence) within a window of 2, committed as run/glove."""
    table = ds.dataset(run.path("corpus"), format="parquet").to_table()
    vt = pq.read_table(io.BytesIO(fsutil.read_bytes(run.path("vocab", "vocab.parquet"))))
    v = vt.num_rows
    rows, cols = [], []
    for ids in table.column("ids").to_pylist():
        a = np.asarray(ids)
        for d in (1, 2):
            rows += [a[:-d], a[d:]]
            cols += [a[d:], a[:-d]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(v, v))
    m.data = np.log1p(m.data)
    u, s, _ = svds(m, k=dim, random_state=0)
    vecs = (u * np.sqrt(s)).astype(np.float32)
    tmp = run.begin("glove")
    out = pa.table([pa.array(np.arange(v, dtype=np.int32)), vt.column("token"),
                    pa.array(list(vecs), pa.list_(pa.float32()))], schema=schemas.VECTORS)
    buf = io.BytesIO()
    pq.write_table(out, buf)
    fsutil.write_bytes_atomic(fsutil.join(tmp, "vectors.parquet"), buf.getvalue())
    fsutil.write_text_atomic(fsutil.join(tmp, "model.json"), json.dumps(
        {"model": "glove", "dim": dim, "losses": [3.0, 2.0, 1.5, 1.2]}))
    run.commit("glove", tmp, {"fingerprint": "tiny-svd-test", "summary": "tiny test vectors"})


@pytest.fixture(scope="module")
def run_with_model(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    path = tmp / "sample.txt"
    path.write_text("\n".join(head_lines(SAMPLE, 15000)) + "\n")
    cfg = load_config(None, [f"input.path={path}", "vocab.min_count=3"])
    run = RunDir(str(tmp / "run"))
    vocab.run(spark, cfg, run)
    encode.run(spark, cfg, run)
    train_tiny_vectors(run)
    return run, cfg


def test_evaluate_stage_writes_report(run_with_model):
    run, cfg = run_with_model
    result = evaluate.run(None, cfg, run)
    assert not result.skipped
    names = {p.rsplit("/", 1)[-1] for p, _ in fsutil.list_files(run.path("reports"))}
    assert {"glove.json", "glove.md", "glove-loss.png", "glove-similarity.png"} <= names
    report = json.loads(fsutil.read_text(run.path("reports", "glove.json")))
    ws = report["similarity"]["ws353"]
    assert 0 < ws["used"] <= ws["pairs"] == 353 and -1 <= ws["spearman"] <= 1
    # Words of the King James Bible and Shakespeare are similar to each other:
    # the score is real, computed on real text, and must be clearly above chance.
    assert report["classification"]["movie_reviews"]["accuracy"] > 0.55
    assert "ws353" in result.extra["headline"] and "simlex999" in result.extra["headline"]
    assert evaluate.run(None, cfg, run).skipped


def test_query_commands(run_with_model, capsys, tmp_path):
    run, _ = run_with_model
    assert cli_main(["neighbors", run.uri, "--model", "glove", "king", "-k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["word"] == "king" and len(out["results"]) == 5
    assert all(r["word"] != "king" for r in out["results"])
    assert cli_main(["analogy", run.uri, "--model", "glove", "man", "king", "woman"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5
    assert cli_main(["neighbors", run.uri, "--model", "glove", "qwxzvy"]) == 2
    assert "qwxzvy" in capsys.readouterr().err
    target = tmp_path / "v.txt"
    assert cli_main(["export", run.uri, "--model", "glove", "--format", "word2vec",
                     "--to", str(target)]) == 0
    capsys.readouterr()
    assert cli_main(["evaluate", "--vectors", str(target), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    ours = json.loads(fsutil.read_text(run.path("reports", "glove.json")))
    assert scores["similarity"]["ws353"]["spearman"] == pytest.approx(
        ours["similarity"]["ws353"]["spearman"], abs=1e-6)
    assert cli_main(["neighbors", run.uri, "--model", "svd", "king"]) == 2
    assert "stage 'svd' has not finished" in capsys.readouterr().err
