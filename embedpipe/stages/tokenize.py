"""Tokenization as vectorised Arrow compute (no per-row Python).

``tokenize(lines)`` turns an Arrow array of lines into a ``list<string>`` array of
tokens, one list per line. Two modes:

* ``regex`` (default): Unicode NFKC, optional lowercasing, tokens are runs of
  Unicode letters, marks and digits, keeping an apostrophe or hyphen only *between*
  two such characters (``don't``, ``well-known``); CJK ideographs, kana and hangul
  become one token per character, so Chinese or Japanese text gets a usable
  vocabulary without a segmenter. A custom ``pattern`` (RE2 regex of separators)
  replaces the built-in rule.
* ``whitespace``: tokens are separated by Unicode whitespace (pre-tokenized text,
  taken as it is: no NFKC, only optional lowercasing).

Speed: about 99% of lines in English text are ASCII, and for those the built-in rule
is applied with a byte lookup table over the Arrow data buffer (NumPy), which is
exact for ASCII and several times faster than RE2 with Unicode classes. Other lines
take the RE2 path. Both give the same tokens on ASCII input (tested).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Separators for the Unicode path: anything but letters, marks, digits, ' and -.
_UNICODE_SEP = r"[^\p{L}\p{M}\p{N}'\-]+"
_CJK = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}])"
_STRAY_MARKS = r"(^|[^\p{L}\p{N}\p{M}])\p{M}+"
_PUNCT_RUN = r"['\-]{2,}"
_APOSTROPHES = ("\u2019", "\u2018", "\u02bc", "`")

_ALNUM = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
    _ALNUM[_c] = True
_INNER = np.zeros(256, dtype=bool)  # kept only between two alphanumerics
for _c in b"'-`":
    _INNER[_c] = True
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32
_APOS_MAP = np.arange(256, dtype=np.uint8)
_APOS_MAP[ord("`")] = ord("'")
_ASCII_SPACE = np.zeros(256, dtype=bool)
for _c in b" \t\n\v\f\r\x1c\x1d\x1e\x1f":  # what str.split() treats as whitespace
    _ASCII_SPACE[_c] = True


@dataclass
class TokenStats:
    """Counters a tokenizer call adds to the stage statistics."""

    invalid_utf8: int = 0
    long_tokens: int = 0


_invalid_counter = [0]


def _count_and_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    _invalid_counter[0] += 1
    return "\ufffd", err.end


codecs.register_error("embedpipe_count_replace", _count_and_replace)


def _is_ascii(lines: pa.Array) -> bool:
    """True when every byte of the lines is < 0x80 (one NumPy pass over the data buffer)."""
    if len(lines) == 0:
        return True
    _, data = string_buffers(lines)
    return len(data) == 0 or int(data.max()) < 0x80


def decode_lines(raw: pa.Array, stats: TokenStats) -> pa.Array:
    """Binary lines -> valid UTF-8 string array; invalid sequences become U+FFFD and are counted.

    The common case (valid UTF-8) is a zero-copy view checked in C++; only a batch
    that fails validation is decoded row by row in Python.
    """
    if raw.null_count:
        raw = pc.fill_null(raw, b"")
    if pa.types.is_string(raw.type):
        raw = raw.view(pa.binary())
    if pa.types.is_large_binary(raw.type):
        raw = raw.cast(pa.binary())
    as_str = raw.view(pa.string())
    if _is_ascii(as_str):  # ASCII is valid UTF-8: skip the full validation
        return as_str
    try:
        as_str.validate(full=True)
        return as_str
    except pa.ArrowInvalid:
        pass
    _invalid_counter[0] = 0
    fixed = [b.decode("utf-8", "embedpipe_count_replace") for b in raw.to_pylist()]
    stats.invalid_utf8 += _invalid_counter[0]
    return pa.array(fixed, pa.string())


def _lists_from_values(values: pa.Array, parents: np.ndarray, n_rows: int) -> pa.ListArray:
    """Rebuild a list array of ``n_rows`` from flat values and their (sorted) row indices."""
    counts = np.bincount(parents, minlength=n_rows) if len(parents) else np.zeros(n_rows, np.int64)
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _filter_values(lists: pa.ListArray, keep: pa.Array | np.ndarray) -> pa.ListArray:
    """Drop the flat values where ``keep`` is false, keeping the row structure."""
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists)
    keep_np = keep if isinstance(keep, np.ndarray) else keep.to_numpy(zero_copy_only=False)
    return _lists_from_values(values.filter(pa.array(keep_np)), parents[keep_np], len(lists))


def string_buffers(lines: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first line, data bytes) of a string array, zero-copy."""
    n = len(lines)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset: lines.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = (np.frombuffer(lines.buffers()[2], dtype=np.uint8)[start:end] if end > start
            else np.zeros(0, np.uint8))
    return (offsets - start).astype(np.int64), data


