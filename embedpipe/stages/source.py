"""Reading the raw corpus with Spark (text files or Parquet), shared by ``vocab`` and ``encode``.

Spark's own readers are used so that every Hadoop filesystem and codec a cluster
is configured for works (``hdfs://``, ``s3a://``, ``.gz``, splittable ``.bz2``).
Each line comes with the file it is in and the start of the split ("block") that
read it; the pair orders lines canonically, which is how ``encode`` gives every
line a document number that does not depend on the number of partitions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from embedpipe.config import InputConfig, InputFormat
from embedpipe.errors import InputError


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
        p = jvm.org.apache.hadoop.fs.Path(f)
        st = p.getFileSystem(hconf).getFileStatus(p)
        out.append({"path": f, "size": int(st.getLen()), "mtime": int(st.getModificationTime())})
    return out
