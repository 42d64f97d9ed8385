"""The direct reader: byte ranges tile a file into exactly Spark's lines, cut anywhere."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedpipe.config import load_config
from embedpipe.errors import InputError
from embedpipe.kernels.tokens import split_lines
from embedpipe.stages.source import plan_splits, read_split, use_direct_reader


def spark_lines(data: bytes) -> list[bytes]:
    """Lines as Spark's text reader with lineSep "\\n" returns them (the obvious way)."""
    if not data:
        return []
    parts = data.split(b"\n")
    return parts[:-1] if data.endswith(b"\n") else parts


def read_all(path, cuts: list[int], read_bytes: int) -> list[bytes]:
    uri = str(path)
    out = []
    for s, e in itertools.pairwise(cuts):
        for b in read_split(uri, s, e, read_bytes):
            assert b.column("file").to_pylist() == [uri] * b.num_rows
            assert set(b.column("block").to_pylist()) <= {s}
            out.extend(b.column("raw").to_pylist())
    return out


@pytest.mark.parametrize("data", [b"", b"a", b"a\n", b"\n", b"\n\n", b"a\n\nb", b"ab\r\ncd\n\n",
                                  b"x" * 100 + b"\n" + b"y" * 3])
def test_split_lines_equals_spark(data):
    d, o = split_lines(np.frombuffer(data, np.uint8))
    assert [bytes(d[o[i]:o[i + 1]]) for i in range(len(o) - 1)] == spark_lines(data)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
       trailing=st.booleans(), cuts=st.lists(st.integers(0, 2000), max_size=6),
       read_bytes=st.sampled_from([1, 3, 7, 64, 1 << 20]))
def test_ranges_cut_anywhere_tile_the_lines(tmp_path_factory, lines, trailing, cuts, read_bytes):
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    path = tmp_path_factory.mktemp("d") / "c.txt"
    path.write_bytes(data)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    assert read_all(path, points, read_bytes) == spark_lines(data)


def test_a_line_longer_than_a_read_and_than_a_range(tmp_path):
    data = b"short\n" + b"w " * 50_000 + b"\nlast"
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    cuts = [0, 10, 500, 60_000, len(data)]
    assert read_all(path, cuts, 1000) == spark_lines(data)


def test_path_with_a_space_as_spark_lists_it(tmp_path):
    path = tmp_path / "a b.txt"
    path.write_bytes(b"one\ntwo\n")
    uri = path.as_uri()  # file:///.../a%20b.txt, as Spark's inputFiles() gives it
    got = [r for b in read_split(uri, 0, 8) for r in b.column("raw").to_pylist()]
    assert got == [b"one", b"two"]


def test_plan_splits_covers_every_byte_once():
    files = [{"path": "a", "size": 1000}, {"path": "b", "size": 0}, {"path": "c", "size": 10}]
    for parts, cores in [(0, 2), (0, 3), (1, 2), (7, 2), (50, 1)]:
        splits = plan_splits(files, parts, cores, max_split=300)
        for name, size in (("a", 1000), ("c", 10)):
            mine = [(s, e) for f, s, e in splits if f == name]
            assert mine[0][0] == 0 and mine[-1][1] == size
            assert all(e1 == s2 for (_, e1), (s2, _) in itertools.pairwise(mine))
        assert not [s for s in splits if s[0] == "b"]
        assert len(splits) >= max(parts, 4)  # 1010 bytes / 300 -> at least 4
    # One big file and auto partitions: a multiple of the cores, so no core idles.
    assert len(plan_splits([{"path": "a", "size": 1000}], 0, 3, max_split=300)) == 6


def test_reader_choice():
    local = [{"path": "file:///c/x.txt", "size": 1}]
    gz = [{"path": "file:///c/x.txt.gz", "size": 1}]
    bz2 = [{"path": "file:///c/x.txt.bz2", "size": 1}]
    hdfs = [{"path": "hdfs://nn/c/x.txt", "size": 1}]
    cfg = load_config(None, []).input
    assert use_direct_reader(cfg, local) and use_direct_reader(cfg, gz)
    assert not use_direct_reader(cfg, bz2) and not use_direct_reader(cfg, hdfs)
    spark_cfg = load_config(None, ["input.reader=spark"]).input
    assert not use_direct_reader(spark_cfg, local)
    direct = load_config(None, ["input.reader=direct"]).input
    assert use_direct_reader(direct, hdfs)
    with pytest.raises(InputError, match=r"input.reader = direct reads plain and \.gz text only"):
        use_direct_reader(direct, bz2)
    parquet = load_config(None, ["input.format=parquet"]).input
    assert not use_direct_reader(parquet, local)
    # A gzip file is one range (not splittable), like Spark's single task for it.
    assert plan_splits(gz, 8, 2) == [("file:///c/x.txt.gz", 0, 1)]


@pytest.mark.parametrize("members", [1, 3])
def test_gzip_read_whole_with_concatenated_members(tmp_path, members):
    data = b"".join(b"line %d of member\n" % i for i in range(5000)) + b"x" * 70_000 + b"\nend"
    step = -(-len(data) // members)
    path = tmp_path / "c.txt.gz"
    path.write_bytes(b"".join(gzip.compress(data[k:k + step]) for k in range(0, len(data), step)))
    got = [r for b in read_split(str(path), 0, path.stat().st_size, 4096)
           for r in b.column("raw").to_pylist()]
    assert got == spark_lines(data)


def test_truncated_and_invalid_gzip(tmp_path):
    good = gzip.compress(b"a b c\n" * 10_000)
    cut, bad = tmp_path / "cut.gz", tmp_path / "bad.gz"
    cut.write_bytes(good[: len(good) // 2])
    bad.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(InputError, match=r"cut\.gz: truncated gzip file"):
        list(read_split(str(cut), 0, 1))
    with pytest.raises(InputError, match=r"bad\.gz: not a valid gzip file"):
        list(read_split(str(bad), 0, 1))
