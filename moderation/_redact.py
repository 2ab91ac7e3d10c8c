"""Keeping credentials, and request bodies, out of every log line (private).

One set of rules behind two filters:

- :class:`RedactSecrets`, a structlog processor for our own events;
- :class:`RedactingFilter`, a :class:`logging.Filter` for the standard-library loggers
  of the HTTP stack (``openai``, ``httpx``, ``httpx2``, ``aiohttp``), whose records we
  do not write ourselves.

What is redacted:

- **by field name**: a value whose key names a credential (``api_key``,
  ``Authorization``, ``password``, ``client_secret``, ``access_token``, ``cookie``, ...;
  see :func:`is_sensitive_field`) is replaced whole, at any depth of dicts, lists and
  tuples. ``None`` and ``""`` stay, so "no key set" is still visible.
- **by value**: inside any string, OpenAI-style ``sk-...`` keys (``sk-proj-...`` too),
  ``Bearer`` and ``Basic`` credentials, ``name=value`` pairs whose name is a credential
  (URL query strings, reprs of header dicts), passwords in URLs (``https://u:p@host``),
  PEM private-key blocks, and every pattern the local credential detector knows
  (:data:`~moderation.providers.local.SECRET_PATTERNS`, without its validators: a log
  may over-redact, it may not leak).

The filter also drops request bodies: the OpenAI SDK (1.x) logs each request's options
at DEBUG, ``json_data`` included, and that is the example's text. Body fields are
replaced by their size.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import orjson

__all__ = [
    "HTTP_LOGGERS",
    "REDACTED",
    "RedactSecrets",
    "RedactingFilter",
    "install_http_log_filters",
    "is_sensitive_field",
    "redact_text",
    "redact_value",
]

REDACTED: Final = "[REDACTED]"

HTTP_LOGGERS: Final = ("openai", "httpx", "httpx2", "aiohttp")
"""Standard-library loggers of the HTTP stack (and their children) that get the filter."""

# Field names are compared lower-cased with every non-alphanumeric character removed,
# so ``API-Key``, ``api_key`` and ``apiKey`` are one name.
_SENSITIVE_NAMES: Final = frozenset(
    {
        "auth",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sessionid",
        "token",
    }
)
_SENSITIVE_SUFFIXES: Final = (
    "apikey",
    "authorization",
    "cookie",
    "credentials",
    "passphrase",
    "password",
    "privatekey",
    "secret",
    "secretkey",
    "token",
)
_BODY_FIELDS: Final = frozenset({"json_data", "content", "data", "files", "body", "extra_json"})
_MAX_DEPTH: Final = 32
_NOT_NAME = re.compile(r"[^a-z0-9]")

_CREDENTIAL_NAME = (
    r"(?:[a-z0-9]+[_-]?)?(?:api[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token"
    r"|id[_-]?token|client[_-]?secret|secret[_-]?key|password|passwd|secret|token"
    r"|authorization|cookie)"
)
# Our own rules, on top of the detector's: each match is replaced from ``group(1)`` on
# (or whole, when the regex has no group).
_OWN_PATTERNS: Final = (
    # `*`: OpenAI's error messages quote keys masked as sk-proj-****...abcd.
    re.compile(r"(?<![A-Za-z0-9_-])(sk-[A-Za-z0-9_*\-]{8,})"),
    re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/\-]{8,}=*)"),
    re.compile(
        r"(?i)(?<![a-z0-9])" + _CREDENTIAL_NAME + r"[\"']?\s*[:=]\s*[\"']?"
        r"((?:bearer\s+|basic\s+)?[^\s\"'&,;{}()\[\]]{2,})"
    ),
    re.compile(r"://[^/\s:@]+:([^/\s@]+)@"),
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
)
_BASIC = re.compile(r"\bBasic\s+([A-Za-z0-9+/]{8,}={0,2})")


def is_sensitive_field(name: object) -> bool:
    """True when a field called ``name`` holds a credential (``api_key``,
    ``Authorization``, ``x-api-key``, ``client_secret``, ``refresh_token``, ...).

    Counters are not credentials: ``tokens`` and ``max_output_tokens`` do not match.
    """
    if not isinstance(name, str):
        return False
    key = _NOT_NAME.sub("", name.lower())
    return key in _SENSITIVE_NAMES or key.endswith(_SENSITIVE_SUFFIXES)


@functools.cache
def _detector_patterns() -> tuple[re.Pattern[str], ...]:
    # Imported on first use: it loads the local provider package, which the OpenAI-only
    # path does not otherwise need.
    from moderation.providers.local import SECRET_PATTERNS

    return tuple(SECRET_PATTERNS.values())


def _spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for pattern in _OWN_PATTERNS:
        spans.extend(match.span(1 if pattern.groups else 0) for match in pattern.finditer(text))
    for pattern in _detector_patterns():
        # For ``name = value`` rules the credential is the value, not the name.
        group = "value" if "value" in pattern.groupindex else 0
        spans.extend(match.span(group) for match in pattern.finditer(text))
    for match in _BASIC.finditer(text):
        if _is_basic_credential(match.group(1)):
            spans.append(match.span(1))
    return spans


def _is_basic_credential(value: str) -> bool:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def redact_text(text: str) -> str:
    """``text`` with every credential it contains replaced by ``[REDACTED]``."""
    if len(text) < 8:
        return text
    spans = sorted(_spans(text))
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts: list[str] = []
    position = 0
    for start, end in merged:
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def redact_value(value: Any, *, _depth: int = 0) -> Any:
    """``value`` with credentials removed: strings by pattern, dict entries by name too,
    recursively through dicts, lists and tuples. Other objects are redacted through
    ``str()`` when their text holds a credential, and returned unchanged otherwise."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if _depth >= _MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, Mapping):
        return {key: _redact_entry(key, item, _depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(item, _depth=_depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "backslashreplace")
        redacted = redact_text(text)
        return value if redacted == text else redacted
    text = str(value)
    redacted = redact_text(text)
    return value if redacted == text else redacted


def _redact_entry(key: object, value: Any, depth: int) -> Any:
    if is_sensitive_field(key) and value not in (None, ""):
        return REDACTED
    return redact_value(value, _depth=depth)


class RedactSecrets:
    """structlog processor: remove credentials from an event, by field name and by value.

    Put it after the processors that add fields (exception formatting included) and
    right before the renderer, so nothing is added after it.
    """

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = _redact_entry(key, value, 0)
        return event_dict


def _size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, default=str))
    except (TypeError, orjson.JSONEncodeError):
        return len(str(value))


