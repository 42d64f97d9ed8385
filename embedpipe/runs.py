"""The run directory, its manifest, and atomic stage commits.

A run directory holds one sub-directory per finished stage plus ``manifest.json``
with one record per finished stage. The manifest record is the commit point: a
stage directory without a matching record is never read as finished.

Commit protocol (driver only):

1. the stage writes everything into ``_tmp/<stage>-<uuid>/``;
2. the old record for the stage is removed from the manifest (so a crash from here
   on leaves the stage unfinished, never half-finished);
3. the old stage directory is deleted and the temporary one renamed into place;
4. the new record is written (manifest rewritten atomically by rename).

A record's ``fingerprint`` hashes the stage's configuration tables, its input
fingerprint (files, sizes, modification times) and its upstream stages'
fingerprints, so changing a setting re-runs that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from embedpipe import FORMAT_VERSION, __version__, fsutil
from embedpipe.errors import ArtifactVersionError, StageNotFinishedError
from embedpipe.log import logger

MANIFEST = "manifest.json"

#: What each stage reads from earlier stages (the order ``embedpipe run`` follows).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "vocab": (),
    "encode": ("vocab",),
    "cooccur": ("vocab", "encode"),
    "glove": ("vocab", "cooccur"),
    "svd": ("vocab", "cooccur"),
    "word2vec": ("vocab", "encode"),
}


#: Output directory of each stage inside the run directory (DESIGN.md layout).
STAGE_DIRS: dict[str, str] = {"encode": "corpus", "cooccur": "cooc", "evaluate": "reports"}


def stage_dir(stage: str) -> str:
    """Directory name of a stage's output (``encode`` writes ``corpus/``)."""
    return STAGE_DIRS.get(stage, stage)


def versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact."""
    out = {"embedpipe": __version__, "python": platform.python_version()}
    for mod in ("numpy", "pyarrow", "pyspark", "scipy", "numba"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing optional library is not an error here
            continue
    return out


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class StageResult:
    """What a stage did: its manifest record, or that it was skipped."""

    stage: str
    skipped: bool
    record: dict[str, Any]
    seconds: float = 0.0
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class RunDir:
    """A run directory on any filesystem ``embedpipe.fsutil`` understands."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    def path(self, *parts: str) -> str:
        """URI of a path inside the run directory."""
        return fsutil.join(self.uri, *parts)

    def spark_path(self, *parts: str) -> str:
        """The same path as Spark's Hadoop FS wants it."""
        return fsutil.to_spark_uri(self.path(*parts))

    # -- manifest ---------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one for a new run directory."""
        uri = self.path(MANIFEST)
        if not fsutil.exists(uri):
            return {"format_version": FORMAT_VERSION, "stages": {}}
        try:
            data = json.loads(fsutil.read_text(uri))
        except json.JSONDecodeError as e:
            raise ArtifactVersionError(
                f"{uri}: manifest is not valid JSON ({e}); delete the run directory or use --out"
            ) from e
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactVersionError(
                f"{uri}: run directory has format_version {version!r}, this embedpipe "
                f"{__version__} reads {FORMAT_VERSION}; use a new --out directory"
            )
        return data

    def _write_manifest(self, data: dict[str, Any]) -> None:
        fsutil.write_text_atomic(self.path(MANIFEST), json.dumps(data, indent=2, sort_keys=True))

    def record(self, stage: str) -> dict[str, Any] | None:
        """The manifest record of a finished stage, or None."""
        return self.manifest()["stages"].get(stage)

    def require(self, stage: str) -> dict[str, Any]:
        """The record of a finished upstream stage, or a clear error saying what to run.

        Also refused: a stage built from an upstream output that has been rebuilt since
        (its record names the upstream fingerprints it read). ``embedpipe run`` rebuilds
        such a stage by itself (its fingerprint covers them); this catches a single
        stage run after an upstream one changed, e.g. ``cooccur`` after ``vocab
        --force`` with another ``min_count``, which would pair new ids with an old corpus.
        """
        # One read of the manifest: the stage and its upstreams from the same snapshot.
        stages = self.manifest()["stages"]
        rec = stages.get(stage)
        if rec is None or not fsutil.exists(self.path(stage_dir(stage))):
            raise StageNotFinishedError(
                f"{self.path(stage_dir(stage))}: stage '{stage}' has not finished in this run; "
                f"run `embedpipe {stage} --out {self.uri}` (or `embedpipe run`) first"
            )
        for up, fp in (rec.get("inputs") or {}).items():
            if up not in UPSTREAM or not isinstance(fp, str):
                continue  # not an upstream stage's fingerprint (files, reader, shards, ...)
            cur = stages.get(up)
            if cur is not None and cur.get("fingerprint") != fp:
                raise StageNotFinishedError(
                    f"{self.path(stage_dir(stage))}: stage '{stage}' was built from an older "
                    f"'{up}' output ({up} has been re-run since); run `embedpipe {stage} --out "
                    f"{self.uri}` (or `embedpipe run`) to rebuild it"
                )
        return rec

    def is_current(self, stage: str, fp: str) -> bool:
        """True when the stage finished with this fingerprint and its output exists."""
        rec = self.record(stage)
        return bool(
            rec and rec.get("fingerprint") == fp and fsutil.exists(self.path(stage_dir(stage)))
        )

    # -- commit -----------------------------------------------------------------
    def begin(self, stage: str) -> str:
        """Create and return a fresh temporary directory for a stage's output."""
        tmp_root = self.path("_tmp")
        for path, _ in _list_dirs(tmp_root):
            if path.rsplit("/", 1)[-1].startswith(f"{stage}-"):
                fsutil.remove(path)  # left over by an interrupted attempt
        tmp = fsutil.join(tmp_root, f"{stage}-{uuid.uuid4().hex[:12]}")
        fsutil.makedirs(tmp)
        return tmp

    def commit(self, stage: str, tmp_uri: str, record: dict[str, Any]) -> dict[str, Any]:
        """Move ``tmp_uri`` into place as the stage's output and record it."""
        data = self.manifest()
        if data["stages"].pop(stage, None) is not None:
            self._write_manifest(data)
        final = self.path(stage_dir(stage))
        fsutil.remove(final)
        fsutil.move(tmp_uri, final)
        full = {
            "stage": stage,
            "format_version": FORMAT_VERSION,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
            **record,
        }
        data = self.manifest()
        data["stages"][stage] = full
        self._write_manifest(data)
        return full

    def forget(self, stage: str) -> None:
        """Remove a stage's record (its output is then unfinished)."""
        data = self.manifest()
        if data["stages"].pop(stage, None) is not None:
            self._write_manifest(data)


def _list_dirs(uri: str) -> list[tuple[str, int]]:
    import pyarrow.fs as pafs

    fs, path = fsutil.resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    prefix = uri[: len(uri) - len(path)] if uri.endswith(path) else ""
    return [(prefix + i.path, 0) for i in infos if i.type == pafs.FileType.Directory]


def stage_fingerprint(run: RunDir, stage: str, config_hash: str, inputs: Any = None) -> str:
    """Fingerprint of a stage from its config hash, inputs and upstream records."""
    upstream = {u: run.require(u)["fingerprint"] for u in UPSTREAM.get(stage, ())}
    return fingerprint(stage, FORMAT_VERSION, config_hash, inputs, upstream)


def log_skip(stage: str, run: RunDir) -> StageResult:
    """Log and return the result of a stage that is already current."""
    rec = run.record(stage) or {}
    logger.info("%-8s skipped: already done with this configuration (%s); --force re-runs it",
                stage, run.path(stage_dir(stage)))
    return StageResult(stage, True, rec, summary=rec.get("summary", ""))
