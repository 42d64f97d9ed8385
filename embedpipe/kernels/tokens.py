"""Fused scan kernels for ASCII lines: tokenize and count, or tokenize and look up ids.

The Arrow path (``embedpipe.stages.tokenize``) builds a ``list<string>`` array and
then hashes it (``value_counts`` in vocab, ``index_in`` in encode): every token is
materialised as a string and touched three times. Here one numba pass over a
batch's bytes finds each token, hashes its (lowercased) bytes and either counts it
in an open-addressing table or looks its id up in the vocabulary's table. Only ASCII
rows are scanned (ASCII text is NFKC-invariant and one byte is one character, so
the byte rules below are exactly the tokenizer's rules); rows with a byte >= 0x80
are flagged and left to the Arrow path, which handles Unicode and invalid UTF-8.

Token rules (``mode``), applied within one line:

* ``MODE_WORDS``: runs of ASCII letters and digits; ``'``, ``-`` and the backtick
  are kept only between two letters/digits; the backtick is written as ``'``.
* ``MODE_WHITESPACE``: runs of bytes that are not ASCII whitespace (``str.split``).

Tokens longer than ``max_chars`` (0 = no limit) are dropped and counted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MODE_WORDS, MODE_WHITESPACE = 0, 1

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def byte_tables(
    mode: int, lowercase: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(alnum, inner, space, out) byte tables: classes and the byte a token stores."""
    alnum = np.zeros(256, np.bool_)
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        alnum[c] = True
    inner = np.zeros(256, np.bool_)
    for c in b"'-`":
        inner[c] = True
    space = np.zeros(256, np.bool_)
    for c in b" \t\n\v\f\r\x1c\x1d\x1e\x1f":  # what str.split() treats as whitespace
        space[c] = True
    out = np.arange(256, dtype=np.uint8)
    if lowercase:
        out[65:91] += 32
    if mode == MODE_WORDS:
        out[ord("`")] = ord("'")
    return alnum, inner, space, out


@njit(cache=True, nogil=True)
def _next_token(data, pos, end, mode, alnum, inner, space):
    """(start, stop) of the next token in ``data[pos:end]``, or (end, end)."""
    if mode == 1:
        while pos < end and space[data[pos]]:
            pos += 1
        start = pos
        while pos < end and not space[data[pos]]:
            pos += 1
        return start, pos
    while pos < end and not alnum[data[pos]]:
        pos += 1
    start = pos
    while pos < end:
        c = data[pos]
        # An inner mark continues a token only when a letter/digit follows it.
        if alnum[c] or (inner[c] and pos + 1 < end and alnum[data[pos + 1]] and pos > start):
            pos += 1
        else:
            break
    return start, pos


@njit(cache=True, nogil=True)
def _hash_pack(data, start, stop, out):
    """(FNV-1a hash, first 8 mapped bytes packed little-endian) of a token."""
    h = _FNV_OFFSET
    packed = np.uint64(0)
    for k in range(start, stop):
        b = np.uint64(out[data[k]])
        h = (h ^ b) * _FNV_PRIME
        if k - start < 8:
            packed |= b << np.uint64(8 * (k - start))
    # FNV's low bits are poorly mixed (a multiply only carries upwards) and the
    # table indexes by them: finish with murmur3's fmix64 so probe runs stay short.
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h, packed


@njit(cache=True, nogil=True)
def _same(data, start, stop, out, keys, key_start):
    for k in range(8, stop - start):  # noqa: SIM110 (numba compiles the plain loop)
        if keys[key_start + k] != out[data[start + k]]:
            return False
    return True


# Hash tables below: ``slots`` (power-of-two size) holds 0 for empty, else the
# entry number + 1 in the low 32 bits and the hash's high 32 bits as a tag; entries
# are rows of ``ent`` (key offset, key length, first 8 key bytes packed, count), one
# cache line for two entries. A probe touches the slot and, when the tag matches,
# one entry row; the key bytes only for tokens longer than 8 bytes.
_E_OFF, _E_LEN, _E_PACK, _E_COUNT = 0, 1, 2, 3
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _find(slots, ent, keys, data, start, stop, out, h, packed):
    """(slot position, entry or -1) of a token in a table."""
    mask = slots.size - 1
    tag = h >> np.uint64(32)
    n = stop - start
    p = np.int64(h & np.uint64(mask))
    while True:
        sl = slots[p]
        if sl == 0:
            return p, -1
        if (sl >> np.uint64(32)) == tag:
            e = np.int64(sl & _LOW32) - 1
            if (ent[e, _E_LEN] == n and np.uint64(ent[e, _E_PACK]) == packed
                    and (n <= 8 or _same(data, start, stop, out, keys, ent[e, _E_OFF]))):
                return p, e
        p = (p + 1) & mask


