"""Credential and key detection (``secret/<kind>``) and log redaction.

Every rule is a vendor's documented token format: a fixed prefix, a fixed alphabet and a
length range, anchored so that the token cannot be a piece of a longer identifier
(``(?<![\\w-])`` before, ``(?![\\w-])`` after). What each rule does against false
positives, on top of the format itself:

- **Pre-filter.** Each rule names the cheap substrings (``"sk-"``, ``"AKIA"``,
  ``"-----BEGIN"``, ...) of which at least one must occur in the text before its regex
  runs. A typical segment contains none of them, so the whole scan costs a handful of
  ``str.__contains__`` calls (about 1-2 µs for 300 characters).
- **Looks random.** The random part of a key must look random
  (:func:`looks_random`): at least two character classes (three for the generic rule),
  enough distinct characters (Shannon entropy), no run of 6 identical characters and no
  ascending or descending run of 5 (``abcde``, ``12345``). This keeps placeholders such as
  ``sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`` or ``ghp_123456789012345678901234567890123456``
  out. A real random key fails it with negligible probability.
- ``sk-`` keys need at least 32 characters after the prefix (``sk-learn``,
  ``sk-this-is-a-test`` and ``task-1234`` never match).
- **AWS secret access keys** are 40 arbitrary base64 characters, so they only count next
  to a name that says what they are (``aws_secret_access_key = ...``,
  ``"SecretAccessKey": ...``).
- **Private keys** need the PEM header *and* at least 64 base64 characters of body after
  it (newlines, ``\\n`` escapes and ``Proc-Type:``-style header lines allowed): a text
  that only names the header, or shows ``MIIE...`` truncated, is not a key.
- **JWTs** need three base64url parts and a header that decodes to a JSON object with an
  ``alg`` member; the signature must be at least 16 characters (``alg: none`` tokens
  carry no credential).
- **Slack webhooks** need a random-looking secret part (the documentation's
  ``XXXXXXXX...`` placeholder does not count).
- **Stripe**: only secret and restricted *live* keys and webhook signing secrets.
  Publishable keys (``pk_``) are public by design; ``sk_test_`` keys reach only test data
  and fill tutorials.
- **Generic** ``api_key = "..."`` / ``client_secret: ...`` / ``access_token=...``
  assignments count only with a value of 20-200 key characters that contains a digit, looks
  random with three character classes (or two for values of 32+ characters, e.g. hex) and
  contains no placeholder word (``your``, ``example``, ``xxxx``, ``dummy``, ``test``, ...).
  A value that starts with a vendor prefix is left to that vendor's rule. Passwords are
  deliberately not detected: people choose them, so a real one cannot be told from the
  made-up ones that fill programming tutorials.

Vendor formats are detected by form, even documentation examples such as AWS's
``AKIAIOSFODNN7EXAMPLE``: the detector cannot verify a key, and a key-shaped string teaches
a model to emit key-shaped strings.

:func:`find_secrets` returns the kinds found; :func:`iter_secrets` yields every match with
its span; :func:`redact` replaces them, for logs. :data:`SECRET_PATTERNS` exposes the
compiled regexes (without the validators) for callers that prefer to over-redact.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

__all__ = [
    "SECRET_KINDS",
    "SECRET_PATTERNS",
    "Detection",
    "find_secrets",
    "iter_secrets",
    "looks_random",
    "redact",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    """One detector match: its kind (e.g. ``aws_access_key``) and the span of the text
    that matched (``text[start:end]``)."""

    kind: str
    start: int
    end: int


# --------------------------------------------------------------------------- validators

_ASCENDING = "0123456789abcdefghijklmnopqrstuvwxyz"


def _has_sequence(value: str, length: int = 5) -> bool:
    """True when ``value`` holds an ascending or descending run of ``length`` characters
    of ``0-9a-z`` (case-insensitive), e.g. ``12345`` or ``edcba``."""
    lowered = value.lower()
    run_up = run_down = 1
    for previous, current in itertools.pairwise(lowered):
        p = _ASCENDING.find(previous)
        c = _ASCENDING.find(current)
        if p >= 0 and c == p + 1:
            run_up += 1
            run_down = 1
        elif p >= 0 and c >= 0 and c == p - 1:
            run_down += 1
            run_up = 1
        else:
            run_up = run_down = 1
        if run_up >= length or run_down >= length:
            return True
    return False


_REPEAT = re.compile(r"(.)\1{5}")


def looks_random(value: str, *, min_classes: int = 2, min_entropy: float = 3.0) -> bool:
    """True when ``value`` looks like generated key material rather than a placeholder.

    Requires ``min_classes`` of the classes upper case, lower case and digits, a Shannon
    entropy of at least ``min_entropy`` bits per character (capped below by what the
    length allows), no character repeated 6 times in a row and no ascending/descending
    run of 5 (``abcde``, ``98765``).
    """
    if not value:
        return False
    classes = (
        any(c.isupper() for c in value)
        + any(c.islower() for c in value)
        + any(c.isdigit() for c in value)
    )
    if classes < min_classes:
        return False
    n = len(value)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(value).values())
    if entropy < min(min_entropy, math.log2(n) - 0.5):
        return False
    return _REPEAT.search(value) is None and not _has_sequence(value)


_Check = Callable[[re.Match[str]], bool]


def _random_group(group: str, *, min_classes: int = 2) -> _Check:
    def check(match: re.Match[str]) -> bool:
        return looks_random(match.group(group), min_classes=min_classes)

    return check


def _b64url_json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _check_jwt(match: re.Match[str]) -> bool:
    header = _b64url_json(match.group("header"))
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


_PEM_BODY_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9-]*:[^\n\\]*|\\[rn]|[A-Za-z0-9+/=]+|\s+")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY_LIMIT = 16_384


def _private_key_end(match: re.Match[str]) -> int | None:
    """End of the key block whose header ``match`` is: the ``-----END ...-----`` line, or
    the end of its base64 body; ``None`` when fewer than 64 base64 characters follow.

    Newlines may be real or ``\\n`` escapes (keys pasted into code); ``Name: value``
    header lines (encrypted PEM) may precede the body.
    """
    text = match.string
    position = match.end()
    limit = min(len(text), position + _PEM_BODY_LIMIT)
    material: list[str] = []
    while position < limit:
        token = _PEM_BODY_TOKEN.match(text, position, limit)
        if token is None:
            break
        piece = token.group()
        if piece[0].isalnum() or piece[0] in "+/=":
            if ":" in piece:
                if material:
                    break
            else:
                material.append(piece)
        position = token.end()
    body = "".join(material)
    if len(body) < 64 or len(set(body)) < 16:
        return None
    end = _PEM_END.match(text, position)
    return end.end() if end is not None else position


def _check_private_key(match: re.Match[str]) -> bool:
    return _private_key_end(match) is not None


_PLACEHOLDER_WORDS = (
    "your",
    "example",
    "sample",
    "dummy",
    "placeholder",
    "xxxx",
    "test",
    "fake",
    "redacted",
    "changeme",
    "insert",
    "replace",
    "here",
    "secret",
    "token",
    "apikey",
    "api_key",
)

# Values that start like a vendor key are that vendor rule's business.
_VENDOR_PREFIXES = (
    "sk-",
    "sk_",
    "rk_",
    "pk_",
    "whsec_",
    "AKIA",
    "ASIA",
    "gh",
    "github_pat_",
    "xox",
    "xapp-",
    "AIza",
    "GOCSPX-",
    "eyJ",
    "hf_",
    "glpat-",
    "npm_",
    "SG.",
)


def _check_generic(match: re.Match[str]) -> bool:
    value = match.group("value")
    if value.startswith(_VENDOR_PREFIXES) or not any(c.isdigit() for c in value):
        return False
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return False
    return looks_random(value, min_classes=3, min_entropy=3.5) or (
        len(value) >= 32 and looks_random(value, min_classes=2, min_entropy=3.5)
    )


# --------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    triggers: tuple[str, ...]
    """At least one must occur in the text (case-sensitive) for the regex to run."""
    pattern: re.Pattern[str]
    check: _Check | None = None
    scope: str = "token"
    """Where the triggers are looked for: ``token`` in the long whitespace-free tokens
    (the trigger is part of the secret), ``text`` in the whole text, ``lower`` in the
    lower-cased text (for case-insensitive names such as ``API_KEY``)."""


_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_B = r"(?<![\w-])"  # not preceded by an identifier character
_E = r"(?![\w-])"  # not followed by one

_RULES: tuple[_Rule, ...] = (
    _Rule(
        "anthropic_api_key",
        ("sk-ant-",),
        re.compile(_B + r"sk-ant-(?:api|admin|oat|ort)\d\d-(?P<body>[A-Za-z0-9_-]{32,300})" + _E),
        _random_group("body"),
    ),
    _Rule(
        "openai_api_key",
        ("sk-",),
        re.compile(
            _B
            + r"sk-(?:(?:proj|svcacct|admin|None)-(?P<body>[A-Za-z0-9_-]{32,300})"
            + r"|(?P<legacy>[A-Za-z0-9]{32,200}))"
            + _E
        ),
        lambda m: looks_random(m.group("body") or m.group("legacy")),
    ),
    _Rule(
        "aws_access_key",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        lambda m: _REPEAT.search(m.group()) is None,
    ),
    _Rule(
        "aws_secret_key",
        ("secret_access", "secretaccess", "secret-access", "aws_secret", "aws-secret", "awssecret"),
        re.compile(
            r"(?i:aws[_-]?secret[_-]?(?:access[_-]?)?key|secret[_-]?access[_-]?key)"
            r"[\"']?\s*(?::=|=>|[:=])\s*[\"']?"
            r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        _random_group("value"),
        scope="lower",
    ),
    _Rule(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_(?P<body>[A-Za-z0-9]{36,251})"
            r"|github_pat_(?P<pat>[A-Za-z0-9_]{70,240}))(?![A-Za-z0-9_])"
        ),
        lambda m: looks_random(m.group("body") or m.group("pat")),
    ),
    _Rule(
        "slack_token",
        ("xox", "xapp-"),
        re.compile(
            _B + r"(?:xox[abposre]-\d{6,}-[A-Za-z0-9-]{16,200}"
            r"|xapp-\d-[A-Z0-9]{6,}-\d{6,}-[a-f0-9]{32,128})" + _E
        ),
        lambda m: looks_random(m.group().rsplit("-", 1)[-1], min_classes=1),
    ),
    _Rule(
        "slack_webhook",
        ("hooks.slack.com",),
        re.compile(
            r"hooks\.slack\.com/(?:services|workflows|triggers)/"
            r"T[A-Z0-9]{6,}/[A-Z0-9]{6,}/(?P<secret>[A-Za-z0-9]{16,64})(?![A-Za-z0-9])"
        ),
        _random_group("secret"),
    ),
    _Rule(
        "google_api_key",
        ("AIza",),
        re.compile(_B + r"AIza(?P<body>[0-9A-Za-z_-]{35})" + _E),
        _random_group("body"),
    ),
    _Rule(
        "google_oauth_secret",
        ("GOCSPX-",),
        re.compile(_B + r"GOCSPX-(?P<body>[0-9A-Za-z_-]{28})" + _E),
        _random_group("body"),
    ),
    _Rule(
        "stripe_key",
        ("_live_", "whsec_"),
        re.compile(
            r"(?<![A-Za-z0-9_])(?:(?:sk|rk)_live_(?P<body>[0-9A-Za-z]{24,247})"
            r"|whsec_(?P<wh>[0-9A-Za-z+/=]{32,128}))(?![A-Za-z0-9_])"
        ),
        lambda m: looks_random(m.group("body") or m.group("wh")),
    ),
    _Rule(
        "huggingface_token",
        ("hf_",),
        re.compile(r"(?<![A-Za-z0-9_])hf_(?P<body>[A-Za-z0-9]{34,40})(?![A-Za-z0-9_])"),
        _random_group("body"),
    ),
    _Rule(
        "gitlab_token",
        ("glpat-",),
        re.compile(_B + r"glpat-(?P<body>[A-Za-z0-9_-]{20,60})" + _E),
        _random_group("body"),
    ),
    _Rule(
        "npm_token",
        ("npm_",),
        re.compile(r"(?<![A-Za-z0-9_])npm_(?P<body>[A-Za-z0-9]{36})(?![A-Za-z0-9_])"),
        _random_group("body"),
    ),
    _Rule(
        "sendgrid_api_key",
        ("SG.",),
        re.compile(_B + r"SG\.(?P<id>[A-Za-z0-9_-]{22})\.(?P<body>[A-Za-z0-9_-]{43})" + _E),
        _random_group("body"),
    ),
    _Rule(
        "private_key",
        ("-----BEGIN",),
        _PRIVATE_KEY,
        _check_private_key,
        scope="text",
    ),
    _Rule(
        "jwt",
        ("eyJ",),
        re.compile(
            _B + r"(?P<header>eyJ[A-Za-z0-9_-]{8,2000})\.ey[A-Za-z0-9_-]{8,8000}"
            r"\.[A-Za-z0-9_-]{16,2000}" + _E
        ),
        _check_jwt,
    ),
    _Rule(
        "generic_api_key",
        (
            "api_key",
            "apikey",
            "api-key",
            "api_secret",
            "apisecret",
            "api-secret",
            "secret_key",
            "secretkey",
            "secret-key",
            "client_secret",
            "clientsecret",
            "client-secret",
            "_token",
            "-token",
            "ssto",  # accesstoken
            "thto",  # authtoken
            "teto",  # privatetoken
        ),
        re.compile(
            r"(?i:api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret"
            r"|access[_-]?token|auth[_-]?token|private[_-]?token)"
            r"[\"']?\s*(?::=|=>|[:=])\s*[\"']?"
            r"(?P<value>[A-Za-z0-9_+/=.\-]{20,200})(?![A-Za-z0-9_+/=.\-])"
        ),
        _check_generic,
        scope="lower",
    ),
)

SECRET_KINDS: frozenset[str] = frozenset(rule.kind for rule in _RULES)
"""Every kind :func:`find_secrets` can return; the category is ``secret/<kind>``."""

SECRET_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {rule.kind: rule.pattern for rule in _RULES}
)
"""The compiled regex of each kind, without the validators that :func:`iter_secrets`
applies on top (so they match a superset: fine for redaction, too eager for detection)."""


# --------------------------------------------------------------------------- API


def _span(match: re.Match[str]) -> tuple[int, int]:
    # For context rules (``name = value``) the secret is the value, not the name.
    if "value" in match.re.groupindex:
        return match.span("value")
    if match.re is _PRIVATE_KEY:
        return match.start(), _private_key_end(match) or match.end()
    return match.span()


_MIN_TOKEN = 16
"""Every secret contains a whitespace-free run of at least this many characters (the
key itself, a PEM body line, a generic value): texts without one are skipped."""


def iter_secrets(text: str) -> Iterator[Detection]:
    """Yield every credential found in ``text``, rule by rule (not in text order).

    Matches of the generic rule that overlap a vendor rule's match are not yielded.
    """
    if len(text) < _MIN_TOKEN:
        return
    parts = text.split()
    if not parts or max(map(len, parts)) < _MIN_TOKEN:
        return
    haystacks = {"token": "\n".join(p for p in parts if len(p) >= _MIN_TOKEN), "text": text}
    found: list[tuple[int, int]] = []
    for rule in _RULES:
        haystack = haystacks.get(rule.scope)
        if haystack is None:
            haystack = haystacks["lower"] = text.lower()
        for trigger in rule.triggers:
            if trigger in haystack:
                break
        else:
            continue
        for match in rule.pattern.finditer(text):
            if rule.check is not None and not rule.check(match):
                continue
            start, end = _span(match)
            if rule.kind == "generic_api_key" and any(s < end and start < e for s, e in found):
                continue
            found.append((start, end))
            yield Detection(rule.kind, start, end)


def find_secrets(text: str) -> set[str]:
    """The kinds of credential present in ``text`` (e.g. ``{"aws_access_key"}``); the
    category of each is ``secret/<kind>``."""
    return {detection.kind for detection in iter_secrets(text)}


def redact(text: str, replacement: str = "[REDACTED:{kind}]") -> str:
    """Return ``text`` with every credential :func:`iter_secrets` finds replaced by
    ``replacement`` (``{kind}`` is filled in). Overlapping matches are merged."""
    detections = sorted(iter_secrets(text), key=lambda d: (d.start, -d.end))
    if not detections:
        return text
    parts: list[str] = []
    position = 0
    for detection in detections:
        if detection.end <= position:
            continue
        start = max(detection.start, position)
        parts.append(text[position:start])
        parts.append(replacement.format(kind=detection.kind))
        position = detection.end
    parts.append(text[position:])
    return "".join(parts)