def _without_bodies(value: Any) -> Any:
    """Request options with their body fields replaced by their size."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        try:
            value = value.model_dump()
        except Exception:
            return value
    if not isinstance(value, Mapping):
        return value
    return {
        key: f"<{_size(item)} bytes omitted>" if key in _BODY_FIELDS and item else item
        for key, item in value.items()
    }


class RedactingFilter(logging.Filter):
    """A :class:`logging.Filter` that rewrites each record without credentials and
    without request bodies, and always lets it through.

    The message is formatted once (``msg % args``) and replaced by its redacted text;
    an exception's traceback text is redacted the same way.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            record.args = redact_value(_without_bodies(args))
        elif isinstance(args, tuple) and args:
            record.args = tuple(redact_value(_without_bodies(arg)) for arg in args)
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_http_log_filters(names: tuple[str, ...] = HTTP_LOGGERS) -> None:
    """Attach a :class:`RedactingFilter` to the HTTP stack's loggers and to every child
    logger of theirs that exists now (idempotent).

    A logger's filters do not apply to its children's records, hence the children; a
    child created later is covered by the handler-level filter that
    :func:`moderation.logs.configure_logging` installs.
    """
    manager = logging.Logger.manager
    existing = [
        name
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
        and any(name == root or name.startswith(root + ".") for root in names)
    ]
    for name in {*names, *existing}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
