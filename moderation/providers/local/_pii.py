"""Personal data detection (``pii/<kind>``): e-mail addresses, phone numbers, payment
card numbers, IBANs and US social security numbers.

Numbers are everywhere in text (dates, versions, amounts, IDs), so every numeric detector
is a format *plus* a check. Guards against false positives, detector by detector:

- **Pre-filter.** E-mail work starts only at ``@`` characters. Everything else only runs
  around *runs* of at least 7 characters of digits and separators (``_NUMERIC_RUN``):
  phone, card and SSN patterns inside them, IBAN candidates (an upper-case letter pair and
  two digits) within 42 characters of them, as every IBAN's account part holds such a run.
  Prose with a few numbers costs a couple of µs.
- ``pii/email``: a local part of at most 64 characters and a domain of dot-separated
  labels ending in a known top-level domain (any two-letter country code, or a listed
  generic one): ``x@self.weights`` in code and ``icon@2x.png`` are not addresses. Skipped:
  the reserved documentation domains (RFC 2606: ``example.com``/``.org``/``.net`` and
  their subdomains, ``*.example``, ``*.test``, ``*.invalid``, ``*.localhost``), SSH
  remotes (``git@github.com``) and URL credentials (``https://user:pass@host``).
- ``pii/phone``: only three shapes count. International: ``+`` and 8-15 digits (E.164),
  separators allowed, ``(0)`` trunk marker allowed. North American: area code and exchange
  starting 2-9 with consistent separators, ``(415) 555-2671``, ``415-555-2671``,
  ``415.555.2671``, ``1-415-555-2671`` (the fictional ``555-01xx`` block excluded).
  European national: a leading ``0`` then groups separated by one consistent
  space/dash/slash (or French ``01.23.45.67.89``), 9-12 digits, not an arithmetic
  progression (``01 02 03 04 05``) and not SSN-shaped (``078-05-1120``). Never: a plain
  run of digits without ``+``, a date (``2024-01-15``, ``15/01/2024``), a version
  (``1.2.3.4``), an IP address.
- ``pii/card_number``: 13-19 digits, plain or in groups separated by one consistent
  space or dash (first group of 4); a passing Luhn check; a known network prefix with a
  length that network issues (Visa, Mastercard, Amex, Discover, JCB, Diners,
  UnionPay, Maestro). The networks' and processors' published *test* numbers
  (``4242 4242 4242 4242``, ...) identify nobody and fill payment tutorials: skipped.
- ``pii/iban``: a country code whose IBAN length is known, that exact length, groups of 4
  when spaced, and the ISO 7064 mod-97 check (a random string passes it 1 time in 97).
- ``pii/us_ssn``: ``ddd-dd-dddd`` only (a plain 9-digit number is not enough), excluding
  what was never issued: area ``000``, ``666`` and ``9xx``, group ``00``, serial
  ``0000``, and the famous published examples (``078-05-1120``, ``219-09-9999``,
  ``123-45-6789``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from moderation.providers.local._secrets import Detection

__all__ = [
    "PII_KINDS",
    "card_brand",
    "find_pii",
    "iban_valid",
    "iter_pii",
    "luhn_valid",
]

PII_KINDS: frozenset[str] = frozenset({"email", "phone", "card_number", "iban", "us_ssn"})
"""Every kind :func:`find_pii` can return; the category is ``pii/<kind>``."""


# --------------------------------------------------------------------------- checksums


def luhn_valid(digits: str) -> bool:
    """True when the string of decimal digits passes the Luhn (mod 10) check."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_MAESTRO = frozenset({"5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763"})


