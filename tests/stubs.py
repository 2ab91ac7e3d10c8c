"""Test doubles behind the provider protocols (pure Python, deterministic answers)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from moderation.models import Reason, Segment, SegmentError, SegmentModeration, Verdict
from moderation.providers import GradeRequest, ProviderStats


class KeywordModerator:
    """Scores ``stub/bad`` 1.0 when a text contains ``BAD``; ``FAIL`` gives an error.

    ``jitter`` sleeps a random time per call, so batches finish out of order.
    """

    name = "stub"
    model = "stub-1"

    def __init__(self, *, jitter: float = 0.0, seed: int = 0) -> None:
        self.stats = ProviderStats()
        self.calls: list[int] = []
        self._jitter = jitter
        self._rng = random.Random(seed)

    async def moderate(self, segments: Sequence[Segment]) -> list[SegmentModeration | SegmentError]:
        self.stats.requests += 1
        self.calls.append(len(segments))
        if self._jitter:
            await asyncio.sleep(self._rng.random() * self._jitter)
        out: list[SegmentModeration | SegmentError] = []
        for segment in segments:
            if "FAIL" in segment.text:
                out.append(
                    SegmentError(code="timeout", message="gave up", provider="stub", model="stub-1")
                )
                continue
            score = 1.0 if "BAD" in segment.text else 0.01
            out.append(
                SegmentModeration(
                    scores={"stub/bad": score},
                    flagged=("stub/bad",) if score > 0.5 else (),
                    provider="stub",
                    model="stub-1",
                )
            )
        return out

    async def aclose(self) -> None:
        return None


class ScriptedGrader:
    """Answers from markers in the example: ``ALLOW``, ``VIOLATE``, ``UNSURE``, ``LOWCONF``,
    ``BROKEN`` (no valid verdict)."""

    name = "scripted"
    model = "judge-1"

    def __init__(self) -> None:
        self.stats = ProviderStats()
        self.seen: list[str] = []

    async def grade(self, request: GradeRequest) -> Verdict | Reason:
        self.stats.requests += 1
        text = " ".join(s.text for s in request.segments)
        self.seen.append(request.example_hash)
        if "BROKEN" in text:
            return Reason(stage="grade", code="invalid_answer", detail={"why": "not JSON"})
        if "VIOLATE" in text:
            return Verdict(verdict="violation", rule="r1", confidence=0.95, rationale="complies")
        if "UNSURE" in text:
            return Verdict(verdict="uncertain", rule=None, confidence=0.5, rationale="unclear")
        if "LOWCONF" in text:
            return Verdict(verdict="violation", rule="r1", confidence=0.2, rationale="maybe")
        return Verdict(verdict="allow", rule=None, confidence=0.9, rationale="refuses")

    async def aclose(self) -> None:
        return None
