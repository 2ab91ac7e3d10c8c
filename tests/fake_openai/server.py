"""A fake OpenAI-compatible server (aiohttp.web on 127.0.0.1) for tests and benchmarks.

Endpoints are a route table (:attr:`FakeOpenAI.routes`, :meth:`FakeOpenAI.add_route`):
a route turns a JSON body into a JSON answer and says what the request costs in tokens;
the server around it does what every OpenAI endpoint does: authentication, rate limits,
latency, faults, and a record of every request. ``/v1/moderations`` (see
:mod:`.moderations` for how it decides what is unsafe) and ``/v1/chat/completions`` (a
judge answering from markers, see :mod:`.chat`) are built in.

Rate limits and faults
----------------------
Limits are token buckets per model refilling at ``requests_per_minute`` /
``tokens_per_minute`` and holding ``burst_seconds`` of them; a request they cannot
take gets a 429 with ``retry-after-ms`` and ``retry-after``, and is not charged. The
fake charges each text input ``token_counter(text)`` (by default ceil(UTF-8 bytes / 3),
the moderator's own estimate); an image costs a fixed amount. Headers
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` are sent like OpenAI's: the
per-minute limit, what is left of it, and the time (a Go duration) until it is full.

Faults (see :data:`FAULTS`) come from a scripted queue (:meth:`FakeOpenAI.script`)
first, else with probability ``fault_rate`` from a seeded RNG, in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = [
    "FAULTS",
    "ApiError",
    "FakeConfig",
    "FakeOpenAI",
    "RecordedRequest",
    "Route",
    "count_tokens",
    "format_go_duration",
]

FAULTS = (
    "500",  # internal server error
    "503",  # overloaded
    "429",  # rate limited, with retry-after-ms = fault_retry_after_ms
    "timeout",  # no answer for timeout_sleep seconds
    "drop",  # connection closed without a response
    "truncated",  # 200 with the JSON body cut in half
    "wrong_count",  # 200 with one result too few (or one too many)
    "quota",  # 429 with code insufficient_quota (billing: retrying cannot help)
    "400",
    "401",
    "403",
    "404",
    "408",
    "409",
    "422",
)
_STATUS_FAULTS = {
    "400": (400, "Invalid request (injected).", None),
    "401": (401, "Incorrect API key provided: sk-te***st.", "invalid_api_key"),
    "403": (403, "You are not allowed to sample from this model.", None),
    "404": (404, "The model does not exist or you do not have access to it.", "model_not_found"),
    "408": (408, "Request timed out (injected).", None),
    "409": (409, "Conflict (injected).", None),
    "422": (422, "Unprocessable entity (injected).", None),
    "500": (500, "The server had an error while processing your request.", None),
    "503": (503, "The engine is currently overloaded, please try again later.", None),
    "quota": (429, "You exceeded your current quota.", "insufficient_quota"),
}


def count_tokens(text: str) -> int:
    """What the fake charges a text input: ceil(UTF-8 bytes / 3), at least 1."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


def format_go_duration(seconds: float) -> str:
    """``seconds`` the way Go prints a duration: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


class ApiError(Exception):
    """Raised by a route handler: answer with this status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }


@dataclasses.dataclass
class FakeConfig:
    """How the fake behaves; change fields on ``fake.config`` at any time."""

    latency: float = 0.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    burst_seconds: float = 60.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ("500", "503", "drop", "truncated")
    seed: int = 0
    timeout_sleep: float = 5.0
    fault_retry_after_ms: int = 10
    api_key: str | None = None
    """When set, any other bearer key gets a 401."""
    token_counter: Callable[[str], int] = count_tokens


@dataclasses.dataclass
class RecordedRequest:
    """One request as the fake received it (the Authorization value is not kept)."""

    path: str
    method: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    """The HTTP status sent; 0 when the connection was dropped or timed out."""
    fault: str | None = None
    tokens: int = 0
    """Tokens charged against the limit (0 when the request was refused or faulted)."""
    at: float = dataclasses.field(default_factory=time.monotonic)
    """When it arrived (``time.monotonic()``)."""


@dataclasses.dataclass
class Route:
    """A JSON endpoint: ``handler(body) -> response body`` (may raise :class:`ApiError`),
    what a request costs in tokens, and how to make a ``wrong_count`` answer."""

    handler: Callable[[Any], dict[str, Any]]
    tokens: Callable[[Any, Callable[[str], int]], int]
    """``tokens(body, count)``, ``count`` being the config's ``token_counter``."""
    wrong_count: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class _Bucket:
    def __init__(self, per_minute: float, burst_seconds: float, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        self.level = min(self.capacity, self.level + self.rate * (now - self.stamp))
        self.stamp = now
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        deficit = max(0.0, self.capacity - self.level)
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.limit)),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.limit - deficit))),
            f"x-ratelimit-reset-{kind}": format_go_duration(deficit / self.rate),
        }