def card_brand(digits: str) -> str | None:
    """The card network whose prefix (IIN) and length ``digits`` has, or ``None``.

    Does not check Luhn (see :func:`luhn_valid`).
    """
    n = len(digits)
    if not 12 <= n <= 19 or not digits.isascii() or not digits.isdigit():
        return None
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or 644 <= p3 <= 649 or p2 == 65) and n >= 16:
        return "discover"
    if 3528 <= p4 <= 3589 and n >= 16:
        return "jcb"
    if (300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39)) and n >= 14:
        return "diners"
    if p2 == 62 and n >= 16:
        return "unionpay"
    if digits[:4] in _MAESTRO:
        return "maestro"
    return None


# Published by card networks and payment processors for testing; no cardholder has them.
_TEST_CARDS = frozenset(
    {
        "4242424242424242",
        "4000056655665556",
        "4111111111111111",
        "4012888888881881",
        "4222222222222",
        "4000000000000002",
        "4000000000009995",
        "5555555555554444",
        "5200828282828210",
        "5105105105105100",
        "2223003122003222",
        "2223000048400011",
        "378282246310005",
        "371449635398431",
        "378734493671000",
        "6011111111111117",
        "6011000990139424",
        "6011000400000000",
        "3056930009020004",
        "36227206271667",
        "30569309025904",
        "38520000023237",
        "3566002020360505",
        "3530111333300000",
        "6200000000000005",
        "6200000000000047",
    }
)


def _card_ok(digits: str) -> bool:
    return (
        13 <= len(digits) <= 19
        and digits not in _TEST_CARDS
        and len(set(digits)) > 2
        and card_brand(digits) is not None
        and luhn_valid(digits)
    )


# fmt: off
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24,
    "XK": 20,
}
# fmt: on


def iban_valid(iban: str) -> bool:
    """True when ``iban`` (spaces allowed, upper case) has its country's length and
    passes the ISO 7064 mod-97 check."""
    compact = iban.replace(" ", "")
    if not compact.isascii() or not compact.isalnum() or not compact[:2].isalpha():
        return False
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:
        remainder = (remainder * (100 if char.isalpha() else 10) + int(char, 36)) % 97
    return remainder == 1


# --------------------------------------------------------------------------- e-mail

# Two-letter TLDs are all accepted (country codes); longer ones must be listed.
_GENERIC_TLDS = frozenset(
    (  # noqa: SIM905 (a word list reads better as one string)
        "com net org edu gov mil int info biz name pro mobi aero coop museum jobs travel "
        "app dev io ai me tv cc xyz online site tech store shop cloud email mail live life "
        "blog news media agency company world today space website solutions digital "
        "global group network systems services studio design family law legal health care "
        "finance money bank insurance consulting academy school university college church"
    ).split()
)
_FILE_EXTENSIONS = frozenset({"js", "py", "ts", "rs", "go", "md", "sh", "cs", "pl", "rb"})
_RESERVED_DOMAINS = frozenset({"example.com", "example.org", "example.net", "localhost"})
_RESERVED_SUFFIXES = (
    ".example",
    ".test",
    ".invalid",
    ".localhost",
    ".example.com",
    ".example.org",
    ".example.net",
)
_SSH_USERS = frozenset({"git", "hg", "svn"})

_LOCAL_TAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}\Z")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"(?P<tld>[A-Za-z]{2,24})(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
)
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _emails(text: str) -> Iterator[Detection]:
    at = text.find("@")
    while at >= 0:
        detection = _email_at(text, at)
        if detection is not None:
            yield detection
        at = text.find("@", at + 1)


def _email_at(text: str, at: int) -> Detection | None:
    window_start = max(0, at - 64)
    local_match = _LOCAL_TAIL.search(text, window_start, at)
    if local_match is None:
        return None
    start = local_match.start()
    if start > 0 and text[start - 1] in _LOCAL_CHARS:
        return None  # local part longer than 64 characters: not an address
    local = local_match.group()
    while local.startswith("."):
        local = local[1:]
        start += 1
    if not local or local.endswith(".") or ".." in local or local.lower() in _SSH_USERS:
        return None
    if start > 0 and text[start - 1] == ":" and "://" in text[max(0, start - 300) : start]:
        return None  # scheme://user:password@host
    domain_match = _DOMAIN.match(text, at + 1, min(len(text), at + 256))
    if domain_match is None:
        return None
    tld = domain_match.group("tld").lower()
    if len(tld) == 2:
        if tld in _FILE_EXTENSIONS:
            return None
    elif tld not in _GENERIC_TLDS:
        return None
    domain = domain_match.group().lower()
    if domain in _RESERVED_DOMAINS or domain.endswith(_RESERVED_SUFFIXES):
        return None
    return Detection("email", start, domain_match.end())


