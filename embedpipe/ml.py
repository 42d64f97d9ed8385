"""Spark ML Pipeline API: trained embeddings as a ``pyspark.ml`` Transformer.

``EmbeddingModel`` turns a column of token arrays (``array<string>``, as
``RegexTokenizer`` or ``Tokenizer`` produce) into one dense vector per row: the mean
of the row's in-vocabulary word vectors, as MLlib's ``Word2VecModel`` does, with two
options: L2-normalise every word vector first (``normalizeWords``), and SIF weighting
(Arora et al. 2017: word w weighs a / (a + p(w)), ``pooling = "sif"``, ``sifA``).
Rows with no known word get a zero vector and are counted in
:attr:`EmbeddingModel.emptyRows`, a Spark accumulator read after an action (like every
accumulator updated in a transformation, it counts each evaluation: a plan that
evaluates the transform twice, e.g. a sort's sampling pass, counts twice).

The work runs inside ``mapInArrow``: the vectors are broadcast once per transform and
each task looks its tokens up in a hash table built once (no per-row Python UDF).

Persistence uses Spark ML's own ``MLWritable`` / ``MLReadable``: ``metadata/`` holds
the params as JSON (written by ``DefaultParamsWriter``), ``data/vectors.parquet`` the
vectors (``id, token, vector``) and ``data/counts.parquet`` the word counts. Nothing
is pickled, so a saved ``PipelineModel`` that contains the model loads anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedpipe import fsutil
from embedpipe.errors import EmbedpipeError, InputError
from embedpipe.vectors import Vectors

try:  # pyspark is a runtime dependency, but keep the import error readable
    from pyspark import keyword_only
    from pyspark.ml import Estimator, Model
    from pyspark.ml.param import Param, Params, TypeConverters
    from pyspark.ml.param.shared import HasInputCol, HasOutputCol
    from pyspark.ml.util import (
        DefaultParamsReader,
        DefaultParamsWriter,
        MLReadable,
        MLReader,
        MLWritable,
        MLWriter,
    )
except ImportError as e:  # pragma: no cover
    raise ImportError("embedpipe.ml needs pyspark (pip install embedpipe)") from e

FORMAT = "embedpipe-embedding-model"
FORMAT_VERSION = 1
POOLINGS = ("mean", "sif")


class _EmbeddingParams(HasInputCol, HasOutputCol):
    """Params shared by the estimators and the model."""

    normalizeWords: Param[bool] = Param(
        Params._dummy(), "normalizeWords",
        "L2-normalise each word vector before averaging", TypeConverters.toBoolean)
    pooling: Param[str] = Param(
        Params._dummy(), "pooling",
        "'mean' (plain mean of the word vectors) or 'sif' (a / (a + p(w)) weights)",
        TypeConverters.toString)
    sifA: Param[float] = Param(
        Params._dummy(), "sifA", "the a of SIF weighting (> 0)", TypeConverters.toFloat)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(inputCol="tokens", outputCol="features", normalizeWords=False,
                         pooling="mean", sifA=1e-3)

    def getNormalizeWords(self) -> bool:
        """Whether word vectors are L2-normalised before averaging."""
        return self.getOrDefault(self.normalizeWords)

    def getPooling(self) -> str:
        """'mean' or 'sif'."""
        return self.getOrDefault(self.pooling)

    def getSifA(self) -> float:
        """The a of SIF weighting."""
        return self.getOrDefault(self.sifA)


def word_weights(vectors: Vectors, pooling: str, a: float) -> np.ndarray:
    """Per-word weights: ones, or SIF's a / (a + p(w)) from the word counts."""
    if pooling not in POOLINGS:
        raise EmbedpipeError(f"pooling = {pooling!r} must be one of {', '.join(POOLINGS)}")
    if pooling == "mean":
        return np.ones(len(vectors), np.float32)
    if a <= 0:
        raise EmbedpipeError(f"sifA = {a} must be > 0")
    if vectors.counts is None:
        raise EmbedpipeError("pooling = 'sif' needs word counts, and these vectors have none "
                             "(load them from a run's model directory)")
    p = vectors.counts / max(int(vectors.counts.sum()), 1)
    return (a / (a + p)).astype(np.float32)


def weighted_matrix(vectors: Vectors, normalize: bool, pooling: str, a: float) -> np.ndarray:
    """The matrix the transform averages: rows normalised and/or weighted as configured."""
    m = vectors.unit if normalize else vectors.vectors
    return np.ascontiguousarray(m * word_weights(vectors, pooling, a)[:, None], np.float32)


