"""Load, save and query word vectors: the one in-memory form every embedding takes.

:class:`Vectors` holds gensim's three fields (``index_to_key``, ``key_to_index``,
``vectors``) with the rows in frequency order, so "the N most frequent words" is
"the first N rows". It reads and writes

* a run's model directory (``vectors.parquet`` ``id:int32, token:string,
  vector:list<float32>`` plus ``model.json``),
* the word2vec text and binary formats (header line ``"V dim"``),
* the GloVe text format (word2vec text without the header),
* a single Parquet file with the model-directory schema.

A word2vec run trained with ``word2vec.subwords = true`` also keeps its character
n-gram vectors (``ngrams.parquet``, see :class:`SubwordVectors`); loading such a model
directory gives a :class:`SubwordVectors`, which answers queries for unseen words too.

Nothing here executes code from a file (no pickle). A malformed file is rejected
with a one-line :class:`~embedpipe.errors.InputError` naming the file and line.
Text is parsed 64 MB of lines at a time by a compiled (numba) scanner, never with
one Python ``float()`` per value: ~3 s of CPU per 100k x 300 lines. Numbers are
parsed to float64 exactly (Clinger's fast path; the rare value outside it goes
through Python's correctly rounded ``float``) and then rounded to float32, which is
what gensim does (``np.float32(str)``), so both read a text file to identical bits.
Writing uses Arrow's C++ float formatting (shortest digits that read back to the
same float32), so text round trips are exact.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import logging
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.linalg.blas as sblas
from numba import njit

from embedpipe import FORMAT_VERSION, fsutil, schemas
from embedpipe.errors import (
    ArtifactVersionError,
    ConfigError,
    EmbedpipeError,
    InputError,
    SchemaError,
)

logger = logging.getLogger(__name__)

#: Schema of ``vectors.parquet`` (declared once in :mod:`embedpipe.schemas`).
VECTORS_SCHEMA = schemas.VECTORS

#: ``ngrams.parquet`` of a subword model: one row per n-gram bucket some vocabulary word
#: has (the others were never trained and count as zero vectors), ascending by bucket.
NGRAMS_SCHEMA = pa.schema([("bucket", pa.int32()), ("vector", pa.list_(pa.float32()))])
NGRAMS_FILE = "ngrams.parquet"
#: The n-gram hash (fastText's FNV-1a 32 with bytes cast to int8), named in model.json.
SUBWORD_HASH = "fasttext-fnv1a32-int8"

#: Names accepted by :meth:`Vectors.load` (the CLI's ``--format`` values plus ``model``).
FORMATS = ("model", "parquet", "word2vec", "word2vec-binary", "glove")

_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}

# Bytes of text parsed at once: large enough that per-block overhead vanishes,
# small enough that the block and its parsed rows stay ~100 MB.
_READ_BLOCK_BYTES = 1 << 26
_WRITE_BLOCK_ROWS = 16384
# Score-matrix budget for batched queries (floats per chunk): 2**24 floats = 64 MB.
_SCORE_BUDGET = 1 << 24


class OutOfVocabularyError(EmbedpipeError, KeyError):
    """A query word has no vector. A ``KeyError`` too, so gensim-style code keeps working."""

    def __str__(self) -> str:
        # KeyError's own __str__ quotes its argument; keep the message as written.
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- helpers


def _compression(path: str) -> str | None:
    """Arrow codec name for a path's compression suffix, or None."""
    for suffix, codec in _COMPRESSION.items():
        if path.endswith(suffix):
            return codec
    return None


def _strip_compression(path: str) -> str:
    for suffix in _COMPRESSION:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


@contextlib.contextmanager
def _open_input(uri: str) -> Iterator[BinaryIO]:
    """Open ``uri`` for streaming reads, decompressing by suffix (.gz, .bz2, .zst, .lz4)."""
    fs, path = fsutil.resolve(uri)
    try:
        stream = fs.open_input_stream(path, compression=_compression(path))
    except FileNotFoundError as e:
        raise InputError(f"{uri}: file not found; check the path") from e
    except IsADirectoryError as e:
        raise InputError(f"{uri}: is a directory, expected a vectors file") from e
    with stream as f:
        yield f


def _open_output_atomic(uri: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """:func:`embedpipe.fsutil.open_output_atomic`, compressed as the name says (``.gz``):
    a 400k x 300 text file is ~1 GB, too big to build in memory first."""
    return fsutil.open_output_atomic(uri, compression=_compression(uri))


def _read_all(uri: str) -> bytes:
    with _open_input(uri) as f:
        return f.read()


def _iter_line_blocks(f: BinaryIO) -> Iterator[bytes]:
    """Yield large blocks of ``f`` that end at a line break (the last one may not)."""
    rest = b""
    while True:
        chunk = f.read(_READ_BLOCK_BYTES)
        if not chunk:
            break
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1 :]
    if rest:
        yield rest


def _parse_header(line: bytes, uri: str) -> tuple[int, int] | None:
    """Return (V, dim) when ``line`` is a word2vec header, else None."""
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _decode_token(tok: bytes, uri: str, where: str) -> str:
    if not tok:
        raise InputError(f"{uri}:{where}: empty token; a line must start with the word")
    try:
        return tok.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{uri}:{where}: token {tok!r} is not valid UTF-8 ({e.reason}); "
            "re-encode the file as UTF-8"
        ) from e


def _check_duplicates(tokens: list[str], uri: str, line_of: Any) -> None:
    """Raise on the first token that occurs twice (``line_of(i)`` names row i's location)."""
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        j = seen.setdefault(tok, i)
        if j != i:
            raise InputError(
                f"{uri}:{line_of(i)}: duplicate token {tok!r} (first at {line_of(j)}); "
                "each token may appear only once"
            )


# ---- the text parser (numba): one pass over a block of lines, no Python per value

_OK, _ERR_BLANK, _ERR_NOTOKEN, _ERR_NVALUES, _ERR_VALUE = 0, 1, 2, 3, 4
# 10**k is exact in float64 for k <= 22 (Clinger's fast path).
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


@njit(cache=True, nogil=True)
def _lower(c: int) -> int:
    return c | 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True)
