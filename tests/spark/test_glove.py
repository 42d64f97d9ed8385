"""The glove stage through Spark: equals the plain kernel, deterministic, resumable, safe.

Inputs are co-occurrence run directories written here in the cooc contract (DESIGN.md:
``cooc/shard=k/*.parquet``, ``i, j, x`` sorted by ``(i, j)``, a manifest record
"cooccur" with ``vocab_size`` and ``shards``), so these tests do not depend on the
cooccur stage; ``test_end_to_end_sample`` runs the real upstream stages when present.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe import cooccur as cooc_layout
from embedpipe import fsutil, schemas, training
from embedpipe import spark as spark_mod
from embedpipe.config import load_config
from embedpipe.errors import (
    ArtifactVersionError,
    InputError,
    ResourceError,
    TrainingDivergedError,
)
from embedpipe.kernels import glove as kernel
from embedpipe.runs import RunDir, fingerprint
from embedpipe.stages import glove
from embedpipe.stages.vocab import table_bytes
from embedpipe.vectors import Vectors
from tests.conftest import SAMPLE, head_lines

# ----------------------------------------------------------------- fixtures


def planted(groups: int = 4, size: int = 8, seed: int = 0):
    """A symmetric matrix with ``groups`` planted word groups (ids interleaved: i % groups).

    Words of a group co-occur strongly (x in [20, 40]); 30 % of the cross-group pairs
    co-occur weakly (x in [0.5, 2]).
    """
    rng = np.random.default_rng(seed)
    V = groups * size
    group = np.arange(V) % groups
    strong = {}
    for a in range(V):
        for b in range(a + 1, V):
            if group[a] == group[b]:
                strong[(a, b)] = rng.uniform(20, 40)
            elif rng.random() < 0.3:
                strong[(a, b)] = rng.uniform(0.5, 2)
    pairs = [(a, b, v) for (a, b), v in strong.items()] + [
        (b, a, v) for (a, b), v in strong.items()
    ]
    i = np.array([p[0] for p in pairs], np.int32)
    j = np.array([p[1] for p in pairs], np.int32)
    x = np.array([p[2] for p in pairs], np.float32)
    return V, group, i, j, x


def write_run(root, tokens, i, j, x, shards: int) -> RunDir:
    """A run directory with a committed vocab and a cooc in the cooccur stage's contract.

    Files ``cooc/shard=k/part-00000.parquet`` with the footer description, and the
    manifest counts ``embedpipe.cooccur.info`` reads (the real stage writes more).
    """
    run = RunDir(str(root))
    V = len(tokens)
    vocab = pa.table(
        [pa.array(np.arange(V, dtype=np.int32)), pa.array(tokens),
         pa.array(np.arange(V, 0, -1, dtype=np.int64))],
        schema=schemas.VOCAB,
    )  # fmt: skip
    tmp = run.begin("vocab")
    fsutil.write_bytes_atomic(fsutil.join(tmp, "vocab.parquet"), table_bytes(vocab))
    run.commit("vocab", tmp, {
        "fingerprint": fingerprint("test-vocab", tokens), "config": {}, "inputs": {},
        "counts": {"vocab_size": V}, "timings": {}, "summary": "test vocabulary",
    })  # fmt: skip
    tmp = run.begin("cooccur")
    order = np.lexsort((j, i))
    i, j, x = i[order], j[order], x[order]
    nnz, sizes = [], []
    for k in range(shards):
        sel = i % shards == k
        table = pa.table(
            [pa.array(i[sel]), pa.array(j[sel]), pa.array(x[sel])], schema=schemas.COOC
        )
        table = table.replace_schema_metadata(
            cooc_layout.shard_metadata(V, shards, k, 10, "harmonic", int(sel.sum()))
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        fsutil.write_bytes_atomic(fsutil.join(tmp, cooc_layout.shard_file(k)), buf.getvalue())
        nnz.append(int(sel.sum()))
        sizes.append(len(buf.getvalue()))
    run.commit("cooccur", tmp, {
        "fingerprint": fingerprint("test-cooc", i.tolist(), j.tolist(), x.tolist(), shards),
        "config": {}, "inputs": {},
        "counts": {"vocab_size": V, "shards": shards, "window": 10, "weighting": "harmonic",
                   "nnz": int(i.size), "sum_x": float(x.sum()), "shard_nnz": nnz,
                   "shard_bytes": sizes},
        "timings": {}, "summary": "test cooc",
    })  # fmt: skip
    return run


def cfg_for(*overrides: str):
    base = ["glove.dim=8", "glove.epochs=6", "glove.x_max=10", "glove.seed=3"]
    return load_config(None, [*base, *overrides])


def reference_vectors(i, j, x, V, g, shards: int) -> tuple[np.ndarray, list[float]]:
    """The stage's algorithm without Spark: plain kernel calls, shards merged in order."""
    order = np.lexsort((j, i))
    i, j, x = i[order], j[order], x[order]
    params = kernel.init_params(V, g.dim, seed=(g.seed, 0))
    losses = []
    R = g.rounds_per_epoch
    for e in range(1, g.epochs + 1):
        every = []
        for r in range(R):
            results = []
            for k in range(shards):
                m = i % shards == k
                results.append(kernel.train_shard(
                    i[m], j[m], x[m], params, seed=(g.seed, e, k), passes=g.local_epochs,
                    x_max=g.x_max, alpha=g.alpha, eta=g.eta, part=(r, R),
                    context_scale=kernel.context_scale(g.merge.value, shards)))  # fmt: skip
            every += results
            params = kernel.merge_results(params, results, g.merge.value)
        losses.append(glove.epoch_loss(every))
    return kernel.output_vectors(params), losses


