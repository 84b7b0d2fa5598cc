from collections.abc import Iterator

import httpx
import pytest

pytest_plugins = ["tests.upstreams.pool", "tests.redis_server"]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A plain HTTP client of the services under test."""
    with httpx.Client(timeout=15) as http:
        yield http
