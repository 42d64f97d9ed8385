"""spark-submit entry point for the `cooccur` stage: the same options as `embedpipe cooccur`.

    spark-submit jobs/cooccur.py --conf conf/cluster.toml --out hdfs:///runs/NAME
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe cooccur` with argv (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["cooccur", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
