"""Redaction of credentials (and request bodies) from log events and log records."""

from __future__ import annotations

import logging
import string
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moderation._redact import (
    REDACTED,
    RedactingFilter,
    RedactSecrets,
    install_http_log_filters,
    is_sensitive_field,
    redact_text,
    redact_value,
)

KEY = "sk-proj-" + "Zq3vR8tLm2Xw9PkB4nHs7JdF1cYg6UaE"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"using key {KEY} now", KEY),
        ("sk-canary-4f9a2b7c1d8e", "sk-canary-4f9a2b7c1d8e"),
        ("legacy sk-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY2z", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY2z"),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("authorization=bearer xyz123456789", "xyz123456789"),
        ("Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("https://alice:hunter2pw@example.com/v1", "hunter2pw"),
        ("POST https://h/v1/x?api-key=abcd1234&api-version=2024", "abcd1234"),
        ("{'api_key': 'zz-top-secret', 'model': 'm'}", "zz-top-secret"),
        ('{"client_secret": "c3cr3t-value"}', "c3cr3t-value"),
        ("password: correct-horse", "correct-horse"),
        ("AWS AKIAIOSFODNN7EXAMPLE key", "AKIAIOSFODNN7EXAMPLE"),
        (
            "tok ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        ),
        ("hook xoxb-123456789012-abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
            "-----END PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        ),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ],
)
def test_credentials_are_redacted_by_value(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=300 input_tokens=12 tokens: 5",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "path=messages[3].content[0].text role=assistant",
        "scikit uses sk-learn; task-12345678; disk-usage",
        "Basic information about the run",
        "moderator_failed provider=openai error=RuntimeError",
    ],
)
def test_ordinary_log_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("api_key", True),
        ("OPENAI_API_KEY", True),
        ("X-Api-Key", True),
        ("apiKey", True),
        ("Authorization", True),
        ("proxy-authorization", True),
        ("password", True),
        ("db_password", True),
        ("client_secret", True),
        ("access_token", True),
        ("refresh_token", True),
        ("token", True),
        ("Cookie", True),
        ("set-cookie", True),
        ("private_key", True),
        ("tokens", False),
        ("max_output_tokens", False),
        ("input_tokens", False),
        ("token_method", False),
        ("key", False),
        ("hash", False),
        (3, False),
    ],
)
def test_sensitive_field_names(name: object, sensitive: bool) -> None:
    assert is_sensitive_field(name) is sensitive


def test_values_are_redacted_recursively_by_name_and_pattern() -> None:
    value = {
        "headers": {"Authorization": "anything", "X-Api-Key": None, "Accept": "json"},
        "nested": [({"password": "pw", "note": f"key {KEY}"},), "plain"],
        "tokens": {"total": 12},
        "api_key": "",
        "raw": f"{KEY}".encode(),
    }
    redacted = redact_value(value)
    assert redacted == {
        "headers": {"Authorization": REDACTED, "X-Api-Key": None, "Accept": "json"},
        "nested": [({"password": REDACTED, "note": f"key {REDACTED}"},), "plain"],
        "tokens": {"total": 12},
        "api_key": "",
        "raw": REDACTED,
    }
    deep: object = KEY
    for _ in range(200):
        deep = [deep]
    assert KEY not in repr(redact_value(deep))


def test_objects_are_redacted_through_their_text() -> None:
    error = ValueError(f"bad key {KEY}")
    assert redact_value(error) == f"bad key {REDACTED}"
    plain = ValueError("nothing here")
    assert redact_value(plain) is plain


def test_structlog_processor_redacts_every_field() -> None:
    event = RedactSecrets()(
        None,
        "info",
        {"event": f"calling with {KEY}", "api_key": KEY, "count": 3, "url": "http://u:p4ssw0rd@h"},
    )
    assert event == {
        "event": f"calling with {REDACTED}",
        "api_key": REDACTED,
        "count": 3,
        "url": f"http://u:{REDACTED}@h",
    }


def _record(name: str, msg: str, args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(
        name,
        logging.DEBUG,
        __file__,
        1,
        msg,
        args,  # type: ignore[arg-type]
        exc_info,  # type: ignore[arg-type]
    )


def test_filter_drops_request_bodies_and_credentials_of_sdk_records() -> None:
    # The shape of the OpenAI SDK 1.x "Request options" debug record.
    options = {
        "method": "post",
        "url": "/moderations",
        "headers": {"Authorization": f"Bearer {KEY}", "api-key": KEY},
        "json_data": {"input": ["the canary sentence of an example"], "model": "m"},
    }
    record = _record("openai._base_client", "Request options: %s", (options,))
    assert RedactingFilter().filter(record) is True
    message = record.getMessage()
    assert KEY not in message and "canary sentence" not in message
    assert "json_data" in message and "bytes omitted>" in message
    assert "/moderations" in message


def test_filter_redacts_tuple_args_and_tracebacks() -> None:
    try:
        raise ConnectionError(f"refused for {KEY}")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = _record("httpx2", "HTTP Request: %s %s", ("POST", f"https://h/?key={KEY}"), exc_info)
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert KEY not in formatted
    assert "HTTP Request: POST" in formatted and "ConnectionError" in formatted


def test_http_loggers_and_their_children_get_the_filter() -> None:
    child = logging.getLogger("aiohttp.client.redact-test")
    install_http_log_filters()
    install_http_log_filters()
    for name in ("openai", "httpx", "httpx2", "aiohttp", "aiohttp.client.redact-test"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, RedactingFilter) for f in filters) == 1, name
    assert child.filters


_KEY_CHARS = string.ascii_letters + string.digits


@settings(max_examples=150, deadline=None)
@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    body=st.text(alphabet=_KEY_CHARS, min_size=20, max_size=60),
    prefix=st.sampled_from(["sk-", "sk-proj-", "Bearer ", "api_key=", "Authorization: "]),
    gap=st.sampled_from([" ", "\n", "\t", "'", '"', ", "]),
)
def test_a_key_never_survives_whatever_surrounds_it(
    before: str, after: str, body: str, prefix: str, gap: str
) -> None:
    assume(body not in before + gap + after)
    text = before + gap + prefix + body + gap + after
    assert body not in redact_text(text)