def _word_at(buf: np.ndarray, s: int, e: int, word: bytes) -> bool:
    if e - s != len(word):
        return False
    for k in range(e - s):  # noqa: SIM110 (numba compiles loops, not generators)
        if _lower(buf[s + k]) != word[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _parse_float(buf: np.ndarray, s: int, e: int) -> tuple[bool, float, bool]:
    """Parse ``buf[s:e]`` as a decimal: (valid, value, exact).

    ``exact`` is False when the value is outside Clinger's fast path (more than 18
    significant digits, mantissa > 2**53 or |exponent| > 22); the caller then
    re-parses that line with Python's correctly rounded ``float``. Inside the fast
    path a single IEEE multiply or divide of two exact operands is correctly
    rounded, so the result equals ``float(text)`` bit for bit.
    """
    i = s
    neg = False
    if i < e and (buf[i] == 43 or buf[i] == 45):  # + -
        neg = buf[i] == 45
        i += 1
    if i == e:
        return False, 0.0, True
    c = _lower(buf[i])
    if c == 110 or c == 105:  # n, i
        if _word_at(buf, i, e, b"nan"):
            return True, np.nan, True
        if _word_at(buf, i, e, b"inf") or _word_at(buf, i, e, b"infinity"):
            return True, -np.inf if neg else np.inf, True
        return False, 0.0, True
    mant = 0
    ndig = 0
    exp10 = 0
    digits = False
    lossy = False
    while i < e and 48 <= buf[i] <= 57:
        d = buf[i] - 48
        digits = True
        if mant == 0 and d == 0:
            pass
        elif ndig < 18:  # 18 digits always fit in int64
            mant = mant * 10 + d
            ndig += 1
        else:
            exp10 += 1
            lossy = lossy or d != 0
        i += 1
    if i < e and buf[i] == 46:  # .
        i += 1
        while i < e and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            digits = True
            if mant == 0 and d == 0:
                exp10 -= 1
            elif ndig < 18:  # 18 digits always fit in int64
                mant = mant * 10 + d
                ndig += 1
                exp10 -= 1
            else:
                lossy = lossy or d != 0
            i += 1
    if not digits:
        return False, 0.0, True
    if i < e and _lower(buf[i]) == 101:  # e
        i += 1
        eneg = False
        if i < e and (buf[i] == 43 or buf[i] == 45):
            eneg = buf[i] == 45
            i += 1
        if i == e:
            return False, 0.0, True
        ev = 0
        while i < e and 48 <= buf[i] <= 57:
            if ev < 100000:
                ev = ev * 10 + (buf[i] - 48)
            i += 1
        exp10 += -ev if eneg else ev
    if i != e:
        return False, 0.0, True
    if mant == 0:
        return True, -0.0 if neg else 0.0, True
    if lossy or mant > 9007199254740992 or exp10 < -22 or exp10 > 22:
        return True, np.nan, False
    v = float(mant)
    v = v / _POW10[-exp10] if exp10 < 0 else v * _POW10[exp10]
    return True, -v if neg else v, True


@njit(cache=True, nogil=True)
def _is_space(c: int) -> bool:
    return c == 32 or c == 9 or c == 13 or c == 11 or c == 12


@njit(cache=True, nogil=True)
def _parse_block(
    buf: np.ndarray, dim: int, out: np.ndarray, bounds: np.ndarray, slow: np.ndarray
) -> tuple[int, int, int, int, int]:
    """Parse lines ``token v1 ... vdim`` of ``buf`` into ``out`` (float32) and token bounds.

    Returns (rows, slow_rows, error, a, b): on error ``rows`` is the failing line's
    index in the block and (a, b) the error's detail (byte range of a bad value,
    or the number of values found).
    """
    n = buf.size
    p = 0
    row = 0
    nslow = 0
    while p < n:
        e = p
        while e < n and buf[e] != 10:
            e += 1
        nxt = e + 1
        while e > p and _is_space(buf[e - 1]):
            e -= 1
        if e == p:
            return row, nslow, _ERR_BLANK, p, nxt
        q = p
        while q < e and buf[q] != 32:
            q += 1
        if q == p:
            return row, nslow, _ERR_NOTOKEN, p, e
        bounds[row, 0] = p
        bounds[row, 1] = q
        j = 0
        exact_row = True
        while q < e:
            q += 1  # the single separating space
            start = q
            while q < e and buf[q] != 32:
                q += 1
            if j < dim:
                ok, val, exact = _parse_float(buf, start, q)
                if not ok:
                    return row, nslow, _ERR_VALUE, start, q
                exact_row = exact_row and exact
                out[row, j] = val
            j += 1
        if j != dim:
            return row, nslow, _ERR_NVALUES, j, 0
        if not exact_row:
            slow[nslow] = row
            nslow += 1
        row += 1
        p = nxt
    return row, nslow, _OK, 0, 0


def _parse_text_block(
    block: bytes, dim: int, first_line_no: int, uri: str
) -> tuple[list[str], np.ndarray, int | None]:
    """Parse one block of lines; returns tokens, matrix and the line of a trailing blank line.

    Blank lines are allowed only at the end of the file; the caller checks that
    nothing but blank lines follows the reported one.
    """
    capacity = block.count(b"\n") + 1
    buf = np.frombuffer(block, dtype=np.uint8)
    out = np.empty((capacity, dim), dtype=np.float32)
    bounds = np.empty((capacity, 2), dtype=np.int64)
    slow = np.empty(capacity, dtype=np.int64)
    rows, nslow, err, a, b = _parse_block(buf, dim, out, bounds, slow)
    line_no = first_line_no + rows
    blank_at = None
    if err == _ERR_BLANK:
        if block[b:].strip():
            raise InputError(f"{uri}:{line_no}: empty line inside the file; remove it")
        blank_at = line_no
    elif err == _ERR_NOTOKEN:
        raise InputError(f"{uri}:{line_no}: line starts with a space; it must start with the token")
    elif err == _ERR_NVALUES:
        tok = block[bounds[rows, 0] : bounds[rows, 1]].decode("utf-8", "replace")
        raise InputError(
            f"{uri}:{line_no}: token {tok!r} has {a} values, expected {dim}; "
            f"a line is 'token v1 ... v{dim}' with single spaces"
        )
    elif err == _ERR_VALUE:
        value = block[a:b].decode("utf-8", "replace")
        hint = " (two spaces in a row?)" if not value else ""
        raise InputError(f"{uri}:{line_no}: value {value!r} is not a number{hint}")
    for r in slow[:nslow]:
        # Outside the exact fast path: Python's float is correctly rounded; float64
        # then float32 is the same double rounding gensim does.
        line = block[bounds[r, 1] + 1 :].split(b"\n", 1)[0].rstrip()
        out[r] = np.array([float(x) for x in line.split(b" ")], dtype=np.float64)
    tokens = [
        _decode_token(block[s:e], uri, str(first_line_no + i))
        for i, (s, e) in enumerate(bounds[:rows].tolist())
    ]
    return tokens, out[:rows], blank_at


def _read_text(uri: str, header: bool) -> tuple[list[str], np.ndarray]:
    """Read word2vec text (``header=True``) or GloVe text into tokens and a matrix."""
    tokens: list[str] = []
    blocks: list[np.ndarray] = []
    expected_rows: int | None = None
    dim: int | None = None
    line_no = 1  # of the first line of the next block
    blank_at: int | None = None
    with _open_input(uri) as f:
        for block in _iter_line_blocks(f):
            lines_in_block = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            body = block
            body_line = line_no
            if header and expected_rows is None:
                nl = block.find(b"\n")
                first = block[: nl if nl >= 0 else len(block)]
                head = _parse_header(first, uri)
                if head is None:
                    raise InputError(
                        f"{uri}:1: expected a word2vec header 'vocab_size dim', found "
                        f"{first[:60].decode('utf-8', 'replace')!r}; for GloVe files use "
                        "format 'glove'"
                    )
                expected_rows, dim = head
                if dim < 1:
                    raise InputError(f"{uri}:1: header gives dimension {dim}; it must be >= 1")
                body = block[nl + 1 :] if nl >= 0 else b""
                body_line = 2
            if dim is None:  # GloVe: the first line fixes the dimension
                first = block.split(b"\n", 1)[0].rstrip()
                dim = first.count(b" ")
                if dim < 1:
                    raise InputError(f"{uri}:1: line has a token but no values (GloVe format)")
            if blank_at is not None and body.strip():
                raise InputError(f"{uri}:{blank_at}: empty line inside the file; remove it")
            if body:
                toks, mat, blank = _parse_text_block(body, dim, body_line, uri)
                blank_at = blank_at if blank_at is not None else blank
                tokens.extend(toks)
                blocks.append(mat)
            line_no += lines_in_block
    first_row_line = 2 if header else 1
    if header:
        if expected_rows is None:
            raise InputError(f"{uri}: empty file; expected a word2vec header 'vocab_size dim'")
        if expected_rows != len(tokens):
            raise InputError(
                f"{uri}:1: header says {expected_rows} vectors but the file has {len(tokens)}; "
                "fix the header count or restore the missing lines"
            )
    if not tokens:
        raise InputError(f"{uri}: no vectors found; the file is empty")
    _check_duplicates(tokens, uri, lambda i: str(first_row_line + i))
    matrix = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return tokens, matrix


def _read_binary(uri: str) -> tuple[list[str], np.ndarray]:
    """Read the word2vec binary format: header, then ``token SPACE float32[dim]`` per row.

    The C tool writes a newline after each vector and gensim does not; like gensim,
    leading newlines of a token are dropped, so both variants read.
    """
    data = _read_all(uri)
    nl = data.find(b"\n")
    head = _parse_header(data[: nl if nl >= 0 else 64], uri)
    if head is None:
        raise InputError(f"{uri}:1: expected a word2vec header 'vocab_size dim' (binary format)")
    rows, dim = head
    if dim < 1:
        raise InputError(f"{uri}:1: header gives dimension {dim}; it must be >= 1")
    rowbytes = 4 * dim
    pos = nl + 1
    size = len(data)
    offsets: list[int] = []
    raw_tokens: list[bytes] = []
    for i in range(rows):
        sp = data.find(b" ", pos)
        if sp < 0 or sp + 1 + rowbytes > size:
            got = 0 if sp < 0 else size - sp - 1
            raise InputError(
                f"{uri}: truncated at vector {i + 1} of {rows} (byte {pos}): expected a token, "
                f"a space and {rowbytes} bytes, found {got}; the file is cut short or the "
                "header count is wrong"
            )
        raw_tokens.append(data[pos:sp].lstrip(b"\n"))
        offsets.append(sp + 1)
        pos = sp + 1 + rowbytes
    if data[pos:].strip():
        raise InputError(
            f"{uri}: header says {rows} vectors but more data follows at byte {pos}; "
            "fix the header count"
        )
    tokens = [_decode_token(t, uri, f"vector {i + 1}") for i, t in enumerate(raw_tokens)]
    _check_duplicates(tokens, uri, lambda i: f"vector {i + 1}")
    # One join of row slices and one frombuffer: no per-row NumPy call.
    packed = b"".join([data[o : o + rowbytes] for o in offsets])
    matrix = np.frombuffer(packed, dtype="<f4").reshape(rows, dim).astype(np.float32)
    return tokens, matrix


def _looks_binary(uri: str) -> tuple[bool, bool]:
    """Sniff a vectors file: (has a word2vec header, the body is binary)."""
    with _open_input(uri) as f:
        sample = f.read(1 << 16)
    nl = sample.find(b"\n")
    first = sample[: nl if nl >= 0 else len(sample)]
    if _parse_header(first, uri) is None:
        return False, False
    body = sample[nl + 1 :] if nl >= 0 else b""
    try:  # incremental decoding tolerates a multi-byte character cut at the sample's end
        codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError:
        return True, True
    return True, b"\x00" in body


def _format_rows(matrix: np.ndarray) -> list[bytes]:
    """Format each row as ``v1 v2 ...`` with the shortest text that reads back to the same float32.

    Arrow's CSV writer does the formatting in C++ (shortest round-trip digits).
    """
    cols = np.ascontiguousarray(matrix.T)
    table = pa.table(
        [pa.array(cols[j]) for j in range(cols.shape[0])],
        names=list(map(str, range(cols.shape[0]))),
    )
    buf = io.BytesIO()
    pacsv.write_csv(
        table, buf, pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    )
    lines = buf.getvalue().split(b"\n")
    return lines[: matrix.shape[0]]


@njit(cache=True, nogil=True, inline="always")
def _heap_offer(
    hv: np.ndarray, hi: np.ndarray, r: int, k: int, sz: int, floor: float, s: float, j: int
) -> tuple[int, float]:
    """Offer score ``s`` of candidate ``j`` to row ``r``'s heap; returns (size, new minimum).

    Heap order: lower score first; among equal scores the higher index first.
    """
    if sz < k:
        pos = sz
        sz += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if hv[r, parent] < s or (hv[r, parent] == s and hi[r, parent] > j):
                break
            hv[r, pos] = hv[r, parent]
            hi[r, pos] = hi[r, parent]
            pos = parent
        hv[r, pos] = s
        hi[r, pos] = j
        floor = hv[r, 0]
    elif s > floor:
        # A later equal score never enters: its index is higher.
        pos = 0
        while True:
            child = 2 * pos + 1
            if child >= k:
                break
            if child + 1 < k and (
                hv[r, child + 1] < hv[r, child]
                or (hv[r, child + 1] == hv[r, child] and hi[r, child + 1] > hi[r, child])
            ):
                child += 1
            if hv[r, child] > s or (hv[r, child] == s and hi[r, child] < j):
                break
            hv[r, pos] = hv[r, child]
            hi[r, pos] = hi[r, child]
            pos = child
        hv[r, pos] = s
        hi[r, pos] = j
        floor = hv[r, 0]
    return sz, floor


@njit(cache=True, nogil=True)
def _heap_push(
    scores: np.ndarray, offset: int, hv: np.ndarray, hi: np.ndarray, size: np.ndarray
) -> None:
    """Offer every score of each row to that row's k-entry min-heap (``hv``, ``hi``, ``size``).

    Column j of ``scores`` is candidate ``offset + j``; call once per block of
    candidates in increasing order. After the first k, almost every score is
    rejected by one comparison with the heap's minimum, so a block costs about as
    much as reading it (``argpartition`` would write an int64 index per score).
    Heap order: lower score first; among equal scores the higher index first, so
    ties keep the lower index.
    """
    n_rows, n = scores.shape
    k = hv.shape[1]
    for r in range(n_rows):
        row = scores[r]
        sz = size[r]
        floor = hv[r, 0]
        for b0 in range(0, n, 128):
            blk = row[b0 : b0 + 128]
            if sz == k:
                # A counting loop LLVM turns into SIMD: skip 128 scores at a time
                # when none beats the current k-th best (the common case).
                hits = 0
                for x in blk:
                    if x > floor:
                        hits += 1
                if hits == 0:
                    continue
            for jj in range(blk.shape[0]):
                sz, floor = _heap_offer(hv, hi, r, k, sz, floor, blk[jj], offset + b0 + jj)
        size[r] = sz


@njit(cache=True, nogil=True)
def _heap_sort(hv: np.ndarray, hi: np.ndarray, size: np.ndarray) -> None:
    """Sort each row's heap in place: best score first, equal scores by index."""
    for r in range(hv.shape[0]):
        for a in range(1, size[r]):
            v = hv[r, a]
            i = hi[r, a]
            b = a - 1
            while b >= 0 and (hv[r, b] < v or (hv[r, b] == v and hi[r, b] > i)):
                hv[r, b + 1] = hv[r, b]
                hi[r, b + 1] = hi[r, b]
                b -= 1
            hv[r, b + 1] = v
            hi[r, b + 1] = i


class _TopK:
    """Running top-k of many rows, fed block by block (see :func:`_heap_push`)."""

    def __init__(self, rows: int, k: int, dtype: Any = np.float32) -> None:
        self.hv = np.full((rows, k), -np.inf, dtype=dtype)
        self.hi = np.full((rows, k), -1, dtype=np.int64)
        self.size = np.zeros(rows, dtype=np.int64)

    def push(self, scores: np.ndarray, offset: int = 0) -> None:
        _heap_push(np.ascontiguousarray(scores), offset, self.hv, self.hi, self.size)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        _heap_sort(self.hv, self.hi, self.size)
        return self.hi, self.hv


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries of each row, best first."""
    n = scores.shape[1]
    k = min(k, n)
    idx = np.empty((scores.shape[0], max(k, 0)), dtype=np.int64)
    vals = np.empty((scores.shape[0], max(k, 0)), dtype=scores.dtype)
    if k <= 0:
        return idx, vals
    if k <= 256:
        top = _TopK(scores.shape[0], k, scores.dtype)
        top.push(scores)
        return top.result()
    # Many results: a partition then a sort of the k survivors is cheaper than a heap.
    if k < n:
        part = np.sort(np.argpartition(scores, n - k, axis=1)[:, n - k :], axis=1)
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    got = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-got, axis=1, kind="stable")  # ties keep the lower index first
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(got, order, axis=1)


def _normalize_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (no NaN).

    Works in blocks of rows so the temporaries stay small next to a 400k x 300 matrix.
    """
    out = np.zeros_like(m)
    step = 1 << 16
    for s in range(0, len(m), step):
        block = m[s : s + step]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, norms, out=out[s : s + step], where=norms > 0)
    return out


