"""The fake's ``/v1/moderations``: the real response shape, answers decided by markers.

A text (or an image URL) is unsafe for a category when it contains that category's
marker as a word of its own: ``UNSAFE_`` + the category upper-cased with ``/`` and
``-`` written ``_``: ``UNSAFE_VIOLENCE``, ``UNSAFE_VIOLENCE_GRAPHIC``,
``UNSAFE_SEXUAL_MINORS``, ``UNSAFE_SELF_HARM_INTENT``, ``UNSAFE_ILLICIT_VIOLENT``, ...
(:func:`marker` builds them). It then scores :data:`UNSAFE_SCORE` and is flagged.
``BORDERLINE_<CATEGORY>`` scores :data:`BORDERLINE_SCORE` and is not flagged (the fake
flags at 0.5). Every other score is a tiny number derived from a hash of the text.
``TRIGGER_400`` anywhere in an input makes the whole request a 400 whose message names
the input's index.

Inputs: a string, an array of strings (one result each), or an array of
``{"type": "text"}`` / ``{"type": "image_url"}`` objects (one combined result, at most
one image, like the real API). The response names a dated snapshot for
``omni-moderation-latest`` (:data:`SNAPSHOTS`), like the real API.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from typing import Any

from .server import ApiError, Route

__all__ = [
    "BORDERLINE_SCORE",
    "CATEGORIES",
    "IMAGE_TOKENS",
    "SNAPSHOTS",
    "UNSAFE_SCORE",
    "marker",
    "moderation_route",
    "unsafe_categories",
]

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
IMAGE_CATEGORIES = frozenset(
    {
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "violence",
        "violence/graphic",
    }
)
UNSAFE_SCORE = 0.97
BORDERLINE_SCORE = 0.45
IMAGE_TOKENS = 1_000
SNAPSHOTS = {"omni-moderation-latest": "omni-moderation-2024-09-26"}
_MARKER = re.compile(r"(?<![A-Za-z0-9_])(UNSAFE|BORDERLINE)_([A-Z_]+?)(?![A-Za-z0-9_])")


def marker(category: str, kind: str = "UNSAFE") -> str:
    """The marker word that makes the fake score ``category`` high."""
    return f"{kind}_" + category.upper().replace("/", "_").replace("-", "_")


_BY_MARKER = {marker(c).removeprefix("UNSAFE_"): c for c in CATEGORIES}


def unsafe_categories(text: str) -> dict[str, float]:
    """Category -> score the markers in ``text`` call for."""
    found: dict[str, float] = {}
    for kind, name in _MARKER.findall(text):
        category = _BY_MARKER.get(name)
        if category is not None:
            score = UNSAFE_SCORE if kind == "UNSAFE" else BORDERLINE_SCORE
            found[category] = max(score, found.get(category, 0.0))
    return found


_ids = itertools.count(1)


def moderation_parts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The request's inputs as (kind, text or URL) pairs; raises ApiError when invalid."""
    value = body.get("input")
    if isinstance(value, str):
        return [("text", value)]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a string or a non-empty array.")
    if all(isinstance(v, str) for v in value):
        return [("text", v) for v in value]
    parts: list[tuple[str, str]] = []
    for item in value:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(("text", item["text"]))
        elif kind == "image_url" and isinstance((item.get("image_url") or {}).get("url"), str):
            parts.append(("image", item["image_url"]["url"]))
        else:
            raise ApiError(
                400, "Invalid value for 'input': mix of strings and objects or bad object."
            )
    if sum(kind == "image" for kind, _ in parts) > 1:
        raise ApiError(400, "Only one image can be moderated per request.")
    return parts


def _moderations(body: dict[str, Any]) -> dict[str, Any]:
    parts = moderation_parts(body)
    for index, (_, text) in enumerate(parts):
        if "TRIGGER_400" in text:
            raise ApiError(
                400, f"Invalid input at index {index}: the input could not be processed."
            )
    value = body["input"]
    groups = (
        [parts] if isinstance(value, list) and isinstance(value[0], dict) else [[p] for p in parts]
    )
    model = str(body.get("model") or "omni-moderation-latest")
    return {
        "id": f"modr-{next(_ids)}",
        "model": SNAPSHOTS.get(model, model),
        "results": [_result(group) for group in groups],
    }


def _result(parts: list[tuple[str, str]]) -> dict[str, Any]:
    kinds = {kind for kind, _ in parts}
    joined = "\n".join(text for _, text in parts)
    digest = hashlib.sha256(joined.encode("utf-8", "surrogatepass")).digest()
    high: dict[str, float] = {}
    for _, text in parts:
        for category, score in unsafe_categories(text).items():
            high[category] = max(score, high.get(category, 0.0))
    scores = {c: high.get(c, (digest[i] + 1) / 256_000) for i, c in enumerate(CATEGORIES)}
    applied = {
        c: sorted(k for k in kinds if k == "text" or c in IMAGE_CATEGORIES) for c in CATEGORIES
    }
    return {
        "flagged": any(s >= 0.5 for s in scores.values()),
        "categories": {c: s >= 0.5 for c, s in scores.items()},
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


def _drop_one_result(payload: dict[str, Any]) -> dict[str, Any]:
    results = payload["results"]
    wrong = results[:-1] if len(results) > 1 else results * 2
    return {**payload, "results": wrong}


def moderation_route() -> Route:
    """The ``/v1/moderations`` route, for :meth:`FakeOpenAI.add_route`."""
    return Route(_moderations, _tokens, _drop_one_result)


def _tokens(body: Any, count: Callable[[str], int]) -> int:
    return sum(
        IMAGE_TOKENS if kind == "image" else count(value) for kind, value in moderation_parts(body)
    )
