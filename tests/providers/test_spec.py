import pytest

from providers.registry import ProviderOptions, build_provider
from providers.spec import PROVIDER_KINDS, RouteSpec, parse_route


def test_bare_model_takes_the_default_provider() -> None:
    assert parse_route("hello-1", "demo") == RouteSpec("demo", "hello-1")


def test_provider_slash_model() -> None:
    spec = parse_route(" demo/other ", "demo")
    assert spec == RouteSpec("demo", "other")
    assert spec.name == "demo/other"


@pytest.mark.parametrize(("text", "reason"), [
    ("nope/model", "unknown provider 'nope'"),
    ("demo/", "is not a model name"),
    ("demo/two words", "is not a model name"),
])
def test_bad_routes_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_route(text, "demo")


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
async def test_every_provider_kind_a_route_may_name_has_an_adapter(kind: str) -> None:
    provider = build_provider(RouteSpec(kind, "some-model", region="us-east-1"),
                              ProviderOptions())
    try:
        assert provider.route == f"{kind}/some-model"
    finally:
        await provider.aclose()