def gensim_unitvec(v: np.ndarray) -> np.ndarray:
    """``gensim.matutils.unitvec`` bit for bit: float64 BLAS nrm2 and scaling, back to float32.

    Scores computed this way equal gensim's exactly, so rank-based statistics
    (Spearman's rho) cannot differ through float rounding.
    """
    v64 = np.asarray(v, dtype=np.float64)
    if v64.size == 0:
        return np.asarray(v)
    norm = sblas.dnrm2(v64)
    if not norm > 0.0:
        return np.asarray(v)
    return (v64 * (1.0 / norm)).astype(np.asarray(v).dtype)


# --------------------------------------------------------------------------- Vectors


class Vectors:
    """Word vectors in frequency order with gensim's field names and query methods.

    Attributes:
        index_to_key: tokens, most frequent first.
        key_to_index: token -> row.
        vectors: float32 matrix, one row per token (C-contiguous).
        counts: corpus counts per row (int64) when known, else None.
        meta: ``model.json`` of a run's model directory (settings, losses), else {}.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        matrix: np.ndarray,
        counts: Sequence[int] | np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Wrap ``tokens`` and their ``matrix`` rows (copied to float32 if needed)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2:
            raise InputError(f"vectors must be a 2-D matrix, got shape {matrix.shape}")
        tokens = list(tokens)
        if len(tokens) != matrix.shape[0]:
            raise InputError(
                f"{len(tokens)} tokens but the matrix has {matrix.shape[0]} rows; "
                "give one row per token"
            )
        self.index_to_key: list[str] = tokens
        self.key_to_index: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        if len(self.key_to_index) != len(tokens):
            _check_duplicates(tokens, "vectors", lambda i: f"row {i}")
        self.vectors: np.ndarray = matrix
        self.counts: np.ndarray | None = None
        if counts is not None:
            self.counts = np.asarray(counts, dtype=np.int64)
            if self.counts.shape != (len(tokens),):
                raise InputError(f"{self.counts.shape[0]} counts for {len(tokens)} tokens")
        self.meta: dict[str, Any] = dict(meta or {})
        self._unit: np.ndarray | None = None

    # ---- basics

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: object) -> bool:
        return word in self.key_to_index

    def __repr__(self) -> str:
        return f"Vectors({len(self)} x {self.dim})"

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vector(word)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.vectors.shape[1])

    @property
    def unit(self) -> np.ndarray:
        """Row-normalised copy of :attr:`vectors`, made on first use (zero rows stay zero)."""
        if self._unit is None:
            self._unit = _normalize_rows(self.vectors)
        return self._unit

    def _oov(self, words: Iterable[str], restrict_vocab: int | None = None) -> OutOfVocabularyError:
        words = list(words)
        where = (
            f"the {restrict_vocab} most frequent words"
            if restrict_vocab and restrict_vocab < len(self)
            else f"the vocabulary ({len(self)} words)"
        )
        shown = ", ".join(repr(w) for w in words[:5]) + (" ..." if len(words) > 5 else "")
        return OutOfVocabularyError(
            f"{shown} not in {where}; check case and spelling, or lower vocab.min_count"
            " (this model has no subword vectors; word2vec with word2vec.subwords = true "
            "gives vectors to unseen words)"
        )

    def index(self, word: str) -> int:
        """Row of ``word``; :class:`OutOfVocabularyError` when it has none."""
        try:
            return self.key_to_index[word]
        except KeyError:
            raise self._oov([word]) from None

    def vector(self, word: str) -> np.ndarray:
        """The vector of ``word`` (read-only view).

        The single place a word becomes a vector: a subclass with subword (n-gram)
        vectors overrides it to build vectors for unseen words.
        """
        v = self.vectors[self.index(word)]
        v.flags.writeable = False
        return v

    def _unit_vector(self, word: str | np.ndarray) -> np.ndarray:
        if isinstance(word, np.ndarray):
            return _normalize_rows(np.asarray(word, dtype=np.float32)[None, :])[0]
        i = self.key_to_index.get(word)
        if i is not None:
            return self.unit[i]
        return _normalize_rows(np.asarray(self.vector(word), dtype=np.float32)[None, :])[0]

    def _limit(self, restrict_vocab: int | None) -> int:
        if restrict_vocab is None or restrict_vocab == 0:
            return len(self)
        if restrict_vocab < 0:
            raise ConfigError(f"restrict_vocab must be >= 0 (0 = no limit), got {restrict_vocab}")
        return min(int(restrict_vocab), len(self))

    # ---- queries

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words (computed exactly as gensim does)."""
        return float(np.dot(gensim_unitvec(self.vector(a)), gensim_unitvec(self.vector(b))))

    def most_similar(
        self,
        positive: str | np.ndarray | Sequence[str | np.ndarray] = (),
        negative: str | np.ndarray | Sequence[str | np.ndarray] = (),
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """Words closest by cosine to the mean of the positive minus the negative unit vectors.

        Like gensim: query words themselves are left out of the result, and
        ``restrict_vocab=N`` searches only the N most frequent words.
        """
        pos = [positive] if isinstance(positive, str | np.ndarray) else list(positive)
        neg = [negative] if isinstance(negative, str | np.ndarray) else list(negative)
        if not pos and not neg:
            raise InputError("most_similar needs at least one positive or negative word")
        if topn < 1:
            return []
        missing = [w for w in pos + neg if isinstance(w, str) and w not in self]
        if missing and type(self).vector is Vectors.vector:
            raise self._oov(missing)
        mean = np.zeros(self.dim, dtype=np.float64)
        for w in pos:
            mean += self._unit_vector(w)
        for w in neg:
            mean -= self._unit_vector(w)
        mean = _normalize_rows((mean / (len(pos) + len(neg))).astype(np.float32)[None, :])[0]
        limit = self._limit(restrict_vocab)
        exclude = {self.key_to_index[w] for w in pos + neg if isinstance(w, str) and w in self}
        exclude = [i for i in exclude if i < limit]
        scores = self.unit[:limit] @ mean
        scores[exclude] = -np.inf
        idx, vals = _topk(scores[None, :], min(topn, limit - len(exclude)))
        return [(self.index_to_key[i], float(v)) for i, v in zip(idx[0], vals[0], strict=True)]

    def most_similar_batch(
        self,
        queries: Sequence[str] | np.ndarray,
        topn: int = 10,
        restrict_vocab: int | None = None,
        as_arrays: bool = False,
    ) -> list[list[tuple[str, float]]] | tuple[np.ndarray, np.ndarray]:
        """Nearest neighbours of many words (or query vectors) with batched matrix products.

        Words exclude themselves from their own result; vectors exclude nothing.
        Returns one list of ``(word, cosine)`` per query, or with ``as_arrays``
        the ``(n, topn)`` row indices and scores.
        """
        if isinstance(queries, np.ndarray):
            q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
            if q.shape[1] != self.dim:
                raise InputError(f"query vectors have dimension {q.shape[1]}, expected {self.dim}")
            q = _normalize_rows(q)
            self_idx = np.full(len(q), -1, dtype=np.int64)
        else:
            words = list(queries)
            missing = [w for w in words if w not in self]
            if missing:
                raise self._oov(missing)
            self_idx = np.fromiter((self.key_to_index[w] for w in words), np.int64, len(words))
            q = self.unit[self_idx]
        limit = self._limit(restrict_vocab)
        k = min(topn, limit)
        target = self.unit[:limit]
        n = len(q)
        out_idx = np.empty((n, k), dtype=np.int64)
        out_val = np.empty((n, k), dtype=np.float32)
        # Tile over the candidates, not only the queries: each block of target rows
        # is multiplied with a whole chunk of queries, so the (possibly 480 MB)
        # matrix is streamed once per query chunk, and one score block stays within
        # _SCORE_BUDGET floats (reused: fresh 64 MB arrays cost page faults).
        qstep = min(n, 4096) or 1
        tstep = max(1, min(limit, _SCORE_BUDGET // qstep))
        buf = np.empty(qstep * tstep, dtype=np.float32)
        for qs in range(0, n, qstep):
            qe = min(n, qs + qstep)
            own = self_idx[qs:qe]
            top = _TopK(qe - qs, k)
            for ts in range(0, limit, tstep):
                te = min(limit, ts + tstep)
                scores = buf[: (qe - qs) * (te - ts)].reshape(qe - qs, te - ts)
                np.matmul(q[qs:qe], target[ts:te].T, out=scores)
                rows = np.flatnonzero((own >= ts) & (own < te))
                scores[rows, own[rows] - ts] = -np.inf  # a word is not its own neighbour
                top.push(scores, ts)
            out_idx[qs:qe], out_val[qs:qe] = top.result()
        if as_arrays:
            return out_idx, out_val
        keys = self.index_to_key
        return [
            [(keys[i], float(v)) for i, v in zip(ri, rv, strict=True) if v != -np.inf]
            for ri, rv in zip(out_idx.tolist(), out_val.tolist(), strict=True)
        ]

    def analogy(
        self,
        a: str,
        b: str,
        c: str,
        method: str = "3cosadd",
        restrict_vocab: int | None = None,
        topn: int = 1,
    ) -> list[tuple[str, float]]:
        """Answer "a is to b as c is to ?" with 3CosAdd or 3CosMul (Levy & Goldberg 2014).

        3CosAdd ranks by cos(x, b - a + c) (``most_similar([b, c], [a])``);
        3CosMul by cos'(x,b) cos'(x,c) / (cos'(x,a) + 1e-6) with cos' = (1 + cos) / 2,
        gensim's ``most_similar_cosmul``. a, b and c are never answers.
        """
        method = method.lower()
        if method == "3cosadd":
            return self.most_similar([b, c], [a], topn=topn, restrict_vocab=restrict_vocab)
        if method != "3cosmul":
            raise ConfigError(f"unknown analogy method {method!r}; use '3cosadd' or '3cosmul'")
        missing = [w for w in (a, b, c) if w not in self]
        if missing and type(self).vector is Vectors.vector:
            raise self._oov(missing)
        limit = self._limit(restrict_vocab)
        abc = np.stack([self._unit_vector(w) for w in (a, b, c)])
        cos = self.unit[:limit] @ abc.T
        scores = cosmul_scores(cos[:, 0], cos[:, 1], cos[:, 2])
        exclude = [self.key_to_index[w] for w in (a, b, c) if w in self]
        scores[[i for i in exclude if i < limit]] = -np.inf
        idx, vals = _topk(scores[None, :], min(topn, limit))
        return [
            (self.index_to_key[i], float(v))
            for i, v in zip(idx[0], vals[0], strict=True)
            if v != -np.inf
        ]

    # ---- loading

    @classmethod
    def load(cls, path_or_uri: str, format: str | None = None) -> Vectors:
        """Load vectors, detecting the format when ``format`` is None.

        A directory holding ``vectors.parquet`` is a run's model directory; ``.parquet``
        is Parquet; ``.bin`` (or a binary body after a ``V dim`` header) is word2vec
        binary; text with a ``V dim`` header is word2vec text; other text is GloVe.
        Compressed files (.gz, .bz2, .zst, .lz4) are read transparently.
        """
        uri = path_or_uri
        fmt = (format or "").lower() or None
        if fmt is not None and fmt not in FORMATS:
            raise ConfigError(f"unknown vectors format {format!r}; use one of {', '.join(FORMATS)}")
        if fmt is None:
            fmt = cls._detect(uri)
        if fmt == "model":
            return cls.load_model_dir(uri)
        if fmt == "parquet":
            return cls.load_parquet(uri)
        if fmt == "glove":
            return cls.load_glove(uri)
        return cls.load_word2vec(uri, binary=fmt == "word2vec-binary")

    @staticmethod
    def _detect(uri: str) -> str:
        if not fsutil.exists(uri):
            raise InputError(f"{uri}: not found; give a vectors file or a run's model directory")
        if fsutil.is_dir(uri):
            if fsutil.exists(fsutil.join(uri, "vectors.parquet")):
                return "model"
            if uri.rstrip("/").endswith(".parquet"):
                return "parquet"
            raise InputError(
                f"{uri}: directory without vectors.parquet; give a run's model directory "
                "(e.g. runs/NAME/glove) or a vectors file"
            )
        base = _strip_compression(uri)
        if base.endswith(".parquet"):
            return "parquet"
        if base.endswith(".bin"):
            return "word2vec-binary"
        has_header, binary = _looks_binary(uri)
        if binary:
            return "word2vec-binary"
        return "word2vec" if has_header else "glove"

    @classmethod
    def load_word2vec(cls, path: str, binary: bool = False) -> Vectors:
        """Read the word2vec text (``binary=False``) or binary format."""
        tokens, matrix = _read_binary(path) if binary else _read_text(path, header=True)
        logger.info("loaded %d x %d vectors from %s", *matrix.shape, path)
        return cls(tokens, matrix)

    @classmethod
    def load_glove(cls, path: str) -> Vectors:
        """Read the GloVe text format (``token v1 ... vdim`` per line, no header)."""
        tokens, matrix = _read_text(path, header=False)
        logger.info("loaded %d x %d vectors from %s", *matrix.shape, path)
        return cls(tokens, matrix)

    @classmethod
    def load_parquet(cls, path: str) -> Vectors:
        """Read ``id, token, vector`` Parquet (one file or a Spark-written directory)."""
        tokens, matrix = _read_parquet(path)
        return cls(tokens, matrix)

    @classmethod
    def load_model_dir(cls, path: str) -> Vectors:
        """Read a run's model directory: ``vectors.parquet`` plus ``model.json``.

        Counts come from the run's ``vocab`` stage (``<dir>/../vocab``) when it exists.
        """
        base = path.rstrip("/")
        meta: dict[str, Any] = {}
        meta_uri = fsutil.join(base, "model.json")
        if fsutil.exists(meta_uri):
            try:
                meta = json.loads(fsutil.read_text(meta_uri))
            except (ValueError, UnicodeDecodeError) as e:
                raise InputError(f"{meta_uri}: not valid JSON ({e}); re-run the stage") from e
            version = meta.get("format_version", FORMAT_VERSION)
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ArtifactVersionError(
                    f"{meta_uri}: format_version {version!r} is newer than this embedpipe reads "
                    f"({FORMAT_VERSION}); upgrade embedpipe"
                )
        tokens, matrix = _read_parquet(fsutil.join(base, "vectors.parquet"))
        vocab_dir = posixpath.join(posixpath.dirname(base), "vocab")
        # A run's vocab/ holds vocab.parquet next to other tables (splits.parquet).
        vocab_file = posixpath.join(vocab_dir, "vocab.parquet")
        counts = _read_counts(vocab_file if fsutil.exists(vocab_file) else vocab_dir, tokens)
        sub = meta.get("subwords")
        if isinstance(sub, dict):  # word2vec.subwords: the n-gram vectors come along
            try:
                minn, maxn, n_buckets = int(sub["minn"]), int(sub["maxn"]), int(sub["buckets"])
                name = str(sub.get("file", NGRAMS_FILE))
            except (KeyError, TypeError, ValueError) as e:
                raise SchemaError(
                    f"{meta_uri}: 'subwords' needs minn, maxn and buckets ({e}); re-run the "
                    "word2vec stage"
                ) from e
            if sub.get("hash", SUBWORD_HASH) != SUBWORD_HASH:
                raise ArtifactVersionError(
                    f"{meta_uri}: n-gram hash {sub.get('hash')!r} is not {SUBWORD_HASH!r}; "
                    "upgrade embedpipe"
                )
            buckets, ngrams = read_ngrams(fsutil.join(base, name), matrix.shape[1], n_buckets)
            return SubwordVectors(tokens, matrix, buckets, ngrams, minn=minn, maxn=maxn,
                                  buckets=n_buckets, counts=counts, meta=meta)  # fmt: skip
        return cls(tokens, matrix, counts=counts, meta=meta)

    # ---- saving

    def _check_tokens_writable(self, what: str) -> None:
        for i, tok in enumerate(self.index_to_key):
            if tok.split() != [tok]:
                raise InputError(
                    f"token {tok!r} (row {i}) is empty or contains whitespace and cannot be "
                    f"written as {what}; use save_parquet instead"
                )

    def _write_text(self, uri: str, header: bool) -> None:
        self._check_tokens_writable("word2vec text" if header else "GloVe text")
        with _open_output_atomic(uri) as f:
            if header:
                f.write(f"{len(self)} {self.dim}\n".encode())
            for s in range(0, len(self), _WRITE_BLOCK_ROWS):
                e = min(len(self), s + _WRITE_BLOCK_ROWS)
                rows = _format_rows(self.vectors[s:e])
                toks = [t.encode("utf-8") for t in self.index_to_key[s:e]]
                f.write(b"\n".join([t + b" " + r for t, r in zip(toks, rows, strict=True)]) + b"\n")

    def save_word2vec(self, path: str, binary: bool = False) -> None:
        """Write the word2vec text or binary format (binary rows end in ``\\n`` like the C tool).

        Text values are the shortest decimals that read back to the same float32.
        """
        if not binary:
            self._write_text(path, header=True)
            return
        self._check_tokens_writable("word2vec binary")
        le = self.vectors.astype("<f4", copy=False)
        with _open_output_atomic(path) as f:
            f.write(f"{len(self)} {self.dim}\n".encode())
            for s in range(0, len(self), _WRITE_BLOCK_ROWS):
                e = min(len(self), s + _WRITE_BLOCK_ROWS)
                f.write(
                    b"".join(
                        self.index_to_key[i].encode("utf-8") + b" " + le[i].tobytes() + b"\n"
                        for i in range(s, e)
                    )
                )

    def save_glove(self, path: str) -> None:
        """Write the GloVe text format (word2vec text without the header line)."""
        self._write_text(path, header=False)

    def save_parquet(self, path: str) -> None:
        """Write one Parquet file with the ``vectors.parquet`` schema (id, token, vector)."""
        n, dim = self.vectors.shape
        offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
        vector = pa.ListArray.from_arrays(offsets, pa.array(self.vectors.reshape(-1)))
        table = pa.Table.from_arrays(
            [
                pa.array(np.arange(n, dtype=np.int32)),
                pa.array(self.index_to_key, pa.string()),
                vector,
            ],
            schema=VECTORS_SCHEMA,
        )
        with _open_output_atomic(path) as f:
            pq.write_table(table, f)


def cosmul_scores(cos_a: np.ndarray, cos_b: np.ndarray, cos_c: np.ndarray) -> np.ndarray:
    """3CosMul objective of gensim's ``most_similar_cosmul`` from the three cosines."""
    return ((1 + cos_b) / 2) * ((1 + cos_c) / 2) / ((1 + cos_a) / 2 + 1e-6)


def _read_parquet(uri: str) -> tuple[list[str], np.ndarray]:
    """Read and check an ``id, token, vector`` Parquet file or directory."""
    fs, path = fsutil.resolve(uri)
    try:
        table = pq.read_table(path, filesystem=fs, columns=["id", "token", "vector"])
    except FileNotFoundError as e:
        raise InputError(f"{uri}: not found; run the model stage first") from e
    except (pa.ArrowInvalid, KeyError) as e:
        raise SchemaError(
            f"{uri}: not a vectors Parquet file with columns id, token, vector ({e})"
        ) from e
    ids_t, tok_t, vec_t = (table.column(c) for c in ("id", "token", "vector"))
    if not pa.types.is_integer(ids_t.type) or not (
        pa.types.is_string(tok_t.type) or pa.types.is_large_string(tok_t.type)
    ):
        raise SchemaError(f"{uri}: expected id:int32, token:string; found {table.schema}")
    vt = vec_t.type
    if not (pa.types.is_list(vt) or pa.types.is_large_list(vt) or pa.types.is_fixed_size_list(vt)):
        raise SchemaError(f"{uri}: column vector must be list<float32>, found {vt}")
    if not pa.types.is_floating(vt.value_type):
        raise SchemaError(f"{uri}: column vector must be list<float32>, found {vt}")
    if table.num_rows == 0:
        raise InputError(f"{uri}: no vectors (0 rows)")
    if ids_t.null_count or tok_t.null_count or vec_t.null_count:
        raise SchemaError(f"{uri}: null id, token or vector; re-run the model stage")
    ids = ids_t.to_numpy()
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(n)):
        raise SchemaError(f"{uri}: ids must be 0..{n - 1}, each once; re-run the model stage")
    vec = vec_t.combine_chunks()
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    dim = int(lengths[0])
    bad = np.flatnonzero(lengths != dim)
    if bad.size or dim < 1:
        row = int(bad[0]) if bad.size else 0
        raise SchemaError(
            f"{uri}: vector of id {ids[row]} has {lengths[row]} values, expected {dim}"
        )
    values = vec.flatten().to_numpy(zero_copy_only=False)
    matrix = values.astype(np.float32, copy=False).reshape(n, dim)
    tokens = tok_t.to_pylist()
    if not np.array_equal(order, np.arange(n)):
        matrix = matrix[order]
        tokens = [tokens[i] for i in order]
    _check_duplicates(tokens, uri, lambda i: f"id {i}")
    return tokens, np.ascontiguousarray(matrix)


def _read_counts(vocab_uri: str, tokens: list[str]) -> np.ndarray | None:
    """Counts from a run's vocab stage (id, token, count), aligned by id; None when absent."""
    if not fsutil.exists(vocab_uri):
        return None
    fs, path = fsutil.resolve(vocab_uri)
    try:
        table = pq.read_table(path, filesystem=fs, columns=["id", "token", "count"])
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        logger.warning("ignoring %s: not a vocab table (%s)", vocab_uri, e)
        return None
    ids = table.column("id").to_numpy()
    if len(ids) != len(tokens):
        raise SchemaError(
            f"{vocab_uri}: {len(ids)} words but the vectors have {len(tokens)}; "
            "re-run the model stage on this vocabulary"
        )
    order = np.argsort(ids, kind="stable")
    vocab_tokens = table.column("token").to_pylist()
    if [vocab_tokens[i] for i in order] != tokens:
        raise SchemaError(
            f"{vocab_uri}: tokens differ from the vectors' tokens; re-run the model stage"
        )
    return table.column("count").to_numpy()[order].astype(np.int64)


# --------------------------------------------------------------------------- subwords


def ngrams_table(buckets: np.ndarray, matrix: np.ndarray) -> pa.Table:
    """``bucket, vector`` (:data:`NGRAMS_SCHEMA`) of the n-gram rows, ascending by bucket."""
    buckets = np.asarray(buckets, dtype=np.int64)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if buckets.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != buckets.size:
        raise InputError(
            f"{buckets.size} buckets but {matrix.shape[0]} n-gram rows: give one row per bucket"
        )
    if buckets.size and (np.any(np.diff(buckets) <= 0) or buckets[0] < 0 or buckets[-1] >= 2**31):
        raise InputError("n-gram buckets must be distinct, ascending and in [0, 2**31)")
    n, dim = matrix.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    vec = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))
    return pa.Table.from_arrays([pa.array(buckets.astype(np.int32)), vec], schema=NGRAMS_SCHEMA)


