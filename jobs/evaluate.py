"""spark-submit entry point for the `evaluate` stage: the same options as `embedpipe evaluate`.

    spark-submit jobs/evaluate.py --conf conf/cluster.toml --out hdfs:///runs/NAME
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe evaluate` with argv (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
