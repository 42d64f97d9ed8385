"""Run the benchmarks in one process tree and regenerate bench/RESULTS.md.

    python bench/run_all.py            # everything (long: 200M-token corpora, full en-open)
    python bench/run_all.py --quick    # the short variants

Each script writes its own section of RESULTS.md from its own measurements; a
script that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

#: (script, arguments for --quick, arguments for the full run)
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("bench_vocab_encode.py", ["--quick"], []),
    ("eval_vs_gensim.py", ["--max-lines", "100000"], []),
    ("bench_queries.py", [], []),
]
#: Benchmarks added by later stages run when present.
OPTIONAL = [
    ("bench_cooccur.py", ["--quick"], []),
    ("bench_glove.py", ["--quick"], []),
    ("bench_svd.py", ["--quick"], []),
    ("bench_word2vec.py", ["--quick"], []),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    failed = []
    for script, quick, full in SCRIPTS + [s for s in OPTIONAL if (BENCH / s[0]).exists()]:
        cmd = [sys.executable, str(BENCH / script), *(quick if args.quick else full)]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {script}: exit {rc} in {time.perf_counter() - t:.0f}s", flush=True)
        if rc:
            failed.append(script)
    print(f"RESULTS.md: {BENCH / 'RESULTS.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