def read_model(run: RunDir) -> tuple[Vectors, dict]:
    vec = Vectors.load_model_dir(run.path("glove"))
    return vec, json.loads(fsutil.read_text(run.path("glove", "model.json")))


@pytest.fixture(scope="module")
def planted_data():
    return planted()


@pytest.fixture(scope="module")
def tokens(planted_data):
    V = planted_data[0]
    return [f"w{a:02d}" for a in range(V)]


# -------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_training_shards_from_any_cooc_layout(tmp_path, planted_data, tokens, shards):
    _, _, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, 4)
    meta = cooc_layout.info(run)
    seen = 0
    for k in range(shards):
        si, sj, sx = glove.read_training_shard(run, meta, shards, k)
        m = i % shards == k
        order = np.lexsort((j[m], i[m]))
        np.testing.assert_array_equal(si, i[m][order])
        np.testing.assert_array_equal(sj, j[m][order])
        np.testing.assert_array_equal(sx, x[m][order])
        seen += si.size
    assert seen == i.size
    assert glove.shard_sizes(meta, 2, None, "") == [int((i % 2 == k).sum()) for k in range(2)]


def test_sorted_shard_rejects_duplicates_and_foreign_ids():
    ids = np.array([1, 1], np.int32)
    xs = np.array([1.0, 2.0], np.float32)
    with pytest.raises(InputError, match="more than once"):
        glove.sorted_shard(ids, ids, xs, 5)
    with pytest.raises(InputError, match="outside the vocabulary"):
        glove.sorted_shard(ids, ids, xs, 1)


def test_cost_model_matches_the_arrays(planted_data):
    V, _, i, j, x = planted_data
    params = kernel.init_params(V, 5, seed=0)
    assert glove.param_bytes(V, 5) == sum(a.nbytes for a in params.arrays())
    m = i % 2 == 0
    res = kernel.train_shard(i[m], j[m], x[m], params, seed=0)
    rows = res.word.rows.size + res.context.rows.size
    assert glove.result_bytes(res) == rows * glove.row_bytes(5)


class FakeSession:
    """Just what the memory check reads of a SparkSession: master and conf."""

    def __init__(self, master: str, conf: dict[str, str], parallelism: int = 2) -> None:
        self.sparkContext = self
        self.master = master
        self.defaultParallelism = parallelism
        self._conf = conf

    def getConf(self):  # noqa: N802 - SparkContext's method name
        return self

    def get(self, key, default=None):
        return self._conf.get(key, default)


