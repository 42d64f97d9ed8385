"""embedpipe.vectors: formats round-trip exactly, malformed files are named, queries are right."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedpipe import FORMAT_VERSION
from embedpipe import vectors as vm
from embedpipe.errors import ArtifactVersionError, EmbedpipeError, InputError, SchemaError
from embedpipe.vectors import OutOfVocabularyError, Vectors

TOKENS = ["the", "of", "café", "don't", '"quoted"', "naïve", "x-ray", "日本", "a.b", "Z"]


@pytest.fixture(scope="module")
def vec() -> Vectors:
    rng = np.random.default_rng(7)
    m = rng.standard_normal((len(TOKENS), 9)).astype(np.float32)
    m[:, 0] *= 1e-6  # tiny values take the exponent notation path
    m[:, 1] *= 1e6
    m[2, 2] = -0.0
    m[3, 3] = 1.0
    return Vectors(TOKENS, m)


def _writers(v: Vectors, tmp_path):
    return {
        "word2vec": (tmp_path / "v.txt", lambda p: v.save_word2vec(str(p))),
        "word2vec-binary": (tmp_path / "v.bin", lambda p: v.save_word2vec(str(p), binary=True)),
        "glove": (tmp_path / "g.txt", lambda p: v.save_glove(str(p))),
        "parquet": (tmp_path / "v.parquet", lambda p: v.save_parquet(str(p))),
    }


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary", "glove", "parquet"])
def test_round_trip_is_exact_and_detected(vec, tmp_path, fmt):
    path, write = _writers(vec, tmp_path)[fmt]
    write(path)
    for loaded in (Vectors.load(str(path)), Vectors.load(str(path), format=fmt)):
        assert loaded.index_to_key == TOKENS
        # Text holds the shortest decimal that reads back to the same float32: exact.
        np.testing.assert_array_equal(loaded.vectors, vec.vectors)
        assert loaded.vectors.dtype == np.float32


def test_binary_detected_without_bin_suffix_and_gzip_text(vec, tmp_path):
    vec.save_word2vec(str(tmp_path / "noext"), binary=True)
    assert Vectors.load(str(tmp_path / "noext")).index_to_key == TOKENS
    vec.save_word2vec(str(tmp_path / "v.txt.gz"))
    assert (tmp_path / "v.txt.gz").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(Vectors.load(str(tmp_path / "v.txt.gz")).vectors, vec.vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_ours_and_we_read_gensims(vec, tmp_path, binary):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    ours = tmp_path / "ours"
    vec.save_word2vec(str(ours), binary=binary)
    g = gensim_kv.KeyedVectors.load_word2vec_format(str(ours), binary=binary)
    assert g.index_to_key == TOKENS
    np.testing.assert_array_equal(g.vectors, vec.vectors)
    theirs = tmp_path / "theirs"
    g.save_word2vec_format(str(theirs), binary=binary)
    back = Vectors.load_word2vec(str(theirs), binary=binary)
    assert back.index_to_key == TOKENS
    np.testing.assert_array_equal(back.vectors, vec.vectors)


def test_gensim_reads_our_glove(vec, tmp_path):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    vec.save_glove(str(tmp_path / "g.txt"))
    g = gensim_kv.KeyedVectors.load_word2vec_format(str(tmp_path / "g.txt"), no_header=True)
    assert g.index_to_key == TOKENS
    np.testing.assert_array_equal(g.vectors, vec.vectors)


def test_text_parse_matches_gensim_rounding(tmp_path):
    """Values outside the fast path and double rounding read as gensim reads them."""
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    text = (
        "4 4\n"
        "a 1e-30 3.4028235e+38 NaN -inf\n"
        "b 0.1 -0 1.00000005960464477550 123456789012345678901234\n"
        "c .5 5. +1 1E+2\n"
        "d 9999999999999999999 0.30000000000000004 1e-300 12345678901234567890e-30\n"
    )
    (tmp_path / "t.txt").write_text(text)
    ours = Vectors.load(str(tmp_path / "t.txt"))
    g = gensim_kv.KeyedVectors.load_word2vec_format(str(tmp_path / "t.txt"))
    np.testing.assert_array_equal(ours.vectors, g.vectors)  # NaN == NaN here
    assert ours.vectors[1, 2] == np.float32(1.0)  # double rounding, like np.float32(str)


def test_parsing_across_blocks(vec, tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "_READ_BLOCK_BYTES", 37)  # many tiny blocks, lines cut anywhere
    vec.save_word2vec(str(tmp_path / "v.txt"))
    loaded = Vectors.load(str(tmp_path / "v.txt"))
    assert loaded.index_to_key == TOKENS
    np.testing.assert_array_equal(loaded.vectors, vec.vectors)
    lines = (tmp_path / "v.txt").read_text().splitlines()
    lines[8] = lines[8] + " 1.0"
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad\.txt:9: token '日本' has 10 values, expected 9"):
        Vectors.load(str(tmp_path / "bad.txt"))


def test_model_dir_sorted_by_id_with_counts_and_meta(vec, tmp_path):
    run = tmp_path / "run"
    model = run / "glove"
    (model / "vectors.parquet").mkdir(parents=True)
    n = len(vec)
    perm = np.random.default_rng(1).permutation(n)
    for part, rows in enumerate(np.array_split(perm, 3)):  # a Spark-like directory of parts
        table = pa.table(
            {
                "id": pa.array(rows.astype(np.int32)),
                "token": pa.array([TOKENS[i] for i in rows]),
                "vector": pa.array([vec.vectors[i].tolist() for i in rows], pa.list_(pa.float32())),
            }
        )
        pq.write_table(table, model / "vectors.parquet" / f"part-{part}.parquet")
    (model / "vectors.parquet" / "_SUCCESS").write_bytes(b"")
    (model / "model.json").write_text(json.dumps({"format_version": 1, "losses": [2.0, 1.0]}))
    (run / "vocab").mkdir()
    counts = np.arange(n, 0, -1) * 10
    pq.write_table(
        pa.table(
            {"id": np.arange(n, dtype=np.int32)[::-1], "token": TOKENS[::-1], "count": counts[::-1]}
        ),
        run / "vocab" / "part-0.parquet",
    )
    loaded = Vectors.load(str(model))
    assert loaded.index_to_key == TOKENS
    np.testing.assert_array_equal(loaded.vectors, vec.vectors)
    np.testing.assert_array_equal(loaded.counts, counts)
    assert loaded.meta["losses"] == [2.0, 1.0]

    (model / "model.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactVersionError, match=r"model\.json: format_version 2 is newer"):
        Vectors.load(str(model))


def test_parquet_schema_errors(vec, tmp_path):
    def write(name, **cols):
        pq.write_table(pa.table(cols), tmp_path / name)
        return str(tmp_path / name)

    lists = pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32()))
    missing = write("a.parquet", id=pa.array([0, 1], pa.int32()), token=["x", "y"])
    with pytest.raises(SchemaError, match="columns id, token, vector"):
        Vectors.load(missing)
    gap = write("b.parquet", id=pa.array([0, 2], pa.int32()), token=["x", "y"], vector=lists)
    with pytest.raises(SchemaError, match=r"ids must be 0\.\.1, each once"):
        Vectors.load(gap)
    ragged = pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))
    bad = write("c.parquet", id=pa.array([0, 1], pa.int32()), token=["x", "y"], vector=ragged)
    with pytest.raises(SchemaError, match="vector of id 1 has 1 values, expected 2"):
        Vectors.load(bad)


# --------------------------------------------------------------------------- malformed input

W2V_OK = "3 2\na 1 2\nb 3 4\nc 5 6\n"

MALFORMED_TEXT = [
    ("3 2\na 1 2\nb 3\nc 5 6\n", "word2vec", r"f:3: token 'b' has 1 values, expected 2"),
    ("3 2\na 1 2\nb 3 4 5\nc 5 6\n", "word2vec", r"f:3: token 'b' has 3 values, expected 2"),
    ("3 2\na 1 2\nb 3 x4\nc 5 6\n", "word2vec", r"f:3: value 'x4' is not a number"),
    ("3 2\na 1 2\nb 3  4\nc 5 6\n", "word2vec", r"f:3: value '' is not a number \(two spaces"),
    ("3 2\na 1 2\nb 3 4\na 5 6\n", "word2vec", r"f:4: duplicate token 'a' \(first at 2\)"),
    ("4 2\na 1 2\nb 3 4\nc 5 6\n", "word2vec", r"f:1: header says 4 vectors but the file has 3"),
    ("2 2\na 1 2\nb 3 4\nc 5 6\n", "word2vec", r"f:1: header says 2 vectors but the file has 3"),
    ("3 2\na 1 2\n\nb 3 4\nc 5 6\n", "word2vec", r"f:3: empty line inside the file"),
    ("3 2\na 1 2\n 3 4\nc 5 6\n", "word2vec", r"f:3: line starts with a space"),
    ("a 1 2\nb 3 4\n", "word2vec", r"f:1: expected a word2vec header 'vocab_size dim'"),
    ("", "word2vec", r"f: empty file"),
    ("a 1 2\nb 3\n", "glove", r"f:2: token 'b' has 1 values, expected 2"),
    ("a 1 2\nb 3 nope\n", "glove", r"f:2: value 'nope' is not a number"),
    ("a 1 2\nb 3 4\nb 5 6\n", "glove", r"f:3: duplicate token 'b' \(first at 2\)"),
    ("a\nb 3 4\n", "glove", r"f:1: line has a token but no values"),
]


@pytest.mark.parametrize(("text", "fmt", "message"), MALFORMED_TEXT)
def test_malformed_text_is_named(tmp_path, text, fmt, message):
    path = tmp_path / "f"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        Vectors.load(str(path), format=fmt)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    assert info.match(message)


def test_valid_text_with_trailing_blank_lines_and_crlf(tmp_path):
    (tmp_path / "f").write_bytes(W2V_OK.replace("\n", "\r\n").encode() + b"\r\n\n")
    v = Vectors.load(str(tmp_path / "f"))
    assert v.index_to_key == ["a", "b", "c"]
    np.testing.assert_array_equal(v.vectors, [[1, 2], [3, 4], [5, 6]])


def test_invalid_utf8_token(tmp_path):
    (tmp_path / "f").write_bytes(b"2 2\na 1 2\n\xff\xfe 3 4\n")
    with pytest.raises(InputError, match=r"f:3: token .* is not valid UTF-8"):
        Vectors.load(str(tmp_path / "f"), format="word2vec")


def _binary(rows: list[tuple[bytes, list[float]]], header: bytes) -> bytes:
    body = b"".join(t + b" " + np.asarray(v, "<f4").tobytes() + b"\n" for t, v in rows)
    return header + body


MALFORMED_BINARY = [
    (lambda: _binary([(b"a", [1, 2])], b"2 2\n"), r"truncated at vector 2 of 2"),
    (lambda: _binary([(b"a", [1, 2]), (b"b", [3, 4])], b"2 2\n")[:-4], r"truncated at vector 2"),
    (lambda: _binary([(b"a", [1, 2]), (b"a", [3, 4])], b"2 2\n"), r"f:vector 2: duplicate token"),
    (lambda: _binary([(b"a", [1, 2]), (b"b", [3, 4])], b"1 2\n"), r"header says 1 vectors but"),
    (lambda: b"junk\n", r"f:1: expected a word2vec header"),
]


@pytest.mark.parametrize(("make", "message"), MALFORMED_BINARY)
def test_malformed_binary_is_named(tmp_path, make, message):
    (tmp_path / "f").write_bytes(make())
    with pytest.raises(InputError, match=message) as info:
        Vectors.load(str(tmp_path / "f"), format="word2vec-binary")
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Vectors.load(str(tmp_path / "nope.txt"))
    with pytest.raises(InputError, match="file not found"):
        Vectors.load_glove(str(tmp_path / "nope.txt"))
    with pytest.raises(EmbedpipeError, match="unknown vectors format 'csv'"):
        Vectors.load(str(tmp_path), format="csv")


def test_tokens_with_whitespace_cannot_be_written_as_text(tmp_path):
    v = Vectors(["ok", "two words"], np.ones((2, 2), np.float32))
    with pytest.raises(InputError, match=r"token 'two words' \(row 1\) .* use save_parquet"):
        v.save_word2vec(str(tmp_path / "x.txt"))
    v.save_parquet(str(tmp_path / "x.parquet"))  # Parquet can hold any token
    assert Vectors.load(str(tmp_path / "x.parquet")).index_to_key == ["ok", "two words"]


def test_constructor_checks(vec):
    with pytest.raises(InputError, match="2 tokens but the matrix has 3 rows"):
        Vectors(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"duplicate token 'a'"):
        Vectors(["a", "a"], np.zeros((2, 2)))


# --------------------------------------------------------------------------- queries


@pytest.fixture(scope="module")
def big() -> Vectors:
    rng = np.random.default_rng(11)
    n, dim = 600, 16
    m = rng.standard_normal((n, dim)).astype(np.float32)
    m[5] = 0.0  # a zero row must stay zero, never NaN
    return Vectors([f"w{i}" for i in range(n)], m)


def _brute(v: Vectors, query: np.ndarray, exclude: set[int], topn: int, limit: int):
    unit = v.vectors / np.maximum(np.linalg.norm(v.vectors, axis=1, keepdims=True), 1e-30)
    q = query / np.linalg.norm(query)
    scores = (unit[:limit].astype(np.float64) @ q).tolist()
    order = sorted((i for i in range(limit) if i not in exclude), key=lambda i: -scores[i])
    return [(v.index_to_key[i], scores[i]) for i in order[:topn]]


def _unit(v: Vectors, w: str) -> np.ndarray:
    x = v.vectors[v.key_to_index[w]].astype(np.float64)
    return x / np.linalg.norm(x)


def test_unit_rows(big):
    np.testing.assert_allclose(np.linalg.norm(big.unit[np.arange(600) != 5], axis=1), 1, 1e-6)
    assert not big.unit[5].any()


@pytest.mark.parametrize("restrict", [None, 100])
def test_most_similar_equals_brute_force(big, restrict):
    limit = restrict or len(big)
    got = big.most_similar("w3", topn=7, restrict_vocab=restrict)
    want = _brute(big, _unit(big, "w3"), {3}, 7, limit)
    assert [w for w, _ in got] == [w for w, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    got = big.most_similar(["w1", "w2"], ["w7"], topn=5, restrict_vocab=restrict)
    q = _unit(big, "w1") + _unit(big, "w2") - _unit(big, "w7")
    want = _brute(big, q, {1, 2, 7}, 5, limit)
    assert [w for w, _ in got] == [w for w, _ in want]


def test_most_similar_batch_equals_single_queries(big, monkeypatch):
    monkeypatch.setattr(vm, "_SCORE_BUDGET", 1000)  # force several chunks
    words = [f"w{i}" for i in range(0, 600, 37)]
    batch = big.most_similar_batch(words, topn=6)
    for w, got in zip(words, batch, strict=True):
        assert [x for x, _ in got] == [x for x, _ in big.most_similar(w, topn=6)]
    q = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    idx, vals = big.most_similar_batch(q, topn=3, restrict_vocab=50, as_arrays=True)
    for row in range(4):
        want = _brute(big, q[row].astype(np.float64), set(), 3, 50)
        assert [big.index_to_key[i] for i in idx[row]] == [w for w, _ in want]
        np.testing.assert_allclose(vals[row], [s for _, s in want], atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
def test_similarity_and_analogies_match_gensim(big):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    g = gensim_kv.KeyedVectors(big.dim)
    g.add_vectors(big.index_to_key, big.vectors)
    assert big.similarity("w1", "w2") == float(g.similarity("w1", "w2"))  # bit for bit
    for a, b, c in [("w1", "w2", "w3"), ("w10", "w400", "w99")]:
        ours = big.analogy(a, b, c, topn=5)
        theirs = g.most_similar(positive=[b, c], negative=[a], topn=5)
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-6)
        ours = big.analogy(a, b, c, method="3cosmul", topn=5)
        theirs = g.most_similar_cosmul(positive=[b, c], negative=[a], topn=5)
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5)


def test_out_of_vocabulary_errors(big):
    for call in (
        lambda: big.most_similar("nope"),
        lambda: big.similarity("w1", "nope"),
        lambda: big.analogy("w1", "nope", "w2"),
        lambda: big.analogy("w1", "nope", "w2", method="3cosmul"),
        lambda: big.most_similar_batch(["w1", "nope"]),
        lambda: big["nope"],
    ):
        with pytest.raises(OutOfVocabularyError) as info:
            call()
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, EmbedpipeError)
        assert str(info.value).startswith("'nope' not in the vocabulary (600 words)")


def test_vector_hook_lets_subclasses_answer_unseen_words(big):
    class Fallback(Vectors):
        def vector(self, word):
            return super().vector(word) if word in self else self.vectors[1] + self.vectors[2]

    fb = Fallback(big.index_to_key, big.vectors)
    got = fb.most_similar("unseen", topn=3)
    q = big.vectors[1].astype(np.float64) + big.vectors[2]
    want = _brute(big, q, set(), 3, 600)
    assert [w for w, _ in got] == [w for w, _ in want]


def test_gzip_is_really_gzip(tmp_path, vec):
    vec.save_glove(str(tmp_path / "g.txt.gz"))
    text = gzip.decompress((tmp_path / "g.txt.gz").read_bytes()).decode()
    assert text.splitlines()[0].split(" ")[0] == "the"


def test_number_parser_equals_python_float_in_many_notations(tmp_path):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(400) * 10.0 ** rng.integers(-45, 36, 400)).tolist()
    texts = [f"{v!r}" for v in x] + [f"{v:.6f}" for v in x] + [f"{v:.9g}" for v in x]
    texts += [f"{v:e}" for v in x] + [f"{v:.17E}" for v in x] + ["0", "-0.0", "1e-46", "3e38"]
    texts += [str(np.float32(v)) for v in x]
    texts = texts[: len(texts) // 4 * 4]
    rows = [texts[i : i + 4] for i in range(0, len(texts), 4)]
    (tmp_path / "g.txt").write_text("".join(f"t{i} {' '.join(r)}\n" for i, r in enumerate(rows)))
    got = Vectors.load_glove(str(tmp_path / "g.txt")).vectors
    want = np.array([[float(t) for t in r] for r in rows]).astype(np.float32)
    np.testing.assert_array_equal(got, want)
