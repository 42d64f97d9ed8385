"""Run the benchmarks in one process tree and regenerate bench/RESULTS.md.

    python bench/run_all.py            # everything (hours: whole en-open, 10M-200M-token corpora)
    python bench/run_all.py --quick    # embedpipe vs peers on a slice + tiny scaling (minutes)

``--quick`` runs ``compare.py --quick`` and ``scaling.py --quick`` (sections
``compare-quick`` and ``scaling-quick``). The full run adds every per-stage benchmark in
its full form, then ``compare.py`` and ``scaling.py`` (sections ``compare`` and
``scaling``). Each script writes its own sections from its own measurements; a script
that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

#: (script, arguments) in order, for --quick.
QUICK: list[tuple[str, list[str]]] = [
    ("compare.py", ["--quick"]),
    ("scaling.py", ["--quick"]),
]
#: (script, arguments) in order, for the full run.
FULL: list[tuple[str, list[str]]] = [
    ("bench_vocab_encode.py", []),
    ("eval_vs_gensim.py", []),
    ("bench_queries.py", []),
    ("bench_cooccur.py", []),
    ("bench_glove.py", []),
    ("bench_svd.py", ["--svds-only"]),  # the ARPACK reference the next run compares with
    ("bench_svd.py", []),
    ("bench_word2vec.py", ["--phase", "speed"]),
    # S = 1 and 4 against gensim and MLlib (the section's checks); compare.py plots them.
    ("bench_word2vec.py", ["--phase", "quality", "--partitions", "1,4", "--merges", "average"]),
    ("bench_ml_pipeline.py", []),
    ("compare.py", []),
    ("scaling.py", []),
]


def main() -> int:
    """Run the scripts in order; 1 if any failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    failed = []
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    sys.path.insert(0, str(BENCH.parent))
    try:  # CPU seconds of the whole tree: what the run cost whatever the machine's load
        from bench.common import CpuMeter

        cpu = CpuMeter(interval=2.0).__enter__()
    except ImportError:
        cpu = None
    for script, extra in QUICK if args.quick else FULL:
        if not (BENCH / script).exists():
            continue
        cmd = [sys.executable, str(BENCH / script), *extra]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {script}: exit {rc} in {time.perf_counter() - t:.0f}s", flush=True)
        if rc:
            failed.append(f"{script} {' '.join(extra)}".strip())
    if cpu is not None:
        cpu.__exit__(None, None, None)
    print(
        f"RESULTS.md: {BENCH / 'RESULTS.md'}; {time.perf_counter() - start:.0f} s in all"
        + (f", {cpu.seconds:.0f} CPU s (process tree)" if cpu is not None else "")
        + f"; 1-minute load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
