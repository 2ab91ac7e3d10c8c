"""Shared fixtures. Tests never reach the internet: the OpenAI side runs against the
fake server in ``fake_openai`` on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
FIXTURES = REPO / "fixtures"

# The helpers in this folder (datagen, fake_openai) are imported as top-level modules.
sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def _no_real_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up a developer's real key or endpoint by accident."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[object]:
    """A fake OpenAI-compatible server on 127.0.0.1 (a timeout fault sleeps 1 s)."""
    from fake_openai import FakeConfig, FakeOpenAI

    async with FakeOpenAI(FakeConfig(timeout_sleep=1.0)) as server:
        yield server


@pytest.fixture
async def client(fake: object) -> AsyncIterator[object]:
    """The real SDK client pointed at ``fake``, with its own retries on: a provider must
    switch them off itself."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    sdk = AsyncOpenAI(
        api_key="sk-test-key",
        base_url=fake.base_url,  # type: ignore[attr-defined]
        http_client=DefaultAioHttpClient(),
        max_retries=3,
        timeout=5.0,
    )
    yield sdk
    await sdk.close()


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def pytest_report_header() -> str:
    return f"moderation tests; CI={os.environ.get('CI', '')!r}"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main()`` configures logging for the whole process (``--log-level``); put it back,
    so one test at debug level does not make the next ones log at debug."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("openai", "httpx", "httpx2", "aiohttp")
    levels = {name: logging.getLogger(name).level for name in names}
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    structlog.configure(**config)
