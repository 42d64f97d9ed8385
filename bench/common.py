"""Shared benchmark helpers: machine description, peak memory, RESULTS.md sections.

Every benchmark writes its own section of ``bench/RESULTS.md`` between markers, so
the file is regenerated from measurements and no figure is typed by hand.
"""

from __future__ import annotations

import gzip
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
    """Peak resident memory of this process and all its children (the Spark JVM too).

    ``tree=False`` watches this process alone (a one-process peer such as gensim, next to
    an idle Spark JVM that is not its cost). ``peak_worker`` is the largest RSS of a single
    descendant Python process (a Spark Python worker: what one task held).
    """

    def __init__(self, interval: float = 0.2, tree: bool = True) -> None:
        self.interval = interval
        self.tree = tree
        self.peak = 0
        self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        total = 0
        try:
            procs = [me, *me.children(recursive=True)] if self.tree else [me]
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if p.pid != me.pid and p.name().startswith("python"):
                        self.peak_worker = max(self.peak_worker, rss)
                except psutil.Error:
                    continue
                total += rss
        except psutil.Error:
            pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def gib(self) -> float:
        """Peak in GiB."""
        return self.peak / 2**30


class CpuMeter:
    """CPU seconds used by this process and all its descendants (the Spark JVM and its
    Python workers too) over a block.

    A plain before/after sum over the process tree goes wrong when a process exits in
    between (Spark retires idle Python workers, taking their CPU time with them), so the
    tree is sampled every ``interval`` seconds and every process contributes its last
    sampled time minus its time when first seen (0 if it started inside the block).
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
            except psutil.Error:
                continue
            used = t.user + t.system
            if key not in self._first:
                self._first[key] = used if not self._started else 0.0
            self._last[key] = used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        """CPU seconds of the whole tree inside the block."""
        return sum(self._last[k] - self._first[k] for k in self._last)


class Usage:
    """The 1-minute load average sampled every few seconds over a block."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.loads.append(os.getloadavg()[0])

    def __enter__(self) -> Usage:
        self.loads.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.loads.append(os.getloadavg()[0])

    @property
    def load(self) -> list[float]:
        """1-minute load average: before, mean while running, after."""
        return [round(self.loads[0], 1), round(sum(self.loads) / len(self.loads), 1),
                round(self.loads[-1], 1)]  # fmt: skip


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


#: Per Spark application: (next job id, next stage id) not yet seen by a ShuffleMeter.
_SPARK_SEEN: dict[str, tuple[int, int]] = {}


class ShuffleMeter:
    """Shuffle bytes Spark wrote during a block, from its status store (what the UI shows;
    works with the UI off): every stage of the jobs submitted inside the block.

    Spark numbers jobs and stages 0, 1, 2, ... as it creates them; a stage that a job
    reuses from an earlier one (skipped) has an id below the block's first and is not
    counted twice.
    """

    def __init__(self, spark) -> None:
        self._sc = spark.sparkContext
        self._tracker = self._sc.statusTracker()
        self.bytes = 0
        self.records = 0
        self.stages = 0

    def _jobs_from(self, start: int) -> tuple[int, list[int]]:
        """(next job id, stage ids) of the jobs ``start``, ``start + 1``, ... known now."""
        job, stages = start, []
        while (info := self._tracker.getJobInfo(job)) is not None:
            stages.extend(info.stageIds)
            job += 1
        return job, stages

    def __enter__(self) -> ShuffleMeter:
        app = self._sc.applicationId
        job, stage = _SPARK_SEEN.get(app, (0, 0))
        job, stages = self._jobs_from(job)
        self._job0, self._stage0 = job, max([stage, *(s + 1 for s in stages)])
        _SPARK_SEEN[app] = (self._job0, self._stage0)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the listener bus trails the last job by a few milliseconds
        job, stages = self._jobs_from(self._job0)
        try:
            store = self._sc._jsc.sc().statusStore()  # Spark's internal API: may change
        except Exception:
            self.bytes = self.records = None
            return
        for sid in sorted({s for s in stages if s >= self._stage0}):
            try:
                d = store.lastStageAttempt(sid)
            except Exception:  # evicted from the store (spark.ui.retainedStages)
                continue
            self.stages += 1
            self.bytes += int(d.shuffleWriteBytes())
            self.records += int(d.shuffleWriteRecords())
        _SPARK_SEEN[self._sc.applicationId] = (job, max([self._stage0, *(s + 1 for s in stages)]))


def head_file(corpus: Path, lines: int, work: Path) -> Path:
    """The first ``lines`` lines of a gzip corpus as ``work/head-LINES.txt`` (written once,
    then reused: a dry run of a benchmark on a slice)."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"head-{lines}.txt"
    if not out.exists():
        with gzip.open(corpus, "rt", encoding="utf-8") as f, open(out, "w") as g:
            for i, line in enumerate(f):
                if i >= lines:
                    break
                g.write(line)
    return out
