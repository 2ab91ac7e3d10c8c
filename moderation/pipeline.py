"""The pipeline: read → validate → moderate → grade → route → sinks, concurrently.

Examples travel in batches (a batch is the unit a moderator packs into requests). The
reader validates a batch, then starts its moderate/grade/route work as a task and puts
the task on an ordered queue; the writer takes tasks off that queue in input order and
sends each finished batch to the sinks. A semaphore bounds the batches in flight, so a
slow provider holds the reader back and memory stays flat however large the input is,
while outputs are still written in input order whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from moderation.cache import ResultCache
from moderation.errors import first_cause
from moderation.grade import grade_batch
from moderation.models import Example
from moderation.moderate import moderate_batch
from moderation.policy import Policy
from moderation.providers import Grader, Moderator, endpoint
from moderation.route import route
from moderation.summary import Tally
from moderation.validate import validate

__all__ = ["Pipeline", "PipelineOptions", "batches"]

BatchSink = Callable[[Sequence[Example]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """How much work is in flight. Validated by the caller (CLI or library edge)."""

    concurrency: int = 8
    """Batches in flight at once (each is moderated, then graded, concurrently)."""
    batch_size: int = 64
    """Examples per batch: the most a moderator can pack into one call."""
    batch_bytes: int = 8 * 1024 * 1024
    """A batch closes early past this many input bytes, to bound memory on huge lines."""


class Pipeline:
    """Runs examples through the stages with the injected providers.

    With a ``cache``, each stage asks it first and only sends what it cannot answer.
    """

    def __init__(
        self,
        policy: Policy,
        moderator: Moderator,
        grader: Grader | None = None,
        options: PipelineOptions | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.policy = policy
        self.moderator = moderator
        self.grader = grader
        self.options = options or PipelineOptions()
        self.tally = Tally()
        self._moderation_cache = None
        self._grade_cache = None
        if cache is not None:
            self._moderation_cache = cache.moderation(
                moderator.name, moderator.model, policy.hash, endpoint=endpoint(moderator)
            )
            if grader is not None:
                self._grade_cache = cache.grading(
                    grader.name, grader.model, policy.hash, endpoint=endpoint(grader)
                )

    async def run(self, examples: Iterable[Example], sink: BatchSink) -> Tally:
        """Decide every example and hand each batch, in input order, to ``sink``."""
        window = asyncio.Semaphore(self.options.concurrency)
        ordered: asyncio.Queue[asyncio.Task[Sequence[Example]] | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(examples, window, ordered, group))
                group.create_task(self._write(window, ordered, sink))
        except BaseExceptionGroup as grouped:
            raise first_cause(grouped) from None
        return self.tally

    async def _read(
        self,
        examples: Iterable[Example],
        window: asyncio.Semaphore,
        ordered: asyncio.Queue[asyncio.Task[Sequence[Example]] | None],
        group: asyncio.TaskGroup,
    ) -> None:
        index = itertools.count()
        for batch in batches(examples, self.options.batch_size, self.options.batch_bytes):
            await window.acquire()
            for example in batch:
                example.index = next(index)
                validate(example)
            await ordered.put(group.create_task(self._decide(batch)))
            # Let the batches in flight progress between two reads.
            await asyncio.sleep(0)
        await ordered.put(None)

    async def _decide(self, batch: list[Example]) -> Sequence[Example]:
        await moderate_batch(batch, self.moderator, self.policy.moderation, self._moderation_cache)
        await grade_batch(batch, self.grader, self.policy.grader, self._grade_cache)
        for example in batch:
            route(example, self.policy.grader)
        return batch

    async def _write(
        self,
        window: asyncio.Semaphore,
        ordered: asyncio.Queue[asyncio.Task[Sequence[Example]] | None],
        sink: BatchSink,
    ) -> None:
        while (task := await ordered.get()) is not None:
            batch = await task
            for example in batch:
                self.tally.add(example)
            await sink(batch)
            window.release()


def batches(examples: Iterable[Example], size: int, max_bytes: int) -> Iterable[list[Example]]:
    """``examples`` in lists of ``size``, cut early past ``max_bytes`` of input."""
    batch: list[Example] = []
    used = 0
    for example in examples:
        batch.append(example)
        used += example.size
        if len(batch) >= size or used >= max_bytes:
            yield batch
            batch = []
            used = 0
    if batch:
        yield batch
