"""A Spark standalone cluster on loopback: one master and two one-core workers.

Started from the installed pyspark (``bin/spark-class``), bound to 127.0.0.1, so the
tests run real executors in separate JVMs (and Python workers under them) that can
be killed, as on a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    from embedpipe.spark import find_java_home

    env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    java_home = find_java_home()
    if java_home:
        env["JAVA_HOME"] = java_home
    return env


class LoopbackCluster:
    """Master + ``workers`` workers with ``cores`` cores and ``memory`` each."""

    def __init__(self, work: Path, workers: int = 2, cores: int = 1, memory: str = "2g"):
        self.work, self.n_workers, self.cores, self.memory = work, workers, cores, memory
        self.port, self.ui = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        p = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=_env(),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def alive_workers(self) -> list[dict]:
        """Workers the master lists as ALIVE (from its JSON status page)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=5) as r:
                state = json.load(r)
        except OSError:
            return []
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def start(self, timeout: float = 180.0) -> LoopbackCluster:
        """Start the master and the workers; wait until every worker has registered."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui))
        for k in range(self.n_workers):
            self._spawn(f"worker{k}", "org.apache.spark.deploy.worker.Worker",
                        "--host", "127.0.0.1", "--cores", str(self.cores), "--memory",
                        self.memory, "--webui-port", str(_free_port()),
                        "--work-dir", str(self.work / f"worker{k}"), self.url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.alive_workers()) == self.n_workers:
                return self
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(1)
        self.stop()
        logs = " ".join(str(p) for p in self.work.glob("*.log"))
        raise RuntimeError(f"loopback cluster did not start in {timeout:.0f}s; see {logs}")

    def stop(self) -> None:
        """Stop every process of the cluster (their process groups, executors included)."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()

    def executor_pids(self) -> list[int]:
        """PIDs of the executor JVMs running now (children of the workers)."""
        out = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"],
                             capture_output=True, text=True).stdout.split()
        return [int(x) for x in out]


def package_zip(dest: Path) -> Path:
    """``embedpipe.zip`` for ``--py-files``, as the README tells users to ship it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted((REPO / "embedpipe").rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, f.relative_to(REPO))
    return dest


def spark_submit(cluster: LoopbackCluster, py_files: Path, args: list[str], log: Path,
                 timeout: float = 3600) -> subprocess.CompletedProcess:
    """``spark-submit jobs/pipeline.py ARGS`` against the cluster; output to ``log``."""
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
           "--py-files", str(py_files), "--conf", "spark.executor.memory=1500m",
           "--conf", "spark.driver.memory=2g", "--conf", f"spark.pyspark.python={sys.executable}",
           str(REPO / "jobs" / "pipeline.py"), *args]
    with open(log, "wb") as out:
        return subprocess.run(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=str(cluster.work))


def spark_submit_background(cluster: LoopbackCluster, py_files: Path, args: list[str],
                            log: Path) -> subprocess.Popen:
    """Like :func:`spark_submit`, but returns the running driver (its own process group)."""
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
           "--py-files", str(py_files), "--conf", "spark.executor.memory=1500m",
           "--conf", "spark.driver.memory=2g", "--conf", f"spark.pyspark.python={sys.executable}",
           str(REPO / "jobs" / "pipeline.py"), *args]
    out = open(log, "wb")  # noqa: SIM115 (lives as long as the process)
    return subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                            cwd=str(cluster.work), start_new_session=True)


def wait_for_line(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Block until ``needle`` appears in ``log`` (or fail if the driver exits first)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited ({proc.returncode}) before '{needle}': "
                                 + log.read_text(errors="replace")[-2000:])
        time.sleep(0.2)
    raise AssertionError(f"'{needle}' not in {log} after {timeout:.0f}s")
