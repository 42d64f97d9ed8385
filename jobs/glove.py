"""spark-submit entry point for the `glove` stage: the same options as `embedpipe glove`.

    spark-submit jobs/glove.py --conf conf/cluster.toml --out hdfs:///runs/NAME
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `embedpipe glove` with argv (default: the command line)."""
    from embedpipe.cli import main as cli_main

    return cli_main(["glove", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
