"""The OpenAI rate limiter: header parsing, bucket pacing, learning, AIMD.

Time is virtual: the limiter gets a clock and a sleep that advances it, so these tests
check exact waits without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from fake_openai import format_go_duration
from hypothesis import given
from hypothesis import strategies as st

from moderation.providers.openai import RateLimiter, parse_go_duration, parse_retry_after


class VirtualTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(vt: VirtualTime, **kwargs: float) -> RateLimiter:
    return RateLimiter(clock=vt.clock, sleep=vt.sleep, **kwargs)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1m30.5s", 90.5),
        ("1h2m3s", 3723.0),
        ("500us", 0.0005),
        ("1.5µs", 1.5e-6),
        ("20ns", 2e-8),
        ("0s", 0.0),
        ("0.5", 0.5),
        ("2", 2.0),
        (" 3s ", 3.0),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1s", "1x", "s", "1s2", "m1", "1 s", "nan", "-3"])
def test_parse_go_duration_rejects(text: str) -> None:
    assert parse_go_duration(text) is None


@given(st.floats(min_value=0, max_value=200_000, allow_nan=False))
def test_go_duration_round_trip(seconds: float) -> None:
    parsed = parse_go_duration(format_go_duration(seconds))
    assert parsed is not None
    assert parsed == pytest.approx(seconds, abs=1e-3)


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "1.5"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "not a date"}) is None


async def test_requests_bucket_paces_after_a_short_burst() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=60, burst_seconds=2.0)
    start = vt.now
    for _ in range(2):
        await rl.acquire(1)
    assert vt.now == start  # the burst: two seconds' worth, not a minute's
    for _ in range(5):
        await rl.acquire(1)
    assert vt.now - start == pytest.approx(5.0)  # then one a second


async def test_tokens_bucket_charges_estimates_and_allows_debt() -> None:
    vt = VirtualTime()
    rl = limiter(vt, tokens_per_minute=600, burst_seconds=2.0)  # 10/s, holds 20
    await rl.acquire(15)
    assert vt.slept == []
    await rl.acquire(15)  # 5 left, needs 10 more
    assert vt.slept == [pytest.approx(1.0)]
    vt.slept.clear()
    await rl.acquire(100)  # larger than the bucket: waits for a full bucket ...
    assert sum(vt.slept) == pytest.approx(2.0)
    vt.slept.clear()
    await rl.acquire(1)  # ... and the debt (80) delays the next caller
    assert sum(vt.slept) == pytest.approx(8.1)


async def test_callers_are_served_in_order() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=60, burst_seconds=1.0)
    order: list[int] = []

    async def take(i: int) -> None:
        await rl.acquire(1)
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(6)))
    assert order == list(range(6))
    assert vt.now - 1000.0 == pytest.approx(5.0)


async def test_limits_are_learned_from_headers_and_capped_by_the_policy() -> None:
    vt = VirtualTime()
    assert limiter(vt).tokens_per_minute is None
    rl = limiter(vt)
    rl.observe({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000"})
    assert (rl.requests_per_minute, rl.tokens_per_minute) == (500, 30000)
    capped = limiter(vt, tokens_per_minute=10_000)
    capped.observe({"x-ratelimit-limit-tokens": "30000"})
    assert capped.tokens_per_minute == 10_000


async def test_remaining_header_pulls_the_bucket_down() -> None:
    vt = VirtualTime()
    rl = limiter(vt, tokens_per_minute=6000, burst_seconds=2.0)  # 100/s, holds 200
    sent = vt.now
    vt.now += 0.5
    # Another process used the key: the server has only 10 left (plus 0.5 s of refill).
    rl.observe({"x-ratelimit-remaining-tokens": "10"}, sent_at=sent)
    await rl.acquire(100)
    assert sum(vt.slept) == pytest.approx((100 - 60) / 100)


async def test_first_request_probes_when_no_limit_is_known() -> None:
    vt = VirtualTime()
    rl = limiter(vt)
    await rl.acquire(10)  # the probe
    second = asyncio.create_task(rl.acquire(10))
    await asyncio.sleep(0.01)
    assert not second.done()  # waits for the probe's headers
    rl.observe(None)  # the probe got no answer: the next caller probes
    await asyncio.wait_for(second, 1)
    third = asyncio.create_task(rl.acquire(10))
    await asyncio.sleep(0.01)
    assert not third.done()
    rl.observe({"x-ratelimit-limit-requests": "60"})
    await asyncio.wait_for(third, 1)
    assert rl.requests_per_minute == 60


async def test_429_pauses_everyone_and_halves_the_rate_then_recovers() -> None:
    vt = VirtualTime()
    rl = limiter(
        vt,
        tokens_per_minute=60_000,
        recovery_per_second=0.05,
        decrease_cooldown=1.0,
        burst_seconds=0.25,  # already at its floor: a 429 cuts the rate
    )
    assert rl.on_rate_limited(0.5) == 0.5
    assert rl.factor == 0.5
    assert rl.tokens_per_minute == 30_000
    assert rl.blocked_until == vt.now + 0.5
    # The other in-flight requests come back 429 too: the same congestion event.
    rl.on_rate_limited(0.5)
    assert rl.factor == 0.5
    assert rl.decreases == 1
    start = vt.now
    await rl.acquire(1)
    assert vt.now - start >= 0.5  # retry-after honoured by every caller
    vt.now += 1.0
    rl.on_rate_limited(None)  # after the cooldown: a new event, the default pause
    assert rl.factor == 0.25
    assert rl.decreases == 2
    vt.now = rl.blocked_until + 10.0
    rl.on_success()  # additive increase: 0.05 a second
    assert rl.factor == pytest.approx(0.75)
    vt.now += 60.0
    rl.on_success()
    assert rl.factor == 1.0
    assert rl.tokens_per_minute == 60_000


async def test_factor_has_a_floor() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=600, min_factor=0.1, decrease_cooldown=0.0)
    for _ in range(20):
        rl.on_rate_limited(0.0)
        vt.now += 0.001
    assert rl.factor == 0.1


async def test_429_without_retry_after_waits_for_the_exhausted_limit_reset() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=600)
    rl.observe(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1m30.5s",
            "x-ratelimit-remaining-tokens": "5000",
            "x-ratelimit-reset-tokens": "12ms",
        },
        sent_at=vt.now,
    )
    assert rl.on_rate_limited(None) == 90.5


async def test_429_drains_the_burst() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=60, burst_seconds=5.0, min_burst_seconds=5.0)
    rl.on_rate_limited(0.0)  # full bucket before; factor 0.5: one request per 2 s now
    start = vt.now
    await rl.acquire(1)
    await rl.acquire(1)
    assert vt.now - start == pytest.approx(4.0)


async def test_a_cancelled_waiter_leaves_no_probe_behind() -> None:
    vt = VirtualTime()
    never = asyncio.Event()

    async def stuck(_: float) -> None:
        await never.wait()

    rl = RateLimiter(clock=vt.clock, sleep=stuck)
    rl.on_rate_limited(5.0)
    waiter = asyncio.create_task(rl.acquire(1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    vt.now += 10.0
    await asyncio.wait_for(rl.acquire(1), 1)  # the probe, not stuck behind a dead one


async def test_pause_is_capped() -> None:
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=60, max_pause=30.0)
    assert rl.on_rate_limited(3600.0) == 30.0


async def test_first_429s_halve_the_burst_then_the_rate() -> None:
    """A server that enforces its per-minute limit over a short window rejects a burst
    it cannot hold; the cure is a smaller burst, not half the rate."""
    vt = VirtualTime()
    rl = limiter(vt, requests_per_minute=600, burst_seconds=2.0, decrease_cooldown=0.0)
    assert rl.burst_seconds == 2.0
    for expected in (1.0, 0.5, 0.25):
        rl.on_rate_limited(0.004)
        vt.now += 0.01
        assert (rl.burst_seconds, rl.factor) == (expected, 1.0)
    assert (rl.burst_cuts, rl.decreases) == (3, 0)
    rl.on_rate_limited(0.004)  # the burst is at its floor: now the rate is the problem
    assert (rl.burst_seconds, rl.factor, rl.decreases) == (0.25, 0.5, 1)
    # A quarter second of 300 RPM holds 1.25 requests: after a pause one goes at once
    # (0.25 left), the next waits 0.15 s for the rest of its request, then one every 0.2 s.
    vt.now += 10.0
    start = vt.now
    for _ in range(3):
        await rl.acquire(1)
    assert vt.now - start == pytest.approx(0.35)


def test_burst_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_burst_seconds"):
        RateLimiter(burst_seconds=0.1, min_burst_seconds=0.25)
    with pytest.raises(ValueError, match="min_burst_seconds"):
        RateLimiter(burst_seconds=0.0)
