"""The format checks behind :mod:`moderation.validate` (private): what every format
shares (:class:`Findings`, :func:`json_type`, :func:`safe_token`, format detection) and
the two one-field formats, ``prompt``/``completion`` and ``text``. The conversation
formats are in :mod:`._chat` (messages, content parts, preference pairs) and
:mod:`._tools` (tool and function definitions and calls).

One pass over the record collects problems, warnings and segments together. Every
``detail`` holds paths, key names, JSON type names and short identifiers only: a value
taken from the record goes in only when it looks like an identifier (:func:`safe_token`),
so the audit log never carries example text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from moderation.models import Reason, Segment

__all__ = [
    "MAX_REASONS",
    "MISSING",
    "Findings",
    "check_prompt_completion",
    "check_text",
    "detect_format",
    "json_type",
    "safe_token",
    "writable_number",
]

MAX_REASONS: Final = 20
"""Problems (and, apart, warnings) kept per example; one more says how many were cut."""

MISSING: Final = object()
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,64}").fullmatch

_PROMPT_COMPLETION_KEYS: Final = frozenset({"prompt", "completion"})


def json_type(value: object) -> str:
    """The JSON name of a value's type (``object``, ``array``, ``string``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def writable_number(value: object) -> bool:
    """True for a number every JSON writer downstream takes back as it is: not a bool,
    not inf or NaN, not an integer past 64 bits (orjson refuses those)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


def safe_token(value: object) -> str:
    """``value`` when it is a short identifier-like string, else a placeholder.

    Role values and key names are structure, not content, but a broken record can put
    anything there: only identifier-shaped strings are quoted back.
    """
    if isinstance(value, str):
        if _IDENTIFIER(value):
            return value
        return f"<{len(value)}-char string>"
    return f"<{json_type(value)}>"


class Findings:
    """What one pass over a record found. Segments are kept only while it is valid."""

    __slots__ = ("cut_problems", "cut_warnings", "problems", "segments", "warnings")

    def __init__(self) -> None:
        self.problems: list[Reason] = []
        self.warnings: list[Reason] = []
        self.segments: list[Segment] = []
        self.cut_problems = 0
        self.cut_warnings = 0

    def error(self, code: str, detail: dict[str, Any]) -> None:
        """Record a problem (capped at :data:`MAX_REASONS`)."""
        if len(self.problems) < MAX_REASONS:
            self.problems.append(Reason(stage="validate", code=code, detail=detail))
        else:
            self.cut_problems += 1

    def warn(self, code: str, detail: dict[str, Any]) -> None:
        """Record a warning (capped at :data:`MAX_REASONS`)."""
        if len(self.warnings) < MAX_REASONS:
            self.warnings.append(Reason(stage="validate", code=code, detail=detail))
        else:
            self.cut_warnings += 1

    def text(self, path: str, role: str, text: str) -> None:
        """A text segment, unless it is blank or the record is already invalid."""
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                self.error("invalid_unicode", {"path": path, "offset": exc.start})
                return
        if not self.problems and not text.isspace():
            self.segments.append(Segment(path=path, role=role, text=text))

    def image(self, path: str, role: str, url: str) -> None:
        """An image segment, unless the record is already invalid."""
        if not self.problems:
            self.segments.append(Segment(path=path, role=role, kind="image", image_url=url))

    def finish(self) -> None:
        """Close the lists: say how much was cut, drop segments of an invalid record."""
        if self.cut_problems:
            self.problems.append(
                Reason(
                    stage="validate", code="too_many_problems", detail={"more": self.cut_problems}
                )
            )
        if self.cut_warnings:
            self.warnings.append(
                Reason(
                    stage="validate", code="too_many_warnings", detail={"more": self.cut_warnings}
                )
            )
        if self.problems:
            self.segments.clear()


def detect_format(record: object) -> str | None:
    """The format a record claims by its keys: ``chat``, ``preference``,
    ``prompt_completion``, ``text``, or ``None``."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    # An "input" alone is not enough: Alpaca-style records have a string "input".
    if (
        "preferred_output" in record
        or "non_preferred_output" in record
        or (isinstance(record.get("input"), dict) and "messages" in record["input"])
    ):
        return "preference"
    if "completion" in record or ("prompt" in record and "text" not in record):
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


# ------------------------------------------------------------------- prompt/completion, text


def _string_field(record: dict[str, Any], key: str, found: Findings) -> str | None:
    value = record.get(key, MISSING)
    if value is MISSING:
        found.error("missing_field", {"path": key})
        return None
    if not isinstance(value, str):
        found.error(
            "invalid_field_type", {"path": key, "expected": "string", "got": json_type(value)}
        )
        return None
    return value


def check_prompt_completion(record: dict[str, Any], found: Findings) -> None:
    """Legacy ``{"prompt": str, "completion": str}`` (an empty prompt is allowed)."""
    for key in record:
        if key not in _PROMPT_COMPLETION_KEYS:
            found.warn("unrecognized_key", {"path": safe_token(key)})
    prompt = _string_field(record, "prompt", found)
    completion = _string_field(record, "completion", found)
    if prompt:
        found.text("prompt", "user", prompt)
    if completion is not None:
        if not completion or completion.isspace():
            found.warn("empty_content", {"path": "completion"})
        if completion:
            found.text("completion", "assistant", completion)


def check_text(record: dict[str, Any], found: Findings) -> None:
    """``{"text": str, ...}``: other keys are the corpus's metadata and are not checked."""
    text = _string_field(record, "text", found)
    if text is not None:
        if not text or text.isspace():
            found.warn("empty_content", {"path": "text"})
        if text:
            found.text("text", "text", text)
