"""The ``local`` moderation provider: detectors, classifier and the Moderator contract.

Every key and number below is fake. Keys are assembled from parts and seeded random
bodies, so that this file does not itself look like a leaked credential to scanners.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.errors import ConfigError
from moderation.models import Segment, SegmentError, SegmentModeration
from moderation.providers import Moderator
from moderation.providers.local import (
    CATEGORIES,
    OFFENSIVE,
    PII_KINDS,
    SECRET_KINDS,
    SECRET_PATTERNS,
    LocalModerator,
    OffensiveClassifier,
    card_brand,
    find_pii,
    find_secrets,
    iban_valid,
    iter_pii,
    iter_secrets,
    looks_random,
    luhn_valid,
    redact,
)

_RNG = random.Random(20240611)
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def rnd(n: int, alphabet: str = ALNUM) -> str:
    """Seeded random body (deterministic across runs)."""
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def pem(kind: str, body_lines: int = 6, sep: str = "\n") -> str:
    begin, end = "-----BEGIN " + kind + "-----", "-----END " + kind + "-----"
    body = sep.join(rnd(64, B64) for _ in range(body_lines))
    return begin + sep + body + sep + end


def luhn_complete(prefix: str, length: int) -> str:
    """Independent Luhn check-digit computation (not the code under test)."""
    body = prefix + "".join(str(_RNG.randrange(10)) for _ in range(length - len(prefix) - 1))
    digits = [int(c) for c in body]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:  # will be doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def one_off(number: str) -> str:
    """The same number with its last digit changed (always breaks Luhn / mod-97)."""
    last = number[-1]
    return number[:-1] + str((int(last) + 1) % 10)


def group(number: str, sizes: tuple[int, ...], sep: str = " ") -> str:
    out, i = [], 0
    for size in sizes:
        out.append(number[i : i + size])
        i += size
    return sep.join(out)


# ============================================================================ secrets

JWT = (
    b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + b64url({"sub": "1234567890", "name": "Jane Roe", "iat": 1516239022})
    + "."
    + rnd(43, ALNUM + "-_")
)

SECRET_POSITIVES: list[tuple[str, str]] = [
    ("openai_api_key", "OPENAI_API_KEY=sk-" + rnd(20) + "T3Blbk" + "FJ" + rnd(20)),
    ("openai_api_key", 'client = OpenAI(api_key="sk-' + "proj-" + rnd(120, ALNUM + "_-") + '")'),
    ("openai_api_key", "sk-" + "svcacct-" + rnd(64, ALNUM + "_-")),
    ("openai_api_key", "key: sk-" + rnd(48) + "."),
    ("anthropic_api_key", "ANTHROPIC_API_KEY=sk-" + "ant-api03-" + rnd(93, ALNUM + "_-") + "AA"),
    ("aws_access_key", "aws_access_key_id = " + "AKIA" + "IOSFODNN7EXAMPLE"),
    ("aws_access_key", "temporary credentials ASIA" + rnd(16, UPPER_DIGITS) + " expire"),
    (
        "aws_secret_key",
        "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY",
    ),
    ("aws_secret_key", '{"SecretAccessKey": "' + rnd(40, B64) + '"}'),
    ("aws_secret_key", "export AWS_SECRET_ACCESS_KEY=" + rnd(40, B64)),
    ("github_token", "git clone https://gh" + "p_" + rnd(36) + "@github.com/o/r.git"),
    ("github_token", "GITHUB_TOKEN: gh" + "s_" + rnd(36)),
    ("github_token", "github" + "_pat_" + rnd(22) + "_" + rnd(59)),
    (
        "slack_token",
        "xo" + "xb-" + rnd(12, string.digits) + "-" + rnd(13, string.digits) + "-" + rnd(24),
    ),
    (
        "slack_webhook",
        "https://hooks.slack.com/services/T"
        + rnd(8, UPPER_DIGITS)
        + "/B"
        + rnd(8, UPPER_DIGITS)
        + "/"
        + rnd(24),
    ),
    (
        "google_api_key",
        "https://maps.googleapis.com/maps/api/js?key=AI" + "za" + rnd(35, ALNUM + "-_"),
    ),
    ("google_oauth_secret", '"client_secret": "GOCSPX-' + rnd(28) + '"'),
    ("stripe_key", "stripe.api_key = 'sk" + "_live_" + rnd(24) + "'"),
    ("stripe_key", "rk" + "_live_" + rnd(99)),
    ("stripe_key", "STRIPE_WEBHOOK_SECRET=whsec_" + rnd(32)),
    ("huggingface_token", "HF_TOKEN=hf_" + rnd(34, string.ascii_letters)),
    ("gitlab_token", "glpat-" + rnd(20)),
    ("npm_token", "//registry.npmjs.org/:_authToken=npm_" + rnd(36)),
    ("sendgrid_api_key", "SG." + rnd(22, ALNUM + "-_") + "." + rnd(43, ALNUM + "-_")),
    ("private_key", "my key:\n" + pem("RSA PRIVATE KEY") + "\nkeep it safe"),
    ("private_key", pem("PRIVATE KEY")),
    ("private_key", pem("OPENSSH PRIVATE KEY", sep=" ")),
    ("private_key", 'KEY = "' + pem("EC PRIVATE KEY", sep="\\n") + '"'),
    (
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
        + rnd(32, "0123456789ABCDEF")
        + "\n\n"
        + "\n".join(rnd(64, B64) for _ in range(4))
        + "\n-----END RSA PRIVATE KEY-----",
    ),
    ("private_key", pem("PGP PRIVATE KEY BLOCK")),
    ("jwt", "Authorization: Bearer " + JWT),
    ("generic_api_key", 'api_key = "' + rnd(32) + '"'),
    ("generic_api_key", "CLIENT_SECRET=" + rnd(40)),
    ("generic_api_key", '{"access_token": "' + rnd(24) + "." + rnd(30) + '"}'),
    ("generic_api_key", "x-api-key: " + rnd(40, "0123456789abcdef")),
]

SECRET_NEGATIVES: list[str] = [
    "",
    "The key to success is patience; the secret is practice. Token economies work.",
    "pip install sk-learn scikit-learn sk-video",
    "task-1234567890 and ask-me-anything-about-this-long-hyphenated-phrase",
    "sk-this-is-not-a-key-just-some-words-joined-by-dashes",
    "OPENAI_API_KEY=sk-" + "x" * 48,
    "OPENAI_API_KEY=sk-...your key here...",
    "sk-" + "1234567890abcdefghij" * 2,  # sequences: a placeholder
    "sk-" + "proj-" + "a" * 60,
    "sk-ant-api03-" + "X" * 90,
    "AKIA" + "1234",
    "XAKIA" + "IOSFODNN7EXAMPLE",  # part of a longer identifier
    "AKIA" + "A" * 16,
    rnd(40, B64) + " is just 40 base64 characters with no name",
    "gh" + "p_" + "short",
    "gh" + "p_" + "x" * 36,
    "https://hooks.slack.com/services/T00000000/B00000000/" + "X" * 24,
    "pk_live_" + rnd(24),  # publishable: public by design
    "sk" + "_test_" + rnd(24),  # test mode only
    "hf_hub_download(repo_id='gpt2', filename='config.json')",
    "The PEM file starts with -----BEGIN RSA PRIVATE KEY----- and ends with END.",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA...\n-----END RSA PRIVATE KEY-----",
    pem("PUBLIC KEY"),
    pem("CERTIFICATE"),
    b64url({"typ": "JWT"}) + "." + b64url({"sub": "x"}) + "." + rnd(43),  # no alg
    b64url({"alg": "none"}) + "." + b64url({"sub": "x"}) + ".",  # unsigned
    "eyJ" + "not-base64-json" + "." + "eyJ" + rnd(20) + "." + rnd(30),
    'api_key = "your-api-key-here"',
    'api_key = os.environ["OPENAI_API_KEY"]',
    "API_KEY=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "api_key: settings.OPENAI_API_KEY_FROM_ENVIRONMENT",
    'password = "Sup3rS3cretPassw0rd!"',  # passwords are deliberately not detected
    'access_token = "abc123def456ghi789jkl012"',
    'secret_key = "1234567890abcdef1234567890abcdef"',
    "client_secret: <CLIENT_SECRET>",
    "SG.hello.world",
    "npm_" + "config_cache",
]


@pytest.mark.parametrize(("kind", "text"), SECRET_POSITIVES)
def test_secret_positive(kind: str, text: str) -> None:
    assert kind in find_secrets(text)
    assert kind in SECRET_KINDS


@pytest.mark.parametrize("text", SECRET_NEGATIVES)
def test_secret_negative(text: str) -> None:
    assert find_secrets(text) == set()


def test_every_secret_kind_has_a_positive_case() -> None:
    assert {kind for kind, _ in SECRET_POSITIVES} == SECRET_KINDS


def test_vendor_key_is_not_also_reported_as_generic() -> None:
    text = 'api_key = "sk-' + "proj-" + rnd(80) + '"'
    assert find_secrets(text) == {"openai_api_key"}
    text = "aws_secret_key = " + rnd(40, B64)
    assert find_secrets(text) == {"aws_secret_key"}


@pytest.mark.parametrize(("kind", "text"), SECRET_POSITIVES)
def test_redact_removes_every_secret(kind: str, text: str) -> None:
    redacted = redact(text)
    assert f"[REDACTED:{kind}]" in redacted
    assert find_secrets(redacted) == set()


def test_redact_keeps_the_rest_of_the_text() -> None:
    key = "gh" + "p_" + rnd(36)
    text = f"before {key} middle aws_secret_access_key={rnd(40, B64)} after"
    assert redact(text) == (
        "before [REDACTED:github_token] middle "
        "aws_secret_access_key=[REDACTED:aws_secret_key] after"
    )
    assert redact("nothing to see") == "nothing to see"
    assert redact(key, replacement="***") == "***"


def test_private_key_redaction_covers_the_whole_block() -> None:
    block = pem("RSA PRIVATE KEY")
    assert redact("a\n" + block + "\nb") == "a\n[REDACTED:private_key]\nb"


def test_iter_secrets_spans() -> None:
    key = "AKIA" + "IOSFODNN7EXAMPLE"
    text = "id " + key + " end"
    (detection,) = list(iter_secrets(text))
    assert (detection.kind, text[detection.start : detection.end]) == ("aws_access_key", key)


def test_secret_patterns_are_exported_compiled() -> None:
    assert set(SECRET_PATTERNS) == SECRET_KINDS
    assert SECRET_PATTERNS["aws_access_key"].search("AKIA" + "IOSFODNN7EXAMPLE")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (rnd(40), True),
        (rnd(32, "0123456789abcdef"), True),
        ("x" * 40, False),
        ("abcdefghijklmnopqrstuvwxyz", False),
        ("Aa1" + "b" * 30, False),
        ("ab12" * 10, False),
    ],
)
def test_looks_random(value: str, expected: bool) -> None:
    assert looks_random(value) is expected


# ============================================================================ PII

VISA = luhn_complete("4", 16)
MASTERCARD = luhn_complete("5" + str(_RNG.randint(1, 5)), 16)
MASTERCARD_2 = luhn_complete("2" + str(_RNG.randint(300, 699)), 16)
AMEX = luhn_complete("37", 15)
DISCOVER = luhn_complete("6011", 16)
JCB = luhn_complete("3530", 16)
DINERS = luhn_complete("36", 14)
UNIONPAY = luhn_complete("62", 19)
VISA_19 = luhn_complete("4", 19)
VISA_13 = luhn_complete("4", 13)

CARDS = [VISA, MASTERCARD, MASTERCARD_2, AMEX, DISCOVER, JCB, DINERS, UNIONPAY, VISA_19, VISA_13]

# Published example IBANs (valid check digits).
IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "CH93 0076 2011 6238 5295 7",
    "BE68 5390 0754 7034",
    "NO93 8601 1117 947",
]

PII_POSITIVES: list[tuple[str, str]] = [
    ("email", "Write to john.doe@gmail.com."),
    ("email", "cc: a.b+tag@mail.uni-heidelberg.de, thanks"),
    ("email", "<ADMIN@COMPANY.IO>"),
    ("email", "mailto:jane_doe99@proton.me"),
    ("phone", "Call me at +1 415 555 2671 tonight"),
    ("phone", "+14155552671"),
    ("phone", "Office: (415) 555-2671"),
    ("phone", "415-555-2671"),
    ("phone", "415.555.2671"),
    ("phone", "1-800-275-2273"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "+44 (0)20 7946 0958"),
    ("phone", "Tel. 020 7946 0958"),
    ("phone", "mobile 07700 900123"),
    ("phone", "+49 30 12345678"),
    ("phone", "Tel.: 030 12345678"),
    ("phone", "0171/1234567"),
    ("phone", "01 42 68 53 00"),
    ("phone", "+33 1 42 68 53 00"),
    ("phone", "bel 06-12345678"),
    ("card_number", "card " + group(VISA, (4, 4, 4, 4)) + " exp 12/27"),
    ("card_number", group(VISA, (4, 4, 4, 4), "-")),
    ("card_number", VISA),
    ("card_number", group(MASTERCARD, (4, 4, 4, 4))),
    ("card_number", group(MASTERCARD_2, (4, 4, 4, 4))),
    ("card_number", "Amex " + group(AMEX, (4, 6, 5))),
    ("card_number", group(DISCOVER, (4, 4, 4, 4))),
    ("card_number", group(JCB, (4, 4, 4, 4))),
    ("card_number", group(DINERS, (4, 6, 4))),
    ("card_number", UNIONPAY),
    ("card_number", group(VISA_19, (4, 4, 4, 4, 3))),
    ("card_number", VISA_13),
    ("card_number", "numbers: " + group(VISA, (4, 4, 4, 4)) + " 12/27"),
    ("iban", "IBAN: DE89 3704 0044 0532 0130 00."),
    ("iban", "DE89370400440532013000"),
    ("iban", "pay to GB82WEST12345698765432 today"),
    ("us_ssn", "SSN 536-22-8741"),
    ("us_ssn", "my social is 219-09-9998"),
]

PII_NEGATIVES: list[str] = [
    "",
    "Plain prose with no personal data at all, 42 times over.",
    # e-mail
    "user@example.com and admin@sub.example.org and x@foo.test",
    "git@github.com:org/repo.git",
    "icon@2x.png and logo@3x.js",
    "y = x@self.weights + b",
    "@decorator\ndef f(): ...",
    "npm i @scope/pkg@1.2.3",
    "https://user:pass@host.com/path",
    "a@b",
    # phone
    "2024-01-15",
    "15/01/2024 and 01.02.2024",
    "version 1.2.3.4 and v10.0.19041.1234",
    "192.168.100.200",
    "4155552671",
    "12345678901",
    "01 02 03 04 05",
    "555-0123",
    "(555) 555-0199",
    "123-456-7890",
    "ISBN 978-3-16-148410-0",
    "2023-10-01T12:30:45Z",
    "$1,234,567.89 and 3.14159265358979",
    "x = 5 + 12345678",
    # cards
    group(one_off(VISA), (4, 4, 4, 4)),
    one_off(AMEX),
    luhn_complete("9", 16),  # no network has this prefix
    luhn_complete("1", 16),  # e.g. a millisecond timestamp-like id
    luhn_complete("4", 15),  # Visa never issues 15 digits
    "4242 4242 4242 4242",  # published test number
    "4111-1111-1111-1111",
    "5555555555554444",
    group(VISA, (4, 4)) + "-" + group(VISA[8:], (4, 4)),  # mixed separators
    "1" + VISA,  # inside a longer number
    VISA[:12],
    # IBAN
    "DE89 3704 0044 0532 0130 01",
    "DE89370400440532013001",
    "XX89370400440532013000",
    "DE89 3704 0044 0532 0130",  # too short for DE
    "de89370400440532013000",
    # SSN
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "536-00-8741",
    "536-22-0000",
    "078-05-1120",
    "123-45-6789",
    "536228741",
    "1536-22-8741",
]


@pytest.mark.parametrize(("kind", "text"), PII_POSITIVES)
def test_pii_positive(kind: str, text: str) -> None:
    assert kind in find_pii(text), text
    assert kind in PII_KINDS


@pytest.mark.parametrize("text", PII_NEGATIVES)
def test_pii_negative(text: str) -> None:
    assert find_pii(text) == set(), text


def test_every_pii_kind_has_a_positive_case() -> None:
    assert {kind for kind, _ in PII_POSITIVES} == PII_KINDS


@pytest.mark.parametrize("number", CARDS)
def test_luhn_valid_and_one_digit_off(number: str) -> None:
    assert luhn_valid(number)
    assert card_brand(number) is not None
    assert not luhn_valid(one_off(number))
    for i in range(len(number)):  # Luhn catches every single-digit error
        for digit in "0123456789":
            if digit != number[i]:
                assert not luhn_valid(number[:i] + digit + number[i + 1 :])


def test_luhn_rejects_non_digits() -> None:
    assert not luhn_valid("")
    assert not luhn_valid("4111 1111")
    assert not luhn_valid("٤١١١")  # Arabic-Indic digits are not card digits


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        (VISA, "visa"),
        (MASTERCARD, "mastercard"),
        (MASTERCARD_2, "mastercard"),
        (AMEX, "amex"),
        (DISCOVER, "discover"),
        (JCB, "jcb"),
        (DINERS, "diners"),
        (UNIONPAY, "unionpay"),
        ("1" * 16, None),
        ("4" * 15, None),
    ],
)
def test_card_brand(number: str, brand: str | None) -> None:
    assert card_brand(number) == brand


@pytest.mark.parametrize("iban", IBANS)
def test_iban_mod97_valid_and_one_digit_off(iban: str) -> None:
    assert iban_valid(iban)
    assert iban_valid(iban.replace(" ", ""))
    assert find_pii(f"IBAN {iban}") == {"iban"}
    assert not iban_valid(one_off(iban))
    swapped = iban[:2] + iban[3] + iban[2] + iban[4:]  # check digits transposed
    if swapped != iban:
        assert not iban_valid(swapped)


def test_iban_rejects_wrong_length_and_country() -> None:
    assert not iban_valid("DE89 3704 0044 0532 0130 000")
    assert not iban_valid("ZZ89 3704 0044 0532 0130 00")
    assert not iban_valid("")


def test_iban_digits_are_not_reported_as_phone() -> None:
    assert find_pii("MT84 MALT 0110 0001 2345 MTLC AST0 01S") == {"iban"}


def test_iban_after_other_numbers_is_found() -> None:
    text = "order 1234567, then twenty chars: DE89370400440532013000"
    assert "iban" in find_pii(text)


def test_iter_pii_spans() -> None:
    text = "mail jane.roe@proton.me or call 415-555-2671"
    spans = {(d.kind, text[d.start : d.end]) for d in iter_pii(text)}
    assert spans == {("email", "jane.roe@proton.me"), ("phone", "415-555-2671")}


# ============================================================================ classifier


def test_offensive_ranks_obvious_cases() -> None:
    classifier = OffensiveClassifier()
    offensive, neutral = classifier.predict(
        [
            "You are a fucking idiot and a worthless piece of shit.",
            "The weather is lovely today; let's have a picnic in the park.",
        ]
    )
    assert offensive > 0.9
    assert neutral < 0.5


def test_offensive_fast_path_equals_predict_prob() -> None:
    from profanity_check import predict_prob
    from profanity_check import profanity_check as module

    classifier = OffensiveClassifier(chunk_chars=100_000, max_chars=100_000)  # no chunking
    assert classifier.fast_path
    rng = random.Random(5)
    vocabulary = sorted(module.vectorizer.vocabulary_)
    texts = ["", "a", "ÄÖÜ straße ﬁ İstanbul 😀", "shit " * 50]
    texts += [
        " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 60))) for _ in range(500)
    ]
    ours = np.asarray(classifier.predict(texts))
    theirs = np.asarray(predict_prob(texts))
    assert np.array_equal(ours, theirs)


def test_offensive_long_text_takes_the_worst_chunk() -> None:
    filler = "We planted tomatoes and basil in the garden this spring. " * 200
    insult = "You are a fucking idiot and a worthless piece of shit. "
    # Scored whole, the neutral text dilutes the insult away (bag of words, l2 norm) ...
    whole = OffensiveClassifier(chunk_chars=100_000, max_chars=100_000)
    (diluted,) = whole.predict([filler + insult + filler])
    # ... scored by sentence-sized chunks, the worst chunk counts.
    (chunked,) = OffensiveClassifier().predict([filler + insult + filler])
    assert chunked > 0.9 > 0.5 > diluted


def test_short_texts_are_scored_whole() -> None:
    from profanity_check import predict_prob

    text = "Damn. That was close, but we made it home before the storm."
    assert len(text) <= 150
    assert OffensiveClassifier().predict([text]) == [float(predict_prob([text])[0])]


def test_chunks_cover_the_text_and_respect_the_size() -> None:
    from moderation.providers.local._offensive import _chunks

    text = "Hello there. " * 10 + "x" * 1000 + " end.\nline two\n\n  line three. " + " " * 500
    chunks = _chunks(text, 150)
    assert max(map(len, chunks)) <= 150
    assert "".join(chunks).split() == text.split() or "".join("".join(chunks).split()) == "".join(
        text.split()
    )


def test_offensive_classifier_validates_options() -> None:
    with pytest.raises(ValueError, match="chunk_chars"):
        OffensiveClassifier(chunk_chars=10)
    with pytest.raises(ValueError, match="max_chars"):
        OffensiveClassifier(chunk_chars=1000, max_chars=500)
    assert OffensiveClassifier().predict([]) == []


# ============================================================================ moderator


def seg(text: str, role: str = "assistant", path: str = "messages[1].content") -> Segment:
    return Segment(path=path, role=role, text=text)


def test_moderator_satisfies_protocol() -> None:
    moderator = LocalModerator()
    assert isinstance(moderator, Moderator)
    assert moderator.name == "local"
    assert moderator.model == "local-v1"


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="local-v9"):
        LocalModerator(model="local-v9")


async def test_moderate_is_aligned_with_input() -> None:
    key = "gh" + "p_" + rnd(36)
    segments = [
        seg("Have a nice day."),
        Segment(
            path="messages[1].content[1].image_url",
            role="user",
            kind="image",
            image_url="https://x/y.png",
        ),
        seg(f"my token is {key}", role="user"),
        seg("You are a fucking idiot."),
        seg("mail me: jane.roe@proton.me"),
        seg(""),
    ]
    moderator = LocalModerator()
    results = await moderator.moderate(segments)
    assert len(results) == len(segments)
    clean, image, secret, offensive, email, empty = results
    assert isinstance(clean, SegmentModeration)
    assert set(clean.scores) == {OFFENSIVE} and clean.flagged == ()
    assert (clean.provider, clean.model) == ("local", "local-v1")
    assert isinstance(image, SegmentError)
    assert image.code == "unsupported_input"
    assert (image.provider, image.model) == ("local", "local-v1")
    assert isinstance(secret, SegmentModeration)
    assert secret.scores["secret/github_token"] == 1.0
    assert secret.flagged == ("secret/github_token",)
    assert isinstance(offensive, SegmentModeration)
    assert offensive.scores[OFFENSIVE] >= 0.5 and offensive.flagged == (OFFENSIVE,)
    assert isinstance(email, SegmentModeration)
    assert email.flagged == ("pii/email",) and email.scores["pii/email"] == 1.0
    assert isinstance(empty, SegmentModeration) and empty.flagged == ()
    for result in results:
        if isinstance(result, SegmentModeration):
            assert set(result.scores) <= CATEGORIES
            assert result.scores[OFFENSIVE] == round(result.scores[OFFENSIVE], 4)
    assert moderator.stats.calls == 1


async def test_moderate_is_deterministic() -> None:
    texts = [p[1] for p in PII_POSITIVES] + [p[1] for p in SECRET_POSITIVES] + SECRET_NEGATIVES
    segments = [seg(t) for t in texts]
    first = await LocalModerator().moderate(segments)
    again = LocalModerator(cache_size=0)
    second = await again.moderate(segments)
    third = await again.moderate(segments)
    dump = [[r.model_dump() for r in rs] for rs in (first, second, third)]
    assert dump[0] == dump[1] == dump[2]
    assert again.stats.calls == 2


async def test_flagged_is_sorted_detections_after_offensive() -> None:
    text = (
        "You fucking idiot, my card is "
        + group(VISA, (4, 4, 4, 4))
        + " and AKIA"
        + "IOSFODNN7EXAMPLE"
    )
    (result,) = await LocalModerator().moderate([seg(text)])
    assert isinstance(result, SegmentModeration)
    assert result.flagged == (OFFENSIVE, "pii/card_number", "secret/aws_access_key")


async def test_families_can_be_switched_off() -> None:
    text = "jane.roe@proton.me AKIA" + "IOSFODNN7EXAMPLE"
    (only_offensive,) = await LocalModerator(secrets=False, pii=False).moderate([seg(text)])
    (no_offensive,) = await LocalModerator(offensive=False).moderate([seg(text)])
    assert isinstance(only_offensive, SegmentModeration) and set(only_offensive.scores) == {
        OFFENSIVE
    }
    assert isinstance(no_offensive, SegmentModeration)
    assert set(no_offensive.scores) == {"pii/email", "secret/aws_access_key"}


async def test_empty_call_is_not_a_request() -> None:
    moderator = LocalModerator()
    assert await moderator.moderate([]) == []
    assert moderator.stats.calls == 0
    await moderator.aclose()


async def test_repeated_texts_share_one_result() -> None:
    moderator = LocalModerator(cache_size=2)
    system = seg("You are a helpful assistant.", role="system")
    first = await moderator.moderate([system, seg("a"), system])
    assert first[0] is first[2]
    second = await moderator.moderate([system])
    assert second[0] is first[0]  # from the cache
    await moderator.moderate([seg("b"), seg("c")])  # evicts the system prompt
    third = await moderator.moderate([system])
    assert third[0] == first[0] and third[0] is not first[0]


async def test_one_megabyte_segment() -> None:
    sentence = "We planted tomatoes and basil in the garden this spring, and it rained. "
    text = (
        sentence * (1_000_000 // len(sentence)) + "Contact jane.roe@proton.me. You fucking idiot."
    )
    moderator = LocalModerator()
    moderator.load()
    start = time.perf_counter()
    (result,) = await moderator.moderate([seg(text, role="text", path="text")])
    elapsed = time.perf_counter() - start
    assert isinstance(result, SegmentModeration)
    assert "pii/email" in result.flagged
    assert result.scores[OFFENSIVE] > 0.9  # the last chunk counts
    # Not a benchmark: a generous bound that only a quadratic path would exceed.
    assert elapsed < 10


@pytest.mark.parametrize(
    "text",
    [
        "@" * 200_000,
        "a." * 100_000 + "@",
        ("x@" + "a." * 200) * 200,
        "1 " * 200_000,
        "1-" * 200_000,
        "DE89 " * 100_000,
        "A1" * 200_000,
        "-----BEGIN PRIVATE KEY-----" * 10_000,
        "eyJ" + "A" * 300_000,
        "api_key=" * 50_000,
        "sk-" * 100_000,
        "\u00e9" * 500_000,
        " " * 1_000_000,
        ". " * 500_000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_pathological_inputs_stay_linear(text: str) -> None:
    start = time.perf_counter()
    find_secrets(text)
    find_pii(text)
    redact(text)
    OffensiveClassifier().predict([text])
    assert time.perf_counter() - start < 10


_KEYISH = st.text(alphabet=ALNUM + "+/=_-.:@ \n()", max_size=400)
_NUMERIC = st.text(alphabet="0123456789 -./()+A", max_size=200)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=600), _KEYISH, _NUMERIC))
def test_detectors_never_raise(text: str) -> None:
    secrets = find_secrets(text)
    pii = find_pii(text)
    assert secrets <= SECRET_KINDS
    assert pii <= PII_KINDS
    for detection in iter_secrets(text):
        assert 0 <= detection.start < detection.end <= len(text)
    for detection in iter_pii(text):
        assert 0 <= detection.start < detection.end <= len(text)
    assert find_secrets(redact(text)) == set()


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.text(max_size=50),
    suffix=st.text(max_size=50),
    index=st.integers(min_value=0, max_value=len(SECRET_POSITIVES) - 1),
)
def test_secrets_found_in_any_context(prefix: str, suffix: str, index: int) -> None:
    kind, text = SECRET_POSITIVES[index]
    assert kind in find_secrets(prefix + " " + text + " " + suffix)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
async def test_moderate_aligned_on_arbitrary_text(texts: list[str]) -> None:
    results = await LocalModerator(cache_size=0).moderate([seg(t) for t in texts])
    assert len(results) == len(texts)
    assert all(isinstance(r, SegmentModeration) and OFFENSIVE in r.scores for r in results)
