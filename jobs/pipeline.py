"""spark-submit entry point for the whole pipeline: the same options as `embedpipe run`.

    spark-submit --archives embedpipe-env.tar.gz#env jobs/pipeline.py \
        --conf conf/cluster.toml --input hdfs:///corpora/wiki --out hdfs:///runs/wiki
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe run` with ``argv`` (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
