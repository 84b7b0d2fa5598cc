"""One fake server per vendor for a whole test session, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.upstreams.common import Upstream
from tests.upstreams.vendors import Vendor


class UpstreamPool:
    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._running: dict[str, Upstream] = {}

    def get(self, vendor: Vendor) -> Upstream:
        upstream = self._running.get(vendor.name)
        if upstream is None:
            upstream = self._stack.enter_context(vendor.upstream())
            self._running[vendor.name] = upstream
        upstream.reset()
        return upstream


@pytest.fixture(scope="session")
def upstream_pool() -> Iterator[UpstreamPool]:
    with ExitStack() as stack:
        yield UpstreamPool(stack)
