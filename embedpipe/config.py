"""Configuration: one frozen dataclass per TOML table, holding every default once.

A config is built from (in order) the dataclass defaults, a TOML file, and
``--set section.key=value`` overrides. Unknown tables or keys, wrong types and
out-of-range values raise :class:`~embedpipe.errors.ConfigError` with a one-line
message naming the key (``glove.dim``), so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from embedpipe.errors import ConfigError


class InputReader(StrEnum):
    """Who reads plain-text input files."""

    AUTO = "auto"
    SPARK = "spark"
    DIRECT = "direct"


class InputFormat(StrEnum):
    """How the corpus is stored."""

    TEXT = "text"
    PARQUET = "parquet"


class Tokenizer(StrEnum):
    """How lines are cut into tokens."""

    REGEX = "regex"
    WHITESPACE = "whitespace"


class Weighting(StrEnum):
    """Weight of a co-occurrence at distance d."""

    HARMONIC = "harmonic"
    UNIFORM = "uniform"


class W2VMode(StrEnum):
    """word2vec architecture."""

    SKIPGRAM = "skipgram"
    CBOW = "cbow"


class Merge(StrEnum):
    """How word2vec partition models are combined."""

    AVERAGE = "average"
    PROCRUSTES = "procrustes"


class GloveSchedule(StrEnum):
    """How GloVe distributes training (DESIGN.md: averaging now, 2-D blocks later)."""

    AVERAGE = "average"


class GloveMerge(StrEnum):
    """How GloVe combines the context rows the shards trained (kernels.glove.ParamMerger)."""

    SCALED = "scaled"
    AVERAGE = "average"


def _opt(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "",
         choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with its range and help text in the metadata."""
    meta = {"min": lo, "max": hi, "doc": doc, "choices": choices}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class InputConfig:
    """``[input]``: where the corpus is and how to read it."""

    path: str = _opt("", doc="file, directory or glob; any Hadoop FS URI")
    format: InputFormat = _opt(InputFormat.TEXT, doc="text (plain, .gz, .bz2) or parquet")
    text_column: str = _opt("text", doc="column holding the text when format = parquet")
    partitions: int = _opt(0, 0, doc="minimum number of input partitions; 0 = Spark's default")
    # Spark's text reader turns every line into a JVM row and back into Arrow for Python:
    # about a third of vocab's and encode's CPU. Plain and gzip files the Python workers
    # can open themselves are read directly (bench/RESULTS.md, vocab-encode).
    reader: InputReader = _opt(
        InputReader.AUTO,
        doc="auto: local plain and .gz text files are read by the Python tasks themselves, "
        "everything else by Spark; spark: always Spark's reader; direct: Python tasks read "
        "plain and .gz text on any filesystem pyarrow.fs opens (local, hdfs://, s3://)",
    )


@dataclass(frozen=True)
class VocabConfig:
    """``[vocab]``: tokenization and the vocabulary filter."""

    tokenizer: Tokenizer = _opt(Tokenizer.REGEX, doc="regex (Unicode words) or whitespace")
    lowercase: bool = _opt(True, doc="lowercase tokens (after NFKC normalisation)")
    pattern: str = _opt("", doc="RE2 regex of token *separators*; empty = built-in word rule")
    min_count: int = _opt(5, 1, doc="drop tokens seen fewer times")
    max_size: int = _opt(0, 0, doc="keep at most this many tokens; 0 = no limit")
    max_token_chars: int = _opt(100, 1, doc="tokens longer than this are dropped (and counted)")


@dataclass(frozen=True)
class EncodeConfig:
    """``[encode]``: the integer-encoded corpus."""

    max_doc_tokens: int = _opt(10000, 1, doc="longer documents are split into pieces")
    file_tokens: int = _opt(4_000_000, 1000, doc="target tokens per output file")


@dataclass(frozen=True)
class CooccurConfig:
    """``[cooccur]``: the sparse co-occurrence matrix."""

    window: int = _opt(10, 1, 1000, doc="symmetric context window")
    weighting: Weighting = _opt(Weighting.HARMONIC, doc="harmonic (1/distance) or uniform")
    dynamic_window: bool = _opt(False, doc="word2vec-style uniformly shrunk window")
    subsample: float = _opt(0.0, 0.0, doc="frequent-word subsampling threshold; 0 = off")
    shards: int = _opt(0, 0, doc="number of shards S; 0 = chosen from the data size")
    min_x: float = _opt(0.0, 0.0, doc="drop entries with x below this")
    memory_mb: int = _opt(512, 16, doc="per-task budget for partial sums")
    seed: int = _opt(1, 0, doc="seed for dynamic window and subsampling")


