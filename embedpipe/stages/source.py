"""Reading the raw corpus with Spark (text files or Parquet), shared by ``vocab`` and ``encode``.

Two readers produce the same Arrow batches ``raw: binary, file: string, block: long``
(one row per line), and the stages consume them through :class:`LineSource`:

* **Spark's** (``spark.read.text`` / ``parquet``), so that every Hadoop filesystem and
  codec a cluster is configured for works (``hdfs://``, ``s3a://``, ``.gz``,
  splittable ``.bz2``) and Parquet input.
* **direct** (``input.reader``; by default for local plain and ``.gz`` files): the
  driver cuts the files into byte ranges (a gzip file is one range, decompressed with
  zlib) and every Python task reads its range itself (:func:`read_split_batches`).
  Spark's reader makes a JVM row of every line and converts it back to Arrow for the
  Python worker, with the file name copied into every row: a third of vocab's and
  encode's CPU. A range ``[start, end)`` owns the lines that *begin* inside it, so
  consecutive ranges tile a file whatever the cut points.

Each line comes with the file it is in and the start of the split ("block") that
read it; the pair orders lines canonically, which is how ``encode`` gives every
line a document number that does not depend on the number of partitions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa

from embedpipe.config import InputConfig, InputFormat, InputReader
from embedpipe.errors import InputError

#: Schema of the batches both readers hand to the stages.
RAW_SCHEMA = pa.schema([("raw", pa.binary()), ("file", pa.string()), ("block", pa.int64())])
#: Suffixes Hadoop decompresses by codec: such files are left to Spark's reader.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst", ".xz", ".br")
#: Bytes a direct task reads at a time (a longer line is read whole, in growing steps).
READ_BYTES = 8 << 20


def _spark_error_message(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextlib.contextmanager
def partitioning(spark, icfg: InputConfig) -> Iterator[None]:
    """Apply ``input.partitions`` to Spark's file splitting for the duration of a stage.

    Spark splits files into ``min(maxPartitionBytes, max(openCost, bytes / minPartitionNum))``
    sized blocks; setting minPartitionNum (and a tiny open cost, so that small inputs are
    split too) gives at least the requested number of partitions for splittable files.
    """
    keys = ("spark.sql.files.minPartitionNum", "spark.sql.files.openCostInBytes")
    old = {k: spark.conf.get(k, None) for k in keys}
    try:
        if icfg.partitions > 0:
            spark.conf.set("spark.sql.files.minPartitionNum", str(icfg.partitions))
            spark.conf.set("spark.sql.files.openCostInBytes", "1")
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


#: Spark's default largest split (spark.sql.files.maxPartitionBytes).
_MAX_SPLIT = 128 << 20


def balance_splits(spark, icfg: InputConfig, files: list[dict[str, Any]]) -> None:
    """With ``input.partitions = 0`` (auto), make the split count a multiple of the cores.

    Spark cuts files into 128 MB splits, so 1.1 GB on 2 cores gives 9 tasks: four
    rounds of two, then one task alone, and the last round wastes a core. Asking for
    ``ceil(splits / cores) * cores`` partitions evens the rounds out. Must run inside
    :func:`partitioning` (which restores the settings) and before the first action.
    """
    if icfg.partitions > 0 or icfg.format == InputFormat.PARQUET:
        return
    total = sum(int(f["size"]) for f in files)
    cores = max(int(spark.sparkContext.defaultParallelism), 1)
    try:  # the session's setting, parsed by Spark ("128m", "1g", ...)
        max_split = int(spark._jsparkSession.sessionState().conf().filesMaxPartitionBytes())
    except Exception:
        max_split = _MAX_SPLIT
    splits = max(-(-total // max_split), 1)
    wanted = -(-splits // cores) * cores
    if wanted > cores:
        spark.conf.set("spark.sql.files.minPartitionNum", str(wanted))


def read_lines(spark, icfg: InputConfig, path: str | None = None) -> Any:
    """DataFrame ``raw: binary, file: string, block: long`` with one row per line / document.

    Raises InputError for a missing path, a Parquet input without the text column,
    or a text column that is not a string.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, StringType

    from embedpipe import fsutil

    path = path or icfg.path
    if not path:
        raise InputError("no input: set input.path in the config or pass --input PATH")
    uri = fsutil.to_spark_uri(path)
    try:
        if icfg.format == InputFormat.PARQUET:
            df = spark.read.parquet(uri)
        else:
            df = spark.read.option("lineSep", "\n").text(uri)
    except Exception as e:
        msg = _spark_error_message(e)
        if "PATH_NOT_FOUND" in msg or "does not exist" in msg:
            raise InputError(f"{path}: input path does not exist (input.path)") from e
        if "UNABLE_TO_INFER_SCHEMA" in msg:
            raise InputError(f"{path}: no Parquet files found (input.path)") from e
        raise InputError(f"{path}: cannot read input ({msg})") from e
    if icfg.format == InputFormat.PARQUET:
        col = icfg.text_column
        if col not in df.columns:
            raise InputError(
                f"{path}: Parquet input has no column '{col}' (columns: "
                f"{', '.join(df.columns)}); set input.text_column"
            )
        dtype = df.schema[col].dataType
        if not isinstance(dtype, StringType | BinaryType):
            raise InputError(
                f"{path}: column '{col}' has type {dtype.simpleString()}, expected string "
                "(input.text_column)"
            )
        raw = F.col(col).cast("binary")
    else:
        raw = F.col("value").cast("binary")
    return df.select(
        raw.alias("raw"),
        F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("block"),
    )