# --------------------------------------------------------------------------- numbers

_NUMERIC_RUN = re.compile(r"\d[\d \-./()]{5,}\d")

_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9][\d \-./()]{5,24}\d(?!\d)")
_PHONE_NANP = re.compile(
    r"(?<![\w+.\-/(])(?<!\d[ .\-/])(?:1[ .\-])?"
    r"(?:\((?P<pa>[2-9]\d\d)\)[ \-]?(?P<px>[2-9]\d\d)[ .\-](?P<pl>\d{4})"
    r"|(?P<a>[2-9]\d\d)(?P<s>[.\-])(?P<x>[2-9]\d\d)(?P=s)(?P<l>\d{4}))"
    r"(?![\w]|[.\-/]\d)"
)
_PHONE_EU = re.compile(
    r"(?<![\w+.\-/(])(?<!\d[ .\-/])(?:0[1-9]\d{0,4}(?P<s>[ \-/])\d{2,8}(?:(?P=s)\d{2,8}){0,4}"
    r"|0[1-9](?:\.\d\d){4})"
    r"(?![\w]|[.\-/]\d)"
)
_SSN = re.compile(r"(?<![\w\-.])(\d{3})-(\d{2})-(\d{4})(?![\w\-]|\.\d)")
_CARD_RUN = re.compile(r"(?<![\w\-.])\d+(?:[ \-]\d+)*(?![\w]|[\-.]\d)")
_SSN_EXAMPLES = frozenset({"078051120", "219099999", "123456789"})


def _intl_phone_ok(number: str) -> bool:
    body = number.replace("(0)", "", 1)
    if body.count("(") > 1 or body.count("(") != body.count(")"):
        return False
    for bad in ("  ", "--", "..", "//", ".-", "-.", "()"):
        if bad in body:
            return False
    digits = sum(c.isdigit() for c in body)
    return 8 <= digits <= 15


def _progression(groups: list[str]) -> bool:
    if len(groups) < 3:
        return False
    values = [int(g) for g in groups]
    step = values[1] - values[0]
    return all(b - a == step for a, b in itertools.pairwise(values))


def _eu_phone_ok(number: str) -> bool:
    groups = re.split(r"[ \-/.]", number)
    if "-" in number and [len(g) for g in groups] == [3, 2, 4]:
        return False  # ddd-dd-dddd is the shape of a US SSN, not a phone number
    digits = sum(len(g) for g in groups)
    return 9 <= digits <= 12 and not _progression(groups)


def _ssn_ok(match: re.Match[str]) -> bool:
    area, group, serial = match.groups()
    return (
        area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
        and area + group + serial not in _SSN_EXAMPLES
    )


def _cards_in(run: str) -> bool:
    if " " in run and "-" in run:
        # Mixed separators are not one number; a dashed number may sit among others.
        return any(_cards_in(part) for part in run.split(" ") if len(part) >= 13)
    groups = re.split(r"[ \-]", run)
    if len(groups) == 1:
        return _card_ok(run)
    for i, first in enumerate(groups):
        if len(first) != 4:
            continue
        total = 4
        for j in range(i + 1, len(groups)):
            if not 1 <= len(groups[j]) <= 7:
                break
            total += len(groups[j])
            if total > 19:
                break
            if total >= 13 and _card_ok("".join(groups[i : j + 1])):
                return True
    return False