def row_means(tokens: pa.Array, lookup: Any, matrix: np.ndarray) -> tuple[pa.Array, int]:
    """``list<string>`` rows -> (``list<float>`` mean vectors, rows with no known word).

    ``lookup`` maps a flat string array to row numbers (-1 = unknown). A null row
    counts as a row with no known word.
    """
    n, dim = len(tokens), matrix.shape[1]
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    flat = pc.list_flatten(tokens)
    ids = lookup(flat) if len(flat) else np.empty(0, np.int32)
    parents = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    known = ids >= 0
    rows, ids = parents[known], ids[known]
    per_row = np.bincount(rows, minlength=n)
    sums = np.zeros((n, dim), np.float64)
    if ids.size:
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        sums[rows[starts]] = np.add.reduceat(matrix[ids].astype(np.float64), starts, axis=0)
    out = (sums / np.maximum(per_row, 1)[:, None]).astype(np.float32)
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(out.reshape(-1))), int((per_row == 0).sum())


class _Lookup:
    """String -> row number with the fused kernels' hash table (built once per task)."""

    def __init__(self, tokens: pa.Array) -> None:
        from embedpipe.kernels import tokens as TK
        from embedpipe.stages.tokenize import string_buffers

        self.off, self.data = string_buffers(tokens)
        self.slots, self.ent = TK.build_lookup(self.off, self.data)

    def __call__(self, flat: pa.Array) -> np.ndarray:
        from embedpipe.kernels import tokens as TK
        from embedpipe.stages.tokenize import string_buffers

        if flat.null_count:
            flat = pc.fill_null(flat, "\x00<null>")
        off, data = string_buffers(flat)
        return TK.lookup_strings(off, data, self.slots, self.ent, self.data)


def _check_input(dataset: Any, col: str, what: str) -> None:
    from pyspark.sql.types import ArrayType, StringType

    if col not in dataset.columns:
        raise InputError(f"{what}: input column '{col}' not found (columns: "
                         f"{', '.join(dataset.columns)}); set inputCol")
    dtype = dataset.schema[col].dataType
    if not (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, StringType)):
        raise InputError(f"{what}: input column '{col}' has type {dtype.simpleString()}, "
                         "expected array<string> (tokens, e.g. from RegexTokenizer)")


