"""Resumable runs: killed at any moment, the same command again finishes the work,
asks only for what was not answered yet, and writes the same bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest
from datagen import chat, line
from fake_openai import FakeOpenAI, marker
from stubs import KeywordModerator

from moderation import screen
from moderation.policy import Policy
from moderation.sinks import OUTPUT_FILES

DATA_FILES = ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl")
POLICY = """\
id: resume-test
version: "1"
moderation:
  provider: openai
  thresholds: {"*": 0.5}
  zero_tolerance: [sexual/minors]
grader:
  provider: none
"""


def _dataset(path: Path, n: int, seed: int = 5) -> dict[str, int]:
    """``n`` small examples (text, chat, a few unsafe, a few invalid); returns each
    line's hash -> the inputs the moderator sends for it."""
    rng = random.Random(seed)
    inputs: dict[str, int] = {}
    with path.open("wb") as handle:
        for i in range(n):
            roll = rng.random()
            unsafe = ""
            if rng.random() < 0.03:
                unsafe = " " + marker(rng.choice(["violence", "hate", "sexual/minors"]))
            if roll < 0.8:
                raw, count = line({"text": f"paragraph {i}{unsafe}"}), 1
            elif roll < 0.99:
                raw, count = line(chat(f"q {i}{unsafe}", f"a {i}", system=None)), 2
            else:
                raw, count = b'{"messages": 5}', 0
            handle.write(raw + b"\n")
            inputs[hashlib.sha256(raw).hexdigest()] = count
    return inputs


def _inputs_sent(fake: FakeOpenAI, since: int) -> int:
    return sum(len(r.body["input"]) for r in fake.requests[since:] if r.status == 200)


def _cached_hashes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT hash FROM entries")}
    finally:
        db.close()


@pytest.mark.slow
async def test_kill_9_at_random_moments_then_the_same_command_completes_it(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.config.latency = 0.02
    data = tmp_path / "data.jsonl"
    per_line = _dataset(data, 20_000)
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.base_url,
        "PYTHONDONTWRITEBYTECODE": "1",
    }

    async def start(out: str, *extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "moderation", "run", "data.jsonl", "--out", out),
            *("--policy", "policy.yaml", "--quiet", *extra),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    reference = await start("reference", "--no-cache")
    _, err = await reference.communicate()
    assert reference.returncode == 0, err.decode()
    total_requests = len(fake.requests)
    total_inputs = _inputs_sent(fake, 0)
    assert total_inputs == sum(per_line.values())

    out = tmp_path / "out"
    cache = out / ".moderation-cache.sqlite"
    rng = random.Random(9)
    # One kill while the process is still starting, then three at random points of
    # the work (by the requests the fake has seen), each a little further on.
    progress = sorted(rng.uniform(0.1, 0.85) for _ in range(3))
    kills = [("seconds", rng.uniform(0.05, 0.4))] + [("requests", p) for p in progress]
    cached_before = 0
    for kind, at in kills:
        before = len(fake.requests)
        proc = await start("out")
        if kind == "seconds":
            await asyncio.sleep(at)
        else:
            done = cached_before / len(per_line)
            target = before + max(1, int((at - done) * total_requests))
            while len(fake.requests) < target and proc.returncode is None:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            await asyncio.sleep(rng.uniform(0, 0.05))
        assert proc.returncode is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        # Nothing that looks finished: no output file under its final name.
        assert not [n for n in OUTPUT_FILES if (out / n).exists()]
        if cache.exists():
            cached_before = len(_cached_hashes(cache))
    await asyncio.sleep(0.2)  # let the fake finish with the killed run's last requests

    answered = _cached_hashes(cache)
    assert 0 < len(answered) < len(per_line), "some, not all, work was done before the kills"
    left = sum(n for h, n in per_line.items() if h not in answered)
    since = len(fake.requests)
    final = await start("out")
    _, err = await final.communicate()
    assert final.returncode == 0, err.decode()
    # Only the work that was left was asked for, not one input more.
    assert _inputs_sent(fake, since) == left > 0
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    summary = orjson.loads((out / "summary.json").read_bytes())
    expected = orjson.loads((tmp_path / "reference" / "summary.json").read_bytes())
    assert summary["counts"] == expected["counts"]
    assert summary["cache"]["moderate"]["hits"] == sum(
        1 for h, n in per_line.items() if h in answered and n
    )

    # The same command once more: everything from the cache, no request at all.
    since = len(fake.requests)
    again = await start("out")
    _, err = await again.communicate()
    assert again.returncode == 0, err.decode()
    assert len(fake.requests) == since
    assert orjson.loads((out / "summary.json").read_bytes())["requests"] == 0
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


