"""Deterministic dataset generators shared by the tests, the fixtures and the benchmarks.

Every line comes with the decision the ``offline`` policy must give it, so tests can
check outcomes, not just counts. Secrets and personal data are fake but well-formed
(they pass the detectors' checksums), assembled from parts so no file holds a literal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import orjson

Kind = Literal["clean", "flagged", "quarantine", "blank"]


def _luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return prefix + str((10 - total % 10) % 10)


# AWS's documented example key id, split so scanners do not trip on this file.
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "Xk9mQ2vR7pL4wN8sT1yB5cZ3dF6gH0jK" + "aE2u"
_CARD_DIGITS = _luhn_complete("453201511283036")
CARD = " ".join(_CARD_DIGITS[i : i + 4] for i in range(0, 16, 4))  # a Luhn-valid Visa number
OFFENSIVE = "you are a fucking idiot and a worthless piece of shit"

_TOPICS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I reverse a list in Python?", "Use reversed(items) or items[::-1]."),
    ("Give me a synonym for happy.", "Cheerful, content or joyful all work."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Summarise photosynthesis in one line.", "Plants turn light, water and CO2 into sugar."),
    ("Name a prime number above 50.", "53 is a prime number above 50."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("Translate 'thank you' to Spanish.", "'Thank you' in Spanish is 'gracias'."),
]


def chat(
    user: str, assistant: str, *, system: str | None = "You are a helpful assistant."
) -> dict[str, object]:
    """A chat fine-tuning record."""
    messages: list[dict[str, object]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": assistant})
    return {"messages": messages}


def line(record: object) -> bytes:
    """One JSONL line (no newline) as the generators write it."""
    return orjson.dumps(record)


def clean_chat(rng: random.Random, i: int) -> bytes:
    """A valid, harmless chat example; ``i`` varies the text so hashes differ."""
    question, answer = rng.choice(_TOPICS)
    return line(chat(f"{question} (#{i})", f"{answer} Example {i}."))


def mixed_lines(n: int, seed: int = 0) -> Iterator[tuple[Kind, bytes]]:
    """``n`` lines of a realistic mix: mostly clean chat, plus every way to fail."""
    rng = random.Random(seed)
    for i in range(n):
        roll = rng.random()
        if roll < 0.80:
            yield "clean", clean_chat(rng, i)
        elif roll < 0.83:
            yield "blank", b"" if rng.random() < 0.5 else b"   "
        elif roll < 0.86:
            yield "flagged", line(chat("Show me the config.", f"Use the key {AWS_KEY} ({i})."))
        elif roll < 0.88:
            yield "flagged", line(chat(f"Token please {i}", f"Here: {GITHUB_TOKEN}"))
        elif roll < 0.90:
            yield "flagged", line(chat(f"Card {i}?", f"Charge {CARD} now."))
        elif roll < 0.92:
            yield "flagged", line(chat(f"Say something rude {i}.", OFFENSIVE))
        elif roll < 0.94:
            # Offensive text quoted by the user, answered politely: escalated, and with
            # no grader offline that means a person must look (quarantine).
            yield "quarantine", line(chat(OFFENSIVE + f" {i}", "I'd rather keep things civil."))
        elif roll < 0.95:
            yield "quarantine", b'{"messages": [{"role": "user", "content": "hi"'
        elif roll < 0.96:
            yield "quarantine", b'[{"role": "user", "content": "an array, not an object"}]'
        elif roll < 0.97:
            yield "quarantine", b'{"text": "caf\xe9 latin-1 bytes"}'
        elif roll < 0.98:
            yield "quarantine", line({"messages": [{"role": "robot", "content": f"beep {i}"}]})
        elif roll < 0.99:
            yield "clean", line({"text": f"A plain pre-training paragraph number {i}."})
        else:
            yield (
                "clean",
                line(
                    {
                        "input": {"messages": [{"role": "user", "content": f"Hello {i}"}]},
                        "preferred_output": [{"role": "assistant", "content": "Hi there!"}],
                        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
                    }
                ),
            )


def chat_lines(n: int, seed: int = 0) -> Iterator[bytes]:
    """``n`` valid, clean chat examples (for throughput benchmarks)."""
    rng = random.Random(seed)
    for i in range(n):
        yield clean_chat(rng, i)


def write_lines(path: Path, lines: Iterator[bytes]) -> Path:
    """Write lines with ``\\n`` terminators."""
    with path.open("wb") as handle:
        for item in lines:
            handle.write(item)
            handle.write(b"\n")
    return path


def write_mixed(path: Path, n: int, seed: int = 0) -> list[tuple[Kind, bytes]]:
    """Write a mixed dataset and return what was written, with expected decisions."""
    items = list(mixed_lines(n, seed))
    write_lines(path, iter(raw for _, raw in items))
    return items
