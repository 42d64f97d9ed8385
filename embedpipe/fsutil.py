"""Small-file I/O on Hadoop-style URIs through ``pyarrow.fs``.

Run directories may live on a local disk (plain path or ``file://``), HDFS
(``hdfs://``) or an object store (``s3://``, ``s3a://``, ``gs://``). Parquet
datasets are read and written by Spark; everything small (manifest, model
settings, vocabulary, reports) goes through here so that no code path uses
plain ``open()`` on a run path.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from embedpipe.errors import InputError

# Hadoop's s3a connector and pyarrow's S3 filesystem address the same buckets.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def _split(uri: str) -> tuple[str, str]:
    """Return (scheme, rest) with local paths mapped to absolute ``file`` paths."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # 1 letter: a Windows drive
        path = parsed.path if parsed.scheme == "file" else uri
        return "file", posixpath.abspath(path) if not path.startswith("/") else path
    return parsed.scheme, uri


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem and the path inside it for ``uri``."""
    scheme, rest = _split(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), rest
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    parsed = urlparse(rest)
    fs, path = pafs.FileSystem.from_uri(f"{scheme}://{parsed.netloc}{parsed.path}")
    return fs, path


def to_spark_uri(uri: str) -> str:
    """Return ``uri`` in the form Spark's Hadoop FS expects (``file:`` for local paths)."""
    scheme, rest = _split(uri)
    return "file://" + rest if scheme == "file" else rest


def join(uri: str, *parts: str) -> str:
    """Join path components onto a URI or local path."""
    return posixpath.join(uri.rstrip("/"), *parts)


def exists(uri: str) -> bool:
    """True when a file or directory exists at ``uri``."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    """True when ``uri`` is a directory."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(uri: str) -> bytes:
    """Read a whole (small) file."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as e:
        raise InputError(f"{uri}: file not found") from e


def read_text(uri: str) -> str:
    """Read a whole (small) UTF-8 text file."""
    return read_bytes(uri).decode("utf-8")


@contextlib.contextmanager
def open_output_atomic(uri: str, compression: str | None = None) -> Iterator[Any]:
    """Stream into a sibling temporary file that is renamed over ``uri`` on success.

    Readers see the old file or the new one, never half (rename is atomic on local disks
    and HDFS; on object stores the upload completes as one object). On any failure (full
    disk, interrupt) the temporary file is removed and the target left as it was; only a
    killed process can leave a ``<name>.tmp-<hex>`` sibling behind.
    """
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp, compression=compression) as f:
            yield f
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
        raise


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically (see :func:`open_output_atomic`)."""
    with open_output_atomic(uri) as f:
        f.write(data)


def write_text_atomic(uri: str, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(uri, text.encode("utf-8"))


def makedirs(uri: str) -> None:
    """Create a directory and its parents."""
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def remove(uri: str) -> None:
    """Remove a file or a directory tree; no error when absent."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type != pafs.FileType.NotFound:
        fs.delete_file(path)


def move(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (same filesystem)."""
    fs, spath = resolve(src)
    _, dpath = resolve(dst)
    fs.create_dir(posixpath.dirname(dpath), recursive=True)
    fs.move(spath, dpath)


def list_files(uri: str, recursive: bool = True) -> list[tuple[str, int]]:
    """List regular files under ``uri`` as (path-in-fs, size), sorted by path."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    return sorted((i.path, i.size) for i in infos if i.type == pafs.FileType.File)