def _tokens_from_mask(rel: np.ndarray, data: np.ndarray, keep: np.ndarray,
                      out: np.ndarray) -> pa.ListArray:
    """Tokens = maximal runs of kept bytes inside a line, their bytes taken from ``out``.

    Builds the flat token array by compacting the kept bytes (so token ``t`` spans
    ``[cum[start_t], cum[end_t])`` of the compacted buffer) and the per-line lists by
    counting token starts before each line offset: a few NumPy passes over the bytes,
    no Arrow split and no intermediate strings.
    """
    n_lines = len(rel) - 1
    if len(data) == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n_lines + 1, np.int32)),
                                        pa.array([], pa.string()))
    starts_mask = keep.copy()
    starts_mask[1:] &= ~keep[:-1]
    line_starts = rel[:-1][rel[:-1] < len(data)]
    starts_mask[line_starts] = keep[line_starts]  # a line start begins a token if kept
    starts = np.flatnonzero(starts_mask)
    cum = np.empty(len(data) + 1, dtype=np.int64)
    cum[0] = 0
    np.cumsum(keep, out=cum[1:])
    value_offsets = np.empty(len(starts) + 1, dtype=np.int32)
    value_offsets[:-1] = cum[starts]
    value_offsets[-1] = cum[-1]
    values = pa.Array.from_buffers(
        pa.string(), len(starts),
        [None, pa.py_buffer(value_offsets), pa.py_buffer(np.ascontiguousarray(out[keep]))])
    list_offsets = np.searchsorted(starts, rel).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(list_offsets), values)


def _ascii_words(lines: pa.Array, lowercase: bool) -> pa.ListArray:
    """Built-in word rule on ASCII-only lines with a byte lookup table (exact for ASCII)."""
    lines = lines.cast(pa.string()) if not pa.types.is_string(lines.type) else lines
    rel, data = string_buffers(lines)
    alnum = _ALNUM[data]
    # An apostrophe or hyphen is part of a token only between two alphanumerics of
    # the same line: neighbours across a line boundary do not count.
    prev_ok = np.zeros_like(alnum)
    next_ok = np.zeros_like(alnum)
    prev_ok[1:] = alnum[:-1]
    next_ok[:-1] = alnum[1:]
    prev_ok[rel[:-1][rel[:-1] < len(data)]] = False
    next_ok[rel[1:][rel[1:] > 0] - 1] = False
    keep = alnum | (_INNER[data] & prev_ok & next_ok)
    table = _APOS_MAP[_LOWER] if lowercase else _APOS_MAP
    return _tokens_from_mask(rel, data, keep, table[data])


def _ascii_whitespace_words(lines: pa.Array, lowercase: bool) -> pa.ListArray:
    """Whitespace tokenizer on ASCII-only lines: tokens are runs of non-space bytes."""
    rel, data = string_buffers(lines)
    keep = ~_ASCII_SPACE[data]
    return _tokens_from_mask(rel, data, keep, _LOWER[data] if lowercase else data)


def _split_whitespace(lines: pa.Array, all_ascii: bool) -> pa.ListArray:
    """Split on whitespace runs with no empty tokens (Arrow emits one per leading/trailing run)."""
    if all_ascii:
        parts = pc.ascii_split_whitespace(pc.ascii_trim_whitespace(lines))
    else:
        parts = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))
    flat = pc.list_flatten(parts)
    empty = pc.equal(pc.binary_length(flat), 0)
    if len(flat) and pc.any(empty).as_py():
        return _filter_values(parts, pc.invert(empty))
    return parts


def _unicode_words(lines: pa.Array, lowercase: bool, pattern: str) -> pa.ListArray:
    """The word rule (or a custom separator pattern) on arbitrary Unicode lines with RE2."""
    if lowercase:
        lines = pc.utf8_lower(lines)
    for a in _APOSTROPHES:
        lines = pc.replace_substring(lines, a, "'")
    if pattern:
        parts = pc.split_pattern_regex(lines, pattern)
        flat = pc.list_flatten(parts)
        return _filter_values(parts, pc.greater(pc.binary_length(flat), 0))
    if pc.any(pc.match_substring_regex(lines, _CJK)).as_py():
        lines = pc.replace_substring_regex(lines, _CJK, r" \1 ")
    # A combining mark belongs to the letter before it; a stray one (NFKC turns a
    # spacing accent into space + combining mark) would start a junk token.
    lines = pc.replace_substring_regex(lines, _STRAY_MARKS, r"\1")
    parts = pc.split_pattern_regex(lines, _UNICODE_SEP)
    parents = pc.list_parent_indices(parts)
    flat = pc.utf8_trim(pc.list_flatten(parts), "'-")
    # "a--b" or "a'-b": a run of two or more inner marks separates tokens.
    pieces = pc.split_pattern_regex(flat, _PUNCT_RUN)
    piece_parents = pc.take(parents, pc.list_parent_indices(pieces))
    values = pc.utf8_trim(pc.list_flatten(pieces), "'-")
    nonempty = pc.greater(pc.binary_length(values), 0)
    return _lists_from_values(
        values.filter(nonempty),
        piece_parents.filter(nonempty).to_numpy(zero_copy_only=False),
        len(lines),
    )