def read_ngrams(uri: str, dim: int, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Read and check ``ngrams.parquet``: (buckets int64 ascending, float32 rows)."""
    fs, path = fsutil.resolve(uri)
    try:
        table = pq.read_table(path, filesystem=fs, columns=["bucket", "vector"])
    except FileNotFoundError as e:
        raise InputError(f"{uri}: not found; the subword model is incomplete, re-run it") from e
    except (pa.ArrowInvalid, KeyError) as e:
        raise SchemaError(f"{uri}: not an n-gram table with columns bucket, vector ({e})") from e
    buckets = table.column("bucket").to_numpy().astype(np.int64)
    vec = table.column("vector").combine_chunks()
    n = len(buckets)
    if vec.null_count or table.column("bucket").null_count:
        raise SchemaError(f"{uri}: null bucket or vector; re-run the word2vec stage")
    if n:
        lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
        if np.any(lengths != dim):
            raise SchemaError(f"{uri}: n-gram vectors must have {dim} values like the words'")
        matrix = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, dim)
    else:
        matrix = np.empty((0, dim), dtype=np.float32)
    if n and (np.any(np.diff(buckets) <= 0) or buckets[0] < 0 or buckets[-1] >= n_buckets):
        raise SchemaError(
            f"{uri}: buckets must be distinct, ascending and below {n_buckets:,}; re-run word2vec"
        )
    return buckets, np.ascontiguousarray(matrix)


class SubwordVectors(Vectors):
    """Word vectors plus character n-gram vectors (fastText): a vector for any word.

    A vocabulary word's vector is its row of :attr:`vectors` (for a trained model the
    mean of its own vector and its n-gram vectors, fastText's ``getWordVector``). Any
    other word gets the mean of its n-gram vectors (:meth:`ngram_vector`), n-grams as
    :func:`embedpipe.kernels.subwords.char_ngrams` with ``minn..maxn`` characters,
    hashed into ``buckets`` with fastText's hash. Only buckets some vocabulary word has
    were trained and are stored; an n-gram in any other bucket counts as a zero vector
    (fastText would add that bucket's untrained random initial vector: noise).
    ``word in vectors`` still means "in the vocabulary", as for gensim's KeyedVectors;
    :meth:`has_vector` says whether a word gets a vector.

    Attributes:
        ngram_buckets: int64, ascending: the buckets that have a row.
        ngram_vectors: float32 ``(len(ngram_buckets), dim)``.
        minn, maxn, buckets: the n-gram settings the model was trained with.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        matrix: np.ndarray,
        ngram_buckets: np.ndarray,
        ngram_vectors: np.ndarray,
        *,
        minn: int,
        maxn: int,
        buckets: int,
        counts: Sequence[int] | np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Wrap the word rows and the n-gram rows of the buckets in ``ngram_buckets``."""
        super().__init__(tokens, matrix, counts=counts, meta=meta)
        from embedpipe.kernels import subwords

        subwords.check_settings(minn, maxn, buckets)
        self.ngram_buckets = np.asarray(ngram_buckets, dtype=np.int64)
        self.ngram_vectors = np.ascontiguousarray(ngram_vectors, dtype=np.float32)
        b = self.ngram_buckets
        if self.ngram_vectors.shape != (b.size, self.dim):
            raise InputError(
                f"n-gram vectors of shape {self.ngram_vectors.shape}, expected "
                f"({b.size}, {self.dim}): one row of the words' dim per bucket"
            )
        if b.size and (np.any(np.diff(b) <= 0) or b[0] < 0 or b[-1] >= buckets):
            raise InputError(f"n-gram buckets must be distinct, ascending and below {buckets}")
        self.minn, self.maxn, self.buckets = int(minn), int(maxn), int(buckets)

    def __repr__(self) -> str:
        return (
            f"SubwordVectors({len(self)} x {self.dim}, {self.ngram_buckets.size} n-gram rows "
            f"of {self.buckets} buckets, n = {self.minn}..{self.maxn})"
        )

    def _ngram_rows(self, word: str) -> tuple[np.ndarray, int]:
        """Rows of ``word``'s n-grams that have a vector, and its number of n-grams."""
        from embedpipe.kernels import subwords

        b = subwords.ngram_buckets(word, self.minn, self.maxn, self.buckets)
        pos = np.searchsorted(self.ngram_buckets, b)
        pos = np.minimum(pos, max(self.ngram_buckets.size - 1, 0))
        hit = self.ngram_buckets.size > 0
        found = (self.ngram_buckets[pos] == b) if hit else np.zeros(b.size, dtype=bool)
        return pos[found], int(b.size)

    def ngram_vector(self, word: str) -> np.ndarray:
        """The mean of ``word``'s n-gram vectors (fastText's vector of an unseen word).

        Raises :class:`OutOfVocabularyError` when no n-gram of the word was trained.
        """
        rows, n = self._ngram_rows(word)
        if rows.size == 0:
            raise OutOfVocabularyError(
                f"{word!r} has no vector: not in the vocabulary ({len(self)} words) and none "
                f"of its {n} character n-grams ({self.minn}-{self.maxn} characters) occurs in "
                "a vocabulary word; check the spelling"
            )
        # Sum in float32 in n-gram order, then x 1/n (getWordVector); duplicates count twice.
        v = np.zeros(self.dim, dtype=np.float32)
        for r in rows.tolist():
            v += self.ngram_vectors[r]
        v *= np.float32(1.0) / np.float32(n)
        v.flags.writeable = False
        return v

    def vector(self, word: str) -> np.ndarray:
        """The vocabulary row of ``word``, else its n-gram vector (:meth:`ngram_vector`)."""
        if word in self.key_to_index:
            return super().vector(word)
        return self.ngram_vector(word)

    def has_vector(self, word: str) -> bool:
        """True when :meth:`vector` gives ``word`` a vector (in vocabulary or a known n-gram)."""
        return word in self.key_to_index or self._ngram_rows(word)[0].size > 0

    def most_similar_batch(
        self,
        queries: Sequence[str] | np.ndarray,
        topn: int = 10,
        restrict_vocab: int | None = None,
        as_arrays: bool = False,
    ) -> list[list[tuple[str, float]]] | tuple[np.ndarray, np.ndarray]:
        """:meth:`Vectors.most_similar_batch`, unseen words answered from their n-grams."""
        if isinstance(queries, np.ndarray):
            return super().most_similar_batch(queries, topn, restrict_vocab, as_arrays)
        words = list(queries)
        unseen = [i for i, w in enumerate(words) if w not in self]
        if not unseen:
            return super().most_similar_batch(words, topn, restrict_vocab, as_arrays)
        seen = [i for i, w in enumerate(words) if w in self]
        q = np.stack([self.ngram_vector(words[i]) for i in unseen])
        parts = [(unseen, super().most_similar_batch(q, topn, restrict_vocab, True))]
        if seen:
            got = super().most_similar_batch([words[i] for i in seen], topn, restrict_vocab, True)
            parts.append((seen, got))
        k = parts[0][1][0].shape[1]
        idx = np.empty((len(words), k), dtype=np.int64)
        val = np.empty((len(words), k), dtype=np.float32)
        for where, (pi, pv) in parts:
            idx[where], val[where] = pi, pv
        if as_arrays:
            return idx, val
        keys = self.index_to_key
        return [
            [(keys[i], float(v)) for i, v in zip(ri, rv, strict=True) if v != -np.inf]
            for ri, rv in zip(idx.tolist(), val.tolist(), strict=True)
        ]

    def subword_meta(self) -> dict[str, Any]:
        """The ``subwords`` entry of ``model.json``."""
        return {
            "minn": self.minn,
            "maxn": self.maxn,
            "buckets": self.buckets,
            "hash": SUBWORD_HASH,
            "file": NGRAMS_FILE,
            "ngram_rows": int(self.ngram_buckets.size),
            "word_vectors": "mean of the word's own vector and its n-gram vectors",
        }

    def save_model_dir(self, path: str) -> None:
        """Write the full model as a directory any embedpipe reads back with :meth:`load`.

        ``vectors.parquet`` (id, token, vector: the word vectors), ``ngrams.parquet``
        (bucket, vector) and ``model.json`` (``format_version``, ``subwords``: minn, maxn,
        buckets, hash, plus the training metadata this object was loaded with).
        """
        base = path.rstrip("/")
        self.save_parquet(fsutil.join(base, "vectors.parquet"))
        buf = io.BytesIO()
        pq.write_table(ngrams_table(self.ngram_buckets, self.ngram_vectors), buf,
                       compression="zstd")  # fmt: skip
        fsutil.write_bytes_atomic(fsutil.join(base, NGRAMS_FILE), buf.getvalue())
        meta = {**self.meta, "format_version": FORMAT_VERSION, "dim": self.dim,
                "vocab_size": len(self), "subwords": self.subword_meta()}  # fmt: skip
        fsutil.write_text_atomic(
            fsutil.join(base, "model.json"), json.dumps(meta, indent=2, sort_keys=True)
        )
