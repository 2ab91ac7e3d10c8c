"""The library API; the command line is a thin layer over it.

- :func:`screen` (async) and :func:`screen_sync` run the batch job: inputs in, the five
  output files written, a :class:`~moderation.summary.RunSummary` returned.
- :func:`stream` yields one :class:`~moderation.models.ExampleResult` per example, in
  input order, and writes nothing: for callers who route examples themselves.

Each takes ``cache``: a path (or an open :class:`~moderation.cache.ResultCache`) where
stage answers are kept, so the same call again (after an interruption, or on a dataset
with a few lines changed) only asks the providers what they have not answered yet.

Both accept files (paths) or in-memory ``records`` (dicts or JSON lines). Configuration
is checked here, once, before anything is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation._run import (
    PathLike,
    PolicyArg,
    PolicyChoice,
    ProgressCallback,
    Run,
    input_paths,
    policy_info,
    prepare,
    providers_report,
    resolve_policy,
    total_cost,
    total_requests,
)
from moderation._version import __version__
from moderation.audit import AuditLog
from moderation.cache import CacheArg, cache_report
from moderation.models import Example, ExampleResult
from moderation.providers import Grader, Moderator
from moderation.reader import DEFAULT_MAX_LINE_BYTES, hash_file, input_links, path_text
from moderation.sinks import OutputDir, example_result
from moderation.summary import Counts, RunSummary, Tally
from moderation.tokens import token_method

__all__ = ["PolicyChoice", "ProgressCallback", "resolve_policy", "screen", "screen_sync", "stream"]


async def screen(
    inputs: PathLike | Sequence[PathLike] | None = None,
    *,
    out: PathLike,
    records: Iterable[Any] | None = None,
    policy: PolicyArg = None,
    concurrency: int = 8,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderator: Moderator | None = None,
    grader: Grader | None = None,
    progress: ProgressCallback | None = None,
    allow_fallback: bool = True,
    cache: CacheArg = None,
) -> RunSummary:
    """Screen files (``inputs``) or in-memory ``records`` and write the outputs to ``out``.

    ``policy`` is a built-in pack's name, a path, a loaded :class:`Policy` (or the
    :class:`PolicyChoice` of :func:`resolve_policy`); ``None`` picks ``default`` with an
    API key and ``offline`` without (unless ``allow_fallback`` is false). ``moderator`` and
    ``grader`` inject providers (tests, custom backends) in place of the policy's.
    ``cache`` keeps stage answers (see the module); the outputs are the same with or
    without it, only the requests differ.
    """
    paths = input_paths(inputs, records)
    run = prepare(
        policy,
        moderator=moderator,
        grader=grader,
        concurrency=concurrency,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        allow_fallback=allow_fallback,
        cache=cache,
    )
    async with run:
        started = time.monotonic()
        started_at = datetime.now(UTC)
        input_hashes = {path_text(p): hash_file(p) for p in paths or ()}
        outputs = OutputDir(Path(out), inputs=list(paths or ()))
        try:
            run.open_cache(paths or ())
            audit = AuditLog(outputs.audit_handle)
            audit.event("run_start", **_run_start(run, input_hashes, paths or []))
            pipeline = run.pipeline()

            async def sink(batch: Sequence[Example]) -> None:
                for example in batch:
                    outputs.write(example)
                    audit.decision(example)
                if progress is not None:
                    progress(pipeline.tally, run.stats)

            # The files must still be what run_start recorded when the run has read them.
            tally = await pipeline.run(run.examples(paths, records, input_hashes), sink)
            tally.check(run.stats.examples)
            summary = _summary(run, tally, input_hashes, started_at, time.monotonic() - started)
            summary.outputs = outputs.digests()
            audit.event("run_end", **_run_end(summary))
            summary.audit = {"events": audit.events, "head": audit.head}
            outputs.commit(summary.model_dump(mode="json"))
        except BaseException:
            outputs.abort()
            raise
    return summary


def screen_sync(inputs: PathLike | Sequence[PathLike] | None = None, **kwargs: Any) -> RunSummary:
    """:func:`screen` for scripts and notebooks (runs its own event loop).

    In a notebook whose loop is already running, ``await screen(...)`` instead.
    """
    return asyncio.run(screen(inputs, **kwargs))


async def stream(
    inputs: PathLike | Sequence[PathLike] | None = None,
    *,
    records: Iterable[Any] | None = None,
    policy: PolicyArg = None,
    concurrency: int = 8,
    batch_size: int = 64,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderator: Moderator | None = None,
    grader: Grader | None = None,
    allow_fallback: bool = True,
    cache: CacheArg = None,
) -> AsyncIterator[ExampleResult]:
    """Yield each example's result, in input order, writing no files (but the cache's).

    Results carry the parsed record (``example``) so a caller can route it.
    """
    paths = input_paths(inputs, records)
    run = prepare(
        policy,
        moderator=moderator,
        grader=grader,
        concurrency=concurrency,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        allow_fallback=allow_fallback,
        cache=cache,
    )
    queue: asyncio.Queue[list[ExampleResult] | None] = asyncio.Queue(maxsize=max(2, concurrency))

    async def sink(batch: Sequence[Example]) -> None:
        await queue.put([example_result(e) for e in batch])

    async def produce() -> None:
        # The end marker is sent when the run ends or fails, never when the consumer
        # cancelled it: then nobody reads the (possibly full) queue any more.
        try:
            await pipeline.run(run.examples(paths, records), sink)
            pipeline.tally.check(run.stats.examples)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await queue.put(None)
            raise
        await queue.put(None)

    async with run:
        run.open_cache(paths or ())
        pipeline = run.pipeline()
        producer = asyncio.create_task(produce())
        try:
            while (results := await queue.get()) is not None:
                for result in results:
                    yield result
            await producer
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)


def _run_start(run: Run, input_hashes: dict[str, str], paths: list[Path]) -> dict[str, Any]:
    return {
        "tool": {"name": "moderation", "version": __version__},
        "policy": policy_info(run.choice.policy),
        "fallback": run.choice.fallback,
        "providers": {
            "moderation": {"name": run.moderator.name, "model": run.moderator.model},
            "grader": None
            if run.grader is None
            else {"name": run.grader.name, "model": run.grader.model},
        },
        "inputs": input_hashes,
        "cache": cache_report(run.cache, run.cache_problem),
        # Symbolic links are followed on purpose; the record says where they led.
        "links": input_links(paths),
    }


def _summary(
    run: Run,
    tally: Tally,
    input_hashes: dict[str, str],
    started_at: datetime,
    duration: float,
) -> RunSummary:
    providers = providers_report(run)
    return RunSummary(
        counts=Counts(**tally.counts(run.stats.examples)),
        blank_lines=run.stats.blank_lines,
        **tally.breakdown(),
        tokens={"total": tally.tokens, "method": token_method()},
        graded=tally.graded,
        policy=policy_info(run.choice.policy),
        fallback=run.choice.fallback,
        providers=providers,
        requests=total_requests(providers),
        cost_usd=total_cost(providers),
        inputs=input_hashes,
        cache=cache_report(run.cache, run.cache_problem),
        tool={"name": "moderation", "version": __version__},
        run={
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_s": round(duration, 3),
            "examples_per_s": round(run.stats.examples / duration, 1) if duration > 0 else None,
        },
    )


def _run_end(summary: RunSummary) -> dict[str, Any]:
    return {
        "counts": summary.counts.model_dump(),
        "blank_lines": summary.blank_lines,
        "reasons": summary.reasons,
        "categories": summary.categories,
        "providers": summary.providers,
        "requests": summary.requests,
        "tokens": summary.tokens,
        "cost_usd": summary.cost_usd,
        "cache": summary.cache,
        "duration_s": summary.run["duration_s"],
        "outputs": summary.outputs,
        "summary": summary.digest(),
    }
