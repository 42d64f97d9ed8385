"""Atomic stage commits (issue 10): a run directory never shows a stage as finished
(manifest record present) unless its output is complete, and the run after an
interruption skips every complete stage and redoes the incomplete one, never reading
a partial output.

Two ways to interrupt:

* in-process (default suite): every file-system operation that changes something,
  made by the driver through ``embedpipe.fsutil.resolve`` (``fsutil``'s helpers, the
  manifest, checkpoints, and the stages' own ``fs.move`` / ``fs.delete_file`` calls), is
  counted by a wrapper around pyarrow's local file system. The wrapper either checks the
  invariant before each operation (and in the middle of each write), or raises at the
  k-th operation and at every operation after it, as a dead process would: what is on
  disk is then exactly what a crash before that operation leaves (a torn file for a
  write). Executors' own writes (encode's and cooccur's task files) happen in Python
  workers the wrapper does not reach;
* out of process (``slow``): ``embedpipe run`` in its own process group, SIGKILLed at
  seeded random times (JVM and Python workers included), which covers those.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from embedpipe import cooccur as cooc
from embedpipe import fsutil
from embedpipe.cli import run_stages
from embedpipe.config import load_config
from embedpipe.errors import StageNotFinishedError
from embedpipe.runs import RunDir, stage_dir
from embedpipe.stages import encode, glove, vocab
from tests.conftest import REPO, SAMPLE, head_lines

STAGES = ["vocab", "encode", "cooccur", "glove"]
SETTINGS = [
    "vocab.min_count=2",
    "input.partitions=2",
    "cooccur.shards=2",
    "cooccur.window=3",
    "glove.dim=8",
    "glove.epochs=2",
]
#: The public reader of each stage's output: each refuses an unfinished stage.
READERS: dict[str, Callable[[RunDir], Any]] = {
    "vocab": vocab.read_vocab,
    "encode": encode.corpus_path,
    "cooccur": cooc.verify,  # also checks every shard file against the record
    "glove": glove.model_path,
}


# ------------------------------------------------------------------ the fault injector


class Crash(Exception):  # noqa: N818 (it is what it simulates)
    """The simulated crash: raised by one file-system operation and every one after it."""


@dataclass
class Injector:
    """Counts mutating file-system operations; crashes at one of them, or observes each."""

    root: str
    crash_at: int = 0  # 1-based; 0 = never
    observe: Callable[[], None] | None = None
    ops: list[str] = field(default_factory=list)
    dead: bool = False

    def alive(self) -> None:
        """Raise if the simulated process has crashed already."""
        if self.dead:
            raise Crash("file-system operation after the crash")

    def __call__(self, kind: str, path: str) -> None:
        self.alive()
        self.ops.append(f"{kind} {' -> '.join(map(self.signature, path.split(' -> ')))}")
        if self.observe is not None:
            self.observe()
        if len(self.ops) == self.crash_at:
            self.dead = True
            raise Crash(f"injected crash at operation {self.crash_at}: {self.ops[-1]}")

    def signature(self, path: str) -> str:
        """``path`` relative to the run directory, random suffixes replaced by ``*``."""
        rel = path[len(self.root) :] if path.startswith(self.root) else path
        return re.sub(r"[0-9a-f]{12}", "*", rel)


class _Stream(io.RawIOBase):
    """An output stream whose every write is an operation: half the bytes, then the check."""

    def __init__(self, real: pa.NativeFile, inject: Injector, path: str) -> None:
        super().__init__()
        self.real, self.inject, self.path = real, inject, path

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        half = len(view) // 2
        self.inject.alive()
        self.real.write(view[:half])  # a crash now leaves a torn file behind
        self.inject("write", self.path)
        self.real.write(view[half:])
        return len(view)

    def tell(self) -> int:
        return self.real.tell()

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def close(self) -> None:
        if not self.real.closed:
            self.real.close()
        super().close()


class _FaultyFS(pafs.LocalFileSystem):
    """pyarrow's local file system with an :class:`Injector` before every mutating call."""

    inject: Injector

    def create_dir(self, path, **kw):
        self.inject("mkdir", path)
        return super().create_dir(path, **kw)

    def delete_dir(self, path):
        self.inject("rmdir", path)
        return super().delete_dir(path)

    def delete_dir_contents(self, path, **kw):
        self.inject("rmdir-contents", path)
        return super().delete_dir_contents(path, **kw)

    def delete_file(self, path):
        self.inject("rm", path)
        return super().delete_file(path)

    def move(self, src, dest):
        self.inject("mv", f"{src} -> {dest}")
        return super().move(src, dest)

    def copy_file(self, src, dest):
        self.inject("cp", f"{src} -> {dest}")
        return super().copy_file(src, dest)

    def open_output_stream(self, path, *args, **kw):
        self.inject("create", path)
        real = super().open_output_stream(path, *args, **kw)
        return pa.PythonFile(_Stream(real, self.inject, path), mode="w")

    def open_append_stream(self, path, *args, **kw):
        self.inject("append", path)
        real = super().open_append_stream(path, *args, **kw)
        return pa.PythonFile(_Stream(real, self.inject, path), mode="w")