@dataclass(frozen=True)
class GloveConfig:
    """``[glove]``: distributed GloVe."""

    dim: int = _opt(100, 1, 10000)
    epochs: int = _opt(25, 1)
    x_max: float = _opt(100.0, 1e-9)
    alpha: float = _opt(0.75, 0.0, 10.0)
    eta: float = _opt(0.05, 1e-12, 10.0, doc="initial AdaGrad learning rate")
    local_epochs: int = _opt(1, 1, doc="passes over a shard between parameter exchanges")
    rounds_per_epoch: int = _opt(
        1, 1, 1000,
        doc="parameter exchanges per epoch, each over 1/R of every shard's entries: keeps "
        "S >= 4 shards in step (R x the exchange cost)",
    )  # fmt: skip
    schedule: GloveSchedule = _opt(GloveSchedule.AVERAGE)
    merge: GloveMerge = _opt(
        GloveMerge.SCALED,
        doc="context rows: scaled (S-times context steps, mean change) or average (by counts)",
    )
    seed: int = _opt(1, 0)


@dataclass(frozen=True)
class SvdConfig:
    """``[svd]``: randomized truncated SVD of PPMI."""

    dim: int = _opt(100, 1, 10000)
    cds: float = _opt(0.75, 0.0, 1.0, doc="context distribution smoothing exponent")
    shift: float = _opt(1.0, 1.0, doc="PMI shifted by log(shift); 1 = none")
    # U alone (eig 0) scores better than U Σ^0.5 on WS353, SimLex-999 and movie reviews and
    # ties on analogies (bench/RESULTS.md, issue 7 acceptance 2).
    eig: float = _opt(0.0, choices=(0.0, 0.5, 1.0), doc="output U * S^eig")
    # PPMI's spectrum is flat (σ_100 ≈ σ_110): the textbook 10 / 3 leaves σ_100 7% low;
    # 40 / 7 keeps all top-100 singular values within 0.5% of svds (bench/RESULTS.md).
    oversample: int = _opt(40, 0, doc="extra sketch columns beyond svd.dim")
    power_iters: int = _opt(7, 0, 50, doc="power iterations (one pass over the shards each)")
    add_context: bool = _opt(False)
    seed: int = _opt(1, 0)


@dataclass(frozen=True)
class Word2VecConfig:
    """``[word2vec]``: skip-gram / CBOW shards trained per partition and merged."""

    mode: W2VMode = _opt(W2VMode.SKIPGRAM)
    dim: int = _opt(100, 1, 10000)
    window: int = _opt(5, 1, 1000)
    negative: int = _opt(5, 1, 100)
    share_negatives: bool = _opt(
        False,
        doc="skip-gram: draw a centre word's noise words once for its whole window, not per "
        "context word (pWord2Vec; ~1.5x faster, about -0.5 analogy points)",
    )
    sample: float = _opt(1e-3, 0.0, 1.0)
    epochs: int = _opt(5, 1)
    alpha: float = _opt(0.0, 0.0, 10.0, doc="initial learning rate; 0 = 0.025 skipgram, 0.05 cbow")
    min_alpha: float = _opt(1e-4, 0.0, 10.0)
    partitions: int = _opt(0, 0, doc="training partitions S; 0 = Spark's default parallelism")
    rounds_per_epoch: int = _opt(
        0, 0,
        doc="synchronisation rounds per epoch; 0 = 1 if S = 1, else max(S, words / 8M), "
        "CBOW max(8 S, words / 8M)",
    )
    merge: Merge = _opt(
        Merge.AVERAGE,
        doc="average: mean of the S partition models; procrustes: rotated onto partition 0 first",
    )
    scale_alpha: bool = _opt(
        True, doc="partitions train at alpha x S (at most 0.2) so their mean moves like one pass"
    )
    subwords: bool = _opt(
        False, doc="fastText: a word's input is the mean of its vector and its n-gram vectors"
    )
    minn: int = _opt(3, 1, 20, doc="subwords: shortest character n-gram (with < > marks)")
    maxn: int = _opt(6, 1, 20, doc="subwords: longest character n-gram")
    buckets: int = _opt(
        2_000_000, 1, 1 << 30,
        doc="subwords: hash buckets of the n-grams; n-gram matrix <= buckets x dim x 4 bytes",
    )  # fmt: skip
    seed: int = _opt(1, 0)


@dataclass(frozen=True)
class EvaluateConfig:
    """``[evaluate]``: which datasets score the vectors (empty = the bundled ones)."""

    similarity: list = _opt([], doc="similarity files (word1 TAB word2 TAB score)")
    analogy: str = _opt("", doc="analogy file in the Google format")
    classification: str = _opt("", doc="label TAB text file")
    restrict_vocab: int = _opt(30000, 0, doc="analogy: only the N most frequent words")
    folds: int = _opt(5, 2, 50)
    seed: int = _opt(0, 0)


@dataclass(frozen=True)
class SparkConfig:
    """``[spark]``: the session. ``conf`` is passed to Spark as is."""

    master: str = _opt("", doc="empty = local[*], or the master spark-submit was given")
    app_name: str = _opt("embedpipe")
    conf: dict = _opt({}, doc="extra Spark settings, e.g. spark.executor.memory")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one attribute per TOML table."""

    input: InputConfig = field(default_factory=InputConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    cooccur: CooccurConfig = field(default_factory=CooccurConfig)
    glove: GloveConfig = field(default_factory=GloveConfig)
    svd: SvdConfig = field(default_factory=SvdConfig)
    word2vec: Word2VecConfig = field(default_factory=Word2VecConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named tables (what a stage's output depends on)."""
        payload = {s: to_dict(getattr(self, s)) for s in sections}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **overrides: str) -> Config:
        """Return a copy with ``section.key`` overrides given as strings."""
        return load_config(None, [f"{k}={v}" for k, v in overrides.items()], base=self)


