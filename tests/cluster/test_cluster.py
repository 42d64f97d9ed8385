"""The pipeline submitted with spark-submit to a loopback standalone cluster (issue 10).

Marked ``cluster`` (run by ``make test-all``): it starts a master and two one-core
workers from the installed pyspark, ships the package as a zip (``--py-files``, as
the README says), runs vocab -> cooccur -> glove, svd, word2vec -> evaluate on the
cluster, and checks every model's vectors equal a ``local[2]`` run's with the same
seed and shard count.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedpipe.cli import run_stages
from embedpipe.config import load_config
from embedpipe.runs import RunDir
from embedpipe.vectors import Vectors
from tests.cluster.loopback import package_zip, spark_submit

pytestmark = pytest.mark.cluster

STAGES = ["vocab", "encode", "cooccur", "glove", "svd", "word2vec", "evaluate"]
SETTINGS = ["vocab.min_count=3", "cooccur.shards=2", "cooccur.window=5", "glove.dim=16",
            "glove.epochs=3", "svd.dim=16", "word2vec.dim=16", "word2vec.epochs=1",
            "word2vec.partitions=2", "input.partitions=2"]


def _args(corpus, out):
    args = ["--input", str(corpus), "--out", str(out), "--stages", ",".join(STAGES)]
    for s in SETTINGS:
        args += ["--set", s]
    return args


def test_pipeline_on_the_cluster_equals_local(spark, cluster, corpus, tmp_path):
    zip_path = package_zip(tmp_path / "dist" / "embedpipe.zip")
    out = tmp_path / "cluster-run"
    log = tmp_path / "submit.log"
    proc = spark_submit(cluster, zip_path, _args(corpus, out), log)
    assert proc.returncode == 0, log.read_text()[-3000:]
    cfg = load_config(None, [f"input.path={corpus}", *SETTINGS])
    local = RunDir(str(tmp_path / "local-run"))
    run_stages(STAGES, cfg, local, spark=spark)
    remote = RunDir(str(out))
    for model in ("glove", "svd", "word2vec"):
        a = Vectors.load_model_dir(local.path(model))
        b = Vectors.load_model_dir(remote.path(model))
        assert a.index_to_key == b.index_to_key, model
        np.testing.assert_array_equal(a.vectors, b.vectors, err_msg=model)
    assert remote.record("evaluate") is not None
