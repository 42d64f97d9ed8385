"""Reading the co-occurrence matrix ``cooc/`` written by the ``cooccur`` stage.

Layout (the contract in DESIGN.md)::

    runs/NAME/cooc/shard=k/part-00000.parquet      k = 0 .. S-1, one file per shard
        i:int32, j:int32, x:float32                sorted by (i, j), each (i, j) once

Shard ``k`` holds the rows ``i`` with ``i mod S == k``, i.e. the global ids
``k, k + S, k + 2S, ...``. :func:`read_shard` returns them as a CSR matrix whose
local row ``r`` is global row ``r * S + k`` (``i // S`` is the local row; see
:func:`shard_rows`) and whose columns are all ``V`` ids. The files are plain
hive-partitioned Parquet: pyarrow (``pyarrow.dataset.dataset(path, partitioning="hive")``),
pandas and duckdb (``read_parquet('cooc/*/*.parquet', hive_partitioning = true)``) read
them without embedpipe.

Every reader checks the manifest record first, so a ``cooc/`` directory whose stage
has not committed is never read, and checks each file against the record (size,
row count, footer metadata), so a missing, truncated or foreign shard file is a
one-line error naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedpipe import FORMAT_VERSION, fsutil, schemas
from embedpipe.errors import ArtifactVersionError, InputError, ResourceError
from embedpipe.runs import RunDir

#: The one file of every shard directory.
SHARD_FILE = "part-00000.parquet"
#: Parquet key-value metadata key holding the shard's JSON description.
META_KEY = b"embedpipe.cooc"
#: :func:`read_matrix` refuses matrices with more entries (about 1 GB as CSR).
MAX_MATRIX_NNZ = 100_000_000
_NOT_OURS = "was it written by embedpipe cooccur? re-run the stage with --force"


def shard_dir(k: int) -> str:
    """Directory name of shard ``k`` (hive partitioning: ``shard=k``)."""
    return f"shard={k}"


def shard_file(k: int) -> str:
    """Path of shard ``k``'s file relative to ``cooc/``."""
    return f"{shard_dir(k)}/{SHARD_FILE}"


def shard_rows(vocab_size: int, num_shards: int, k: int) -> np.ndarray:
    """Global row ids of shard ``k``'s local rows: ``k, k + S, ...`` below ``vocab_size``."""
    return np.arange(k, vocab_size, num_shards, dtype=np.int32)


def shard_metadata(
    vocab_size: int, num_shards: int, k: int, window: int, weighting: str, nnz: int
) -> dict[bytes, bytes]:
    """Footer metadata written into shard ``k``'s file (checked by the readers)."""
    desc = {
        "format_version": FORMAT_VERSION,
        "vocab_size": vocab_size,
        "shards": num_shards,
        "shard": k,
        "window": window,
        "weighting": weighting,
        "nnz": nnz,
    }
    return {META_KEY: json.dumps(desc, sort_keys=True).encode()}


@dataclass(frozen=True)
class CoocInfo:
    """What the manifest records about a finished ``cooc/``."""

    vocab_size: int
    shards: int
    window: int
    weighting: str
    nnz: int
    sum_x: float
    shard_nnz: tuple[int, ...]
    shard_bytes: tuple[int, ...]
    record: dict[str, Any]

    def rows(self, k: int) -> np.ndarray:
        """Global row ids of shard ``k`` (local row ``r`` is ``rows(k)[r]``)."""
        return shard_rows(self.vocab_size, self.shards, k)