def test_memory_plan_and_refusals():
    V, dim = 64_000, 100
    sizes = [7_800_000] * 4
    plan = glove.memory_plan(V, dim, sizes, concurrent=8)
    assert plan.concurrent == 4  # never more tasks at once than shards
    assert plan.task == glove.task_memory_need(V, dim, max(sizes))
    assert plan.executor == 4 * plan.task
    # The broadcast parameters (W, C, biases, AdaGrad sums) dominate the task's need.
    assert plan.task > 2 * glove.param_bytes(V, dim) == 2 * 4 * V * (dim + 1) * 4
    assert glove.concurrent_tasks(FakeSession("yarn", {"spark.executor.cores": "4"})) == 4
    assert glove.concurrent_tasks(FakeSession("yarn", {})) == 1
    assert glove.concurrent_tasks(FakeSession("local[2]", {}, parallelism=2)) == 2
    gib = plan.executor / 2**30
    enough = {"spark.executor.memory": f"{math.ceil(gib / 0.8) + 1}g", "spark.driver.memory": "4g"}
    glove.check_memory(FakeSession("yarn", enough), plan, "GloVe")  # fits: no error
    small = {**enough, "spark.executor.memory": f"{math.floor(gib)}g"}
    with pytest.raises(ResourceError, match=r"per executor .*spark\.executor\.memory.*glove\.dim"):
        glove.check_memory(FakeSession("yarn", small), plan, "GloVe")
    with pytest.raises(ResourceError, match=r"on the driver .*spark\.driver\.memory"):
        glove.check_memory(
            FakeSession("yarn", {**enough, "spark.driver.memory": "100m"}), plan, "GloVe"
        )
    # Local mode: one process runs the driver and the tasks, so both needs add up.
    total = plan.executor + plan.driver
    local = FakeSession("local[4]", {"spark.driver.memory": f"{math.floor(total / 2**30)}g"})
    with pytest.raises(ResourceError, match=r"spark\.driver\.memory is .* in local mode"):
        glove.check_memory(local, plan, "GloVe")


def test_checkpoint_round_trip_and_fingerprint(tmp_path):
    root = str(tmp_path / "ck")
    a = {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    training.save_checkpoint(root, 1, a, "fp1", {"losses": [1.0]})
    training.save_checkpoint(root, 2, {k: v * 2 for k, v in a.items()}, "fp1", {"losses": [1, 2]})
    assert training.load_checkpoint(root, "other") is None
    ck = training.load_checkpoint(root, "fp1")
    assert ck.epoch == 2 and ck.meta["losses"] == [1, 2]
    np.testing.assert_array_equal(ck.arrays["W"], a["W"] * 2)
    assert not fsutil.exists(fsutil.join(root, "epoch-000001"))  # older one removed
    damaged = fsutil.join(root, "epoch-000002", "W.npy")
    fsutil.write_bytes_atomic(damaged, fsutil.read_bytes(damaged)[:-4] + b"\0\0\0\1")
    with pytest.raises(ArtifactVersionError, match="damaged"):
        training.load_checkpoint(root, "fp1")


# ------------------------------------------------------------- through Spark


@pytest.mark.parametrize(
    ("shards", "merge", "rounds"),
    [(1, "scaled", 1), (3, "scaled", 1), (3, "average", 1), (3, "scaled", 3)],
)
def test_spark_equals_plain_kernel(spark, tmp_path, planted_data, tokens, shards, merge, rounds):
    V, _, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, shards)
    cfg = cfg_for(f"glove.merge={merge}", f"glove.rounds_per_epoch={rounds}")
    res = glove.run(spark, cfg, run)
    assert not res.skipped
    vec, model = read_model(run)
    want, losses = reference_vectors(i, j, x, V, cfg.glove, shards)
    np.testing.assert_array_equal(vec.vectors, want)  # bit-identical
    assert vec.index_to_key == tokens
    # Equal up to the order of summing the shards' costs (per round, then over rounds).
    assert model["losses"] == pytest.approx(losses, rel=1e-12)
    assert len(model["losses"]) == cfg.glove.epochs
    assert model["shards"] == shards and model["entries"] == i.size
    assert model["settings"]["merge"] == merge
    assert not fsutil.exists(run.path(glove.CHECKPOINTS))  # removed after the commit


