"""Stage 4, **grade**: the LLM judge, for the examples the policy sends to it.

By default the grader sees only escalations (a category over threshold in a user or
tool turn, where quoting harmful text can be legitimate, as in refusal training).
With ``grader.sees: all`` it judges every example that moderation did not already
decide. Examples already flagged or in error are never sent: no spend on a decided case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from moderation.cache import GradeCache
from moderation.errors import ProviderFatalError
from moderation.models import Example, Reason, Verdict
from moderation.policy import GraderSpec
from moderation.providers import Grader, GradeRequest

__all__ = ["grade_batch", "needs_grading"]

_log = structlog.get_logger("moderation.grade")


def needs_grading(example: Example, spec: GraderSpec) -> bool:
    """True when the policy sends this example to the grader."""
    if not example.valid or example.findings:
        return False
    return bool(example.escalations) or spec.sees == "all"


async def grade_batch(
    examples: Sequence[Example],
    grader: Grader | None,
    spec: GraderSpec,
    cache: GradeCache | None = None,
) -> None:
    """Grade the examples of a batch that need it, concurrently (the grader bounds it).

    With a ``cache``, examples it has answered are not sent, and new answers are stored.
    """
    todo = [e for e in examples if needs_grading(e, spec)]
    if not todo:
        return
    if grader is None:
        for example in todo:
            example.grade_error = Reason(
                stage="grade",
                code="not_configured",
                detail={"why": "the policy escalates this example but has no grader"},
            )
        return
    if cache is not None:
        todo = cache.restore(todo)
        if not todo:
            return
    rules = tuple(rule.model_dump(mode="json") for rule in spec.rules)
    answers = await asyncio.gather(
        *(_grade_one(example, grader, rules) for example in todo), return_exceptions=True
    )
    for example, answer in zip(todo, answers, strict=True):
        if isinstance(answer, ProviderFatalError):
            raise answer
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            _log.error("grader_failed", provider=grader.name, error=type(answer).__name__)
            example.grade_error = Reason(
                stage="error",
                code="provider_exception",
                detail={"provider": grader.name, "error": type(answer).__name__},
            )
        elif isinstance(answer, Reason):
            example.grade_error = answer
        else:
            example.verdict = answer
    if cache is not None:
        cache.store(todo)


async def _grade_one(
    example: Example, grader: Grader, rules: tuple[dict[str, object], ...]
) -> Verdict | Reason:
    request = GradeRequest(
        example_hash=example.hash,
        segments=tuple(example.segments),
        findings=tuple(example.escalations),
        rules=rules,
    )
    return await grader.grade(request)
