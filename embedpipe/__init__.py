"""embedpipe: a Spark-native pipeline that turns big text corpora into word embeddings."""

from __future__ import annotations

__version__ = "0.1.0"

#: Version of the on-disk artifact layout; bumped when a reader could misread old runs.
FORMAT_VERSION = 1