@njit(cache=True, nogil=True)
def _slot_value(h, e):
    return ((h >> np.uint64(32)) << np.uint64(32)) | np.uint64(e + 1)


@njit(cache=True, nogil=True)
def row_is_ascii(data, offsets):
    """Boolean per row: every byte of the row is < 0x80."""
    n = offsets.size - 1
    ok = np.ones(n, np.bool_)
    for r in range(n):
        for k in range(offsets[r], offsets[r + 1]):
            if data[k] >= 128:
                ok[r] = False
                break
    return ok


@njit(cache=True, nogil=True)
def _grow_table(slots, hashes, n_entries):
    cap = slots.size * 2
    new_slots = np.zeros(cap, np.uint64)
    mask = cap - 1
    for e in range(n_entries):
        p = np.int64(hashes[e] & np.uint64(mask))
        while new_slots[p] != 0:
            p = (p + 1) & mask
        new_slots[p] = _slot_value(hashes[e], e)
    return new_slots


@njit(cache=True, nogil=True)
def count_tokens(data, offsets, ascii_rows, mode, max_chars, alnum, inner, space, out,
                 slots, hashes, ent, keys, n_entries, key_used):
    """Count the tokens of the ASCII rows into an open-addressing table.

    Table state (``slots``, per-entry ``hashes`` and ``ent`` rows, key bytes ``keys``
    of which ``key_used`` are filled) is passed in and returned, grown as needed.
    Returns (slots, hashes, ent, keys, n_entries, key_used, tokens, long_dropped).
    """
    n_tokens = 0
    long_dropped = 0
    for r in range(offsets.size - 1):
        if not ascii_rows[r]:
            continue
        pos, end = offsets[r], offsets[r + 1]
        while pos < end:
            start, stop = _next_token(data, pos, end, mode, alnum, inner, space)
            pos = stop
            if stop == start:
                break
            if max_chars > 0 and stop - start > max_chars:
                long_dropped += 1
                continue
            n_tokens += 1
            h, packed = _hash_pack(data, start, stop, out)
            p, e = _find(slots, ent, keys, data, start, stop, out, h, packed)
            if e >= 0:
                ent[e, _E_COUNT] += 1
                continue
            # New entry: make room in the entry arrays and the key bytes.
            e = n_entries
            if e >= ent.shape[0]:
                ent = np.concatenate((ent, np.zeros_like(ent)))
                hashes = np.concatenate((hashes, np.zeros_like(hashes)))
            n = stop - start
            if key_used + n > keys.size:
                keys = np.concatenate((keys, np.zeros(max(keys.size, n), np.uint8)))
            for k in range(n):
                keys[key_used + k] = out[data[start + k]]
            ent[e, _E_OFF] = key_used
            ent[e, _E_LEN] = n
            ent[e, _E_PACK] = np.int64(packed)
            ent[e, _E_COUNT] = 1
            hashes[e] = h
            key_used += n
            slots[p] = _slot_value(h, e)
            n_entries += 1
            if n_entries * 2 > slots.size:
                slots = _grow_table(slots, hashes, n_entries)
    return slots, hashes, ent, keys, n_entries, key_used, n_tokens, long_dropped


