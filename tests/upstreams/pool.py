"""One fake server per vendor for a whole test session, reset before each test; and the
`vendor` and `upstream` fixtures that run a test once per kind of route."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.upstreams.common import Upstream
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, OPENAI, VENDORS, Vendor


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


@pytest.fixture(params=VENDORS, ids=lambda vendor: vendor.name)
def vendor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Vendor:
    """Each of the four kinds of route in turn; the AWS SDK reads its credential chain
    itself, so Bedrock's test credentials are in the environment."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def upstream(vendor: Vendor, upstream_pool: UpstreamPool) -> Upstream:
    """The fake server of `vendor`, reset for this test."""
    return upstream_pool.get(vendor)


@pytest.fixture
def upstreams(upstream_pool: UpstreamPool) -> tuple[Upstream, Upstream]:
    """An OpenAI-protocol primary and an Anthropic fallback, reset for this test."""
    return upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
