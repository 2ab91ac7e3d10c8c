"""Stage 3, **moderate**: score every segment, then say what the scores mean.

All segments of a batch of examples go to the moderator in one call (the provider
packs them into as few requests as it can). The scores are then read against the
policy: a category over its threshold *flags* the example when the model would learn
to produce it (an assistant or system turn), *escalates* it to the grader when it is
only quoted (a user or tool turn), and flags it anywhere when it is zero-tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from moderation.cache import ModerationCache
from moderation.errors import ProviderFatalError
from moderation.models import Example, Reason, Segment, SegmentError, SegmentModeration
from moderation.policy import ModerationSpec
from moderation.providers import Moderator

__all__ = ["assess", "moderate_batch", "segments_to_moderate"]

_log = structlog.get_logger("moderation.moderate")


async def moderate_batch(
    examples: Sequence[Example],
    moderator: Moderator,
    spec: ModerationSpec,
    cache: ModerationCache | None = None,
) -> None:
    """Moderate the valid examples of a batch in one provider call, then assess each.

    With a ``cache``, examples it has answered are not sent, and new answers are stored.
    """
    todo: list[Example] = []
    for example in examples:
        if not example.valid:
            continue
        chosen = segments_to_moderate(example.segments, spec)
        if spec.images == "quarantine" and len(chosen) < len(example.segments):
            example.findings.append(
                Reason(
                    stage="moderate",
                    code="image_not_screened",
                    detail={"provider": moderator.name, "policy": "images: quarantine"},
                )
            )
        example.moderated = chosen
        todo.append(example)
    asking = [e for e in todo if e.moderated]
    if cache is not None and asking:
        asking = cache.restore(asking)
    segments: list[Segment] = [s for e in asking for s in e.moderated]
    if not segments:
        for example in todo:
            assess(example, spec)
        return
    try:
        results = await moderator.moderate(segments)
    except ProviderFatalError:
        raise
    except Exception as exc:
        # Fail closed: a provider bug must never let examples through unmoderated.
        _log.error("moderator_failed", provider=moderator.name, error=type(exc).__name__)
        error = SegmentError(
            code="provider_exception",
            message=type(exc).__name__,
            provider=moderator.name,
            model=moderator.model,
        )
        results = [error] * len(segments)
    if len(results) != len(segments):
        raise RuntimeError(
            f"moderator {moderator.name!r} returned {len(results)} results"
            f" for {len(segments)} segments"
        )
    position = 0
    for example in asking:
        count = len(example.moderated)
        example.moderation = list(results[position : position + count])
        position += count
    if cache is not None:
        cache.store(asking)
    for example in todo:
        assess(example, spec)


def segments_to_moderate(segments: Sequence[Segment], spec: ModerationSpec) -> list[Segment]:
    """The segments the moderator scores: every text, and images when the policy says
    ``images: moderate``."""
    images = spec.images == "moderate"
    return [s for s in segments if s.kind == "text" or images]


def assess(example: Example, spec: ModerationSpec) -> None:
    """Turn an example's scores into findings (flags, errors) and escalations."""
    for segment, result in zip(example.moderated, example.moderation, strict=True):
        if isinstance(result, SegmentError):
            example.findings.append(
                Reason(
                    stage="error",
                    code=result.code,
                    detail={
                        "path": segment.path,
                        "provider": result.provider,
                        "message": result.message,
                    },
                )
            )
            continue
        for category, score in sorted(result.scores.items()):
            if not _over(category, score, result, spec):
                continue
            detail = {
                "category": category,
                "score": score,
                "threshold": spec.threshold_for(category),
                "path": segment.path,
                "role": segment.role,
            }
            if spec.is_zero_tolerance(category):
                example.findings.append(
                    Reason(stage="moderate", code="zero_tolerance", detail=detail)
                )
            elif segment.role in spec.flag_roles:
                example.findings.append(Reason(stage="moderate", code="flagged", detail=detail))
            elif segment.role in spec.escalate_roles:
                example.escalations.append(
                    Reason(stage="moderate", code="escalated", detail=detail)
                )


def _over(category: str, score: float, result: SegmentModeration, spec: ModerationSpec) -> bool:
    threshold = spec.threshold_for(category)
    if threshold is not None and score >= threshold:
        return True
    return spec.use_provider_flagged and category in result.flagged
