"""Client-side rate limiting for one OpenAI model: requests and tokens per minute.

Two token buckets (requests, tokens) refill continuously at the model's per-minute limit
and hold only a short burst (``burst_seconds`` of the limit, not a minute's worth), so
the client sends at a steady pace instead of spending a minute's quota in the first
second and then meeting a wall of 429s.

The limits come from the policy and are refined from every response's ``x-ratelimit-*``
headers: ``limit-*`` sets the rate (never above what the policy allows), ``remaining-*``
pulls the buckets down when the server has seen more use than we have (another process
sharing the key), ``reset-*`` (Go durations such as ``6m0s``) says how long an exhausted
limit needs. A 429 pauses every caller for the server's ``retry-after``. The first 429s
halve the burst, not the rate: a server may enforce its per-minute limit over much
shorter windows (OpenAI: "60,000 requests/minute may be enforced as 1,000
requests/second"), and a burst that window cannot hold draws 429s at a rate it can.
Once the burst is at its floor, a 429 halves the effective rate (multiplicative
decrease); successes then restore it gradually (additive increase).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

__all__ = ["RateLimiter", "parse_go_duration", "parse_retry_after"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go prints the micro sign
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:ns|us|µs|μs|ms|s|m|h)"
_DURATION = re.compile(rf"(?:{_NUMBER}{_UNIT})+")
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_EPSILON = 1e-6
"""Waits shorter than this (seconds) are rounding noise, not a reason to sleep."""


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go duration string (``1s``, ``6m0s``, ``12ms``, ``1m30.5s``).

    A bare number is read as seconds (some compatible servers send that). Returns
    ``None`` for anything else, including negative durations.
    """
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) and number >= 0 else None
    text = text.removeprefix("+")
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``retry-after``
    (seconds or an HTTP date). ``None`` when neither is present and valid."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            pass
        else:
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        return max(0.0, when.timestamp() - current)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class _Bucket:
    """A token bucket that may go into debt: a request larger than the burst waits for
    a full bucket, then pays the rest by delaying whoever comes next."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + self.rate * (now - self.stamp))
            self.stamp = now

    def delay(self, amount: float, now: float) -> float:
        self.refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def retune(self, rate: float, capacity: float, now: float) -> None:
        self.refill(now)
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


class RateLimiter:
    """Paces requests to one model under its requests- and tokens-per-minute limits.

    Share one instance among everything that calls the same model with the same key.
    Callers ``await acquire(tokens)`` before each HTTP attempt and report what came back
    with :meth:`observe` (every attempt, also failed ones), then :meth:`on_success` or
    :meth:`on_rate_limited`. :class:`~moderation.providers.openai._retry.RetryLoop`
    does all of that.

    When no limit is configured, the first request goes alone and the others wait for
    its response headers, so the client learns the limits before it sends a burst.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_seconds: float = 2.0,
        min_burst_seconds: float = 0.25,
        decrease_factor: float = 0.5,
        min_factor: float = 0.05,
        recovery_per_second: float = 0.05,
        decrease_cooldown: float = 1.0,
        default_pause: float = 1.0,
        max_pause: float = 120.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < min_burst_seconds <= burst_seconds:
            raise ValueError("need 0 < min_burst_seconds <= burst_seconds")
        if not 0 < decrease_factor < 1 or not 0 < min_factor <= 1:
            raise ValueError("decrease_factor must be in (0, 1) and min_factor in (0, 1]")
        self._configured_rpm = requests_per_minute
        self._configured_tpm = tokens_per_minute
        self._base_rpm = requests_per_minute
        self._base_tpm = tokens_per_minute
        self._burst = burst_seconds
        self._min_burst = min_burst_seconds
        self._decrease = decrease_factor
        self._min_factor = min_factor
        self._recovery = recovery_per_second
        self._cooldown = decrease_cooldown
        self._default_pause = default_pause
        self._max_pause = max_pause
        self._clock = clock
        self._sleep = sleep
        self._factor = 1.0
        self._blocked_until = 0.0
        self._quiet_until = 0.0
        self._last_increase = clock()
        self._exhausted_reset: float | None = None
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._lock = asyncio.Lock()
        self._learned = requests_per_minute is not None or tokens_per_minute is not None
        self._probing = False
        self._probe_done = asyncio.Event()
        self.rate_limited = 0
        """429s reported to this limiter."""
        self.decreases = 0
        """Times the effective rate was cut (at most one per ``decrease_cooldown``)."""
        self.burst_cuts = 0
        """Times the burst was halved instead (the first 429s)."""
        self._retune(self._clock())

    def now(self) -> float:
        """This limiter's clock (what ``observe(sent_at=...)`` expects)."""
        return self._clock()

    @property
    def factor(self) -> float:
        """Share of the known limits currently used (1.0 until a 429, then recovering)."""
        return self._factor

    @property
    def requests_per_minute(self) -> float | None:
        """The effective requests-per-minute pace, or ``None`` when unknown."""
        return None if self._base_rpm is None else self._base_rpm * self._factor

    @property
    def tokens_per_minute(self) -> float | None:
        """The effective tokens-per-minute pace, or ``None`` when unknown."""
        return None if self._base_tpm is None else self._base_tpm * self._factor

    @property
    def burst_seconds(self) -> float:
        """Seconds of the limit the buckets hold: the most sent at once."""
        return self._burst

    @property
    def blocked_until(self) -> float:
        """Clock time before which no request is sent (a 429's ``retry-after``)."""
        return self._blocked_until

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` estimated tokens may be sent, and
        charge it. Callers are served first come, first served."""
        async with self._lock:
            while not self._learned and self._probing:
                await self._probe_done.wait()
            while True:
                now = self._clock()
                wait = self._delay(tokens, now)
                if wait <= _EPSILON:
                    break
                await self._sleep(wait)
            # Set only now: a caller cancelled while waiting must not leave a probe behind.
            self._probing = not self._learned
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens

    def observe(self, headers: Mapping[str, str] | None, *, sent_at: float | None = None) -> None:
        """Learn from one attempt's response headers (``None``: no response came back).

        ``sent_at`` (this limiter's clock when the request left) bounds how stale the
        server's ``remaining`` figures can be.
        """
        if headers is None:
            self._end_probe(learned=False)
            return
        now = self._clock()
        elapsed = max(0.0, now - sent_at) if sent_at is not None else 0.0
        limit_rpm = _header_number(headers, "x-ratelimit-limit-requests")
        limit_tpm = _header_number(headers, "x-ratelimit-limit-tokens")
        if limit_rpm:
            self._base_rpm = _capped(self._configured_rpm, limit_rpm)
        if limit_tpm:
            self._base_tpm = _capped(self._configured_tpm, limit_tpm)
        if limit_rpm or limit_tpm:
            self._retune(now)
        exhausted: list[float] = []
        for kind, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            remaining = _header_number(headers, f"x-ratelimit-remaining-{kind}")
            if remaining is None:
                continue
            if bucket is not None:
                # The server counted this much left when it answered; at most
                # `elapsed` of refill has happened since.
                bucket.refill(now)
                bucket.level = min(bucket.level, remaining + bucket.rate * elapsed)
            if remaining < 1:
                reset = parse_go_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
                if reset is not None:
                    exhausted.append(reset)
        self._exhausted_reset = max(exhausted) if exhausted else None
        self._end_probe(learned=True)

    def on_success(self) -> None:
        """A request succeeded: restore the rate gradually after a decrease."""
        now = self._clock()
        if self._factor < 1.0 and now > self._last_increase:
            self._factor = min(1.0, self._factor + self._recovery * (now - self._last_increase))
            self._retune(now)
        self._last_increase = max(self._last_increase, now)

    def on_rate_limited(self, retry_after: float | None) -> float:
        """A 429: pause everyone and cut the burst, or once it is at its floor the rate.
        Returns the pause in seconds: the server's ``retry-after``, else the exhausted
        limit's reset, else ``default_pause``; at most ``max_pause``."""
        now = self._clock()
        self.rate_limited += 1
        hints = (retry_after, self._exhausted_reset)
        pause = min(self._max_pause, next((h for h in hints if h is not None), self._default_pause))
        self._blocked_until = max(self._blocked_until, now + pause)
        # The in-flight requests all come back 429 together: one congestion event.
        if now >= self._quiet_until:
            if self._burst > self._min_burst:
                self._burst = max(self._min_burst, self._burst / 2)
                self.burst_cuts += 1
            else:
                self._factor = max(self._min_factor, self._factor * self._decrease)
                self.decreases += 1
            self._quiet_until = now + max(pause, self._cooldown)
            self._retune(now)
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, 0.0)
        self._last_increase = max(self._last_increase, self._blocked_until)
        return pause

    def _delay(self, tokens: int, now: float) -> float:
        if now < self._blocked_until:
            return self._blocked_until - now
        wait = 0.0
        if self._requests is not None:
            wait = max(wait, self._requests.delay(1, now))
        if self._tokens is not None:
            wait = max(wait, self._tokens.delay(tokens, now))
        return wait

    def _retune(self, now: float) -> None:
        # The burst shrinks with the rate after a 429, and grows back with it.
        if self._base_rpm is not None:
            rate = self._base_rpm * self._factor / 60.0
            capacity = max(1.0, rate * self._burst)
            if self._requests is None:
                self._requests = _Bucket(rate, capacity, now)
            else:
                self._requests.retune(rate, capacity, now)
        if self._base_tpm is not None:
            rate = self._base_tpm * self._factor / 60.0
            capacity = max(1.0, rate * self._burst)
            if self._tokens is None:
                self._tokens = _Bucket(rate, capacity, now)
            else:
                self._tokens.retune(rate, capacity, now)

    def _end_probe(self, *, learned: bool) -> None:
        if self._learned:
            return
        self._learned = learned
        self._probing = False
        self._probe_done.set()
        if not learned:
            # The probe got no answer: wake the next caller to probe again.
            self._probe_done = asyncio.Event()


def _capped(configured: float | None, reported: float) -> float:
    return reported if configured is None else min(configured, reported)
