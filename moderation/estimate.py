"""``run --dry-run``: what a run would send and cost, without calling any API.

The inputs are read and validated as a run would; then, per batch of the run's size,
the moderator's own packing (:func:`~moderation.providers.openai.plan_requests`) says
how many moderation requests go out, and the grader's own prompt builder says what each
grading request weighs. Which examples moderation escalates is only known after
moderation, so the grader's figures are a ceiling: every valid example that has a turn
the policy escalates (or every valid example, when the grader sees all) is counted as
graded, at the full output budget. Tokens are estimated as ``ceil(bytes / 3)``, an
overestimate for typical text, so the figures err high.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from moderation.models import Example, Reason, Segment
from moderation.moderate import segments_to_moderate
from moderation.pipeline import PipelineOptions, batches
from moderation.policy import Policy
from moderation.reader import DEFAULT_MAX_LINE_BYTES, ReadStats, read_examples
from moderation.tokens import estimate_text
from moderation.validate import validate

__all__ = ["GraderEstimate", "ModerationEstimate", "RunEstimate", "estimate_run"]


class ModerationEstimate(BaseModel):
    """The moderation stage's requests (exact when nothing fails) and tokens."""

    provider: str
    model: str
    requests: int
    input_tokens: int
    cost_usd: float
    """The moderation endpoint is free; local providers cost nothing."""


class GraderEstimate(BaseModel):
    """Ceilings for the grader stage (see the module)."""

    provider: str
    model: str
    sees: str
    requests_max: int
    input_tokens_max: int
    output_tokens_max: int
    cost_usd_max: float | None
    """``None`` when the model's price is unknown."""
    cost_usd_per_request: float | None
    """The mean cost of one grading request, at the full output budget."""


class RunEstimate(BaseModel):
    """What ``run`` would do with these inputs and this policy."""

    policy: dict[str, str]
    examples: int
    valid: int
    invalid: int
    blank_lines: int
    moderation: ModerationEstimate
    grader: GraderEstimate | None


def estimate_run(
    paths: Sequence[Path],
    policy: Policy,
    *,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> RunEstimate:
    """Estimate a run of ``paths`` under ``policy``; reads the files, calls nothing."""
    stats = ReadStats()
    moderation = _ModerationCounter(policy)
    grader = _GraderCounter(policy)
    valid = 0
    # Batches as the pipeline makes them: the moderator packs each batch on its own.
    examples = read_examples(paths, stats=stats, max_line_bytes=max_line_bytes)
    for batch in batches(examples, batch_size, PipelineOptions().batch_bytes):
        segments: list[Segment] = []
        for example in batch:
            validate(example)
            if not example.valid:
                continue
            valid += 1
            segments.extend(segments_to_moderate(example.segments, policy.moderation))
            grader.add(example)
        moderation.add(segments)
    return RunEstimate(
        policy={"id": policy.id, "version": policy.version, "hash": policy.hash},
        examples=stats.examples,
        valid=valid,
        invalid=stats.examples - valid,
        blank_lines=stats.blank_lines,
        moderation=moderation.result(),
        grader=grader.result(),
    )


class _ModerationCounter:
    def __init__(self, policy: Policy) -> None:
        self._spec = policy.moderation
        self.requests = 0
        self.tokens = 0

    def add(self, segments: Sequence[Segment]) -> None:
        if self._spec.provider != "openai" or not segments:
            return
        from moderation.providers.openai import plan_requests

        planned = plan_requests(segments, self._spec)
        self.requests += len(planned)
        self.tokens += sum(planned)

    def result(self) -> ModerationEstimate:
        spec = self._spec
        if spec.provider == "openai":
            from moderation.providers.openai import DEFAULT_MODERATION_MODEL

            model = spec.model or DEFAULT_MODERATION_MODEL
        else:
            model = spec.model or "local-v1"
        return ModerationEstimate(
            provider=spec.provider,
            model=model,
            requests=self.requests,
            input_tokens=self.tokens,
            cost_usd=0.0,
        )


class _GraderCounter:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._spec = policy.grader
        self.requests = 0
        self.tokens = 0
        self._system_tokens = 0
        if self._spec.provider == "openai":
            from moderation.providers.openai._prompt import system_prompt

            rules = [rule.model_dump(mode="json") for rule in self._spec.rules]
            # The same system message goes with every request: counted once here.
            self._system_tokens = estimate_text(system_prompt(rules))

    def add(self, example: Example) -> None:
        spec = self._spec
        if spec.provider != "openai":
            return
        escalate = self._policy.moderation.escalate_roles
        if spec.sees != "all" and not any(s.role in escalate for s in example.segments):
            return
        from moderation.providers.openai._prompt import user_message

        # A ceiling: as if every turn that can escalate had a finding to show.
        hints = [
            Reason(
                stage="moderate",
                code="escalated",
                detail={
                    "category": "self-harm/instructions",
                    "score": 1.0,
                    "role": s.role,
                    "path": s.path,
                },
            )
            for s in example.segments
            if s.role in escalate
        ]
        self.requests += 1
        self.tokens += self._system_tokens + estimate_text(user_message(example.segments, hints))

    def result(self) -> GraderEstimate | None:
        spec = self._spec
        if spec.provider != "openai":
            return None
        from moderation.providers.openai import DEFAULT_GRADER_MODEL, price_for

        model = spec.model or DEFAULT_GRADER_MODEL
        output = self.requests * spec.max_output_tokens
        price = price_for(model, spec.prices)
        cost = None if price is None else round(price.cost(self.tokens, output), 6)
        per_request = None
        if cost is not None and self.requests:
            per_request = round(cost / self.requests, 8)
        return GraderEstimate(
            provider=spec.provider,
            model=model,
            sees=spec.sees,
            requests_max=self.requests,
            input_tokens_max=self.tokens,
            output_tokens_max=output,
            cost_usd_max=cost,
            cost_usd_per_request=per_request,
        )
