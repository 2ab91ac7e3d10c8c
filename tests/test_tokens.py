"""Offline token counts: the estimate for real, the exact path through a stand-in
tiktoken (the real one only when it and its cached encoding happen to be present)."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import moderation.tokens as tokens
from moderation.models import Example, Segment
from moderation.tokens import (
    ESTIMATE_METHOD,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_CALL_OVERHEAD,
    count_segments,
    count_text,
    count_tokens,
    estimate_text,
    set_token_method,
    token_method,
)
from moderation.validate import validate

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


@pytest.fixture(autouse=True)
def _fresh_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test resolves the method anew; monkeypatch restores the module afterwards."""
    monkeypatch.setattr(tokens, "_active", None)
    monkeypatch.setattr(tokens, "_requested", "auto")


def validated(record: dict[str, Any]) -> Example:
    example = Example(source="t", line=1, raw=b"", hash="h", record=record)
    validate(example)
    assert example.problems == []
    return example


# ------------------------------------------------------------------------------ estimate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("abc", 1),
        ("abcd", 2),
        ("hello world", 4),  # 11 bytes
        ("é", 1),  # 2 bytes
        ("日本語", 3),  # 9 bytes
        ("😀", 2),  # 4 bytes
        ("\ud800", 1),  # a lone surrogate (3 bytes with surrogatepass) must not raise
    ],
)
def test_estimate_is_ceil_of_utf8_bytes_over_3(text: str, expected: int) -> None:
    assert estimate_text(text) == expected


def test_estimate_never_undercounts_ordinary_english() -> None:
    # o200k/cl100k need about one token per 4 bytes of English; bytes/3 stays above that.
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_text(text) >= len(text.encode()) / 4


def test_estimate_method_without_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import fails
    assert token_method() == ESTIMATE_METHOD == "estimate:bytes/3"
    assert count_text("abcdef") == 2
    assert count_text("") == 0


def test_set_token_method(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_token_method("estimate") == ESTIMATE_METHOD
    assert token_method() == ESTIMATE_METHOD
    with pytest.raises(ValueError, match="unknown token method"):
        set_token_method("exact")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- example counts


def test_chat_count_is_segments_plus_framing(monkeypatch: pytest.MonkeyPatch) -> None:
    set_token_method("estimate")
    record = {
        "messages": [
            {"role": "system", "content": "abcdef"},  # 2
            {"role": "user", "content": "abc"},  # 1
            {"role": "assistant", "content": "abcdefg"},  # 3
        ]
    }
    example = validated(record)
    assert example.tokens == 6 + 3 * MESSAGE_OVERHEAD + REPLY_PRIMING == 21
    assert count_tokens(example) == example.tokens


def test_names_tool_calls_and_tools_are_counted() -> None:
    set_token_method("estimate")
    tools = [{"type": "function", "function": {"name": "f"}}]
    record = {
        "messages": [
            {"role": "user", "content": "abc", "name": "al"},  # 1 + name (1 + 1)
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },  # arguments 1 + id 1 + name 1 + overhead
            {"role": "tool", "tool_call_id": "c1", "content": "abc"},  # 1 + id 1
            {"role": "assistant", "content": "abc"},  # 1
        ],
        "tools": tools,
    }
    example = validated(record)
    definitions = estimate_text('[{"type":"function","function":{"name":"f"}}]')
    expected = (
        (1 + 1 + 1)
        + (1 + 1 + 1 + TOOL_CALL_OVERHEAD)
        + (1 + 1)
        + 1
        + 4 * MESSAGE_OVERHEAD
        + REPLY_PRIMING
        + definitions
    )
    assert example.tokens == expected


def test_images_cost_a_fixed_amount() -> None:
    set_token_method("estimate")
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://e/a.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {"role": "assistant", "content": "abc"},
        ]
    }
    example = validated(record)
    assert example.tokens == 2 * IMAGE_TOKENS + 1 + 2 * MESSAGE_OVERHEAD + REPLY_PRIMING
    assert IMAGE_TOKENS == 85 + 170 * 8


def test_preference_counts_input_once_and_both_outputs() -> None:
    set_token_method("estimate")
    record = {
        "input": {"messages": [{"role": "user", "content": "abc"}]},
        "preferred_output": [{"role": "assistant", "content": "abcdef"}],
        "non_preferred_output": [{"role": "assistant", "content": "abcdefghi"}],
    }
    example = validated(record)
    assert example.tokens == (1 + 2 + 3) + 3 * MESSAGE_OVERHEAD + 2 * REPLY_PRIMING


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"prompt": "abc", "completion": "abcdef"}, 3),
        ({"text": "abcdefghij", "id": "doc-1"}, 4),
        ({"text": "   "}, 0),
    ],
)
def test_plain_formats_count_text_only(record: dict[str, Any], expected: int) -> None:
    set_token_method("estimate")
    assert validated(record).tokens == expected