_SECTION_CLASSES = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


def to_dict(obj: Any) -> Any:
    """Config (or section) as plain JSON-able values (enums as their strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def _suggest(name: str, options: list[str], section: str = "") -> str:
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f" (known: {', '.join(prefix + o for o in options)})"


def _coerce(key: str, value: Any, ftype: Any, from_string: bool) -> Any:
    """Convert ``value`` to the field type, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(ftype) or ftype
    if isinstance(origin, type) and issubclass(origin, Enum):
        choices = [m.value for m in origin]
        try:
            return origin(value)
        except ValueError:
            raise ConfigError(
                f"{key} = {value!r} is not one of {', '.join(choices)}"
            ) from None
    if origin is bool:
        if isinstance(value, bool):
            return value
        if from_string and str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} = {value!r} must be true or false")
    if origin is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be an integer")
        if isinstance(value, int):
            return value
        if from_string:
            try:
                return int(str(value).replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} = {value!r} must be an integer")
    if origin is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_string:
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} = {value!r} must be a number")
    if origin is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} = {value!r} must be a string")
    if origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if from_string and isinstance(value, str):
            return [v for v in value.split(",") if v]
        raise ConfigError(f"{key} = {value!r} must be a list of strings")
    if origin is dict:
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in value.items()}
        raise ConfigError(f"{key} must be a table of settings")
    raise ConfigError(f"{key}: unsupported type {ftype}")  # pragma: no cover


def _check_range(key: str, value: Any, meta: dict) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} = {value!r} must be one of {', '.join(map(str, choices))}")
    if lo is not None and value < lo:
        raise ConfigError(f"{key} = {value!r} is out of range: must be >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key} = {value!r} is out of range: must be <= {hi}")


def _build_section(name: str, cls: type, values: dict[str, Any], base: Any,
                   from_string: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {f: getattr(base, f) for f in fields}
    for key, value in values.items():
        full = f"{name}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}'" + _suggest(key, sorted(fields), name))
        v = _coerce(full, value, hints[key], key in from_string)
        _check_range(full, v, dict(fields[key].metadata))
        kwargs[key] = v
    return cls(**kwargs)


def _cross_check(cfg: Config) -> None:
    """Checks that involve more than one key."""
    if cfg.word2vec.minn > cfg.word2vec.maxn:
        raise ConfigError(
            f"word2vec.minn = {cfg.word2vec.minn} must be <= word2vec.maxn = {cfg.word2vec.maxn}"
        )
    if cfg.word2vec.min_alpha > (cfg.word2vec.alpha or 0.05):
        raise ConfigError("word2vec.min_alpha must not exceed word2vec.alpha")


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """Parse ``section.key=value`` strings into nested dicts of strings."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. glove.dim=100)")
        section, sub = key.split(".", 1)
        if section == "spark" and sub.startswith("conf."):
            out.setdefault("spark.conf", {})[sub[len("conf."):]] = value
            continue
        out.setdefault(section, {})[sub] = value
    return out


def load_config(path: str | None = None, overrides: list[str] | None = None,
                base: Config | None = None) -> Config:
    """Build a :class:`Config` from defaults, an optional TOML file and ``--set`` overrides."""
    base = base or Config()
    data: dict[str, Any] = {}
    if path:
        from embedpipe import fsutil

        try:
            text = fsutil.read_text(path)
        except Exception as e:
            raise ConfigError(f"{path}: cannot read config file ({e})") from e
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from e
    for name, table in data.items():
        if name not in _SECTION_CLASSES:
            raise ConfigError(
                f"unknown config table [{name}]" + _suggest(name, sorted(_SECTION_CLASSES))
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
    parsed = parse_overrides(overrides or [])
    extra_spark_conf = parsed.pop("spark.conf", {})
    for name in parsed:
        if name not in _SECTION_CLASSES:
            raise ConfigError(
                f"unknown config table [{name}]" + _suggest(name, sorted(_SECTION_CLASSES))
            )
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        values = dict(data.get(name, {}))
        values.update(parsed.get(name, {}))
        if name == "spark" and extra_spark_conf:
            merged = dict(values.get("conf", base.spark.conf))
            merged.update(extra_spark_conf)
            values["conf"] = merged
        sections[name] = _build_section(
            name, cls, values, getattr(base, name), set(parsed.get(name, {}))
        )
    cfg = Config(**sections)
    _cross_check(cfg)
    return cfg


def describe() -> str:
    """Every key with its default and help text (for ``embedpipe config --list``)."""
    lines = []
    for name, cls in _SECTION_CLASSES.items():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            default = to_dict(f.default if f.default is not dataclasses.MISSING
                              else f.default_factory())  # type: ignore[misc]
            doc = f.metadata.get("doc", "")
            lines.append(f"  {f.name} = {json.dumps(default)}" + (f"   # {doc}" if doc else ""))
    return "\n".join(lines)