class FakeOpenAI:
    """The server. ``async with FakeOpenAI(FakeConfig(...)) as fake:`` starts it on a
    free port of 127.0.0.1; ``fake.base_url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.requests: list[RecordedRequest] = []
        self.tokens_accepted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests being handled at once (a client's concurrency, seen from here)."""
        # Both import this module.
        from .chat import chat_route
        from .moderations import moderation_route

        self.routes: dict[str, Route] = {
            "/v1/moderations": moderation_route(),
            "/v1/chat/completions": chat_route(lambda text: self.config.token_counter(text)),
        }
        self._seed = self.config.seed
        self._rng = random.Random(self._seed)
        self._scripts: dict[str, collections.deque[str]] = collections.defaultdict(
            collections.deque
        )
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Start listening; returns the base URL."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop the server (in-flight handlers are cancelled)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def script(self, *faults: str, path: str = "/v1/moderations") -> None:
        """Answer the next requests to ``path`` with these faults, in order (``"ok"``
        lets one through)."""
        for fault in faults:
            if fault != "ok" and fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self._scripts[path].extend(faults)

    def add_route(self, path: str, route: Route) -> None:
        """Serve another endpoint (e.g. ``/v1/chat/completions``)."""
        self.routes[path] = route

    def count(
        self, *, path: str | None = None, status: int | None = None, fault: str | None = None
    ) -> int:
        """How many recorded requests match all the given filters."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path)
            and (status is None or r.status == status)
            and (fault is None or r.fault == fault)
        )

    def _next_fault(self, path: str) -> str | None:
        queue = self._scripts.get(path)
        if queue:
            fault = queue.popleft()
            return None if fault == "ok" else fault
        config = self.config
        if config.seed != self._seed:
            self._rng, self._seed = random.Random(config.seed), config.seed
        if config.fault_rate > 0 and self._rng.random() < config.fault_rate:
            return self._rng.choice(config.faults)
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = headers.pop("authorization", None)
        if auth is not None:
            headers["authorization"] = "<redacted>"
        record = RecordedRequest(request.path, request.method, headers, body)
        self.requests.append(record)
        route = self.routes.get(request.path)
        if route is None or request.method != "POST":
            return self._error(
                record, ApiError(404, f"Invalid URL ({request.method} {request.path})")
            )
        config = self.config
        if config.api_key is not None and auth != f"Bearer {config.api_key}":
            err = ApiError(401, "Incorrect API key provided: sk-te***st.", code="invalid_api_key")
            return self._error(record, err)
        if not isinstance(body, dict):
            return self._error(
                record, ApiError(400, "We could not parse the JSON body of your request.")
            )
        fault = record.fault = self._next_fault(request.path)
        try:
            tokens = route.tokens(body, config.token_counter)
        except ApiError as err:
            return self._error(record, err)
        if fault in _STATUS_FAULTS or fault == "429":
            assert fault is not None
            await asyncio.sleep(config.latency)
            return self._fault_status(record, fault)
        if fault == "drop":
            await asyncio.sleep(config.latency)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        model = str(body.get("model") or "")
        limited = self._charge(model, tokens)
        if isinstance(limited, web.Response):
            record.status = limited.status
            return limited
        record.tokens = tokens
        await asyncio.sleep(config.latency)
        if fault == "timeout":
            await asyncio.sleep(config.timeout_sleep)
        try:
            payload = route.handler(body)
        except ApiError as err:
            return self._error(record, err, limited)
        if fault == "wrong_count" and route.wrong_count is not None:
            payload = route.wrong_count(payload)
        data = json.dumps(payload).encode()
        if fault == "truncated":
            data = data[: len(data) // 2]
        record.status = 200
        return web.Response(body=data, content_type="application/json", headers=limited)

    def _charge(self, model: str, tokens: int) -> dict[str, str] | web.Response:
        """Take the request from the model's buckets: its rate-limit headers, or a 429."""
        config = self.config
        now = time.monotonic()
        buckets: list[tuple[str, _Bucket, int]] = []
        for kind, limit, amount in (
            ("requests", config.requests_per_minute, 1),
            ("tokens", config.tokens_per_minute, tokens),
        ):
            if limit is None:
                continue
            bucket = self._buckets.get((model, kind))
            if bucket is None or bucket.limit != limit:
                bucket = self._buckets[(model, kind)] = _Bucket(limit, config.burst_seconds, now)
            buckets.append((kind, bucket, amount))
        waits = [(bucket.wait(amount, now), kind) for kind, bucket, amount in buckets]
        wait, kind = max(waits, default=(0.0, ""))
        if wait <= 0:
            for _, bucket, amount in buckets:
                bucket.level -= amount
            self.tokens_accepted += tokens
        headers: dict[str, str] = {}
        for name, bucket, _ in buckets:
            headers.update(bucket.headers(name))
        if wait <= 0:
            return headers
        message = (
            f"Rate limit reached for {model or 'the model'} on {kind} per min. "
            f"Please try again in {format_go_duration(wait)}."
        )
        return self._limit_response(message, wait, headers)

    def _fault_status(self, record: RecordedRequest, fault: str) -> web.Response:
        if fault == "429":
            wait = self.config.fault_retry_after_ms / 1000
            record.status = 429
            return self._limit_response("Rate limit reached (injected).", wait, {})
        status, message, code = _STATUS_FAULTS[fault]
        return self._error(record, ApiError(status, message, code=code))

    @staticmethod
    def _limit_response(message: str, wait: float, headers: dict[str, str]) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        headers = {
            **headers,
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            "retry-after": str(max(1, math.ceil(wait))),
        }
        return web.json_response(body, status=429, headers=headers)

    @staticmethod
    def _error(
        record: RecordedRequest, err: ApiError, headers: dict[str, str] | None = None
    ) -> web.Response:
        record.status = err.status
        return web.json_response(err.body, status=err.status, headers=headers)
