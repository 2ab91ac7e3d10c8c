"""What a chat model costs, for the run's cost estimate.

A policy's ``grader.prices`` (USD per million input and output tokens) wins; otherwise
this table, OpenAI's list prices for standard (not batch) processing as of 2026-11.
Prices change: a model missing here reports its tokens but no cost, and says so, rather
than guessing. The moderation endpoint is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PRICES_AS_OF", "Price", "price_for"]

PRICES_AS_OF = "2026-11"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for that many tokens."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


_TABLE: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
}


def price_for(model: str, override: Mapping[str, float] | None = None) -> Price | None:
    """The price of ``model``: the policy's ``override`` when it names both prices, else
    the table (a dated snapshot such as ``gpt-4o-mini-2024-07-18`` costs what its alias
    costs), else ``None``."""
    if override and "input" in override and "output" in override:
        return Price(float(override["input"]), float(override["output"]))
    if model in _TABLE:
        return _TABLE[model]
    # The longest alias that the snapshot name extends with a date: gpt-4o-mini before gpt-4o.
    for alias in sorted(_TABLE, key=len, reverse=True):
        rest = model.removeprefix(alias + "-")
        if rest != model and rest[:4].isdigit():
            return _TABLE[alias]
    return None
