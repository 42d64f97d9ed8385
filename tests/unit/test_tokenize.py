"""Tokenizer: the Arrow fast paths equal the slow Python reference rule."""

from __future__ import annotations

import pyarrow as pa
import pytest

from embedpipe.stages.tokenize import TokenStats, reference_tokenize, tokenize
from tests.conftest import SAMPLE, head_lines


def tok(lines, **kw):
    return tokenize(pa.array(lines), **kw).to_pylist()


@pytest.mark.parametrize(("line", "expected"), [
    ("Don't stop -- well-known 'quoted' words.",
     ["don't", "stop", "well-known", "quoted", "words"]),
    ("a--b a'-b -lead trail- x''y", ["a", "b", "a", "b", "lead", "trail", "x", "y"]),
    ("snake_case 3.14 e-mail", ["snake", "case", "3", "14", "e-mail"]),
    ("Café au lait, NAÏVE ﬁne", ["café", "au", "lait", "naïve", "fine"]),  # NFKC: ﬁ -> fi
    ("ÉCOLE d’été", ["école", "d'été"]),
    ("日本語のテキスト 한국어 中文abc", ["日", "本", "語", "の", "テ", "キ", "ス", "ト",
                                 "한", "국", "어", "中", "文", "abc"]),
    ("  \t ", []),
    ("", []),
])
def test_word_rule_by_hand(line, expected):
    assert tok([line]) == [expected]


def test_equals_reference_on_real_text():
    lines = [*head_lines(SAMPLE, 3000), "mixed ascii and ünïcode rows", "/mee´goh/ stray accent"]
    got = tok(lines)
    for line, tokens in zip(lines, got, strict=True):
        assert tokens == reference_tokenize(line), line


def test_ascii_and_unicode_paths_agree_on_ascii():
    lines = ["It's a well-known fact -- isn't it?", "x--y 'a' b-", "Mixed UPPER lower 123"]
    ascii_only = tok(lines)
    with_unicode = tok([*lines, "ü"])[:-1]  # one non-ASCII row sends the batch down both paths
    assert ascii_only == with_unicode


def test_lowercase_off_and_whitespace_mode():
    assert tok(["Hello World"], lowercase=False) == [["Hello", "World"]]
    assert tok(["a,b  c\td\u3000e"], tokenizer="whitespace") == [["a,b", "c", "d", "e"]]
    assert tok(["  lead trail  ", ""], tokenizer="whitespace") == [["lead", "trail"], []]


def test_custom_separator_pattern():
    assert tok(["a1;b2|c3"], pattern=r"[;|]") == [["a1", "b2", "c3"]]


def test_invalid_utf8_is_replaced_and_counted():
    stats = TokenStats()
    raw = pa.array([b"good line", b"bad \xff\xfe bytes", b"ok \xc3\xa9t\xc3\xa9"], pa.binary())
    got = tokenize(raw, stats=stats).to_pylist()
    assert got == [["good", "line"], ["bad", "bytes"], ["ok", "été"]]
    assert stats.invalid_utf8 == 2


def test_long_tokens_dropped_and_counted():
    stats = TokenStats()
    got = tokenize(pa.array(["x" * 101 + " keep " + "y" * 100]), max_token_chars=100,
                   stats=stats).to_pylist()
    assert got == [["keep", "y" * 100]] and stats.long_tokens == 1


def test_nul_bytes_separate_tokens():
    assert tok(["a\x00b c"]) == [["a", "b", "c"]]
