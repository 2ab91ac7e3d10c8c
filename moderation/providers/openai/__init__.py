"""The ``openai`` provider: the official SDK's ``AsyncOpenAI`` over aiohttp.

:class:`OpenAIModerator` scores segments with ``/v1/moderations``. The rate limiting
(:class:`RateLimiter`) and the retry loop (:class:`RetryLoop`) are shared with the grader,
which calls ``/v1/chat/completions`` through the same mechanism.
"""

from moderation.providers.openai._client import DEFAULT_TIMEOUT, build_client, check_credentials
from moderation.providers.openai._ratelimit import (
    RateLimiter,
    parse_go_duration,
    parse_retry_after,
)
from moderation.providers.openai._retry import Failure, MalformedResponse, RetryLoop, RetryPolicy
from moderation.providers.openai.moderator import (
    DEFAULT_MODERATION_MODEL,
    OpenAIModerator,
    chunk_text,
    estimate_tokens,
)

__all__ = [
    "DEFAULT_MODERATION_MODEL",
    "DEFAULT_TIMEOUT",
    "Failure",
    "MalformedResponse",
    "OpenAIModerator",
    "RateLimiter",
    "RetryLoop",
    "RetryPolicy",
    "build_client",
    "check_credentials",
    "chunk_text",
    "estimate_tokens",
    "parse_go_duration",
    "parse_retry_after",
]