def input_files(spark, df) -> list[dict[str, Any]]:
    """Files behind ``df`` with size and modification time (the input fingerprint)."""
    jvm = spark._jvm
    hconf = spark._jsc.hadoopConfiguration()
    out = []
    for f in sorted(df.inputFiles()):
        # inputFiles() gives percent-encoded URIs ("a%20b.txt"); Path(String) would take
        # "%20" literally, Path(URI) decodes it.
        p = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(f))
        st = p.getFileSystem(hconf).getFileStatus(p)
        out.append({"path": f, "size": int(st.getLen()), "mtime": int(st.getModificationTime())})
    return out


# ---------------------------------------------------------------- direct reading


def use_direct_reader(icfg: InputConfig, files: list[dict[str, Any]]) -> bool:
    """Whether the Python tasks read ``files`` themselves (see ``input.reader``)."""
    if icfg.format != InputFormat.TEXT or icfg.reader == InputReader.SPARK or not files:
        return False
    if any(f["path"].lower().endswith(COMPRESSED_SUFFIXES) and not is_gzip(f["path"])
           for f in files):
        if icfg.reader == InputReader.DIRECT:
            raise InputError(
                f"{icfg.path}: input.reader = direct reads plain and .gz text only; set "
                "input.reader = auto to let Spark decompress .bz2 and other codecs"
            )
        return False
    if icfg.reader == InputReader.DIRECT:
        return True
    return all(urlparse(f["path"]).scheme in ("", "file") for f in files)


