"""spark-submit entry point for the `svd` stage: the same options as `embedpipe svd`.

    spark-submit jobs/svd.py --conf conf/cluster.toml --out hdfs:///runs/NAME
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe svd` with argv (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["svd", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
