"""The ``openai`` moderator: ``/v1/moderations`` behind the Moderator protocol.

One :meth:`OpenAIModerator.moderate` call gets the segments of many examples. Text is
cut into chunks (long texts score worse as a whole, and the API has an input limit),
chunks are packed into ``input`` arrays bounded by ``max_inputs_per_request`` and
``max_tokens_per_request``, each image goes alone. Results are mapped back by index
and checked: a response with the wrong number of results is retried, never guessed
from. A 400 on a packed request is bisected until the input that causes it is found;
only that segment fails. A segment's scores are the highest of its chunks'.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
from collections.abc import Sequence

from openai.types import ModerationImageURLInputParam

from moderation.errors import first_cause
from moderation.models import Segment, SegmentError, SegmentModeration
from moderation.policy import ModerationSpec
from moderation.providers.openai._base import OpenAIProvider
from moderation.providers.openai._retry import Failure, MalformedResponse, RawResponse
from moderation.tokens import estimate_text

__all__ = [
    "DEFAULT_MODERATION_MODEL",
    "OpenAIModerator",
    "chunk_text",
    "estimate_tokens",
    "plan_requests",
]

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
DEFAULT_TIMEOUT = 30.0
CHUNK_CHARS = 2_000
"""OpenAI's moderation guide: chunks under 2,000 characters score most accurately."""
IMAGE_TOKENS = 1_000
"""What one image is charged against the tokens-per-minute limit (an estimate)."""