def test_planted_groups_and_monotone_loss(spark, tmp_path, planted_data, tokens):
    V, group, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, 2)
    glove.run(spark, cfg_for("glove.epochs=12"), run)
    vec, model = read_model(run)
    losses = model["losses"]
    assert all(b < a for a, b in itertools.pairwise(losses[:6])), losses
    for a in range(V):
        nearest = vec.most_similar(tokens[a], topn=3)
        assert all(group[vec.index(w)] == group[a] for w, _ in nearest), (a, nearest)


def test_determinism_and_skip(spark, tmp_path, planted_data, tokens):
    _, _, i, j, x = planted_data
    # run 1: the same S = 2 trained from a cooc written with 3 shards (every task reads all).
    runs = [write_run(tmp_path / f"r{n}", tokens, i, j, x, 3 if n == 1 else 2) for n in range(3)]
    short = "glove.epochs=2"  # determinism needs no long run; keeps the suite fast
    glove.run(spark, cfg_for(short), runs[0])
    glove.run(spark, cfg_for(short), runs[1], shards=2)
    glove.run(spark, cfg_for(short, "glove.seed=4"), runs[2])
    raw = [fsutil.read_bytes(r.path("glove", "vectors.parquet")) for r in runs]
    assert raw[0] == raw[1]
    assert raw[0] != raw[2]
    again = glove.run(spark, cfg_for(short), runs[0])
    assert again.skipped
    assert not glove.run(spark, cfg_for("glove.epochs=3"), runs[0]).skipped


def test_resume_after_interrupt_is_bit_identical(spark, tmp_path, planted_data, tokens):
    _, _, i, j, x = planted_data
    full = write_run(tmp_path / "full", tokens, i, j, x, 2)
    glove.run(spark, cfg_for(), full)
    part = write_run(tmp_path / "part", tokens, i, j, x, 2)

    class KilledError(Exception):
        pass

    def kill_after_3(epoch):
        if epoch == 3:
            raise KilledError

    with pytest.raises(KilledError):
        glove.run(spark, cfg_for(), part, on_epoch=kill_after_3)
    assert part.record("glove") is None
    assert training.latest_info(part.path(glove.CHECKPOINTS))["epoch"] == 3
    res = glove.run(spark, cfg_for(), part, resume=True)
    assert "resumed after epoch 3" in res.summary
    assert fsutil.read_bytes(part.path("glove", "vectors.parquet")) == fsutil.read_bytes(
        full.path("glove", "vectors.parquet")
    )
    assert read_model(part)[1]["losses"] == read_model(full)[1]["losses"]


_KILLED_DRIVER = """
import os, signal, sys
from embedpipe.config import SparkConfig, load_config
from embedpipe.runs import RunDir
from embedpipe.spark import build_session
from embedpipe.stages import glove

run_uri, pid_file, marker, *overrides = sys.argv[1:]
# The marker lands on the JVM's command line: the test finds that JVM by it, and only it.
conf = {"spark.ui.enabled": "false", "spark.embedpipe.test.marker": marker}
spark = build_session(SparkConfig(master="local[2]", conf=conf))
with open(pid_file, "w") as f:
    f.write(str(spark.sparkContext._gateway.proc.pid))


def die(epoch):
    if epoch == 3:  # no exception, no cleanup: the process is gone, like kill -9
        os.kill(os.getpid(), signal.SIGKILL)


glove.run(spark, load_config(None, overrides), RunDir(run_uri), on_epoch=die)
"""