def info(run: RunDir) -> CoocInfo:
    """The manifest's description of a finished ``cooc/`` (raises if cooccur has not committed)."""
    rec = run.require("cooccur")
    c = rec.get("counts", {})
    try:
        return CoocInfo(
            vocab_size=int(c["vocab_size"]),
            shards=int(c["shards"]),
            window=int(c["window"]),
            weighting=str(c["weighting"]),
            nnz=int(c["nnz"]),
            sum_x=float(c["sum_x"]),
            shard_nnz=tuple(int(n) for n in c["shard_nnz"]),
            shard_bytes=tuple(int(n) for n in c["shard_bytes"]),
            record=rec,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactVersionError(
            f"{run.path('manifest.json')}: the cooccur record lacks {e}; re-run "
            f"`embedpipe cooccur --force --out {run.uri}`"
        ) from e


def shard_uri(run: RunDir, k: int) -> str:
    """URI of shard ``k``'s file."""
    return run.path("cooc", shard_file(k))


def _rerun(run: RunDir) -> str:
    return f"re-run `embedpipe cooccur --force --out {run.uri}`"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_shard_table(run: RunDir, k: int, meta: CoocInfo | None = None) -> pa.Table:
    """Shard ``k`` as an Arrow table ``i, j, x`` (checked against the manifest)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    meta = meta or info(run)
    if not 0 <= k < meta.shards:
        raise InputError(
            f"shard {k} does not exist: {run.path('cooc')} has shards 0..{meta.shards - 1}"
        )
    uri = shard_uri(run, k)
    fs, path = fsutil.resolve(uri)
    finfo = fs.get_file_info(path)
    if finfo.type != pafs.FileType.File:
        raise InputError(f"{uri}: shard {k} of {meta.shards} is missing; {_rerun(run)}")
    if finfo.size != meta.shard_bytes[k]:
        raise InputError(
            f"{uri}: shard file has {finfo.size} bytes, the manifest recorded "
            f"{meta.shard_bytes[k]} (changed or truncated after cooccur finished); {_rerun(run)}"
        )
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            footer = pf.metadata
            table = pf.read()
    except (pa.ArrowException, OSError) as e:
        raise InputError(
            f"{uri}: shard file is not readable Parquet ({_first_line(e)}); {_rerun(run)}"
        ) from e
    schemas.check(table.schema, schemas.COOC, uri)
    desc = json.loads((footer.metadata or {}).get(META_KEY, b"{}"))
    want = {"vocab_size": meta.vocab_size, "shards": meta.shards, "shard": k}
    if any(desc.get(key) != val for key, val in want.items()):
        raise InputError(
            f"{uri}: file describes { ({key: desc.get(key) for key in want}) }, the manifest "
            f"expects {want} (a file from another run?); {_rerun(run)}"
        )
    if table.num_rows != meta.shard_nnz[k]:
        raise InputError(
            f"{uri}: shard has {table.num_rows} entries, the manifest recorded "
            f"{meta.shard_nnz[k]}; {_rerun(run)}"
        )
    return table.select(["i", "j", "x"])


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return arr.to_numpy(zero_copy_only=False)


def table_to_csr(table: pa.Table, vocab_size: int, num_shards: int, k: int, where: str = "shard"):
    """CSR (local rows ``i // S``, ``V`` columns) of a shard table sorted by (i, j)."""
    import scipy.sparse as sp

    i = _column(table, "i")
    j = _column(table, "j")
    x = _column(table, "x")
    rows = shard_rows(vocab_size, num_shards, k)
    nnz = i.size
    index = np.int32 if nnz < 2**31 else np.int64
    if nnz:
        # O(nnz) checks kept to two cheap passes: i ascending, j inside [0, V). Row
        # pointers then come from binary searches, and "every entry belongs to one of
        # the shard's rows" reduces to the first and last entry of every row range.
        if np.any(i[1:] < i[:-1]):
            raise InputError(f"{where}: entries are not sorted by row; {_NOT_OURS}")
        if j.min() < 0 or j.max() >= vocab_size:
            raise InputError(f"{where}: column ids outside [0, {vocab_size}); {_NOT_OURS}")
        indptr = np.empty(rows.size + 1, index)
        indptr[:-1] = np.searchsorted(i, rows)
        indptr[-1] = nnz
        lo, hi = indptr[:-1], indptr[1:]
        full = hi > lo
        if (
            indptr[0] != 0
            or np.any(i[lo[full]] != rows[full])
            or np.any(i[hi[full] - 1] != rows[full])
        ):
            raise InputError(
                f"{where}: rows outside shard {k} (i mod {num_shards} != {k}) "
                f"or outside [0, {vocab_size}); {_NOT_OURS}"
            )
    else:
        indptr = np.zeros(rows.size + 1, index)
    # copy=False and int32 indices: scipy then only checks the array shapes.
    return sp.csr_matrix(
        (x, j.astype(index, copy=False), indptr), shape=(rows.size, vocab_size), copy=False
    )


def read_shard(run: RunDir, k: int):
    """Shard ``k`` as ``scipy.sparse.csr_matrix`` of shape ``(len(shard_rows), V)``, float32.

    Local row ``r`` is global id ``r * S + k`` (:func:`shard_rows` / ``info(run).rows(k)``);
    column ``j`` is global id ``j``; entries are sorted by column inside each row.
    """
    meta = info(run)
    table = read_shard_table(run, k, meta)
    return table_to_csr(table, meta.vocab_size, meta.shards, k, shard_uri(run, k))


def read_matrix(run: RunDir, max_nnz: int = MAX_MATRIX_NNZ):
    """The whole ``V x V`` matrix as ``scipy.sparse.csr_matrix`` (float32), for small runs.

    Refuses (ResourceError) above ``max_nnz`` entries: read shard by shard instead.
    """
    import scipy.sparse as sp

    meta = info(run)
    if meta.nnz > max_nnz:
        raise ResourceError(
            f"{run.path('cooc')}: {meta.nnz:,} entries exceed read_matrix's limit of "
            f"{max_nnz:,}; read it shard by shard with read_shard(run, k) or pass max_nnz"
        )
    V, S = meta.vocab_size, meta.shards
    parts_i, parts_j, parts_x = [], [], []
    for k in range(S):
        table = read_shard_table(run, k, meta)
        parts_i.append(_column(table, "i"))
        parts_j.append(_column(table, "j"))
        parts_x.append(_column(table, "x"))
    i = np.concatenate(parts_i) if parts_i else np.empty(0, np.int32)
    j = np.concatenate(parts_j) if parts_j else np.empty(0, np.int32)
    x = np.concatenate(parts_x) if parts_x else np.empty(0, np.float32)
    if i.size and (i.min() < 0 or i.max() >= V or j.min() < 0 or j.max() >= V):
        raise InputError(f"{run.path('cooc')}: ids outside [0, {V}); {_rerun(run)}")
    # Rows interleave across shards: a stable sort by row keeps each row's columns sorted.
    order = np.argsort(i, kind="stable")
    index = np.int32 if i.size < 2**31 else np.int64
    indptr = np.zeros(V + 1, index)
    np.cumsum(np.bincount(i, minlength=V), out=indptr[1:])
    return sp.csr_matrix(
        (x[order], j[order].astype(index, copy=False), indptr), shape=(V, V), copy=False
    )


def verify(run: RunDir) -> CoocInfo:
    """Check every shard file's footer against the manifest without reading the data."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    meta = info(run)
    for k in range(meta.shards):
        uri = shard_uri(run, k)
        fs, path = fsutil.resolve(uri)
        finfo = fs.get_file_info(path)
        if finfo.type != pafs.FileType.File:
            raise InputError(f"{uri}: shard {k} of {meta.shards} is missing; {_rerun(run)}")
        if finfo.size != meta.shard_bytes[k]:
            raise InputError(
                f"{uri}: shard file has {finfo.size} bytes, the manifest recorded "
                f"{meta.shard_bytes[k]}; {_rerun(run)}"
            )
        try:
            with fs.open_input_file(path) as f:
                footer = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as e:
            raise InputError(
                f"{uri}: shard file is not readable Parquet ({_first_line(e)}); {_rerun(run)}"
            ) from e
        schemas.check(footer.schema.to_arrow_schema(), schemas.COOC, uri)
        if footer.num_rows != meta.shard_nnz[k]:
            raise InputError(
                f"{uri}: shard has {footer.num_rows} entries, the manifest recorded "
                f"{meta.shard_nnz[k]}; {_rerun(run)}"
            )
    return meta
