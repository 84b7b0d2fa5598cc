"""The answer cache's settings: defaults, the embedding model, and the mistakes a deploy should
stop at."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, SettingsError
from tests.tenant_keys import config_env, tenants_toml


def test_the_defaults_serve_cached_answers_only_when_every_route_failed() -> None:
    cache = Settings.from_env({}).cache
    assert cache.mode == "fallback" and cache.embedding is None
    assert (cache.options.ttl_s, cache.options.max_entries) == (3600.0, 10_000)
    assert (cache.options.similarity, cache.options.lexical_similarity) == (0.95, 0.8)
    assert cache.options.lookup_timeout_s == 0.3 and cache.hit_price_usd == 0.0


def test_an_openai_compatible_embedding_model_takes_the_vendors_key_and_url() -> None:
    cache = Settings.from_env({
        "CACHE_EMBEDDING_MODEL": "openai/text-embedding-3-small",
        "OPENAI_API_KEY": "sk-test-key", "CACHE_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1",
        "CACHE_EMBEDDING_DIMENSIONS": "512"}).cache
    assert cache.embedding is not None
    assert (cache.embedding.name, cache.embedding.base_url) == (
        "openai/text-embedding-3-small", "http://127.0.0.1:9/v1")
    assert cache.embedding.credentials is not None
    assert cache.embedding.credentials.description == "OPENAI_API_KEY"
    assert cache.embedding_dimensions == 512


def test_a_bedrock_embedding_model_needs_a_region() -> None:
    spec = Settings.from_env({"CACHE_EMBEDDING_MODEL": "bedrock/amazon.titan-embed-text-v2:0",
                              "AWS_REGION": "eu-west-1"}).cache.embedding
    assert spec is not None and spec.region == "eu-west-1"
    with pytest.raises(SettingsError, match="AWS_REGION"):
        Settings.from_env({"CACHE_EMBEDDING_MODEL": "bedrock/amazon.titan-embed-text-v2:0"})


@pytest.mark.parametrize(("env", "variable", "reason"), [
    ({"CACHE_MODE": "always"}, "CACHE_MODE", "off, fallback, first"),
    ({"CACHE_SIMILARITY": "1.5"}, "CACHE_SIMILARITY", "between 0.5 and 1.0"),
    ({"CACHE_TTL_S": "0"}, "CACHE_TTL_S", "between 1.0 and"),
    ({"CACHE_EMBEDDING_MODEL": "anthropic/claude-3-5-haiku-latest"}, "CACHE_EMBEDDING_MODEL",
     "embeddings come from openai or bedrock"),
    ({"CACHE_EMBEDDING_MODEL": "nomic/embed"}, "CACHE_EMBEDDING_MODEL", "unknown provider"),
])
def test_a_bad_cache_setting_stops_start_up(env: dict[str, str], variable: str,
                                            reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        Settings.from_env(env)
    assert variable in str(caught.value)


def test_a_tenant_chooses_its_own_mode(tmp_path: Path) -> None:
    settings = Settings.from_env(config_env(tmp_path, tenants_toml({"cache": "first"},
                                                                   {"cache": "off"})))
    assert settings.tenancy.policy("acme").cache == "first"
    assert settings.tenancy.policy("globex").cache == "off"
    with pytest.raises(SettingsError, match=r"tenants\.acme\.cache") as caught:
        Settings.from_env(config_env(tmp_path, tenants_toml({"cache": "sometimes"})))
    assert "off, fallback, first" in str(caught.value)


def test_models_that_take_no_length_are_asked_for_none() -> None:
    titan_v1 = {"CACHE_EMBEDDING_MODEL": "bedrock/amazon.titan-embed-text-v1",
                "AWS_REGION": "us-east-1"}
    assert Settings.from_env(titan_v1).cache.embedding_dimensions is None
    ada = {"CACHE_EMBEDDING_MODEL": "openai/text-embedding-ada-002"}
    assert Settings.from_env(ada).cache.embedding_dimensions is None
    own = {"CACHE_EMBEDDING_MODEL": "openai/text-embedding-3-large",
           "CACHE_EMBEDDING_DIMENSIONS": "0"}
    assert Settings.from_env(own).cache.embedding_dimensions is None
    with pytest.raises(SettingsError, match="fixed length") as caught:
        Settings.from_env({**titan_v1, "CACHE_EMBEDDING_DIMENSIONS": "256"})
    assert caught.value.variable == "CACHE_EMBEDDING_DIMENSIONS"
