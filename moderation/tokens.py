"""Offline token counts for validated examples.

Nothing here ever downloads anything. Two methods:

``exact:<encoding>``
    Used when the ``tiktoken`` package is importable *and* the encoding's BPE file is
    already in tiktoken's local cache (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR``, or
    tiktoken's default cache directory) with the SHA-256 that tiktoken expects. The file
    is checked *before* tiktoken is asked for the encoding, because tiktoken downloads a
    missing or corrupt file on its own; as a second guard, tiktoken's download function is
    swapped for one that refuses while the encoding loads. ``o200k_base`` (the GPT-4o
    family, today's fine-tuning models) is preferred, then ``cl100k_base``.

``estimate:bytes/3``
    Otherwise: ``ceil(utf8_bytes / 3)`` per text. Byte-level BPE tokens cover at least
    one byte each, so the byte length is a hard upper bound; o200k/cl100k average about 4
    bytes a token on English prose and 3.5-4 on code, and a CJK character (3 UTF-8
    bytes) is about one token or less. Dividing by 3 therefore over-counts typical text
    by roughly a quarter and does not under-count it; it can under-count text that BPE
    handles badly (random base64, long runs of rare symbols or emoji), which is not what
    training sets are made of.

On top of the text, the chat format costs what OpenAI's cookbook counts: 3 tokens a
message plus its role (1), a name and 1 more when the message has one, and 3 to prime
the reply. Tool calls add their function name and id plus :data:`TOOL_CALL_OVERHEAD`;
``tools``/``functions`` definitions are counted as their compact JSON. Each image costs
:data:`IMAGE_TOKENS`, the most a GPT-4o high-detail image can cost (85 + 170 for each of
at most 8 512-px tiles), because its size is not known offline.

Counts are of the tokens *in* an example, not what a provider bills: a preference pair
counts its input once and both outputs.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, NoReturn

import orjson

from moderation.models import Example, Segment

__all__ = [
    "ESTIMATE_METHOD",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "TOOL_CALL_OVERHEAD",
    "count_segments",
    "count_text",
    "count_tokens",
    "estimate_text",
    "set_token_method",
    "token_method",
]

IMAGE_TOKENS = 1445
"""Tokens charged per image: 85 base + 170 x 8 tiles (GPT-4o, high detail, largest size)."""
MESSAGE_OVERHEAD = 4
"""Tokens per chat message besides its content: 3 of framing + 1 for the role."""
NAME_OVERHEAD = 1
"""Extra token when a message has a ``name`` (on top of the name's own tokens)."""
REPLY_PRIMING = 3
"""Tokens that prime the assistant's reply, once per conversation."""
TOOL_CALL_OVERHEAD = 8
"""Framing of one tool call (type, keys, separators) beyond its id, name and arguments;
not published by OpenAI, chosen generously."""
ESTIMATE_METHOD = "estimate:bytes/3"

# Encodings we may use, best first: name -> SHA-256 of the BPE file (as tiktoken pins it).
_ENCODINGS: dict[str, str] = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# tiktoken names its cache file sha1(<blob URL>); the URL scheme changed across versions.
_BLOB_URLS = (
    "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken",
    "az://openaipublic/encodings/{name}.tiktoken",
)


def estimate_text(text: str) -> int:
    """``ceil(utf8_bytes / 3)``: the conservative offline estimate for one text."""
    if text.isascii():  # O(1) in CPython, and then len() is the byte length
        return (len(text) + 2) // 3
    return (len(text.encode("utf-8", "surrogatepass")) + 2) // 3


class _Counter:
    """The active method: its name and a function from text to tokens."""

    __slots__ = ("count", "method")

    def __init__(self, method: str, count: Callable[[str], int]) -> None:
        self.method = method
        self.count = count


_lock = threading.Lock()
_active: _Counter | None = None
_requested: Literal["auto", "estimate"] = "auto"


def _cache_dirs(load_module: Any) -> list[Path]:
    """Where tiktoken would look for its cache, in its own order of preference."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        configured = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        configured = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        default = getattr(load_module, "_default_cache_dir", None)
        if callable(default):  # newer tiktoken: ~/.cache/tiktoken (or XDG_CACHE_HOME)
            return [Path(str(default()))]
        return [Path(tempfile.gettempdir()) / "data-gym-cache"]
    # "" disables tiktoken's cache: every load would be a download.
    return [Path(configured)] if configured else []


def _cached_file(name: str, expected_sha256: str, dirs: Iterable[Path]) -> Path | None:
    """The verified cache file for encoding ``name``, or ``None`` when there is none."""
    for directory in dirs:
        for url in _BLOB_URLS:
            path = directory / hashlib.sha1(url.format(name=name).encode()).hexdigest()
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == expected_sha256:
                return path
    return None


def _refuse_download(blobpath: str, *args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError(f"moderation.tokens never downloads ({blobpath})")


def _exact_counter() -> _Counter | None:
    """An exact counter from a cached tiktoken encoding, or ``None``; never downloads."""
    try:
        tiktoken = importlib.import_module("tiktoken")
        load = importlib.import_module("tiktoken.load")
    except Exception:  # not installed, or broken: the estimate will do
        return None
    dirs = _cache_dirs(load)
    for name, sha256 in _ENCODINGS.items():
        if _cached_file(name, sha256, dirs) is None:
            continue
        original = getattr(load, "read_file", None)
        try:
            if original is not None:
                setattr(load, "read_file", _refuse_download)  # noqa: B010
            encoding = tiktoken.get_encoding(name)
        except Exception:
            continue
        finally:
            if original is not None:
                setattr(load, "read_file", original)  # noqa: B010
        encode = encoding.encode_ordinary

        def count(text: str, _encode: Callable[[str], list[int]] = encode) -> int:
            try:
                return len(_encode(text))
            except Exception:  # e.g. text tiktoken rejects: fall back, never fail a count
                return estimate_text(text)

        return _Counter(f"exact:{name}", count)
    return None


def _counter() -> _Counter:
    global _active
    active = _active
    if active is not None:
        return active
    with _lock:
        if _active is None:
            exact = _exact_counter() if _requested == "auto" else None
            _active = exact or _Counter(ESTIMATE_METHOD, estimate_text)
        return _active


def set_token_method(method: Literal["auto", "estimate"]) -> str:
    """Choose how tokens are counted from now on and return the method in use.

    ``auto`` (the default) is exact when a cached tiktoken encoding is available, else
    the estimate; ``estimate`` always estimates (e.g. for counts that must not depend on
    the machine's cache).
    """
    global _active, _requested
    if method not in ("auto", "estimate"):
        raise ValueError(f"unknown token method {method!r}; use 'auto' or 'estimate'")
    with _lock:
        _requested = method
        _active = None
    return token_method()


def token_method() -> str:
    """The method in use: ``"exact:o200k_base"``, ``"exact:cl100k_base"`` or
    ``"estimate:bytes/3"``."""
    return _counter().method


def count_text(text: str) -> int:
    """Tokens in one text, by the method in use."""
    if not text:
        return 0
    return _counter().count(text)


def count_segments(segments: Iterable[Segment]) -> int:
    """Tokens of the segments' texts plus :data:`IMAGE_TOKENS` per image (no framing)."""
    count = _counter().count
    total = 0
    for segment in segments:
        if segment.kind == "image":
            total += IMAGE_TOKENS
        elif segment.text:
            total += count(segment.text)
    return total


def _calls_overhead(calls: object, count: Callable[[str], int]) -> int:
    total = 0
    if isinstance(calls, list):
        for call in calls:
            if not isinstance(call, dict):
                continue
            total += TOOL_CALL_OVERHEAD
            call_id = call.get("id")
            if isinstance(call_id, str) and call_id:
                total += count(call_id)
            function = call.get("function")
            if isinstance(function, dict):
                name = function.get("name")
                if isinstance(name, str) and name:
                    total += count(name)
    return total


def _messages_overhead(messages: object, count: Callable[[str], int]) -> int:
    """Framing of a message list: everything but the content segments."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD
        if not isinstance(message, dict) or (len(message) == 2 and "content" in message):
            continue  # a valid message with two keys and content is just role and content
        name = message.get("name")
        if isinstance(name, str) and name:
            total += count(name) + NAME_OVERHEAD
        if "tool_calls" in message:
            total += _calls_overhead(message["tool_calls"], count)
        function_call = message.get("function_call")
        if isinstance(function_call, dict):
            total += _calls_overhead([{"function": function_call}], count)
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str) and call_id:
            total += count(call_id)
    return total


def _definitions(container: dict[str, Any], count: Callable[[str], int]) -> int:
    total = 0
    for key in ("tools", "functions"):
        value = container.get(key)
        if value:
            try:
                total += count(orjson.dumps(value).decode())
            except (TypeError, orjson.JSONEncodeError):
                continue
    return total


def count_tokens(example: Example) -> int:
    """Tokens in a validated example: its segments plus its format's framing.

    Returns 0 for an example with problems: it is quarantined before anything is sent.
    Call it after :func:`moderation.validate.validate` (which sets ``example.tokens``).
    """
    record = example.record
    if record is None or example.problems:
        return 0
    count = _counter().count
    total = count_segments(example.segments)
    if example.format == "chat":
        total += _messages_overhead(record.get("messages"), count) + REPLY_PRIMING
        total += _definitions(record, count)
    elif example.format == "preference":
        source = record.get("input")
        if isinstance(source, dict):
            total += _messages_overhead(source.get("messages"), count)
            total += _definitions(source, count)
        for key in ("preferred_output", "non_preferred_output"):
            total += _messages_overhead(record.get(key), count) + REPLY_PRIMING
    return total