class TokenCounter:
    """Per-task token counts over many batches (a growing numba hash table)."""

    def __init__(self, mode: int, lowercase: bool, max_chars: int, capacity: int = 1 << 16):
        self.mode, self.max_chars = mode, max_chars
        self.alnum, self.inner, self.space, self.out = byte_tables(mode, lowercase)
        self._reset(capacity)

    def _reset(self, capacity: int = 1 << 16) -> None:
        self.slots = np.zeros(capacity, np.uint64)
        self.hashes = np.zeros(capacity // 2, np.uint64)
        self.ent = np.zeros((capacity // 2, 4), np.int64)
        self.keys = np.zeros(capacity * 4, np.uint8)
        self.n = self.key_used = 0

    def add(self, data: np.ndarray, offsets: np.ndarray, ascii_rows: np.ndarray) -> tuple[int, int]:
        """Count the ASCII rows of one batch; returns (tokens counted, long tokens dropped)."""
        (self.slots, self.hashes, self.ent, self.keys, self.n, self.key_used, tokens,
         dropped) = count_tokens(
            data, offsets, ascii_rows, self.mode, self.max_chars, self.alnum, self.inner,
            self.space, self.out, self.slots, self.hashes, self.ent, self.keys, self.n,
            self.key_used)
        return int(tokens), int(dropped)

    def __len__(self) -> int:
        return self.n

    def drain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key offsets, key bytes, counts) of every distinct token so far; then empty."""
        n = self.n
        # Entries were appended in order, so their keys are contiguous in ``keys``.
        key_off = np.empty(n + 1, np.int64)
        key_off[:n] = self.ent[:n, _E_OFF]
        key_off[n] = self.key_used
        out = (key_off, self.keys[: self.key_used].copy(), self.ent[:n, _E_COUNT].copy())
        self._reset()
        return out


@njit(cache=True, nogil=True)
def build_lookup(offsets, data):
    """Hash table over a string array (offsets, bytes); entry e is string e.

    Returns (slots, ent) for :func:`encode_tokens`; the strings' bytes stay the keys.
    """
    n = offsets.size - 1
    cap = 16
    while cap < 2 * n + 2:
        cap *= 2
    slots = np.zeros(cap, np.uint64)
    ent = np.zeros((max(n, 1), 4), np.int64)
    ident = np.arange(256).astype(np.uint8)
    for e in range(n):
        s, t = offsets[e], offsets[e + 1]
        h, packed = _hash_pack(data, s, t, ident)
        ent[e, _E_OFF] = s
        ent[e, _E_LEN] = t - s
        ent[e, _E_PACK] = np.int64(packed)
        p, found = _find(slots, ent, data, data, s, t, ident, h, packed)
        if found < 0:  # a duplicate string keeps its first id
            slots[p] = _slot_value(h, e)
    return slots, ent


@njit(cache=True, nogil=True)
def encode_tokens(data, offsets, ascii_rows, mode, max_chars, alnum, inner, space, out,
                  slots, ent, voc_data):
    """Ids of the in-vocabulary tokens of the ASCII rows, with per-row counts.

    Returns (ids int32 of all ASCII rows in order, per-row kept counts (0 for
    non-ASCII rows), tokens seen, long tokens dropped).
    """
    n_rows = offsets.size - 1
    ids = np.empty(offsets[-1] - offsets[0] + 1, np.int32)  # a token has >= 1 byte
    row_counts = np.zeros(n_rows, np.int64)
    n = 0
    n_tokens = 0
    long_dropped = 0
    for r in range(n_rows):
        if not ascii_rows[r]:
            continue
        pos, end = offsets[r], offsets[r + 1]
        kept = 0
        while pos < end:
            start, stop = _next_token(data, pos, end, mode, alnum, inner, space)
            pos = stop
            if stop == start:
                break
            if max_chars > 0 and stop - start > max_chars:
                long_dropped += 1
                continue
            n_tokens += 1
            h, packed = _hash_pack(data, start, stop, out)
            _p, e = _find(slots, ent, voc_data, data, start, stop, out, h, packed)
            if e >= 0:
                ids[n] = e
                n += 1
                kept += 1
        row_counts[r] = kept
    return ids[:n], row_counts, n_tokens, long_dropped


@njit(cache=True, nogil=True)
def lookup_strings(offsets, data, slots, ent, voc_data):
    """Entry of every string (offsets, bytes) in a :func:`build_lookup` table, -1 if absent."""
    n = offsets.size - 1
    out = np.full(n, -1, np.int32)
    ident = np.arange(256).astype(np.uint8)
    for i in range(n):
        s, t = offsets[i], offsets[i + 1]
        h, packed = _hash_pack(data, s, t, ident)
        _p, e = _find(slots, ent, voc_data, data, s, t, ident, h, packed)
        out[i] = e
    return out


@njit(cache=True, nogil=True)
def _split_lines(buf: np.ndarray, data: np.ndarray, offsets: np.ndarray) -> int:
    n_lines = 0
    w = 0
    offsets[0] = 0
    for r in range(buf.size):
        c = buf[r]
        if c == 10:
            n_lines += 1
            offsets[n_lines] = w
        else:
            data[w] = c
            w += 1
    if buf.size and buf[buf.size - 1] != 10:  # a last line without its newline
        n_lines += 1
        offsets[n_lines] = w
    return n_lines


def split_lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lines of a byte buffer as (bytes without the ``\\n``, offsets), like Spark's text reader.

    Lines end at ``\\n`` only (``\\r`` stays in the line, as Spark's reader with
    ``lineSep = "\\n"``); a final line without a newline is a line, and a buffer that
    ends with ``\\n`` has no empty line after it. Offsets are int64, ``len = lines + 1``.
    """
    data = np.empty(buf.size, np.uint8)
    offsets = np.empty(buf.size + 2, np.int64)
    n = _split_lines(buf, data, offsets)
    return data[: int(offsets[n])], offsets[: n + 1]