def install(monkeypatch: pytest.MonkeyPatch, inject: Injector) -> None:
    """Route the driver's ``fsutil.resolve`` (every run-path access goes through it)."""
    real = fsutil.resolve

    def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
        fs, path = real(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            fs = _FaultyFS()
            fs.inject = inject
        return fs, path

    monkeypatch.setattr(fsutil, "resolve", resolve)


# ------------------------------------------------------------------ outputs and the invariant


def _files(run: RunDir, stage: str) -> list[str]:
    root = run.path(stage_dir(stage))
    _, base = fsutil.resolve(root)
    return [p[len(base) + 1 :] for p, _ in fsutil.list_files(root)]


def _content(uri: str) -> Any:
    """A file's content in a comparable form: Parquet as a table, JSON parsed, else bytes."""
    data = fsutil.read_bytes(uri)
    if uri.endswith(".parquet"):
        return pq.read_table(pa.BufferReader(data))
    if uri.endswith(".json"):
        return json.loads(data)  # timings differ between runs: complete is enough
    return data


def outputs(run: RunDir, stage: str) -> dict[str, Any]:
    """Every file of a finished stage's directory, read back (its reader must accept it)."""
    READERS[stage](run)
    return {f: _content(run.path(stage_dir(stage), f)) for f in _files(run, stage)}


def same_outputs(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """File names equal, Parquet contents equal, JSON complete, other bytes equal."""
    assert sorted(got) == sorted(want), where
    for name, value in want.items():
        if isinstance(value, pa.Table):
            assert got[name].equals(value), f"{where}/{name}"
        elif not isinstance(value, dict):
            assert got[name] == value, f"{where}/{name}"


@dataclass
class Reference:
    """An undisturbed run: config, outputs, records and the state before each stage."""

    cfg: Any
    root: Path
    outputs: dict[str, dict[str, Any]]
    records: dict[str, dict[str, Any]]
    before: dict[str, Path]  # copy of the run directory before the stage ran
    ops: dict[str, list[str]]  # the stage's operations (from `before`, the others skip)


def check_invariant(run: RunDir, ref: Reference) -> dict[str, dict[str, Any]]:
    """A stage with a record has the reference's complete output; one without is refused.

    Returns the records present.
    """
    records = run.manifest()["stages"]
    for stage in STAGES:
        rec = records.get(stage)
        if rec is None:
            with pytest.raises(StageNotFinishedError):
                run.require(stage)
            with pytest.raises(StageNotFinishedError):
                READERS[stage](run)
            continue
        assert rec["fingerprint"] == ref.records[stage]["fingerprint"], stage
        same_outputs(outputs(run, stage), ref.outputs[stage], run.path(stage_dir(stage)))
    return records


def upto(stage: str) -> list[str]:
    """The pipeline up to and including ``stage``."""
    return STAGES[: STAGES.index(stage) + 1]


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("atomicity")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(head_lines(SAMPLE, 300)) + "\n")
    cfg = load_config(None, [f"input.path={corpus}", *SETTINGS])
    run = RunDir(str(root / "reference"))
    before, ops = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        for stage in STAGES:
            before[stage] = root / f"before-{stage}"
            if fsutil.exists(run.uri):
                shutil.copytree(run.uri, before[stage])
            else:
                before[stage].mkdir()
            inject = Injector(run.uri)
            install(mp, inject)
            run_stages([stage], cfg, run, spark=spark)
            ops[stage] = inject.ops  # a run of upto(stage) from `before` skips the others
    outs = {s: outputs(run, s) for s in STAGES}
    return Reference(cfg, root, outs, run.manifest()["stages"], before, ops)


# ------------------------------------------------------------------ in-process tests


def test_no_moment_shows_an_unfinished_stage_as_finished(spark, reference, tmp_path, monkeypatch):
    """The invariant holds before every driver operation of a whole run (and mid-write)."""
    run = RunDir(str(tmp_path / "run"))
    seen: dict[str, dict[str, Any]] = {}

    def observe() -> None:
        records = check_invariant(run, reference)
        for stage, rec in seen.items():  # a record, once written, stays as it is
            assert records.get(stage) == rec, stage
        seen.update(records)

    inject = Injector(run.uri, observe=observe)
    install(monkeypatch, inject)
    run_stages(STAGES, reference.cfg, run, spark=spark)
    monkeypatch.undo()
    assert {op for s in STAGES for op in reference.ops[s]} <= set(inject.ops)
    assert set(check_invariant(run, reference)) == set(STAGES)


def _occurrences(ops: list[str]) -> list[tuple[str, int]]:
    """Each operation with the number of identical ones before it: names it within a run."""
    seen: dict[str, int] = {}
    out = []
    for op in ops:
        out.append((op, seen.get(op, 0)))
        seen[op] = seen.get(op, 0) + 1
    return out


def crash_run(
    spark, ref: Reference, run: RunDir, stage: str, k: int, resume: bool = False
) -> tuple[str, int] | None:
    """Run the pipeline up to ``stage``, crashing at its k-th operation.

    Returns the operation it crashed at, or None when the run finished first. Complete
    stages must be skipped: their records stay exactly as they were.
    """
    records = run.manifest()["stages"]
    inject = Injector(run.uri, crash_at=k)
    with pytest.MonkeyPatch.context() as mp:
        install(mp, inject)
        try:
            run_stages(upto(stage), ref.cfg, run, resume=resume, spark=spark)
        except Crash:
            assert inject.dead
        else:
            assert not inject.dead, "a crash was swallowed"
    after = check_invariant(run, ref)
    for s, rec in records.items():
        assert after.get(s) == rec, f"{s} was re-run although complete"
    return _occurrences(inject.ops)[-1] if inject.dead else None


def no_leftovers(run: RunDir) -> None:
    """Nothing temporary is left once a run finished: no stage attempt, no checkpoint."""
    for sub in ("_tmp", "_checkpoints"):
        where = Path(run.uri, sub)
        assert not where.exists() or not list(where.iterdir()), sorted(where.rglob("*"))


@pytest.mark.parametrize(("stage", "sample"), [("encode", 0), ("cooccur", 0), ("vocab", 3)])
def test_crashes_in_a_stage_then_a_clean_run(spark, reference, tmp_path, stage, sample):
    """Crash at operation 1, 2, ... of ``stage`` (``sample`` > 0: at that many seeded random
    ones), each run continuing the previous one's crashed state, until a run gets
    through. With every operation, each one of an undisturbed run's sequence must have
    been a crash point (a continuing run may do a few more: the clean-up of leftovers)."""
    run = RunDir(str(tmp_path / "run"))
    shutil.copytree(reference.before[stage], run.uri)
    n = len(reference.ops[stage])
    if sample:
        rng = np.random.default_rng(7)
        ks = [*sorted(rng.choice(np.arange(1, n + 1), sample, replace=False).tolist()), 0]
    else:
        ks = list(range(1, 3 * n))
    crashed: set[tuple[str, int]] = set()
    for k in ks:
        op = crash_run(spark, reference, run, stage, k)
        if op is None:
            break
        crashed.add(op)
    assert op is None, "the last run must get through"
    if not sample:
        assert not set(_occurrences(reference.ops[stage])) - crashed
    assert set(run.manifest()["stages"]) == set(upto(stage))
    no_leftovers(run)


def test_crashes_in_training_or_its_commit(spark, reference, tmp_path):
    """GloVe: crashes at seeded random operations (checkpoints, output, commit; the last
    two always), each from the state before glove, then one undisturbed run (with and
    without --resume) must skip what is complete and produce the reference's output."""
    ops = _occurrences(reference.ops["glove"])
    n = len(ops)
    rng = np.random.default_rng(10)
    ks = sorted({*rng.choice(np.arange(1, n - 1), 3, replace=False).tolist(), n - 1, n})
    for i, k in enumerate(ks):
        run = RunDir(str(tmp_path / f"crash-{k}"))
        shutil.copytree(reference.before["glove"], run.uri)
        assert crash_run(spark, reference, run, "glove", k) == ops[k - 1]
        records = run.manifest()["stages"]
        results = run_stages(STAGES, reference.cfg, run, resume=i % 2 == 1, spark=spark)
        assert {r.stage for r in results if r.skipped} == set(records)
        after = check_invariant(run, reference)
        assert set(after) == set(STAGES)
        assert all(after[s] == rec for s, rec in records.items())
        if "glove" in records:  # it crashed after its commit, deleting the checkpoints,
            shutil.rmtree(Path(run.uri, "_checkpoints"))  # which are harmless, and kept
        no_leftovers(run)


# ------------------------------------------------------------------ SIGKILL (slow)

CLI_SETTINGS = ["spark.master=local[2]", "spark.conf.spark.ui.enabled=false"]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (PySpark's worker daemon has a process group of its own)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group (driver and JVM), then whatever it left running."""
    below = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The worker daemon exits when the JVM's pipe closes; it must not write after that.
    deadline = time.monotonic() + 10
    for pid in below:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start(corpus: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "embedpipe.cli",
        "run",
        "--input",
        str(corpus),
        "--out",
        str(out),
        "--stages",
        ",".join(STAGES),
        *extra,
    ]
    for s in [*SETTINGS, *CLI_SETTINGS]:
        args += ["--set", s]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    with open(log, "wb") as f:  # the child keeps its own descriptor
        return subprocess.Popen(
            args, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
        )


def _kill_during(
    proc: subprocess.Popen, log: Path, run: RunDir, stage: str, seconds: float
) -> bool:
    """SIGKILL ``proc`` ``seconds`` after it starts ``stage``; False when it exits first.

    A stage starts once the one before it has a record and this process has logged it
    (run or skipped); the first once the Spark session is up.
    """
    prev = upto(stage)[-2] if stage != STAGES[0] else None
    deadline = time.monotonic() + 900
    while proc.poll() is None:
        if time.monotonic() > deadline:
            _kill(proc)
            raise AssertionError(f"{stage} did not start in 900 s: {log.read_text()[-3000:]}")
        text = log.read_text(errors="replace")
        started = "session up" in text and (
            prev is None
            or (
                re.search(rf"INFO {prev}\s", text) is not None
                and fsutil.exists(run.path("manifest.json"))
                and prev in run.manifest()["stages"]
            )
        )
        if started:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return True
            break
        time.sleep(0.05)
    assert proc.wait() == 0, log.read_text()[-3000:]
    return False


@pytest.mark.slow
def test_sigkill_at_random_times(tmp_path):
    """``embedpipe run`` SIGKILLed (whole process group) at seeded random points of its
    stages, each run continuing the killed one's directory; after every kill the
    invariant holds, and the run that gets through skips the complete stages and equals
    an undisturbed run."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(head_lines(SAMPLE, 300)) + "\n")
    proc = _start(corpus, tmp_path / "reference", tmp_path / "reference.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    ref_run = RunDir(str(tmp_path / "reference"))
    ref = Reference(
        None,
        tmp_path,
        {s: outputs(ref_run, s) for s in STAGES},
        ref_run.manifest()["stages"],
        {},
        {},
    )
    seconds = {s: ref.records[s]["timings"]["seconds"] for s in STAGES}

    rng = np.random.default_rng(2024)
    # Every stage is aimed at once, in pipeline order, then two at random; a kill lands a
    # seeded random fraction of the stage's undisturbed duration after the stage starts.
    aims = [*STAGES, *map(str, rng.choice(STAGES, 2))]
    attempt, interrupted = 0, []
    run = RunDir(str(tmp_path / f"run-{attempt}"))
    for i, aim in enumerate(aims):
        records = check_invariant(run, ref) if fsutil.exists(run.uri) else {}
        if set(records) == set(STAGES):  # the last run got through: a new directory
            attempt += 1
            run, records = RunDir(str(tmp_path / f"run-{attempt}")), {}
        unfinished = [s for s in STAGES if s not in records]
        stage = aim if aim in unfinished else unfinished[0]
        log = tmp_path / f"kill-{i}.log"
        proc = _start(corpus, Path(run.uri), log, *(["--resume"] if i % 2 else []))
        killed = _kill_during(proc, log, run, stage, rng.uniform(0.0, 1.0) * seconds[stage])
        after = check_invariant(run, ref)
        assert all(after.get(s) == rec for s, rec in records.items()), log.read_text()[-3000:]
        if killed:
            interrupted += [s for s in STAGES if s not in after][:1]
        else:
            assert set(after) == set(STAGES)
    assert interrupted, "no kill interrupted an unfinished stage"

    records = check_invariant(run, ref) if fsutil.exists(run.uri) else {}
    log = tmp_path / "last.log"
    proc = _start(corpus, Path(run.uri), log, "--resume")
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    after = check_invariant(run, ref)
    assert set(after) == set(STAGES)
    assert all(after[s] == rec for s, rec in records.items())
    text = log.read_text()
    for s in records:  # the CLI logs every skip
        assert re.search(rf"{s}\s+skipped", text), text[-3000:]
    no_leftovers(run)
