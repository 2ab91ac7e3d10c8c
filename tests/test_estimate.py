"""``run --dry-run``: estimates that match what a real run sends, and no call at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from child import run_cli
from fake_openai import FakeOpenAI, marker
from openai import AsyncOpenAI, DefaultAioHttpClient

from moderation.api import screen
from moderation.estimate import estimate_run
from moderation.policy import load_policy
from moderation.providers.openai import OpenAIGrader, OpenAIModerator, RetryPolicy, price_for

DEFAULT = load_policy("default")


def _dataset(path: Path, count: int = 300) -> Path:
    lines = []
    for i in range(count):
        user = f"question {i} " + ("padding words " * (i % 40))
        if i % 10 == 3:
            user += marker("violence")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": f"a{i}"}]
        lines.append(json.dumps({"messages": messages}))
    lines.insert(7, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_estimate_matches_a_real_run(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data.jsonl")
    policy = DEFAULT.model_copy(
        update={"grader": DEFAULT.grader.model_copy(update={"sees": "all"})}
    )
    estimate = estimate_run([data], policy, batch_size=64)
    assert (estimate.examples, estimate.valid, estimate.invalid) == (301, 300, 1)

    fast = RetryPolicy(max_attempts=2, base_delay=0.001)
    async with AsyncOpenAI(
        api_key="sk-test", base_url=fake.base_url, http_client=DefaultAioHttpClient()
    ) as client:
        summary = await screen(
            data,
            out=tmp_path / "out",
            policy=policy,
            batch_size=64,
            moderator=OpenAIModerator(policy.moderation, client, retry_policy=fast),
            grader=OpenAIGrader(policy.grader, client, retry_policy=fast),
        )
    moderation = summary.providers["moderation"]
    grader = summary.providers["grader"]
    # The moderator's own packing: the same requests and estimated tokens, exactly.
    assert estimate.moderation.requests == moderation["requests"]
    assert estimate.moderation.input_tokens == moderation["input_tokens"]
    # The grader's figures are ceilings, and not loose ones.
    assert estimate.grader is not None
    assert grader["requests"] <= estimate.grader.requests_max <= 300
    assert estimate.grader.requests_max - grader["requests"] == summary.counts.flagged
    assert grader["input_tokens"] <= estimate.grader.input_tokens_max
    assert estimate.grader.input_tokens_max < 1.2 * grader["input_tokens"]
    assert grader["output_tokens"] <= estimate.grader.output_tokens_max
    assert grader["cost_usd"] <= estimate.grader.cost_usd_max


def test_escalations_ceiling_counts_examples_with_an_escalating_turn(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "assistant", "content": "only an assistant turn"}]},
        {"text": "a corpus record: role text, never escalated"},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    estimate = estimate_run([data], DEFAULT)
    assert estimate.grader is not None
    assert estimate.grader.requests_max == 1
    price = price_for("gpt-4o-mini")
    assert price is not None
    assert estimate.grader.cost_usd_max == pytest.approx(
        price.cost(estimate.grader.input_tokens_max, DEFAULT.grader.max_output_tokens), abs=1e-6
    )
    offline = estimate_run([data], load_policy("offline"))
    assert (offline.moderation.requests, offline.grader) == (0, None)


async def test_dry_run_calls_nothing_and_needs_no_key(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data.jsonl", count=50)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["COLUMNS"] = "200"
    with_key = {**env, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
    code, out, err = await run_cli("run", str(data), "--dry-run", env=with_key, cwd=tmp_path)
    assert code == 0, err
    assert "policy default" in out
    assert "moderation requests" in out and "grader requests" in out
    code, out_no_key, err = await run_cli("run", str(data), "--dry-run", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out_no_key == out  # the estimate of the policy a key would give
    code, _, err = await run_cli("run", str(data), env=env, cwd=tmp_path)
    assert code == 2 and "--out" in err
    assert fake.count() == 0
    # Nothing was written in the working directory: no outputs, no cache.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data.jsonl"]  # noqa: ASYNC240
