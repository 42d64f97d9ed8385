"""Shared benchmark helpers: machine description, peak memory, RESULTS.md sections.

Every benchmark writes its own section of ``bench/RESULTS.md`` between markers, so
the file is regenerated from measurements and no figure is typed by hand.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = Path(os.environ.get("EMBEDPIPE_SHARED", REPO.parent / "shared"))
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"


def machine() -> str:
    """One line: cores, RAM, CPU model, OS, Python and library versions."""
    import numpy
    import pyarrow
    import pyspark

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        ram = "RAM unknown"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    jv = re.search(r'version "([^"]+)"', java)
    return (
        f"{os.cpu_count()} cores ({cpu}), {ram}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Java {jv.group(1) if jv else '?'}, "
        f"pyspark {pyspark.__version__}, numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} when measured"
    )


class PeakRSS:
    """Peak resident memory of this process and all its children (the Spark JVM too)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                procs = [me, *me.children(recursive=True)]
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        """Peak in GiB."""
        return self.peak / 2**30


def update_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``markdown``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEvery section below is written by the script it names; "
        "figures come from the run that wrote them, peers measured in the same run.\n"
    )
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def command_line() -> str:
    """The command that ran this benchmark (for the RESULTS.md row)."""
    return " ".join(["python", *[os.path.relpath(a, REPO) if a.startswith(str(REPO)) else a
                                 for a in sys.argv]])


def synth_corpus(tokens: int, seed: int = 1) -> Path:
    """A synthetic corpus of ``tokens`` tokens from ../shared/corpora/synth.py (cached)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"synth-{tokens}-{seed}.txt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, str(SHARED / "corpora" / "synth.py"), "--tokens",
                        str(tokens), "--seed", str(seed), "--out", str(tmp)], check=True)
        tmp.rename(path)
    return path
