"""Run directory: commit protocol, skip logic, version checks."""

from __future__ import annotations

import json

import pytest

from embedpipe import fsutil
from embedpipe.errors import ArtifactVersionError, StageNotFinishedError
from embedpipe.runs import RunDir, stage_fingerprint


def test_commit_then_current(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    fp = stage_fingerprint(run, "vocab", "h1", ["f"])
    assert not run.is_current("vocab", fp)
    tmp = run.begin("vocab")
    fsutil.write_text_atomic(fsutil.join(tmp, "x.txt"), "hello")
    rec = run.commit("vocab", tmp, {"fingerprint": fp, "counts": {"n": 1}})
    assert rec["stage"] == "vocab" and "versions" in rec
    assert run.is_current("vocab", fp)
    assert fsutil.read_text(run.path("vocab", "x.txt")) == "hello"
    assert not run.is_current("vocab", stage_fingerprint(run, "vocab", "h2", ["f"]))


def test_unfinished_stage_is_never_read(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    tmp = run.begin("vocab")
    fsutil.write_text_atomic(fsutil.join(tmp, "x.txt"), "half")
    with pytest.raises(StageNotFinishedError, match="stage 'vocab' has not finished"):
        run.require("vocab")
    # A stage directory without its manifest record is not finished either.
    fsutil.makedirs(run.path("vocab"))
    with pytest.raises(StageNotFinishedError):
        run.require("vocab")


def test_a_stage_built_from_an_older_upstream_is_refused(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    run.commit("vocab", run.begin("vocab"), {"fingerprint": "v1", "inputs": {"files": []}})
    run.commit("encode", run.begin("encode"),
               {"fingerprint": "e1", "inputs": {"files": [], "vocab": "v1", "reader": "direct"}})
    assert run.require("encode")["fingerprint"] == "e1"
    # vocab re-run alone (e.g. --force with another min_count): the corpus is stale.
    run.commit("vocab", run.begin("vocab"), {"fingerprint": "v2", "inputs": {"files": []}})
    with pytest.raises(StageNotFinishedError, match="built from an older 'vocab'"):
        run.require("encode")
    assert run.require("vocab")["fingerprint"] == "v2"
    run.commit("encode", run.begin("encode"),
               {"fingerprint": "e2", "inputs": {"files": [], "vocab": "v2", "reader": "direct"}})
    assert run.require("encode")["fingerprint"] == "e2"


def test_downstream_fingerprint_follows_upstream(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    for fp in ("a", "b"):
        tmp = run.begin("vocab")
        run.commit("vocab", tmp, {"fingerprint": fp})
        if fp == "a":
            first = stage_fingerprint(run, "encode", "h")
    assert stage_fingerprint(run, "encode", "h") != first


def test_incompatible_version_is_refused(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    fsutil.write_text_atomic(run.path("manifest.json"),
                             json.dumps({"format_version": 999, "stages": {}}))
    with pytest.raises(ArtifactVersionError, match="format_version 999"):
        run.manifest()


def test_begin_removes_stale_attempts(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    old = run.begin("encode")
    new = run.begin("encode")
    assert not fsutil.exists(old) and fsutil.exists(new)


def test_failed_atomic_write_leaves_old_file_and_no_stray(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    fsutil.write_text_atomic(str(target), "old")

    real_resolve = fsutil.resolve

    class FailingMove:
        """The real filesystem, except that the final rename fails (e.g. a full disk)."""

        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dst):
            raise OSError("disk full")

    def resolve(uri):
        fs, path = real_resolve(uri)
        return FailingMove(fs), path

    monkeypatch.setattr(fsutil, "resolve", resolve)
    with pytest.raises(OSError, match="disk full"):
        fsutil.write_text_atomic(str(target), "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
