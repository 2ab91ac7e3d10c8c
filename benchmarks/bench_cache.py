"""What the result cache saves: the same dataset screened cold, warm, and after an edit.

Each step is the real command (``moderation run`` / ``moderation gate``) in its own
process against the fake OpenAI server (tests/fake_openai) with a per-request latency,
and a policy that uses OpenAI moderation (no grader). Steps:

  run, no cache           the baseline: every example asked
  run, cold cache         the same, also writing the cache
  run, warm cache         the same command again: every answer from the cache
  gate, warm cache        the gate on the unchanged file (the run's cache)
  gate, one line edited   only the edited example is asked

    python benchmarks/bench_cache.py                 # 20,000 examples, 20 ms latency
    python benchmarks/bench_cache.py --examples 100000 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fake_openai import FakeConfig, FakeOpenAI  # noqa: E402

POLICY = """\
id: bench-cache
version: "1"
moderation:
  provider: openai
  thresholds: {"*": 0.5}
grader:
  provider: none
"""


def _write(path: Path, n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if rng.random() < 0.8:
            lines.append(json.dumps({"text": f"A plain paragraph, number {i}."}))
        else:
            messages = [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
            lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return lines


async def _step(fake: FakeOpenAI, label: str, argv: list[str], cwd: Path) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": fake.base_url,
        "PYTHONPATH": str(REPO),
    }
    before = len(fake.requests)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "moderation", *argv, cwd=cwd, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    elapsed = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{label}: exit {proc.returncode}: {err.decode()}")
    sent = fake.requests[before:]
    inputs = sum(len(r.body["input"]) for r in sent if r.status == 200)
    print(f"| {label} | {elapsed:.2f} | {len(sent):,} | {inputs:,} | {proc.returncode} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "policy.yaml").write_text(POLICY)
        lines = _write(root / "data.jsonl", args.examples)
        common = ["--policy", "policy.yaml"]
        run = ["run", "data.jsonl", "--out", "out", "--quiet", *common]
        gate = ["gate", "data.jsonl", *common, "--cache", "out/.moderation-cache.sqlite"]
        async with FakeOpenAI(FakeConfig(latency=args.latency)) as fake:
            print(f"{args.examples:,} examples, {args.latency * 1000:.0f} ms a request\n")
            print("| step | seconds | requests | inputs | exit |")
            print("| --- | ---: | ---: | ---: | ---: |")
            await _step(fake, "run, no cache", [*run, "--no-cache"], root)
            await _step(fake, "run, cold cache", run, root)
            await _step(fake, "run, warm cache", run, root)
            await _step(fake, "gate, warm cache", gate, root)
            lines[len(lines) // 2] = json.dumps({"text": "An edited paragraph."})
            (root / "data.jsonl").write_text("\n".join(lines) + "\n")
            await _step(fake, "gate, one line edited", gate, root)


if __name__ == "__main__":
    asyncio.run(main())
