"""The fused ASCII tokenize+count / tokenize+lookup kernels equal the Arrow tokenizer path."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest

from embedpipe.config import load_config
from embedpipe.kernels import tokens as TK
from embedpipe.stages import encode, vocab
from embedpipe.stages.tokenize import reference_tokenize, tokenize
from tests.conftest import EN_OPEN_RAW, SAMPLE, head_lines

EDGE = [
    "", "   ", "Don't stop-me now", "a'-b a--b -lead trail- 'quote' `tick`it x`y",
    "UPPER lower MiXeD 42 4-2 3'5", "tab\tsep\r\ncr\x0bvt\x0cff\x1cfs\x1dgs\x1ers\x1fus end",
    "punct!!! (paren) [br] {cb} a.b,c;d:e", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa short",
    "-", "'", "a", "' - ` --", "word\x00nul", "x" * 150,
]
MIXED = ["café crème brûlée", "naïve CAFÉ x", "日本語のテキスト abc", "plain ascii line"]


def _batch(lines: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "raw": pa.array([x.encode() for x in lines], pa.binary()),
        "file": pa.array(["f"] * len(lines)),
        "block": pa.array([0] * len(lines), pa.int64()),
    })


def _vcfg(tokenizer: str, lowercase: bool, max_chars: int):
    sets = [f"vocab.tokenizer={tokenizer}", f"vocab.lowercase={str(lowercase).lower()}",
            f"vocab.max_token_chars={max_chars}"]
    return load_config(None, sets).vocab


def _counts(lines, vcfg) -> tuple[collections.Counter, dict]:
    got: collections.Counter[str] = collections.Counter()
    meta = {}
    batches = [_batch(lines[s : s + 300]) for s in range(0, len(lines), 300)]
    for b in vocab.count_batches(batches, vcfg):
        for k, key, n in zip(*(b.column(c).to_pylist() for c in ("kind", "key", "count")),
                             strict=True):
            if k == vocab.KIND_TOKEN:
                got[key] += n
            elif k == vocab.KIND_STAT:
                meta[key] = n
    return got, meta


@pytest.fixture(scope="module")
def real_lines() -> list[str]:
    lines = head_lines(SAMPLE, 3000)
    if EN_OPEN_RAW.exists():
        lines += head_lines(EN_OPEN_RAW, 3000)
    return lines + EDGE + MIXED


@pytest.mark.parametrize("tokenizer", ["regex", "whitespace"])
@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("max_chars", [100, 12])
def test_fused_counts_equal_arrow_path(monkeypatch, real_lines, tokenizer, lowercase, max_chars):
    vcfg = _vcfg(tokenizer, lowercase, max_chars)
    fast, fast_meta = _counts(real_lines, vcfg)
    monkeypatch.setattr(vocab, "fast_mode", lambda *a: None)
    slow, slow_meta = _counts(real_lines, vcfg)
    assert fast == slow
    assert fast_meta == slow_meta
    if max_chars == 12:
        assert fast_meta["long_tokens_dropped"] > 0


@pytest.mark.parametrize("tokenizer", ["regex", "whitespace"])
def test_fused_counts_equal_reference_tokenizer(real_lines, tokenizer):
    fast, meta = _counts(real_lines, _vcfg(tokenizer, True, 1000))
    want = collections.Counter(t for x in real_lines for t in reference_tokenize(x, tokenizer))
    assert fast == want
    assert meta["tokens"] == sum(want.values())


@pytest.mark.parametrize("tokenizer", ["regex", "whitespace"])
@pytest.mark.parametrize("max_chars", [100, 12])
def test_fused_encode_equals_arrow_path(monkeypatch, real_lines, tokenizer, max_chars):
    vcfg = _vcfg(tokenizer, True, max_chars)
    counts, _ = _counts(real_lines, vcfg)
    # A vocabulary with holes: every third token is out of vocabulary.
    voc = pa.array([*sorted(counts)[::3], "never-seen-token"], pa.string())
    first = {("f", 0): 0}

    def run():
        batches = [_batch(real_lines[s : s + 500]) for s in range(0, len(real_lines), 500)]
        out = pa.Table.from_batches(list(encode.encode_batches(batches, voc, first, vcfg, 7)))
        return out.column("doc").to_pylist(), out.column("ids").to_pylist()

    fast = run()
    monkeypatch.setattr(encode, "fast_mode", lambda *a: None)
    slow = run()
    assert fast == slow
    # And the ids decode to the reference tokens of every line, OOV dropped.
    index = {t: i for i, t in enumerate(voc.to_pylist())}
    decoded: dict[int, list[int]] = collections.defaultdict(list)
    for d, ids in zip(*fast, strict=True):
        decoded[d] += ids
    for n, line in enumerate(real_lines[:500]):
        toks = tokenize(pa.array([line]), tokenizer, True, "", max_chars).to_pylist()[0]
        assert decoded.get(n, []) == [index[t] for t in toks if t in index]


def test_counter_grows_past_its_initial_table():
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in rng.permutation(50_000)]
    data = np.frombuffer(" ".join(words).encode(), np.uint8)
    offsets = np.array([0, data.size], np.int64)
    c = TK.TokenCounter(TK.MODE_WHITESPACE, True, 0, capacity=16)
    assert c.add(data, offsets, np.ones(1, bool)) == (50_000, 0)
    key_off, keys, counts = c.drain()
    got = {keys[key_off[i] : key_off[i + 1]].tobytes().decode(): counts[i]
           for i in range(len(counts))}
    assert got == dict.fromkeys(words, 1)
    assert len(c) == 0
