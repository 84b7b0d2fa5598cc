"""How long to wait before trying a route again."""

from __future__ import annotations

import random


def retry_delay(attempt: int, *, base_s: float, cap_s: float, retry_after: float | None,
                remaining_s: float, rng: random.Random | None = None) -> float | None:
    """The wait before attempt `attempt + 1`, or None when it would not fit the deadline.

    Exponential with full jitter (`base_s * 2**(attempt-1)`, capped), so a fleet of replicas
    that failed together does not retry together. A vendor's `Retry-After` is honoured when it
    fits the remaining deadline; when it does not, retrying this route is pointless.
    """
    if retry_after is not None:
        return retry_after if retry_after < remaining_s else None
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    return delay if delay < remaining_s else None
