"""What the two OpenAI providers share: the client, the rate limiter, the retry loop and
the protocol's properties (private)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import time
from typing import Any, ClassVar, Generic, Self, TypeVar

from openai import AsyncOpenAI

from moderation.policy import GraderSpec, ModerationSpec
from moderation.providers import ProviderStats
from moderation.providers.openai._client import client_for_provider
from moderation.providers.openai._ratelimit import Clock, RateLimiter, Sleep
from moderation.providers.openai._retry import RetryLoop, RetryPolicy

__all__ = ["OpenAIProvider"]

SpecT = TypeVar("SpecT", ModerationSpec, GraderSpec)


class OpenAIProvider(Generic[SpecT]):
    """Base of :class:`OpenAIModerator` and :class:`OpenAIGrader`.

    ``client`` is used as given but with its own retries switched off (every 429 must
    reach the limiter); when ``None``, one is built from ``OPENAI_API_KEY`` /
    ``OPENAI_BASE_URL`` (:class:`~moderation.errors.ConfigError` when the key is
    missing) and :meth:`aclose` closes it. An injected client stays the caller's to
    close. ``timeout`` (seconds per attempt; default: the injected client's, else the
    provider's own) and ``max_attempts`` override the defaults; ``retry_policy``,
    ``limiter``, ``sleep``, ``rng`` and ``clock`` are for tests and for sharing a
    limiter between providers that call the same model.

    Create it inside the event loop that uses it, and use it in that loop only (its
    HTTP session, semaphore and limiter belong to the loop).
    """

    DEFAULT_MODEL: ClassVar[str]
    DEFAULT_TIMEOUT: ClassVar[float]

    def __init__(
        self,
        spec: SpecT,
        client: AsyncOpenAI | None = None,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._spec: SpecT = spec
        self._model = spec.model or self.DEFAULT_MODEL
        self._client, self._owns_client = client_for_provider(
            client, timeout=timeout, default_timeout=self.DEFAULT_TIMEOUT
        )
        policy = retry_policy or RetryPolicy()
        if max_attempts is not None:
            policy = dataclasses.replace(policy, max_attempts=max_attempts)
        self._stats = ProviderStats()
        self.limiter = limiter or RateLimiter(
            requests_per_minute=spec.requests_per_minute,
            tokens_per_minute=spec.tokens_per_minute,
            clock=clock,
            sleep=sleep,
        )
        self._retry = RetryLoop(
            limiter=self.limiter,
            stats=self._stats,
            concurrency=spec.concurrency,
            policy=policy,
            sleep=sleep,
            rng=rng,
        )
        self._configure()

    def _configure(self) -> None:
        """What a subclass derives from its spec, once the common parts are built."""

    @classmethod
    def from_spec(cls, spec: SpecT, **options: Any) -> Self:
        """A provider with its own client from the environment (see the class)."""
        return cls(spec, None, **options)

    @property
    def name(self) -> str:
        """Always ``openai``."""
        return "openai"

    @property
    def endpoint(self) -> str:
        """Which server answers, for the result cache (answers of different servers are
        never mixed): a hash of the base URL's scheme, host, port and path, so that a
        gateway token in the path never reaches the cache file in clear."""
        url = self._client.base_url
        where = f"{url.scheme}://{url.host}:{url.port or ''}{url.path}".rstrip("/")
        return "sha256:" + hashlib.sha256(where.encode()).hexdigest()[:32]

    @property
    def model(self) -> str:
        """The model requested (responses may name a dated snapshot of it)."""
        return self._model

    @property
    def stats(self) -> ProviderStats:
        """Requests, retries, 429s, failed attempts, tokens (and cost) so far."""
        return self._stats

    async def aclose(self) -> None:
        """Close the HTTP client if this provider built it."""
        if self._owns_client:
            await self._client.close()
