"""Offline throughput and peak memory of ``moderation run --policy offline``.

Generates chat datasets of the given sizes, then for each size runs, in child
processes so that peak memory (max RSS) is measured per run:

- ``bare``: a read → parse → serialise → write loop with orjson over the same file
  (the floor: what any Python tool pays just to touch every line);
- ``moderation``: the full offline pipeline (reader, validate, local detectors and
  classifier, route, sinks, hash-chained audit log, summary), with ``--no-cache`` so
  that every repeat does all the work.

Each is repeated ``--repeat`` times, alternating, and the medians are reported, with
the ratio of the two measured in the same run (this machine is shared and noisy).

    python benchmarks/bench_offline.py --sizes 100000 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from datagen import chat_lines, write_lines  # noqa: E402

BARE = """
import sys, orjson
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f, open(dst, "wb") as out:
    for raw in f:
        if raw.strip():
            out.write(orjson.dumps(orjson.loads(raw)) + b"\\n")
"""


def _measure(argv: list[str]) -> tuple[float, float]:
    wrapper = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "e = time.perf_counter() - t\n"
        "sys.stderr.write(p.stderr.decode())\n"
        "print(e, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n",
        *argv,
    ]
    proc = subprocess.run(wrapper, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    seconds, rss_kib = proc.stdout.split()
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="moderation-bench-") as tmp:
        root = Path(tmp)
        for size in args.sizes:
            data = write_lines(root / f"chat-{size}.jsonl", chat_lines(size, seed=size))
            mb = data.stat().st_size / 1e6
            bare_runs, tool_runs = [], []
            for _ in range(args.repeat):
                bare_runs.append(
                    _measure([sys.executable, "-c", BARE, str(data), str(root / "bare.jsonl")])
                )
                tool_runs.append(
                    _measure(
                        [
                            sys.executable,
                            "-m",
                            "moderation",
                            "run",
                            str(data),
                            "--out",
                            str(root / "out"),
                            "--policy",
                            "offline",
                            "--quiet",
                            # Every repeat does the whole work: a warm cache would skip
                            # the classifier (bench_cache.py measures the cache).
                            "--no-cache",
                            "--concurrency",
                            str(args.concurrency),
                            "--batch-size",
                            str(args.batch_size),
                        ]
                    )
                )
            bare_s = statistics.median(t for t, _ in bare_runs)
            tool_s = statistics.median(t for t, _ in tool_runs)
            rows.append(
                {
                    "size": size,
                    "mb": mb,
                    "bare_eps": size / bare_s,
                    "tool_eps": size / tool_s,
                    "bare_rss": statistics.median(m for _, m in bare_runs),
                    "tool_rss": statistics.median(m for _, m in tool_runs),
                    "ratio": tool_s / bare_s,
                }
            )
            data.unlink()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.repeat}")
    print(
        "| examples | input MB | bare loop ex/s | moderation ex/s | time ratio"
        " | bare peak MiB | moderation peak MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['mb']:.0f} | {r['bare_eps']:,.0f} | {r['tool_eps']:,.0f} |"
            f" {r['ratio']:.1f}x | {r['bare_rss']:.0f} | {r['tool_rss']:.0f} |"
        )
    if len(rows) >= 2:
        growth = rows[-1]["tool_rss"] / rows[0]["tool_rss"] - 1
        print(
            f"\npeak memory growth {rows[0]['size']:,} -> {rows[-1]['size']:,} examples:"
            f" {100 * growth:+.1f}%"
        )


if __name__ == "__main__":
    main()
