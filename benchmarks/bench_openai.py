"""Sustained throughput of the OpenAI moderation stage under a tokens-per-minute limit.

Three clients moderate the same synthetic segments against the fake OpenAI server
(tests/fake_openai) with a per-request latency and a TPM limit, each for the same wall
time on a fresh server:

  (a) OpenAIModerator: packed requests, token-aware limiter learned from the
      x-ratelimit-* headers, its own retries; fed like the pipeline feeds it
      (batches of segments, several moderate() calls at once).
  (b) a naive sequential loop: one SDK call per segment, SDK defaults (2 retries).
  (c) asyncio.gather + a semaphore: the same packing (32 inputs a request) and
      concurrency (8) as (a), SDK defaults (2 retries honouring retry-after) but no
      rate limiter: the difference to (a) is the rate limiting.

Throughput counts the tokens the server accepted after a warm-up (the first seconds
include the client's and the server's burst allowance), per minute, and as a share of
the limit. The fake charges ceil(UTF-8 bytes / 3) per input, the moderator's own
estimate (``--server-counter chars4`` charges ceil(chars / 4) instead, closer to how
OpenAI counts English, to show the estimator's safety margin).

    PYTHONPATH=. python benchmarks/bench_openai.py            # ~60 s
    PYTHONPATH=. python benchmarks/bench_openai.py --tpm 200000 --seconds 40

The default limit (1M TPM) gives (a) ~150 requests in its 18 s, enough for a 429 rate
to mean something; at 200k TPM (a) sends one ~2k-token request every ~0.6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient, OpenAIError

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from moderation.models import Segment, SegmentError  # noqa: E402
from moderation.policy import ModerationSpec  # noqa: E402
from moderation.providers.openai import OpenAIModerator  # noqa: E402
from tests.fake_openai import FakeConfig, FakeOpenAI, count_tokens  # noqa: E402

WORDS = (
    "the", "model", "learns", "from", "every", "example", "so", "each", "line", "of", "dataset",
    "should", "be", "read", "with", "care", "before", "training", "starts", "because", "a",
    "few", "bad", "lines", "can", "teach", "it", "habits", "nobody", "wanted", "later",
)  # fmt: skip
MODEL = "omni-moderation-latest"


@dataclasses.dataclass
class Outcome:
    name: str
    tokens_per_minute: float
    share_of_limit: float
    requests: int
    rate_limited: int
    inputs_per_second: float
    """Inputs answered (HTTP 200) per second in the measured window."""
    segments_failed: int
    """Segments the client gave up on (after its retries)."""

    @property
    def pct_429(self) -> float:
        return 100.0 * self.rate_limited / self.requests if self.requests else 0.0


def make_segments(count: int, seed: int) -> list[Segment]:
    rng = random.Random(seed)
    return [
        Segment(
            path=f"messages[{i % 4}].content",
            role="user",
            text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))),
        )
        for i in range(count)
    ]


def sdk_client(base_url: str, *, max_retries: int) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key="sk-bench",
        base_url=base_url,
        http_client=DefaultAioHttpClient(),
        max_retries=max_retries,
        timeout=30.0,
    )


async def run_moderator(base_url: str, segments: list[Segment], failed: list[int]) -> None:
    client = sdk_client(base_url, max_retries=0)
    moderator = OpenAIModerator(ModerationSpec(provider="openai", model=MODEL), client)
    batches: asyncio.Queue[list[Segment]] = asyncio.Queue()
    for start in range(0, len(segments), 256):
        batches.put_nowait(segments[start : start + 256])

    async def feeder() -> None:
        while not batches.empty():
            results = await moderator.moderate(batches.get_nowait())
            failed[0] += sum(1 for r in results if isinstance(r, SegmentError))

    try:
        await asyncio.gather(*(feeder() for _ in range(4)))
    finally:
        await moderator.aclose()
        await client.close()


async def run_sequential(base_url: str, segments: list[Segment], failed: list[int]) -> None:
    client = sdk_client(base_url, max_retries=2)
    try:
        for segment in segments:
            try:
                await client.moderations.create(input=segment.text, model=MODEL)
            except OpenAIError:
                failed[0] += 1
    finally:
        await client.close()


async def run_gather(base_url: str, segments: list[Segment], failed: list[int]) -> None:
    client = sdk_client(base_url, max_retries=2)
    semaphore = asyncio.Semaphore(8)
    # Packed like (a) (32 inputs a request), so the difference is the rate limiting.
    batches = [segments[i : i + 32] for i in range(0, len(segments), 32)]

    async def one(batch: list[Segment]) -> None:
        async with semaphore:
            try:
                await client.moderations.create(input=[s.text for s in batch], model=MODEL)
            except OpenAIError:
                failed[0] += len(batch)

    try:
        # What such loops usually do: a task per batch up front.
        await asyncio.gather(*(one(b) for b in batches))
    finally:
        await client.close()


Runner = Callable[[str, list[Segment], list[int]], Coroutine[Any, Any, None]]


async def measure(
    name: str, runner: Runner, segments: list[Segment], args: argparse.Namespace
) -> Outcome:
    counter_fn = count_tokens if args.server_counter == "bytes3" else _chars4
    config = FakeConfig(
        latency=args.latency,
        tokens_per_minute=args.tpm,
        burst_seconds=args.server_burst,
        token_counter=counter_fn,
    )
    failed = [0]
    async with FakeOpenAI(config) as fake:
        started = time.monotonic()
        task = asyncio.create_task(runner(fake.base_url, segments, failed))
        done, _ = await asyncio.wait({task}, timeout=args.seconds)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            task.result()
        ended = min(time.monotonic(), started + args.seconds)
        window_start = started + args.warmup
        measured = [r for r in fake.requests if window_start <= r.at < ended]
        accepted = sum(r.tokens for r in measured)
        answered = sum(_inputs(r.body) for r in measured if r.status == 200)
        per_minute = accepted / max(1e-9, ended - window_start) * 60.0
        return Outcome(
            name=name,
            tokens_per_minute=per_minute,
            share_of_limit=100.0 * per_minute / args.tpm,
            requests=len(fake.requests),
            rate_limited=fake.count(status=429),
            inputs_per_second=answered / max(1e-9, ended - window_start),
            segments_failed=failed[0],
        )


def _inputs(body: Any) -> int:
    value = body.get("input") if isinstance(body, dict) else None
    return len(value) if isinstance(value, list) else 1


def _chars4(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


COLUMNS = ("client", "tokens/min", "% of TPM", "requests", "429s", "% 429", "inputs/s", "gave up")


def _row(o: Outcome) -> tuple[str, ...]:
    return (
        o.name,
        f"{o.tokens_per_minute:,.0f}",
        f"{o.share_of_limit:.1f}%",
        f"{o.requests:,}",
        f"{o.rate_limited:,}",
        f"{o.pct_429:.2f}%",
        f"{o.inputs_per_second:,.0f}",
        f"{o.segments_failed:,}",
    )


def report(outcomes: list[Outcome], args: argparse.Namespace, command: str) -> None:
    rows = [COLUMNS, *(_row(o) for o in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    print()
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    counter = "ceil(bytes/3)" if args.server_counter == "bytes3" else "ceil(chars/4)"
    print("\nMarkdown:\n")
    print(
        f"Fake server: {args.latency * 1000:.0f} ms latency, {args.tpm:,} TPM enforced over"
        f" {args.server_burst:g} s windows, {args.seconds:g} s per client, throughput measured"
        f" after a {args.warmup:g} s warm-up; the server charges {counter} tokens per input.\n"
    )
    print("| " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " ---: |" * (len(COLUMNS) - 1))
    for o in outcomes:
        print("| " + " | ".join(_row(o)) + " |")
    print(f"\nCommand: `{command}`")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=18.0, help="wall time per client")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds not measured")
    parser.add_argument("--latency", type=float, default=0.15, help="server latency (s)")
    parser.add_argument("--tpm", type=int, default=1_000_000, help="server tokens per minute")
    parser.add_argument("--server-burst", type=float, default=3.0, help="server window (s)")
    parser.add_argument("--server-counter", choices=["bytes3", "chars4"], default="bytes3")
    parser.add_argument("--segments", type=int, default=30_000)
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    args = parser.parse_args(argv)
    segments = make_segments(args.segments, seed=1)
    runners: list[tuple[str, str, Runner]] = [
        ("a", "(a) OpenAIModerator", run_moderator),
        ("b", "(b) sequential SDK loop", run_sequential),
        ("c", "(c) gather + semaphore(8), packed", run_gather),
    ]
    outcomes = []
    for key, name, runner in runners:
        if args.only and key not in args.only:
            continue
        print(f"running {name} for {args.seconds:g} s ...", flush=True)
        outcomes.append(await measure(name, runner, segments, args))
    command = "PYTHONPATH=. python benchmarks/bench_openai.py" + (
        " " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else ""
    )
    report(outcomes, args, command)


if __name__ == "__main__":
    asyncio.run(main())