@pytest.mark.slow
def test_resume_after_kill_9_is_bit_identical(spark, tmp_path, planted_data, tokens):
    """Acceptance 3 with a real kill: a driver process SIGKILLed after epoch 3's
    checkpoint, resumed here, equals an uninterrupted run."""
    _, _, i, j, x = planted_data
    full = write_run(tmp_path / "full", tokens, i, j, x, 2)
    glove.run(spark, cfg_for(), full)
    part = write_run(tmp_path / "part", tokens, i, j, x, 2)
    pid_file = tmp_path / "jvm.pid"
    overrides = ["glove.dim=8", "glove.epochs=6", "glove.x_max=10", "glove.seed=3"]
    assert load_config(None, overrides) == cfg_for()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    marker = f"glove-kill-{os.getpid()}-{time.time_ns()}"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_DRIVER, part.uri, str(pid_file), marker, *overrides],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    try:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert part.record("glove") is None
        assert training.latest_info(part.path(glove.CHECKPOINTS))["epoch"] == 3
        res = glove.run(spark, cfg_for(), part, resume=True)
        assert "resumed after epoch 3" in res.summary
        assert fsutil.read_bytes(part.path("glove", "vectors.parquet")) == fsutil.read_bytes(
            full.path("glove", "vectors.parquet")
        )
    finally:
        # The JVM exits by itself when its driver's pipe closes. Check that, and end it if
        # not, by its pid and only while that pid is still our JVM (pids get reused).
        if pid_file.exists():
            cmdline = Path("/proc", pid_file.read_text().strip(), "cmdline")
            deadline = time.monotonic() + 60
            while _still_ours(cmdline, marker) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _still_ours(cmdline, marker):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                pytest.fail("the killed driver's JVM did not exit when its driver died")


def _still_ours(cmdline: Path, marker: str) -> bool:
    try:
        return marker in cmdline.read_bytes().decode(errors="replace")
    except OSError:  # gone
        return False


def test_without_resume_a_checkpoint_is_ignored(spark, tmp_path, planted_data, tokens):
    _, _, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, 1)

    class StopError(Exception):
        pass

    def stop(epoch):
        if epoch == 2:
            raise StopError

    with pytest.raises(StopError):
        glove.run(spark, cfg_for(), run, on_epoch=stop)
    res = glove.run(spark, cfg_for(), run)
    model = read_model(run)[1]
    # Started over: every epoch was run (and checkpointed) by the second call.
    assert "resumed" not in res.summary and model["resumed_from_epoch"] == 0
    assert len(model["checkpoint_seconds"]) == 6


def test_divergence_stops_and_writes_nothing(spark, tmp_path, planted_data, tokens, monkeypatch):
    _, _, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, 2)
    # glove.c's gradient clipping keeps any eta the config allows (<= 10) finite on this
    # matrix, so lift the clipping and use an absurd eta in the tasks' settings.
    of = glove.TrainSettings.of

    def absurd(g, epoch, shards):
        return dataclasses.replace(of(g, epoch, shards), eta=1e30, grad_clip=math.inf)

    monkeypatch.setattr(glove.TrainSettings, "of", staticmethod(absurd))
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/6 .*lower glove\.eta"):
        glove.run(spark, cfg_for(), run)
    assert run.record("glove") is None
    assert not fsutil.exists(run.path("glove"))


def test_memory_refusal(spark, tmp_path, planted_data, tokens, monkeypatch):
    _, _, i, j, x = planted_data
    run = write_run(tmp_path / "run", tokens, i, j, x, 2)
    monkeypatch.setattr(spark_mod, "task_memory_bytes", lambda _spark: 4096)
    with pytest.raises(ResourceError, match=r"GloVe \(V=32 .*spark\.driver\.memory.*glove\.dim"):
        glove.run(spark, cfg_for(), run)
    assert run.record("glove") is None


@pytest.mark.skipif(
    importlib.util.find_spec("embedpipe.stages.cooccur") is None,
    reason="the cooccur stage is not there yet",
)
def test_end_to_end_sample(spark, tmp_path):
    from embedpipe.stages import cooccur, encode, vocab

    path = tmp_path / "sample.txt"
    path.write_text("\n".join(head_lines(SAMPLE, 3000)) + "\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            f"input.path={path}",
            "vocab.min_count=5",
            "cooccur.shards=2",
            "glove.dim=16",
            "glove.epochs=3",
        ],
    )
    run = RunDir(str(tmp_path / "run"))
    for stage in (vocab, encode, cooccur):
        stage.run(spark, cfg, run)
    res = glove.run(spark, cfg, run)
    vec, model = read_model(run)
    assert len(vec) == run.record("vocab")["counts"]["vocab_size"] and vec.dim == 16
    assert model["losses"][-1] < model["losses"][0]
    assert res.record["counts"]["shards"] == 2