def _whitespace_words(lines: pa.Array, lowercase: bool, all_ascii: bool) -> pa.ListArray:
    if all_ascii:
        return _ascii_whitespace_words(lines, lowercase)
    if lowercase:
        lines = pc.ascii_lower(lines) if all_ascii else pc.utf8_lower(lines)
    return _split_whitespace(lines, all_ascii)


def tokenize(
    lines: pa.Array,
    tokenizer: str = "regex",
    lowercase: bool = True,
    pattern: str = "",
    max_token_chars: int = 0,
    stats: TokenStats | None = None,
) -> pa.ListArray:
    """Tokenize an Arrow array of lines into a ``list<string>`` array (one list per line).

    ``lines`` may be binary (raw bytes; invalid UTF-8 is replaced and counted in
    ``stats``) or string. Tokens longer than ``max_token_chars`` characters (0 = no
    limit) are dropped and counted.
    """
    stats = stats if stats is not None else TokenStats()
    lines = decode_lines(lines, stats)
    all_ascii = _is_ascii(lines)
    ascii_rows = None if all_ascii else pc.string_is_ascii(lines)
    # Pre-tokenized text is taken as it is (apart from lowercasing): normalising it
    # would change tokens that the user's own tokenizer produced on purpose.
    if not all_ascii and tokenizer != "whitespace":
        lines = pc.utf8_normalize(lines, "NFKC")
    if tokenizer == "whitespace":
        tokens = _whitespace_words(lines, lowercase, all_ascii)
    elif pattern:
        tokens = _unicode_words(lines, lowercase, pattern)
    elif all_ascii:
        tokens = _ascii_words(lines, lowercase)
    else:
        mask = ascii_rows.to_numpy(zero_copy_only=False)
        idx_a = np.flatnonzero(mask)
        idx_u = np.flatnonzero(~mask)
        part_a = _ascii_words(lines.take(pa.array(idx_a)), lowercase)
        part_u = _unicode_words(lines.take(pa.array(idx_u)), lowercase, "")
        # Put rows back in their original order.
        order = np.empty(len(lines), dtype=np.int64)
        order[idx_a] = np.arange(len(idx_a))
        order[idx_u] = len(idx_a) + np.arange(len(idx_u))
        tokens = pa.concat_arrays([part_a, part_u]).take(pa.array(order))
    if max_token_chars:
        flat = pc.list_flatten(tokens)
        if len(flat) and pc.max(pc.binary_length(flat)).as_py() > max_token_chars:
            too_long = pc.greater(pc.utf8_length(flat), max_token_chars)
            stats.long_tokens += int(pc.sum(too_long).as_py() or 0)
            tokens = _filter_values(tokens, pc.invert(too_long))
    return tokens


def reference_tokenize(line: str, tokenizer: str = "regex", lowercase: bool = True) -> list[str]:
    """Slow, obvious Python tokenizer with the same rule, for tests and the bench baseline."""
    import re
    import unicodedata

    if tokenizer == "whitespace":
        return (line.lower() if lowercase else line).split()
    line = unicodedata.normalize("NFKC", line)
    if lowercase:
        line = line.lower()
    for a in _APOSTROPHES:
        line = line.replace(a, "'")
    line = re.sub(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])",
                  r" \1 ", line)
    word = r"[^\W_]"
    return re.findall(rf"{word}+(?:['\-]{word}+)*", line)


# ------------------------------------------------------------------ fused fast path


def fast_mode(tokenizer: str, pattern: str) -> int | None:
    """The fused ASCII kernel mode for these settings, or None (custom pattern: Arrow only)."""
    from embedpipe.kernels import tokens as TK

    if tokenizer == "whitespace":
        return TK.MODE_WHITESPACE
    return None if pattern else TK.MODE_WORDS


def raw_buffers(raw: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """(binary lines, offsets, bytes, per-row ASCII flag) of a batch's raw column, zero-copy."""
    from embedpipe.kernels import tokens as TK

    if raw.null_count:
        raw = pc.fill_null(raw, b"" if pa.types.is_binary(raw.type) else "")
    if pa.types.is_large_binary(raw.type) or pa.types.is_large_string(raw.type):
        raw = raw.cast(pa.binary())
    if pa.types.is_string(raw.type):
        raw = raw.view(pa.binary())
    offsets, data = string_buffers(raw)
    return raw, offsets, data, TK.row_is_ascii(data, offsets)