def test_invalid_examples_count_zero() -> None:
    example = Example(source="t", line=1, raw=b"", hash="h", record={"messages": []})
    validate(example)
    assert example.problems
    assert example.tokens == 0 == count_tokens(example)
    unparsed = Example(source="t", line=1, raw=b"{", hash="h")
    assert count_tokens(unparsed) == 0


def test_count_segments() -> None:
    set_token_method("estimate")
    segments = [
        Segment(path="a", role="user", text="abcdef"),
        Segment(path="b", role="user", kind="image", image_url="https://e/x"),
        Segment(path="c", role="user", text=""),
    ]
    assert count_segments(segments) == 2 + IMAGE_TOKENS


# --------------------------------------------------------------------------- exact path


class FakeEncoding:
    def __init__(self, name: str) -> None:
        self.name = name

    def encode_ordinary(self, text: str) -> list[int]:
        return list(range(len(text.split())))  # one token per word: easy to tell apart


def install_fake_tiktoken(
    monkeypatch: pytest.MonkeyPatch, *, download_on_load: bool = False
) -> dict[str, list[str]]:
    """A stand-in ``tiktoken`` whose ``get_encoding`` records its calls and whose
    ``load.read_file`` (the download) records being called."""
    calls: dict[str, list[str]] = {"get_encoding": [], "read_file": []}
    load = types.ModuleType("tiktoken.load")

    def read_file(blobpath: str) -> bytes:
        calls["read_file"].append(blobpath)
        return b""

    load.read_file = read_file  # type: ignore[attr-defined]
    module = types.ModuleType("tiktoken")

    def get_encoding(name: str) -> FakeEncoding:
        calls["get_encoding"].append(name)
        if download_on_load:
            load.read_file(O200K_URL)
        return FakeEncoding(name)

    module.get_encoding = get_encoding  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", module)
    monkeypatch.setitem(sys.modules, "tiktoken.load", load)
    return calls


def cache_file(directory: Path, url: str = O200K_URL, data: bytes = b"ranks") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_exact_when_the_encoding_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": cache_file(tmp_path)})
    assert token_method() == "exact:o200k_base"
    assert count_text("one two three four five") == 5  # the encoder's count, not bytes/3
    assert calls == {"get_encoding": ["o200k_base"], "read_file": []}


def test_no_cache_file_means_tiktoken_is_never_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert token_method() == ESTIMATE_METHOD
    assert calls == {"get_encoding": [], "read_file": []}


def test_corrupt_cache_file_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # tiktoken would delete a file with the wrong hash and download it again.
    calls = install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    cache_file(tmp_path, data=b"truncated")
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": hashlib.sha256(b"ranks").hexdigest()})
    assert token_method() == ESTIMATE_METHOD
    assert calls["get_encoding"] == []


def test_disabled_cache_means_estimate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken: no cache, always download
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": cache_file(tmp_path)})
    assert token_method() == ESTIMATE_METHOD
    assert calls["get_encoding"] == []


def test_a_download_attempt_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = install_fake_tiktoken(monkeypatch, download_on_load=True)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": cache_file(tmp_path)})
    original = sys.modules["tiktoken.load"].read_file
    assert token_method() == ESTIMATE_METHOD
    assert calls["get_encoding"] == ["o200k_base"]
    assert calls["read_file"] == [], "the real download function must never run"
    assert sys.modules["tiktoken.load"].read_file is original


def test_falls_back_to_cl100k(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url = "az://openaipublic/encodings/cl100k_base.tiktoken"  # older tiktoken's cache key
    monkeypatch.setattr(
        tokens,
        "_ENCODINGS",
        {"o200k_base": "0" * 64, "cl100k_base": cache_file(tmp_path, url, b"cl100k")},
    )
    assert token_method() == "exact:cl100k_base"


@pytest.mark.parametrize("variable", ["DATA_GYM_CACHE_DIR", None])
def test_other_cache_locations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str | None
) -> None:
    calls = install_fake_tiktoken(monkeypatch)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    if variable:
        monkeypatch.setenv(variable, str(tmp_path))
    else:  # newer tiktoken's own default directory
        sys.modules["tiktoken.load"]._default_cache_dir = lambda: str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": cache_file(tmp_path)})
    assert token_method() == "exact:o200k_base"
    assert calls["get_encoding"] == ["o200k_base"]


def test_estimate_can_be_forced_over_exact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_tiktoken(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_ENCODINGS", {"o200k_base": cache_file(tmp_path)})
    assert set_token_method("estimate") == ESTIMATE_METHOD
    assert set_token_method("auto") == "exact:o200k_base"


def test_real_tiktoken_when_cached() -> None:
    tiktoken = pytest.importorskip("tiktoken")
    if tokens._exact_counter() is None:
        pytest.skip("no tiktoken encoding in the local cache (and we never download one)")
    method = token_method()
    assert method.startswith("exact:")
    encoding = tiktoken.get_encoding(method.removeprefix("exact:"))
    text = "Fine-tuning data, screened before upload."
    assert count_text(text) == len(encoding.encode_ordinary(text))
    assert estimate_text(text) >= count_text(text)
