"""A fake OpenAI-compatible server for tests and benchmarks (see :mod:`.server`).

Importable with only the repository root on ``sys.path`` (no pytest needed)::

    from tests.fake_openai import FakeConfig, FakeOpenAI

    async with FakeOpenAI(FakeConfig(latency=0.15, tokens_per_minute=200_000)) as fake:
        client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, ...)
"""

from .chat import GRADE_MARKERS, chat_route, example_block
from .moderations import (
    BORDERLINE_SCORE,
    CATEGORIES,
    IMAGE_TOKENS,
    SNAPSHOTS,
    UNSAFE_SCORE,
    marker,
    moderation_route,
    unsafe_categories,
)
from .server import (
    FAULTS,
    ApiError,
    FakeConfig,
    FakeOpenAI,
    RecordedRequest,
    Route,
    count_tokens,
    format_go_duration,
)

__all__ = [
    "BORDERLINE_SCORE",
    "CATEGORIES",
    "FAULTS",
    "GRADE_MARKERS",
    "IMAGE_TOKENS",
    "SNAPSHOTS",
    "UNSAFE_SCORE",
    "ApiError",
    "FakeConfig",
    "FakeOpenAI",
    "RecordedRequest",
    "Route",
    "chat_route",
    "count_tokens",
    "example_block",
    "format_go_duration",
    "marker",
    "moderation_route",
    "unsafe_categories",
]