def plan_splits(files: list[dict[str, Any]], partitions: int, cores: int,
                max_split: int = _MAX_SPLIT) -> list[tuple[str, int, int]]:
    """Byte ranges ``(file, start, end)`` covering ``files``, in corpus order.

    As many ranges as ``input.partitions`` asks, at least one per ``max_split`` bytes,
    and with ``partitions = 0`` a multiple of the cores (see :func:`balance_splits`);
    each file gets a share proportional to its size. Empty files get no range.
    """
    sizes = [int(f["size"]) for f in files]
    total = sum(sizes)
    if total == 0:
        return []
    wanted = max(partitions, -(-total // max_split), 1)
    if partitions == 0:
        wanted = -(-wanted // max(cores, 1)) * max(cores, 1)
    out = []
    for f, size in zip(files, sizes, strict=True):
        # ceil(wanted * share): at least ``wanted`` ranges in all, none over total / wanted.
        pieces = -(-wanted * size // total)
        if is_gzip(f["path"]):  # not splittable: one task reads it whole, as in Spark
            pieces = min(pieces, 1)
        for k in range(pieces):
            start, end = size * k // pieces, size * (k + 1) // pieces
            if end > start:
                out.append((f["path"], start, end))
    return out


def _local_path(uri: str) -> str:
    """Path inside the filesystem of a file URI as Spark lists it (percent-decoded)."""
    from embedpipe import fsutil

    _fs, path = fsutil.resolve(uri)
    return unquote(path) if urlparse(uri).scheme in ("", "file") else path


def _line_start(f, x: int, size: int) -> int:
    """First line start at or after byte ``x``: 0, or just after the first ``\n`` at >= x-1."""
    if x <= 0:
        return 0
    pos, step = x - 1, 1 << 16
    while pos < size:
        chunk = f.read_at(min(step, size - pos), pos)
        hit = chunk.find(b"\n")
        if hit >= 0:
            return pos + hit + 1
        pos += len(chunk)
        step = min(step * 2, READ_BYTES)
    return size


def _batch(data: np.ndarray, offsets: np.ndarray, file: str, block: int) -> pa.RecordBatch:
    n = len(offsets) - 1
    if offsets[-1] >= 2**31:  # one Arrow binary array holds < 2 GiB
        raw = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    else:
        raw = pa.BinaryArray.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.RecordBatch.from_arrays(
        [raw, pa.array([file] * n, pa.string()), pa.array(np.full(n, block, np.int64))],
        names=RAW_SCHEMA.names,
    )


def read_split(uri: str, start: int, end: int, read_bytes: int = READ_BYTES
               ) -> Iterator[pa.RecordBatch]:
    """The lines of byte range ``[start, end)`` of ``uri`` as ``raw, file, block`` batches.

    The range owns the lines that begin in it: it starts after the first ``\n`` at or
    after ``start - 1`` and ends after the first ``\n`` at or after ``end - 1`` (or at
    the end of the file), so ranges cut anywhere tile the file with no line lost or
    read twice. Lines end at ``\n`` as with Spark's reader (``lineSep = "\n"``).
    """
    from embedpipe import fsutil
    from embedpipe.kernels.tokens import split_lines

    fs, _ = fsutil.resolve(uri)
    if is_gzip(uri):
        if start != 0:
            raise InputError(f"{uri}: a gzip file cannot be read from byte {start}")
        # compression=None: pyarrow would otherwise detect ".gz" and decompress itself,
        # without support for concatenated members.
        with fs.open_input_stream(_local_path(uri), compression=None) as f:
            yield from _lines_of_chunks(_gunzip(f, uri, read_bytes), uri, start)
        return
    with fs.open_input_file(_local_path(uri)) as f:
        size = f.size()
        lo, hi = _line_start(f, start, size), _line_start(f, end, size)
        carry = b""
        pos = lo
        while pos < hi:
            # A line longer than a read keeps the carry growing: read at least as much
            # again, so a 200 MB line costs a few reads, not 25 re-copies.
            want = min(max(read_bytes, len(carry)), hi - pos)
            chunk = f.read_at(want, pos)
            if not chunk:
                raise InputError(f"{uri}: file shrank while being read (at byte {pos:,})")
            pos += len(chunk)
            buf = carry + chunk if carry else chunk
            cut = len(buf) if pos >= hi else buf.rfind(b"\n") + 1
            carry = buf[cut:]
            if cut:
                data, offsets = split_lines(np.frombuffer(buf, np.uint8, cut))
                yield _batch(data, offsets, uri, start)


def is_gzip(uri: str) -> bool:
    """A gzip file: read whole by one task, decompressed in Python (as Spark does in Java)."""
    return uri.lower().endswith(".gz")


def _gunzip(f, uri: str, read_bytes: int) -> Iterator[bytes]:
    """Decompressed chunks of a gzip stream, concatenated members included (as Hadoop)."""
    import zlib

    d, in_member = zlib.decompressobj(wbits=31), False
    while raw := f.read(read_bytes):
        while raw:
            in_member = True
            try:
                out = d.decompress(raw)
            except zlib.error as e:
                raise InputError(f"{uri}: not a valid gzip file ({e})") from e
            if out:
                yield out
            if not d.eof:
                break
            # A member ended: what follows is the next member (`cat a.gz b.gz`).
            raw, d, in_member = d.unused_data, zlib.decompressobj(wbits=31), False
    if in_member:
        raise InputError(f"{uri}: truncated gzip file (the stream ends inside a member)")


def _lines_of_chunks(chunks: Iterable[bytes], uri: str, block: int) -> Iterator[pa.RecordBatch]:
    """Line batches from a stream of byte chunks, the last line possibly without newline."""
    from embedpipe.kernels.tokens import split_lines

    parts: list[bytes] = []  # an unfinished line, kept in pieces: a long line is joined once
    for chunk in chunks:
        if chunk.rfind(b"\n") < 0:
            parts.append(chunk)
            continue
        buf = b"".join([*parts, chunk]) if parts else chunk
        cut = buf.rfind(b"\n") + 1
        parts = [buf[cut:]] if cut < len(buf) else []
        data, offsets = split_lines(np.frombuffer(buf, np.uint8, cut))
        yield _batch(data, offsets, uri, block)
    if parts:
        data, offsets = split_lines(np.frombuffer(b"".join(parts), np.uint8))
        yield _batch(data, offsets, uri, block)


def read_split_batches(splits: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A direct task: rows ``file, start, end`` -> the lines of those ranges, in order."""
    for b in splits:
        for f, s, e in zip(b.column("file").to_pylist(), b.column("start").to_pylist(),
                           b.column("end").to_pylist(), strict=True):
            yield from read_split(f, int(s), int(e))


class LineSource:
    """The corpus as batches of lines: ``map_batches(fn, ddl)`` runs ``fn`` in the tasks.

    ``fn`` gets an iterator of ``raw, file, block`` batches (:data:`RAW_SCHEMA`) and
    yields batches of ``ddl``; with the direct reader it runs in the same Python task
    that reads the bytes, so no line crosses the JVM.
    """

    def __init__(self, spark, icfg: InputConfig, lines, files: list[dict[str, Any]]) -> None:
        self.spark, self.lines, self.files = spark, lines, files
        self.direct = use_direct_reader(icfg, files)
        self.splits: list[tuple[str, int, int]] = []
        if self.direct:
            try:
                max_split = int(spark._jsparkSession.sessionState().conf()
                                .filesMaxPartitionBytes())
            except Exception:
                max_split = _MAX_SPLIT
            cores = max(int(spark.sparkContext.defaultParallelism), 1)
            self.splits = plan_splits(files, icfg.partitions, cores, max_split)

    @property
    def reader(self) -> str:
        """``direct`` or ``spark``: who reads the lines (recorded in the manifest)."""
        return "direct" if self.direct else "spark"

    @property
    def num_partitions(self) -> int:
        """Tasks that read the corpus."""
        return len(self.splits) if self.direct else self.lines.rdd.getNumPartitions()

    def map_batches(self, fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
                    ddl: str):
        """DataFrame of ``fn``'s output over every partition of the corpus."""
        if not self.direct:
            return self.lines.mapInArrow(fn, ddl)
        n = max(len(self.splits), 1)
        # One range per partition, in corpus order: partition k reads range k.
        rdd = self.spark.sparkContext.parallelize(self.splits, n)
        df = self.spark.createDataFrame(rdd, "file string, start long, end long")
        return df.mapInArrow(lambda it: fn(read_split_batches(it)), ddl)


def line_source(spark, icfg: InputConfig) -> LineSource:
    """Open the corpus: checks the input (see :func:`read_lines`) and picks the reader.

    Call inside :func:`partitioning`; applies :func:`balance_splits` for Spark's reader.
    """
    lines = read_lines(spark, icfg)
    files = input_files(spark, lines)
    src = LineSource(spark, icfg, lines, files)
    if not src.direct:
        balance_splits(spark, icfg, files)
    return src