class EmbeddingModel(Model, _EmbeddingParams, MLWritable, MLReadable):
    """Word vectors as a Transformer: a row's tokens -> the mean of their word vectors."""

    @keyword_only
    def __init__(self, *, vectors: Vectors | None = None, inputCol: str = "tokens",
                 outputCol: str = "features", normalizeWords: bool = False,
                 pooling: str = "mean", sifA: float = 1e-3) -> None:
        super().__init__()
        kwargs = dict(self._input_kwargs)
        self._vectors = kwargs.pop("vectors", None)
        self._set(**kwargs)
        self.emptyRows = None  # an accumulator, set by transform

    @classmethod
    def fromVectors(cls, vectors: Vectors, **params: Any) -> EmbeddingModel:
        """A model over existing :class:`~embedpipe.vectors.Vectors` (any format we load)."""
        return cls(vectors=vectors, **params)

    @property
    def vectors(self) -> Vectors:
        """The word vectors (:class:`embedpipe.vectors.Vectors`)."""
        if self._vectors is None:
            raise EmbedpipeError("this EmbeddingModel has no vectors (fit or load one)")
        return self._vectors

    def setInputCol(self, value: str) -> EmbeddingModel:
        """Set the ``array<string>`` token column."""
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> EmbeddingModel:
        """Set the output vector column."""
        return self._set(outputCol=value)

    # ---- Transformer

    def _transform(self, dataset: Any) -> Any:
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

        col, out_col = self.getInputCol(), self.getOutputCol()
        _check_input(dataset, col, "EmbeddingModel.transform")
        if out_col in dataset.columns:
            raise InputError(f"EmbeddingModel.transform: output column '{out_col}' already "
                             "exists; set outputCol")
        v = self.vectors
        matrix = weighted_matrix(v, self.getNormalizeWords(), self.getPooling(), self.getSifA())
        sc = dataset.sparkSession.sparkContext
        # Broadcast once per transform: the tokens (Arrow) and the averaged matrix.
        tokens_bc = sc.broadcast(pa.array(v.index_to_key, pa.string()))
        matrix_bc = sc.broadcast(matrix)
        empty = sc.accumulator(0)
        self.emptyRows = empty

        def fn(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            lookup = _Lookup(tokens_bc.value)
            m = matrix_bc.value
            for b in batches:
                arr, n_empty = row_means(b.column(col), lookup, m)
                empty.add(n_empty)
                yield pa.RecordBatch.from_arrays([*b.columns, arr],
                                                 names=[*b.schema.names, out_col])

        schema = StructType([*dataset.schema.fields, StructField(out_col, ArrayType(FloatType()))])
        return dataset.mapInArrow(fn, schema).withColumn(out_col, array_to_vector(out_col))

    # ---- MLlib's Word2VecModel interface

    def findSynonymsArray(self, word: str | Any, num: int) -> list[tuple[str, float]]:
        """The ``num`` nearest words by cosine (the query word left out), as (word, cosine)."""
        if not isinstance(word, str):
            word = np.asarray(word.toArray() if hasattr(word, "toArray") else word, np.float32)
        return self.vectors.most_similar(word, topn=num)

    def findSynonyms(self, word: str | Any, num: int) -> Any:
        """DataFrame ``word, similarity`` of the ``num`` nearest words (as MLlib's)."""
        from pyspark.sql import SparkSession

        rows = self.findSynonymsArray(word, num)
        return SparkSession.active().createDataFrame(rows, "word string, similarity double")

    def getVectors(self) -> Any:
        """DataFrame ``word, vector`` (dense ``pyspark.ml.linalg`` vectors)."""
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import SparkSession

        v = self.vectors
        n, dim = v.vectors.shape
        offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
        table = pa.table({"word": pa.array(v.index_to_key, pa.string()),
                          "vector": pa.ListArray.from_arrays(offsets,
                                                             pa.array(v.vectors.reshape(-1)))})
        df = SparkSession.active().createDataFrame(table)
        return df.withColumn("vector", array_to_vector("vector"))

    # ---- persistence

    def write(self) -> MLWriter:
        """Writer: params as JSON metadata, vectors and counts as Parquet (no pickle)."""
        return _EmbeddingModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        """Reader for :meth:`write`'s layout."""
        return _EmbeddingModelReader(cls)


class _EmbeddingModelWriter(MLWriter):
    def __init__(self, instance: EmbeddingModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        v = self.instance.vectors
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sparkSession,
            extraMetadata={"format": FORMAT, "formatVersion": FORMAT_VERSION,
                           "words": len(v), "dim": v.dim})
        v.save_parquet(fsutil.join(path, "data", "vectors.parquet"))
        if v.counts is not None:
            import io

            import pyarrow.parquet as pq

            buf = io.BytesIO()
            pq.write_table(pa.table({"token": pa.array(v.index_to_key, pa.string()),
                                     "count": pa.array(v.counts, pa.int64())}), buf)
            fsutil.write_bytes_atomic(fsutil.join(path, "data", "counts.parquet"),
                                      buf.getvalue())


class _EmbeddingModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> EmbeddingModel:
        import io

        import pyarrow.parquet as pq

        try:
            metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        except Exception as e:
            raise InputError(f"{path}: not a saved Spark ML model (no readable metadata/); "
                             "give the directory a model or pipeline was saved to") from e
        if metadata.get("format") != FORMAT:
            raise InputError(f"{path}: holds a {metadata.get('class', 'unknown')} model, not an "
                             "embedpipe EmbeddingModel")
        if int(metadata.get("formatVersion", 0)) > FORMAT_VERSION:
            raise InputError(f"{path}: saved by a newer embedpipe (format version "
                             f"{metadata['formatVersion']}); upgrade embedpipe")
        vectors = Vectors.load(fsutil.join(path, "data", "vectors.parquet"), "parquet")
        counts_uri = fsutil.join(path, "data", "counts.parquet")
        if fsutil.exists(counts_uri):
            counts = pq.read_table(io.BytesIO(fsutil.read_bytes(counts_uri)))
            if counts.column("token").to_pylist() != vectors.index_to_key:
                raise InputError(f"{counts_uri}: tokens differ from data/vectors.parquet")
            vectors.counts = counts.column("count").to_numpy()
        model = self.cls(vectors=vectors)
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


# ------------------------------------------------------------------ estimators


def camel(name: str) -> str:
    """``min_count`` -> ``minCount`` (Spark ML's spelling of our config keys)."""
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _converter(value: Any) -> Any:
    if isinstance(value, bool):
        return TypeConverters.toBoolean
    if isinstance(value, int):
        return TypeConverters.toInt
    if isinstance(value, float):
        return TypeConverters.toFloat
    return TypeConverters.toString


def _section_params(sections: tuple[str, ...]) -> dict[str, tuple[str, str, Any]]:
    """camelCase param name -> (config section, key, default), first section wins a name."""
    import dataclasses

    from embedpipe.config import Config

    out: dict[str, tuple[str, str, Any]] = {}
    defaults = Config()
    for section in sections:
        table = getattr(defaults, section)
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            if isinstance(value, list | dict):
                continue
            out.setdefault(camel(f.name), (section, f.name, value))
    return out


class _EmbeddingEstimator(Estimator, _EmbeddingParams, MLWritable, MLReadable):
    """Runs ``vocab``, ``encode`` and the trainer's stages on a token column.

    The token arrays are joined with a space and written as text under ``workDir``
    (each row one document), then the stages run exactly as ``embedpipe run`` runs
    them, with the whitespace tokenizer and no lowercasing (the tokens are taken as
    the tokenizer stage produced them; a token containing whitespace is split).
    Trainer settings are params named as the config keys, camelCased (``minCount``
    is ``vocab.min_count``, ``dim`` the trainer's ``dim``); their ranges are checked
    by the config loader, so a bad value is the same one-line error as in a config.
    """

    #: config sections whose keys become params (the first section wins a name)
    _sections: tuple[str, ...] = ()
    #: stages run after vocab and encode; the last one's directory holds the vectors
    _stages: tuple[str, ...] = ()
    _config_params: ClassVar[dict[str, tuple[str, str, Any]]] = {}

    workDir: Param[str] = Param(
        Params._dummy(), "workDir",
        "directory for the run (input text, corpus, matrix, vectors); empty = a new "
        "temporary local directory (set a shared path, e.g. hdfs://..., on a cluster)",
        TypeConverters.toString)

    def __init_subclass__(cls, **kw: Any) -> None:
        # Class-level Params, as every Spark ML stage declares them (explainParams,
        # copy and persistence find them there).
        super().__init_subclass__(**kw)
        cls._config_params = _section_params(cls._sections)
        for name, (section, key, default) in cls._config_params.items():
            setattr(cls, name, Param(Params._dummy(), name, f"config {section}.{key}",
                                     _converter(default)))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for name, (_section, _key, default) in self._config_params.items():
            self._setDefault(**{name: str(default) if hasattr(default, "value") else default})
        self._setDefault(workDir="")
        self._set(**kwargs)

    def _overrides(self) -> list[str]:
        sets = []
        for name, (section, key, _default) in self._config_params.items():
            value = self.getOrDefault(name)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            sets.append(f"{section}.{key}={text}")
        return sets

    def _fit(self, dataset: Any) -> EmbeddingModel:
        import tempfile

        from pyspark.sql import functions as F

        from embedpipe.cli import run_stages
        from embedpipe.config import load_config
        from embedpipe.runs import RunDir

        name = type(self).__name__
        col = self.getInputCol()
        _check_input(dataset, col, f"{name}.fit")
        if dataset.select(col).limit(1).count() == 0:
            raise InputError(f"{name}.fit: the DataFrame is empty; nothing to train on")
        given = self.getOrDefault(self.workDir)
        work = given or tempfile.mkdtemp(prefix="embedpipe-ml-")
        text_uri = fsutil.join(work, "input")
        (dataset.select(F.coalesce(F.array_join(F.col(col), " "), F.lit("")).alias("value"))
         .write.mode("overwrite").text(fsutil.to_spark_uri(text_uri)))
        cfg = load_config(None, [f"input.path={text_uri}", "vocab.tokenizer=whitespace",
                                 "vocab.lowercase=false", *self._overrides()])
        run = RunDir(fsutil.join(work, "run"))
        run_stages(["vocab", "encode", *self._stages], cfg, run, spark=dataset.sparkSession)
        vectors = Vectors.load_model_dir(run.path(self._stages[-1]))
        if not given:  # the vectors are in memory now; a temporary run is not kept
            fsutil.remove(work)
        model = EmbeddingModel(vectors=vectors, inputCol=col, outputCol=self.getOutputCol(),
                               normalizeWords=self.getNormalizeWords(),
                               pooling=self.getPooling(), sifA=self.getSifA())
        return model

    def write(self) -> MLWriter:
        """Params only (an estimator holds no data)."""
        return DefaultParamsWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        """Reader for :meth:`write`."""
        return DefaultParamsReader(cls)


class Word2Vec(_EmbeddingEstimator):
    """Skip-gram / CBOW trained per partition and merged (the ``word2vec`` stage).

    Params: ``mode``, ``dim``, ``window``, ``negative``, ``sample``, ``epochs``,
    ``alpha``, ``minAlpha``, ``partitions``, ``roundsPerEpoch``, ``merge``, ``seed``,
    ``shareNegatives``, ``minCount``, ``maxSize`` (see ``embedpipe config --list``),
    plus ``inputCol``, ``outputCol``, ``workDir`` and the transform options of
    :class:`EmbeddingModel`.
    """

    _sections = ("word2vec", "vocab")
    _stages = ("word2vec",)


class GloVe(_EmbeddingEstimator):
    """Distributed GloVe over the co-occurrence matrix (``cooccur`` then ``glove``)."""

    _sections = ("glove", "cooccur", "vocab")
    _stages = ("cooccur", "glove")


class PPMISVD(_EmbeddingEstimator):
    """Randomized truncated SVD of PPMI (``cooccur`` then ``svd``)."""

    _sections = ("svd", "cooccur", "vocab")
    _stages = ("cooccur", "svd")
