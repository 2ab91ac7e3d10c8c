"""The shared retry loop, driven through the real SDK against the fake server."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_openai import ApiError, FakeConfig, FakeOpenAI, Route
from hypothesis import given
from hypothesis import strategies as st
from openai import AsyncOpenAI, DefaultAioHttpClient

from moderation.errors import ProviderFatalError
from moderation.models import Segment, SegmentError
from moderation.policy import ModerationSpec
from moderation.providers import ProviderStats
from moderation.providers.openai import (
    Failure,
    MalformedResponse,
    OpenAIModerator,
    RateLimiter,
    RetryLoop,
    RetryPolicy,
)


class Sleeps:
    """Records every backoff and sleeps a token amount, so tests stay fast."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(
        api_key="sk-test-secret-key",
        base_url=fake.base_url,
        http_client=DefaultAioHttpClient(),
        max_retries=0,
        timeout=0.3,
    )
    yield sdk
    await sdk.close()


def make_loop(sleeps: Sleeps, *, attempts: int = 4) -> RetryLoop:
    return RetryLoop(
        limiter=RateLimiter(),
        stats=ProviderStats(),
        concurrency=4,
        policy=RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.05),
        sleep=sleeps,
        rng=random.Random(7),
    )


async def moderate(loop: RetryLoop, client: AsyncOpenAI, text: str = "hello") -> Any:
    async def send() -> Any:
        return await client.moderations.with_raw_response.create(input=[text], model="m")

    def parse(raw: Any) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(raw.content)
        except ValueError:
            raise MalformedResponse("not JSON") from None
        if len(data["results"]) != 1:
            raise MalformedResponse("wrong count")
        return data

    return await loop.call(send, parse, tokens=10)


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_full_jitter_under_a_capped_exponential(retry: int, seed: int) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    delay = policy.backoff(retry, random.Random(seed))
    assert 0.0 <= delay <= min(8.0, 0.5 * 2 ** (retry - 1))


def test_policy_validates() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    "fault", ["500", "503", "408", "409", "429", "drop", "truncated", "wrong_count"]
)
async def test_transient_faults_are_retried(
    fake: FakeOpenAI, client: AsyncOpenAI, fault: str
) -> None:
    sleeps = Sleeps()
    loop = make_loop(sleeps)
    fake.script(fault, fault)
    result = await moderate(loop, client)
    assert isinstance(result, dict)
    assert fake.count() == 3
    assert len(sleeps.delays) == 2
    assert (loop.stats.requests, loop.stats.retries) == (3, 2)
    assert loop.stats.rate_limited == (2 if fault == "429" else 0)


async def test_timeout_is_retried(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script("timeout")
    result = await moderate(make_loop(Sleeps()), client)
    assert isinstance(result, dict)
    assert fake.count() == 2


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("500", "server_error"),
        ("503", "server_error"),
        ("429", "rate_limited"),
        ("drop", "connection_error"),
        ("truncated", "bad_response"),
        ("wrong_count", "bad_response"),
    ],
)
async def test_attempts_are_bounded(
    fake: FakeOpenAI, client: AsyncOpenAI, fault: str, code: str
) -> None:
    fake.config.fault_rate = 1.0
    fake.config.faults = (fault,)
    loop = make_loop(Sleeps(), attempts=3)
    result = await moderate(loop, client)
    assert isinstance(result, Failure)
    assert (result.code, result.attempts, result.retryable) == (code, 3, True)
    assert fake.count() == 3


async def test_persistent_timeout_gives_a_timeout_failure(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.script("timeout", "timeout")
    result = await moderate(make_loop(Sleeps(), attempts=2), client)
    assert isinstance(result, Failure)
    assert result.code == "timeout"


@pytest.mark.parametrize(
    ("fault", "code"),
    [("400", "bad_request"), ("404", "not_found"), ("422", "unprocessable")],
)
async def test_client_errors_are_not_retried(
    fake: FakeOpenAI, client: AsyncOpenAI, fault: str, code: str
) -> None:
    fake.script(fault)
    sleeps = Sleeps()
    loop = make_loop(sleeps)
    result = await moderate(loop, client)
    assert isinstance(result, Failure)
    assert (result.code, result.retryable, result.attempts) == (code, False, 1)
    assert result.message  # the API's own message, for the quarantine reason
    assert fake.count() == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("fault", ["401", "403", "quota"])
async def test_auth_errors_stop_at_once(fake: FakeOpenAI, client: AsyncOpenAI, fault: str) -> None:
    fake.script(fault)
    loop = make_loop(Sleeps())
    with pytest.raises(ProviderFatalError) as caught:
        await moderate(loop, client)
    assert "sk-test-secret-key" not in str(caught.value)
    assert fake.count() == 1
    # Every later call fails the same way without sending anything.
    with pytest.raises(ProviderFatalError):
        await moderate(loop, client)
    assert fake.count() == 1


async def test_wrong_key_message_is_clear_and_leaks_nothing(client: AsyncOpenAI) -> None:
    async with FakeOpenAI(FakeConfig(api_key="sk-the-right-one")) as other:
        sdk = client.with_options(base_url=other.base_url)
        with pytest.raises(ProviderFatalError, match="OPENAI_API_KEY") as caught:
            await moderate(make_loop(Sleeps()), sdk)
    assert "secret" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_retry_after_ms_is_honoured(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.config.fault_retry_after_ms = 250
    fake.script("429")
    sleeps = Sleeps()
    loop = make_loop(sleeps)
    result = await moderate(loop, client)
    assert isinstance(result, dict)
    assert sleeps.delays[0] >= 0.25
    assert loop.limiter.rate_limited == 1


async def test_503_retry_after_is_honoured_but_capped(client: AsyncOpenAI) -> None:
    async with FakeOpenAI() as fake:
        fake.script("503")
        sdk = client.with_options(base_url=fake.base_url)
        sleeps = Sleeps()
        loop = make_loop(sleeps)
        loop.policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_retry_after=0.1)
        # The fake sends no retry-after on 503: zero base delay means no wait at all.
        assert isinstance(await moderate(loop, sdk), dict)
        assert sleeps.delays == [0.0]


async def test_records_keep_no_authorization_value(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    await moderate(make_loop(Sleeps()), client)
    (recorded,) = fake.requests
    assert recorded.headers["authorization"] == "<redacted>"
    assert "sk-test-secret-key" not in repr(recorded)
    assert recorded.body == {"input": ["hello"], "model": "m"}


async def test_provider_messages_are_redacted_before_they_reach_an_output(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """A failed request's message goes into quarantine.jsonl: masked OpenAI keys and
    credentials a proxy echoes are taken out by the project's one redactor."""
    message = (
        "Incorrect input for sk-proj-****************abcd. Upstream said"
        " Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    )

    def refuse(body: Any) -> dict[str, Any]:
        raise ApiError(422, message)

    fake.add_route("/v1/moderations", Route(refuse, lambda body, count: 1))
    (result,) = await OpenAIModerator(
        ModerationSpec(provider="openai"), client, retry_policy=RetryPolicy(max_attempts=1)
    ).moderate([Segment(path="text", role="text", text="hello")])
    assert isinstance(result, SegmentError) and result.code == "unprocessable"
    assert "Incorrect input for" in result.message
    assert "abcd" not in result.message and "eyJhbGciOi" not in result.message
