"""The two provider seams: a :class:`Moderator` and a :class:`Grader`.

Both are small protocols so that implementations (``local``, ``openai``, a test
double) are injected into the pipeline rather than chosen inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from moderation.models import Reason, Segment, SegmentError, SegmentModeration, Verdict
from moderation.policy import GraderSpec, ModerationSpec

__all__ = [
    "GradeRequest",
    "Grader",
    "Moderator",
    "ProviderStats",
    "build_grader",
    "build_moderator",
    "endpoint",
]


class ProviderStats(BaseModel):
    """Counters a provider keeps for the summary and the audit run-end event.

    ``requests`` are API requests (HTTP attempts); a provider that calls no API (the
    local one) counts its batches in ``calls`` instead, so the summary's ``requests``
    means what a bill means."""

    calls: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """Estimated USD; ``None`` when the model's price is unknown."""


@runtime_checkable
class Moderator(Protocol):
    """Scores segments. Segments from many examples arrive in one call; the result
    list is aligned with the input (same length, same order). A segment that could
    not be scored gets a :class:`SegmentError`; the call itself raises only for
    what must stop the run (:class:`~moderation.errors.ProviderFatalError`)."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def stats(self) -> ProviderStats: ...

    async def moderate(
        self, segments: Sequence[Segment]
    ) -> list[SegmentModeration | SegmentError]: ...

    async def aclose(self) -> None: ...


class GradeRequest(BaseModel):
    """What the grader sees of one example: its segments (with roles), what moderation
    found, and the policy's rules."""

    model_config = ConfigDict(frozen=True)

    example_hash: str
    segments: tuple[Segment, ...]
    findings: tuple[Reason, ...] = ()
    rules: tuple[dict[str, Any], ...] = ()


@runtime_checkable
class Grader(Protocol):
    """Judges one example against the policy's rules. Returns a :class:`Verdict`, or a
    :class:`Reason` (stage ``grade`` or ``error``) when no valid verdict could be had."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def stats(self) -> ProviderStats: ...

    async def grade(self, request: GradeRequest) -> Verdict | Reason: ...

    async def aclose(self) -> None: ...


def endpoint(provider: Moderator | Grader) -> str:
    """The server a provider asks, for the result cache (answers of different servers
    are never mixed): its optional ``endpoint`` property, else ``""`` (a local one)."""
    where = getattr(provider, "endpoint", None)
    return where if isinstance(where, str) else ""


def build_moderator(spec: ModerationSpec) -> Moderator:
    """The moderator a policy names (imported lazily: the offline path never loads the
    OpenAI client, the OpenAI path never loads the classifier)."""
    if spec.provider == "local":
        from moderation.providers.local import LocalModerator

        return LocalModerator(model=spec.model or "local-v1")
    from moderation.providers.openai import OpenAIModerator

    return OpenAIModerator.from_spec(spec)


def build_grader(spec: GraderSpec) -> Grader | None:
    """The grader a policy names, or ``None`` when it has none."""
    if spec.provider == "none":
        return None
    from moderation.providers.openai import OpenAIGrader

    return OpenAIGrader.from_spec(spec)
