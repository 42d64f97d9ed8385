"""Document splitting in ``encode`` against an obvious loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from embedpipe.stages.encode import split_docs


def reference(lengths, docs, m):
    rows = []
    start = 0
    for n, d in zip(lengths, docs, strict=True):
        for s in range(start, start + n, m):
            rows.append((d, s, min(s + m, start + n)))
        start += n
    return rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=20), st.integers(1, 7))
def test_split_docs_matches_loop(lengths, m):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    docs = np.arange(len(lengths), dtype=np.int64) * 10
    new_offsets, new_docs = split_docs(offsets, docs, m)
    got = [(int(d), int(a), int(b)) for d, a, b in
           zip(new_docs, new_offsets[:-1], new_offsets[1:], strict=True)]
    assert got == reference(lengths, docs, m)
