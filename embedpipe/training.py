"""What every iterative trainer needs around its kernel: checkpoints, epoch log lines, divergence.

Used by the GloVe stage (and meant for word2vec): nothing here knows a model.

Checkpoints are directories of ``.npy`` files (one per named array, written with
``np.save`` through :mod:`embedpipe.fsutil`, read back with ``allow_pickle=False``)
plus ``meta.json``; a file ``LATEST`` names the newest complete one. Commit order:
arrays, then ``meta.json`` (with their SHA-256), then ``LATEST`` (atomic rename), then
the older checkpoint is deleted. A crash at any point therefore leaves ``LATEST``
naming a complete checkpoint, or no ``LATEST`` at all. Checkpoints live at a stable
path outside the stage's temporary directory (which ``RunDir.begin`` wipes), and carry
a fingerprint of everything the trained state depends on, so ``--resume`` never
continues from a checkpoint of another configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedpipe import FORMAT_VERSION, fsutil
from embedpipe.errors import ArtifactVersionError, EmbedpipeError, TrainingDivergedError
from embedpipe.log import human_count, human_seconds

LATEST = "LATEST"
META = "meta.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the state after ``epoch`` completed epochs."""

    epoch: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _epoch_dir(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def save_checkpoint(
    root: str,
    epoch: int,
    arrays: Mapping[str, np.ndarray],
    fingerprint: str,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Write the state after ``epoch`` epochs under ``root`` and make it the latest one.

    ``fingerprint`` identifies what the state depends on (config, inputs); ``meta``
    is any JSON-able extra (losses so far, timings). Returns the checkpoint's URI.
    Costs one write of every array (``sum(a.nbytes)``) per call.
    """
    name = _epoch_dir(epoch)
    where = fsutil.join(root, name)
    fsutil.remove(where)  # a half-written attempt at the same epoch
    files = {}
    for key, a in arrays.items():
        data = _npy_bytes(a)
        fsutil.write_bytes_atomic(fsutil.join(where, f"{key}.npy"), data)
        files[key] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body = {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "fingerprint": fingerprint,
        "arrays": files,
        "meta": dict(meta or {}),
    }
    fsutil.write_text_atomic(fsutil.join(where, META), json.dumps(body, indent=1, sort_keys=True))
    previous = latest_info(root)
    fsutil.write_text_atomic(fsutil.join(root, LATEST), json.dumps({"dir": name, "epoch": epoch}))
    if previous is not None and previous.get("dir") != name:
        fsutil.remove(fsutil.join(root, previous["dir"]))
    return where


def latest_info(root: str) -> dict[str, Any] | None:
    """``{"dir", "epoch", "fingerprint"}`` of the latest complete checkpoint, or None."""
    uri = fsutil.join(root, LATEST)
    if not fsutil.exists(uri):
        return None
    try:
        info = json.loads(fsutil.read_text(uri))
        meta = json.loads(fsutil.read_text(fsutil.join(root, info["dir"], META)))
    except (ValueError, KeyError, OSError, EmbedpipeError):  # unreadable: no checkpoint
        return None
    return {"dir": info["dir"], "epoch": int(meta["epoch"]), "fingerprint": meta["fingerprint"]}


def load_checkpoint(root: str, fingerprint: str) -> Checkpoint | None:
    """The latest checkpoint under ``root`` if its fingerprint is ``fingerprint``, else None.

    Raises :class:`ArtifactVersionError` when a matching checkpoint is damaged
    (checksum or shape mismatch), naming the directory to delete.
    """
    info = latest_info(root)
    if info is None or info["fingerprint"] != fingerprint:
        return None
    where = fsutil.join(root, info["dir"])
    body = json.loads(fsutil.read_text(fsutil.join(where, META)))
    if body.get("format_version") != FORMAT_VERSION:
        return None
    arrays = {}
    for key, spec in body["arrays"].items():
        data = fsutil.read_bytes(fsutil.join(where, f"{key}.npy"))
        if hashlib.sha256(data).hexdigest() != spec["sha256"]:
            raise ArtifactVersionError(
                f"{where}/{key}.npy: checkpoint file is damaged (checksum mismatch); "
                f"delete {root} and re-run without --resume"
            )
        arrays[key] = np.load(io.BytesIO(data), allow_pickle=False)
    return Checkpoint(int(body["epoch"]), arrays, body.get("meta", {}))


def clear_checkpoints(root: str) -> None:
    """Delete every checkpoint under ``root`` (after the stage committed its output)."""
    fsutil.remove(root)


def eta_seconds(epoch_seconds: Sequence[float], remaining: int) -> float:
    """Time left: the mean of the epochs timed so far times the epochs remaining."""
    if not epoch_seconds or remaining <= 0:
        return 0.0
    return float(np.mean(epoch_seconds)) * remaining


def epoch_line(
    epoch: int,
    total: int,
    loss: float,
    items: int,
    seconds: float,
    exchange_seconds: float,
    eta: float,
    unit: str = "entries",
) -> str:
    """The one INFO line of an epoch: ``epoch 3/25 loss 0.0712 1.2M entries/s ... ETA 10m20s``."""
    rate = items / seconds if seconds > 0 else 0.0
    return (
        f"epoch {epoch}/{total} loss {loss:.6g} {human_count(rate)} {unit}/s "
        f"exchange {exchange_seconds:.2f}s epoch {human_seconds(seconds)} ETA {human_seconds(eta)}"
    )


def check_loss(loss: float, epoch: int, total: int, setting: str, value: float) -> None:
    """Raise :class:`TrainingDivergedError` when ``loss`` is NaN or infinite.

    ``setting``/``value`` name the learning rate to lower (e.g. ``glove.eta``, 0.05).
    """
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}/{total} (loss {loss}); lower {setting} "
            f"(now {value:g}, try {value / 2:g}) and re-run with --force; nothing was written"
        )
