"""The one retry loop of the OpenAI providers (moderator and grader).

Each attempt takes a concurrency slot, waits for the model's :class:`RateLimiter`, sends
through the SDK (whose own retries are off, so every 429 reaches the limiter), and
reports what came back to the limiter. What happens next depends on the answer:

=====================================  ==============================================
answer                                 outcome
=====================================  ==============================================
2xx that ``parse`` accepts             the parsed value
2xx that ``parse`` rejects             retried (``bad_response``)
408, 409, 429, 5xx                     retried, honouring ``retry-after(-ms)``
timeout, dropped connection            retried (``timeout``, ``connection_error``)
401, 403, 429 ``insufficient_quota``   :class:`ProviderFatalError` at once
400, 404, 422, other 4xx               a :class:`Failure`, not retried
=====================================  ==============================================

Retries wait a capped exponential backoff with full jitter (and at least the server's
``retry-after``), for at most ``max_attempts`` attempts in all; then the last failure is
returned. Exceptions are only for what must stop the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import openai

from moderation._redact import redact_text
from moderation.errors import ProviderFatalError
from moderation.providers import ProviderStats
from moderation.providers.openai._ratelimit import RateLimiter, Sleep, parse_retry_after

__all__ = ["Failure", "MalformedResponse", "RawResponse", "RetryLoop", "RetryPolicy"]


class HasHeaders(Protocol):
    """What the loop needs of a raw SDK response (``with_raw_response``)."""

    @property
    def headers(self) -> Mapping[str, str]: ...


class RawResponse(HasHeaders, Protocol):
    """What the providers read of a raw SDK response: headers for the limiter, the body."""

    @property
    def content(self) -> bytes: ...


RawT = TypeVar("RawT", bound=HasHeaders)
T = TypeVar("T")


class MalformedResponse(Exception):
    """Raised by a ``parse`` callback: the 2xx answer cannot be used (truncated JSON,
    the wrong number of results, missing fields). The request is retried."""


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    max_attempts: int = 5
    """Attempts in all, the first included."""
    base_delay: float = 0.5
    """Backoff cap of the first retry; doubles on each further retry."""
    max_delay: float = 20.0
    """Ceiling of the backoff cap."""
    max_retry_after: float = 120.0
    """A server's ``retry-after`` above this is cut to it."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``retry`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return rng.uniform(0.0, cap)


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A request that did not produce a usable answer.

    ``code`` is stable: ``bad_request``, ``not_found``, ``unprocessable``,
    ``http_<status>`` (not retried); ``timeout``, ``connection_error``,
    ``server_error``, ``rate_limited``, ``conflict``, ``bad_response`` (retried until
    the attempts ran out).
    """

    code: str
    message: str
    status: int | None = None
    attempts: int = 1
    retryable: bool = False
    retry_after: float | None = dataclasses.field(default=None, compare=False)


class RetryLoop:
    """Sends requests with bounded concurrency, rate limiting and retries.

    One instance per provider (moderator or grader); ``limiter`` may be shared by
    providers that call the same model. ``stats`` is updated in place: ``requests``
    (HTTP attempts), ``retries`` (attempts after the first), ``rate_limited`` (429s),
    ``errors`` (other failed attempts).
    """

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        stats: ProviderStats,
        concurrency: int,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        provider: str = "openai",
    ) -> None:
        self.limiter = limiter
        self.stats = stats
        self.policy = policy or RetryPolicy()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._provider = provider
        self._fatal: ProviderFatalError | None = None

    async def call(
        self,
        send: Callable[[], Awaitable[RawT]],
        parse: Callable[[RawT], T],
        *,
        tokens: int,
    ) -> T | Failure:
        """Run ``send`` until ``parse`` accepts its answer or the attempts run out.

        ``tokens`` is what one attempt charges against the tokens-per-minute limit.
        Raises :class:`ProviderFatalError` when the provider refuses our credentials;
        once that happened, every later call raises it without sending anything.
        """
        failure: Failure | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            if attempt > 1 and failure is not None:
                delay = self.policy.backoff(attempt - 1, self._rng)
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, self.policy.max_retry_after))
                await self._sleep(delay)
            if self._fatal is not None:
                raise ProviderFatalError(str(self._fatal))
            outcome = await self._attempt(send, parse, tokens=tokens, attempt=attempt)
            if not isinstance(outcome, Failure):
                return outcome
            failure = outcome
            if not failure.retryable:
                return failure
        assert failure is not None
        return failure

    async def _attempt(
        self,
        send: Callable[[], Awaitable[RawT]],
        parse: Callable[[RawT], T],
        *,
        tokens: int,
        attempt: int,
    ) -> T | Failure:
        async with self._semaphore:
            await self.limiter.acquire(tokens)
            sent_at = self.limiter.now()
            self.stats.requests += 1
            if attempt > 1:
                self.stats.retries += 1
            observed = False
            try:
                raw = await send()
                self.limiter.observe(raw.headers, sent_at=sent_at)
                observed = True
                self.limiter.on_success()
            except openai.APIStatusError as exc:
                self.limiter.observe(exc.response.headers, sent_at=sent_at)
                observed = True
                return self._status_failure(exc, attempt)
            except openai.APIConnectionError as exc:
                self.stats.errors += 1
                code = _connection_code(exc)
                what = "timed out" if code == "timeout" else "lost its connection"
                return Failure(code, f"request {what}", attempts=attempt, retryable=True)
            finally:
                if not observed:
                    self.limiter.observe(None, sent_at=sent_at)
        try:
            return parse(raw)
        except MalformedResponse as exc:
            self.stats.errors += 1
            return Failure("bad_response", str(exc), attempts=attempt, retryable=True)

    def _status_failure(self, exc: openai.APIStatusError, attempt: int) -> Failure:
        status = exc.status_code
        message = _api_message(exc)
        if status in (401, 403) or (status == 429 and _error_code(exc) == "insufficient_quota"):
            what = {
                401: "rejected the API key (check OPENAI_API_KEY)",
                403: "refused permission (check the key's project, organisation and model access)",
                429: "reports the account's quota is exhausted (check billing)",
            }[status]
            self._fatal = ProviderFatalError(
                f"{self._provider}: the API {what}: HTTP {status}: {message}"
            )
            raise self._fatal from None
        if status == 429:
            self.stats.rate_limited += 1
            pause = self.limiter.on_rate_limited(parse_retry_after(exc.response.headers))
            return Failure("rate_limited", message, status, attempt, True, pause)
        self.stats.errors += 1
        retry_after = parse_retry_after(exc.response.headers)
        if status >= 500:
            return Failure("server_error", message, status, attempt, True, retry_after)
        if status in (408, 409):
            code = "timeout" if status == 408 else "conflict"
            return Failure(code, message, status, attempt, True, retry_after)
        code = {400: "bad_request", 404: "not_found", 422: "unprocessable"}.get(
            status, f"http_{status}"
        )
        return Failure(code, message, status, attempt, False)


def _connection_code(exc: openai.APIConnectionError) -> str:
    if not isinstance(exc, openai.APITimeoutError):
        return "connection_error"
    # The aiohttp transport reports a dropped connection as a (connect) timeout too;
    # a real timeout has a TimeoutError somewhere down the cause chain.
    cause: BaseException | None = exc.__cause__
    if cause is None:
        return "timeout"
    while cause is not None:
        if isinstance(cause, TimeoutError):
            return "timeout"
        cause = cause.__cause__
    return "connection_error"


def _error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return error
    return {}


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = _error_body(exc).get("code")
    return code if isinstance(code, str) else None


def _api_message(exc: openai.APIStatusError) -> str:
    message = _error_body(exc).get("message")
    text = message if isinstance(message, str) and message else f"HTTP {exc.status_code}"
    # These messages reach quarantine.jsonl: OpenAI quotes a masked key in some, a proxy
    # may echo a header. The one redactor of the project takes out either.
    return redact_text(text)[:500]
