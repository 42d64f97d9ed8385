"""spark-submit entry point for the `export` stage: the same options as `embedpipe export`.

    spark-submit jobs/export.py --conf conf/cluster.toml --out hdfs:///runs/NAME
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe export` with argv (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
