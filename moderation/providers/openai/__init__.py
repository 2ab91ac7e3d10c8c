"""The ``openai`` provider: the official SDK's ``AsyncOpenAI`` over aiohttp.

:class:`OpenAIModerator` scores segments with ``/v1/moderations``; :class:`OpenAIGrader`
judges examples with ``/v1/chat/completions`` and structured outputs. Both send through
one mechanism: the retry loop (:class:`RetryLoop`) and a rate limiter per model
(:class:`RateLimiter`).
"""

from moderation.providers.openai._client import DEFAULT_TIMEOUT, build_client, check_credentials
from moderation.providers.openai._prices import Price, price_for
from moderation.providers.openai._ratelimit import (
    RateLimiter,
    parse_go_duration,
    parse_retry_after,
)
from moderation.providers.openai._retry import Failure, MalformedResponse, RetryLoop, RetryPolicy
from moderation.providers.openai.grader import DEFAULT_GRADER_MODEL, OpenAIGrader
from moderation.providers.openai.moderator import (
    DEFAULT_MODERATION_MODEL,
    OpenAIModerator,
    chunk_text,
    estimate_tokens,
    plan_requests,
)

__all__ = [
    "DEFAULT_GRADER_MODEL",
    "DEFAULT_MODERATION_MODEL",
    "DEFAULT_TIMEOUT",
    "Failure",
    "MalformedResponse",
    "OpenAIGrader",
    "OpenAIModerator",
    "Price",
    "RateLimiter",
    "RetryLoop",
    "RetryPolicy",
    "build_client",
    "check_credentials",
    "chunk_text",
    "estimate_tokens",
    "parse_go_duration",
    "parse_retry_after",
    "plan_requests",
    "price_for",
]
