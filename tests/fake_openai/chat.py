"""The fake's ``/v1/chat/completions``: a judge that answers from markers in the example.

It reads the request the way the grader builds it: the example is the JSON between
``<<<EXAMPLE nonce>>>`` and ``<<<END EXAMPLE nonce>>>`` in the last user message. A
request without that block, without a strict ``json_schema`` response format, or with
example text in the system message is refused with a 400, so a test fails loudly when
the grader's prompt drifts.

Markers (a word of its own anywhere in the example's segments) choose the answer:

==================  =========================================================
``GRADE_ALLOW``      allow, confidence 0.95
``GRADE_VIOLATION``  violation of the rule ``RULE_<id>`` names, else the first rule
``GRADE_UNCERTAIN``  uncertain, confidence 0.5
``GRADE_LOWCONF``    violation with confidence 0.3
``GRADE_INVALID``    content that is not JSON
``GRADE_OFFSCHEMA``  JSON with a missing field and an extra one
``GRADE_BADRULE``    violation of a rule id the policy does not have
``GRADE_REFUSAL``    ``message.refusal`` set, no content
``GRADE_TRUNCATED``  half the JSON, ``finish_reason: length``
``GRADE_EMPTY``      empty content
==================  =========================================================

Without a marker it judges like a crude model: an assistant segment containing
``COMPLY`` (or an ``UNSAFE_*`` moderation marker) is a violation of the rule that fits
the category moderation found; otherwise allow.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

from .server import ApiError, Route

__all__ = ["GRADE_MARKERS", "chat_route", "example_block"]

GRADE_MARKERS = (
    "GRADE_ALLOW",
    "GRADE_VIOLATION",
    "GRADE_UNCERTAIN",
    "GRADE_LOWCONF",
    "GRADE_INVALID",
    "GRADE_OFFSCHEMA",
    "GRADE_BADRULE",
    "GRADE_REFUSAL",
    "GRADE_TRUNCATED",
    "GRADE_EMPTY",
)
_BLOCK = re.compile(r"<<<EXAMPLE ([0-9a-f]{32})>>>\n(.*)\n<<<END EXAMPLE \1>>>", re.S)
_MARK = re.compile(r"(?<![A-Za-z0-9_])(GRADE_[A-Z]+|RULE_[a-z0-9_.-]+|COMPLY)(?![A-Za-z0-9_])")
_CATEGORY_RULES = (
    ("sexual/minors", "sexual-minors"),
    ("self-harm", "self-harm"),
    ("hate", "hate-harassment"),
    ("harassment", "hate-harassment"),
    ("illicit", "violent-wrongdoing"),
    ("violence", "violent-wrongdoing"),
)
_ids = itertools.count(1)


def example_block(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The nonce and the example data of a grading request, or ``None``."""
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        return None
    found = _BLOCK.search(users[-1]["content"])
    if found is None:
        return None
    try:
        data = json.loads(found.group(2))
    except ValueError:
        return None
    return (found.group(1), data) if isinstance(data, dict) else None


def _rule_ids(body: dict[str, Any]) -> list[str]:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise ApiError(400, "the fake judge needs response_format json_schema")
    schema = fmt.get("json_schema") or {}
    if schema.get("strict") is not True:
        raise ApiError(400, "the fake judge needs a strict json_schema")
    rule = schema["schema"]["properties"]["rule"]
    return [ids for option in rule["anyOf"] for ids in option.get("enum", [])]


def _decide(data: dict[str, Any], rules: list[str]) -> tuple[str, dict[str, Any] | str | None]:
    """(marker or verdict kind, the answer object or raw content)."""
    segments = data.get("segments") or []
    words: list[str] = []
    for segment in segments:
        words.extend(_MARK.findall(str(segment.get("text", ""))))
    named = [w.removeprefix("RULE_") for w in words if w.startswith("RULE_")]
    rule = named[0] if named else _rule_for(data, rules)
    markers = [w for w in words if w.startswith("GRADE_")]
    kind = markers[0] if markers else _crude(segments)
    answers: dict[str, dict[str, Any] | str | None] = {
        "GRADE_ALLOW": _verdict("allow", None, 0.95),
        "GRADE_VIOLATION": _verdict("violation", rule, 0.92),
        "GRADE_UNCERTAIN": _verdict("uncertain", None, 0.5),
        "GRADE_LOWCONF": _verdict("violation", rule, 0.3),
        "GRADE_BADRULE": _verdict("violation", "no-such-rule", 0.9),
        "GRADE_OFFSCHEMA": {"verdict": "allow", "score": 0.9, "rationale": "extra field"},
        "GRADE_INVALID": "Sure! The example looks fine to me.",
        "GRADE_TRUNCATED": json.dumps(_verdict("allow", None, 0.9))[:20],
        "GRADE_EMPTY": "",
        "GRADE_REFUSAL": None,
    }
    return kind, answers.get(kind, _verdict("allow", None, 0.95))


def _crude(segments: list[dict[str, Any]]) -> str:
    for segment in segments:
        text = str(segment.get("text", ""))
        if segment.get("role") == "assistant" and ("COMPLY" in text or "UNSAFE_" in text):
            return "GRADE_VIOLATION"
    return "GRADE_ALLOW"


def _rule_for(data: dict[str, Any], rules: list[str]) -> str | None:
    for hint in data.get("moderation") or []:
        category = str(hint.get("category", ""))
        for prefix, rule in _CATEGORY_RULES:
            if category.startswith(prefix) and rule in rules:
                return rule
    return rules[0] if rules else None


def _verdict(verdict: str, rule: str | None, confidence: float) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "rule": rule,
        "confidence": confidence,
        "rationale": f"fake judge: {verdict}",
    }


def _completions(body: dict[str, Any], count: Callable[[str], int]) -> dict[str, Any]:
    rules = _rule_ids(body)
    found = example_block(body)
    if found is None:
        raise ApiError(400, "the fake judge found no delimited example in the last user message")
    for message in body["messages"]:
        if message.get("role") == "system" and _BLOCK.search(str(message.get("content"))):
            raise ApiError(400, "example data in the system message")
    kind, answer = _decide(found[1], rules)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    finish = "stop"
    if kind == "GRADE_REFUSAL":
        message["refusal"] = "I'm sorry, I can't help with that."
    elif isinstance(answer, str):
        message["content"] = answer
        finish = "length" if kind == "GRADE_TRUNCATED" else "stop"
    else:
        message["content"] = json.dumps(answer)
    prompt = sum(count(str(m.get("content", ""))) for m in body["messages"])
    completion = count(message["content"] or message["refusal"] or "")
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": str(body.get("model") or "gpt-4o-mini") + "-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _no_choices(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "choices": []}


def chat_route(count: Callable[[str], int]) -> Route:
    """The ``/v1/chat/completions`` route; ``count`` is how it counts usage tokens."""
    return Route(lambda body: _completions(body, count), _tokens, _no_choices)


def _tokens(body: Any, count: Callable[[str], int]) -> int:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be an array")
    prompt = sum(count(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    return prompt + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
