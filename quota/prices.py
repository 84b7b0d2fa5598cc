"""What a route's tokens cost, from the configured price table (USD per 1M tokens)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# USD per 1M tokens -> nano-dollars per token
_NANO_PER_TOKEN = 1_000_000_000 / 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    input_per_m: float
    output_per_m: float

    def nano_usd(self, input_tokens: int, output_tokens: int) -> int:
        """The cost, rounded up to a whole nano-dollar (rounding never favours spending)."""
        exact = (input_tokens * self.input_per_m + output_tokens * self.output_per_m)
        return math.ceil(round(exact * _NANO_PER_TOKEN, 6))

    @staticmethod
    def most_expensive(prices: list[Price]) -> Price:
        """A price at least as high as each of `prices`, for worst-case reservations."""
        return Price(max((p.input_per_m for p in prices), default=0.0),
                     max((p.output_per_m for p in prices), default=0.0))


FREE = Price(0.0, 0.0)
