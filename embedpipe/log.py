"""Logging set-up: one INFO line per stage or epoch, Spark's own logs quiet by default."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("embedpipe")


def setup(verbose: bool = False) -> None:
    """Log embedpipe's INFO lines to stderr; with ``verbose`` also DEBUG and py4j/Spark."""
    root = logging.getLogger("embedpipe")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


def human_count(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def human_bytes(n: float) -> str:
    """Bytes with a binary unit."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    """Seconds as '1h02m', '3m05s' or '4.2s'."""
    if s >= 3600:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    if s >= 60:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{s:.1f}s"


class Timer:
    """Wall-clock timer used as a context manager: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def elapsed(self) -> float:
        """Seconds since the timer started (while running)."""
        return time.perf_counter() - self.start