def estimate_tokens(text: str) -> int:
    """What one input is charged against the tokens-per-minute limit: the project's
    offline estimate (:func:`~moderation.tokens.estimate_text`), at least 1."""
    return max(1, estimate_text(text))


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``size`` characters, each starting
    ``overlap`` characters before the previous one ended, so a phrase cut in two is
    still whole in one of them. Cuts at whitespace when there is some near the end."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    if len(text) <= size:
        return [text]
    chunks: list[str] = []
    start = 0
    while True:
        end = min(len(text), start + size)
        if end < len(text):
            floor = start + max(overlap + 1, size * 3 // 4)
            cut = max(text.rfind(" ", floor, end), text.rfind("\n", floor, end))
            if cut > start:
                end = cut
        chunks.append(text[start:end])
        if end >= len(text):
            return chunks
        start = max(end - overlap, start + 1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Unit:
    """One moderation input: a chunk of a text segment, or one image."""

    segment: int
    text: str | None
    image_url: str | None
    tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Scored:
    scores: dict[str, float]
    flagged: frozenset[str]
    model: str


def _units(segments: Sequence[Segment], spec: ModerationSpec) -> list[_Unit]:
    """The moderation inputs of ``segments``: text chunks, and images with a URL."""
    # A char is at most 4 UTF-8 bytes, so a chunk never exceeds the token budget.
    chunk_chars = min(CHUNK_CHARS, spec.max_tokens_per_request * 3 // 4)
    overlap = chunk_chars // 10
    units: list[_Unit] = []
    for index, segment in enumerate(segments):
        if segment.kind == "image":
            if segment.image_url:
                units.append(_Unit(index, None, segment.image_url, IMAGE_TOKENS))
            continue
        for piece in chunk_text(segment.text, chunk_chars, overlap):
            units.append(_Unit(index, piece, None, estimate_tokens(piece)))
    return units


def _pack(units: Sequence[_Unit], spec: ModerationSpec) -> list[list[int]]:
    """Positions of ``units`` grouped into requests: by count and token budget, each
    image alone."""
    requests: list[list[int]] = []
    current: list[int] = []
    budget = 0
    for position, unit in enumerate(units):
        if unit.image_url is not None:
            requests.append([position])
            continue
        too_many = len(current) >= spec.max_inputs_per_request
        if current and (too_many or budget + unit.tokens > spec.max_tokens_per_request):
            requests.append(current)
            current, budget = [], 0
        current.append(position)
        budget += unit.tokens
    if current:
        requests.append(current)
    return requests


def plan_requests(segments: Sequence[Segment], spec: ModerationSpec) -> list[int]:
    """The requests one :meth:`OpenAIModerator.moderate` call of ``segments`` sends when
    nothing fails, as the estimated tokens of each (for ``run --dry-run``)."""
    units = _units(segments, spec)
    return [sum(units[p].tokens for p in request) for request in _pack(units, spec)]


class OpenAIModerator(OpenAIProvider[ModerationSpec]):
    """Scores segments with the OpenAI moderation endpoint (or a compatible server).

    ``OpenAIModerator(spec, client=None, *, timeout=None, max_attempts=None, ...)``:
    without a client one is built from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` and
    closed by :meth:`aclose`; the default timeout is 30 s an attempt. The rest of the
    construction, client ownership and test hooks: see :class:`OpenAIProvider`.
    """

    DEFAULT_MODEL = DEFAULT_MODERATION_MODEL
    DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

    async def moderate(self, segments: Sequence[Segment]) -> list[SegmentModeration | SegmentError]:
        """Score ``segments``; the result is aligned with them. Raises only
        :class:`~moderation.errors.ProviderFatalError` (bad key, no permission)."""
        units = _units(segments, self._spec)
        early = {
            index: self._error("bad_request", "image segment without a URL")
            for index, segment in enumerate(segments)
            if segment.kind == "image" and not segment.image_url
        }
        outcomes: list[_Scored | Failure | None] = [None] * len(units)
        await self._run(_pack(units, self._spec), units, outcomes)
        return self._collect(len(segments), units, outcomes, early)

    async def _run(
        self,
        requests: list[list[int]],
        units: Sequence[_Unit],
        outcomes: list[_Scored | Failure | None],
    ) -> None:
        queue = collections.deque(requests)

        async def worker() -> None:
            while queue:
                await self._send(queue.popleft(), units, outcomes)

        workers = min(len(requests), self._spec.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as group_error:
            # Surface the real error (ProviderFatalError) rather than the group.
            raise first_cause(group_error) from None

    async def _send(
        self,
        request: list[int],
        units: Sequence[_Unit],
        outcomes: list[_Scored | Failure | None],
    ) -> None:
        batch = [units[position] for position in request]
        tokens = sum(unit.tokens for unit in batch)
        payload: list[str] | list[ModerationImageURLInputParam]
        if batch[0].image_url is not None:
            image: ModerationImageURLInputParam = {
                "type": "image_url",
                "image_url": {"url": batch[0].image_url},
            }
            payload = [image]
        else:
            payload = [unit.text or "" for unit in batch]

        async def send() -> RawResponse:
            return await self._client.moderations.with_raw_response.create(
                input=payload, model=self._model
            )

        def parse(raw: RawResponse) -> list[_Scored]:
            return _parse_results(raw.content, len(batch), self._model)

        outcome = await self._retry.call(send, parse, tokens=tokens)
        if isinstance(outcome, Failure):
            if outcome.code == "bad_request" and len(request) > 1:
                middle = len(request) // 2
                await self._send(request[:middle], units, outcomes)
                await self._send(request[middle:], units, outcomes)
                return
            for position in request:
                outcomes[position] = outcome
            return
        self._stats.input_tokens += tokens
        for position, scored in zip(request, outcome, strict=True):
            outcomes[position] = scored

    def _collect(
        self,
        count: int,
        units: Sequence[_Unit],
        outcomes: Sequence[_Scored | Failure | None],
        early: dict[int, SegmentError],
    ) -> list[SegmentModeration | SegmentError]:
        per_segment: list[list[_Scored | Failure | None]] = [[] for _ in range(count)]
        for unit, outcome in zip(units, outcomes, strict=True):
            per_segment[unit.segment].append(outcome)
        results: list[SegmentModeration | SegmentError] = []
        for index, found in enumerate(per_segment):
            if index in early:
                results.append(early[index])
                continue
            failure = next((o for o in found if not isinstance(o, _Scored)), None)
            if failure is not None or not found:
                code = failure.code if isinstance(failure, Failure) else "internal"
                message = failure.message if isinstance(failure, Failure) else "no result"
                results.append(self._error(code, message))
                continue
            scored = [o for o in found if isinstance(o, _Scored)]
            scores: dict[str, float] = {}
            flagged: set[str] = set()
            for part in scored:
                flagged |= part.flagged
                for category, score in part.scores.items():
                    scores[category] = max(score, scores.get(category, score))
            results.append(
                SegmentModeration(
                    scores=scores,
                    flagged=tuple(sorted(flagged)),
                    provider=self.name,
                    model=scored[0].model,
                )
            )
        return results

    def _error(self, code: str, message: str) -> SegmentError:
        return SegmentError(code=code, message=message, provider=self.name, model=self._model)


def _parse_results(content: bytes, expected: int, requested_model: str) -> list[_Scored]:
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("the response is not valid JSON") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise MalformedResponse("the response has no 'results' list")
    if len(results) != expected:
        raise MalformedResponse(f"sent {expected} inputs, got {len(results)} results")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        model = requested_model
    parsed: list[_Scored] = []
    for result in results:
        scores = result.get("category_scores") if isinstance(result, dict) else None
        categories = result.get("categories") if isinstance(result, dict) else None
        if not isinstance(scores, dict) or not isinstance(categories, dict):
            raise MalformedResponse("a result lacks 'category_scores' or 'categories'")
        clean: dict[str, float] = {}
        for category, score in scores.items():
            if score is None:  # categories a model does not score (e.g. for images)
                continue
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise MalformedResponse(f"score of {category!r} is not a number")
            if not math.isfinite(score):
                raise MalformedResponse(f"score of {category!r} is not finite")
            clean[str(category)] = float(score)
        if not clean:
            # No score is no verdict: an empty answer must never pass an example as safe.
            raise MalformedResponse("a result has no category scores")
        flagged = frozenset(str(c) for c, on in categories.items() if on is True)
        parsed.append(_Scored(clean, flagged, model))
    return parsed