async def test_an_interrupted_rerun_removes_the_previous_runs_outputs(tmp_path: Path) -> None:
    """Otherwise a previous run's clean.jsonl would sit beside this run's partial files
    and look like its result."""
    policy = Policy.model_validate(
        {"id": "s", "version": "1", "moderation": {"provider": "local", "thresholds": {}}}
    )
    source = tmp_path / "d.jsonl"
    source.write_bytes(b"".join(line(chat(f"q{i}", "a")) + b"\n" for i in range(300)))
    out = tmp_path / "out"
    await screen(source, out=out, policy=policy, moderator=KeywordModerator())
    assert all((out / n).exists() for n in OUTPUT_FILES)

    class Hangs(KeywordModerator):
        async def moderate(self, segments):  # type: ignore[no-untyped-def]
            if self.stats.requests >= 2:
                await asyncio.sleep(3600)
            return await super().moderate(segments)

    moderator = Hangs()
    run = asyncio.create_task(
        screen(source, out=out, policy=policy, moderator=moderator, batch_size=10, concurrency=2)
    )
    while moderator.stats.requests < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    # Mid-run: the previous outputs are gone, only partial files are there.
    assert not [n for n in OUTPUT_FILES if (out / n).exists()]
    assert (out / ".clean.jsonl.partial").exists()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


def _graded_hashes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT hash FROM entries JOIN scopes ON scopes.id = entries.scope"
            " WHERE stage = 'grade'"
        )
        return {row[0] for row in rows}
    finally:
        db.close()


@pytest.mark.slow
async def test_a_run_with_the_grader_killed_mid_way_resumes_without_asking_twice(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """The default pack (moderation, then the LLM judge on escalations): kill -9 while
    the judge is answering, run again; only the unjudged escalations are sent, the files
    are the uninterrupted run's, and the resumed run's audit trail verifies."""
    from moderation.verify import verify_run

    fake.config.latency = 0.01
    rng = random.Random(11)
    escalated: set[str] = set()
    with (tmp_path / "data.jsonl").open("wb") as handle:
        for i in range(3000):
            user, assistant = f"question {i}", f"answer {i}"
            if rng.random() < 0.1:
                user += " " + marker("violence")
                assistant += " COMPLY" if rng.random() < 0.3 else " I can't help with that."
            raw = line(chat(user, assistant, system=None))
            handle.write(raw + b"\n")
            if "UNSAFE_" in user:
                escalated.add(hashlib.sha256(raw).hexdigest())
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}

    async def start(out: str, *extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "moderation", "run", "data.jsonl", "--out", out),
            *("--policy", "default", "--quiet", "--concurrency", "2", *extra),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    def judged(since: int = 0) -> int:
        return sum(
            1 for r in fake.requests[since:] if r.path == "/v1/chat/completions" and r.status
        )

    reference = await start("reference", "--no-cache")
    _, err = await reference.communicate()
    assert reference.returncode == 0, err.decode()
    assert judged() == len(escalated) > 200

    before = len(fake.requests)
    proc = await start("out")
    while judged(before) < len(escalated) // 2 and proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    assert proc.returncode is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await asyncio.sleep(0.2)
    out = tmp_path / "out"
    # One grade entry per judged example (keyed by the example and what it was shown).
    answered = len(_graded_hashes(out / ".moderation-cache.sqlite"))
    assert 0 < answered < len(escalated)

    since = len(fake.requests)
    final = await start("out")
    _, err = await final.communicate()
    assert final.returncode == 0, err.decode()
    assert judged(since) == len(escalated) - answered
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert verify_run(out).ok