def _numbers(text: str, runs: list[tuple[int, int]]) -> Iterator[Detection]:
    size = len(text)
    for run_start, run_end in runs:
        start = max(0, run_start - 3)
        end = min(size, run_end + 2)
        for match in _PHONE_INTL.finditer(text, start, end):
            if _intl_phone_ok(match.group()):
                yield Detection("phone", *match.span())
        for match in _PHONE_NANP.finditer(text, start, end):
            exchange = match.group("px") or match.group("x")
            line = match.group("pl") or match.group("l")
            if not (exchange == "555" and line.startswith("01")):
                yield Detection("phone", *match.span())
        for match in _PHONE_EU.finditer(text, start, end):
            if _eu_phone_ok(match.group()):
                yield Detection("phone", *match.span())
        for match in _SSN.finditer(text, start, end):
            if _ssn_ok(match):
                yield Detection("us_ssn", *match.span())
        for match in _CARD_RUN.finditer(text, start, end):
            if len(match.group()) >= 13 and _cards_in(match.group()):
                yield Detection("card_number", *match.span())


# --------------------------------------------------------------------------- IBAN

_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d\d(?: ?[A-Z0-9]){11,30}")


def _iban_at(text: str, match: re.Match[str]) -> int | None:
    """End of the valid IBAN starting at ``match.start()``, or ``None``."""
    raw = match.group()
    length = _IBAN_LENGTHS.get(raw[:2])
    if length is None:
        return None
    count = 0
    cut = len(raw)
    for index, char in enumerate(raw):
        if char != " ":
            count += 1
            if count == length:
                cut = index + 1
                break
    if count < length:
        return None
    candidate = raw[:cut]
    after = raw[cut:] if cut < len(raw) else text[match.end() : match.end() + 1]
    if after[:1].isalnum():
        return None  # the IBAN would end inside a longer token
    if " " in candidate:
        groups = candidate.split(" ")
        if any(len(g) != 4 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 4:
            return None
    return match.start() + cut if iban_valid(candidate) else None


_IBAN_SPAN = 42
"""The longest IBAN as written: 34 characters and 8 spaces."""


def _ibans(text: str, runs: list[tuple[int, int]]) -> Iterator[Detection]:
    # Every IBAN's account part holds a numeric run, and the first run that starts inside
    # an IBAN starts at most _IBAN_SPAN characters after the IBAN does (and the IBAN
    # ends at most _IBAN_SPAN after that). So only merged windows of _IBAN_SPAN
    # characters around the runs are searched, each to its end.
    size = len(text)
    windows: list[list[int]] = []
    for run_start, run_end in runs:
        start, end = max(0, run_start - _IBAN_SPAN), min(size, run_end + _IBAN_SPAN)
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    for window_start, limit in windows:
        position = window_start
        while (match := _IBAN.search(text, position, limit)) is not None:
            iban_end = _iban_at(text, match)
            if iban_end is None:
                position = match.start() + 1  # an IBAN may start inside this candidate
            else:
                yield Detection("iban", match.start(), iban_end)
                position = iban_end


# --------------------------------------------------------------------------- API


def iter_pii(text: str) -> Iterator[Detection]:
    """Yield every piece of personal data found in ``text`` with its span (grouped by
    detector, not in text order; a number may be reported by more than one detector)."""
    if "@" in text:
        yield from _emails(text)
    runs = [run.span() for run in _NUMERIC_RUN.finditer(text)]
    if runs:
        ibans = list(_ibans(text, runs))
        yield from ibans
        for detection in _numbers(text, runs):
            # The digit groups of an IBAN can look like a phone number: not reported.
            if not any(i.start < detection.end and detection.start < i.end for i in ibans):
                yield detection


def find_pii(text: str) -> set[str]:
    """The kinds of personal data present in ``text`` (e.g. ``{"email", "phone"}``); the
    category of each is ``pii/<kind>``."""
    return {detection.kind for detection in iter_pii(text)}
