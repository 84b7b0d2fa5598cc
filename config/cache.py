"""The answer cache's settings (`CACHE_*`), read once like every other setting.

    CACHE_MODE=fallback                 off | fallback | first; a tenant's `cache` overrides it
    CACHE_TTL_S=3600                    how long an answer may be served
    CACHE_MAX_ENTRIES=10000             per tenant
    CACHE_SIMILARITY=0.95               cosine of embeddings for a near-duplicate
    CACHE_LEXICAL_SIMILARITY=0.8        estimated Jaccard of word shingles, without embeddings
    CACHE_EMBEDDING_MODEL=openai/text-embedding-3-small   or bedrock/amazon.titan-embed-text-v2:0
    CACHE_EMBEDDING_DIMENSIONS=256      asked of the model (both vendors can shorten vectors);
                                        0: the model's own (older models take no length)
    CACHE_EMBEDDING_BASE_URL=...        else the vendor's variable (OPENAI_BASE_URL, ...)
    CACHE_LOOKUP_TIMEOUT_MS=300         the most a lookup may add before a model is asked
    CACHE_HIT_PRICE_USD=0               billed to the tenant per cached answer
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from cache.answers import CacheOptions
from cache.entry import CACHE_MODES, CacheMode
from config.env import EnvReader, SettingsError
from config.routes import complete_route
from providers.spec import RouteSpec, parse_route

EMBEDDING_PROVIDERS = ("openai", "bedrock")
# Models that take no vector length.
FIXED_LENGTH_MODELS = ("amazon.titan-embed-text-v1", "amazon.titan-embed-g1-text-02",
                       "text-embedding-ada-002")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    mode: CacheMode = "fallback"
    options: CacheOptions = field(default_factory=CacheOptions)
    embedding: RouteSpec | None = None  # None: lexical near-duplicates only
    embedding_dimensions: int | None = None
    hit_price_usd: float = 0.0


def read_cache(env: EnvReader) -> CacheSettings:
    lookup_ms = env.number("CACHE_LOOKUP_TIMEOUT_MS", 300, int, 1, 60_000)
    options = CacheOptions(
        ttl_s=env.number("CACHE_TTL_S", 3600.0, float, 1.0, 365 * 86_400.0),
        max_entries=env.number("CACHE_MAX_ENTRIES", 10_000, int, 1, 10_000_000),
        similarity=env.number("CACHE_SIMILARITY", 0.95, float, 0.5, 1.0),
        lexical_similarity=env.number("CACHE_LEXICAL_SIMILARITY", 0.8, float, 0.3, 1.0),
        lookup_timeout_s=lookup_ms / 1000,
    )
    embedding = _embedding(env)
    return CacheSettings(
        mode=cast(CacheMode, env.choice("CACHE_MODE", "fallback", CACHE_MODES)),
        options=options,
        embedding=embedding,
        embedding_dimensions=_dimensions(env, embedding),
        hit_price_usd=env.number("CACHE_HIT_PRICE_USD", 0.0, float, 0.0, 1_000.0),
    )


def _dimensions(env: EnvReader, embedding: RouteSpec | None) -> int | None:
    """The vector length asked of the model; None (`0`) for the model's own, which older
    models (Titan v1, text-embedding-ada-002) need: they take no length."""
    fixed = embedding is not None and embedding.model.startswith(FIXED_LENGTH_MODELS)
    dimensions = env.number("CACHE_EMBEDDING_DIMENSIONS", 0 if fixed else 256, int, 0, 16_384)
    if fixed and dimensions:
        assert embedding is not None
        raise SettingsError("CACHE_EMBEDDING_DIMENSIONS", f"{embedding.model} has a fixed "
                                                          "length: set 0 or leave it unset")
    return dimensions or None


def _embedding(env: EnvReader) -> RouteSpec | None:
    raw = env.raw("CACHE_EMBEDDING_MODEL")
    if raw is None or not raw.strip():
        return None
    try:
        spec = parse_route(raw, "openai")
    except ValueError as exc:
        raise SettingsError("CACHE_EMBEDDING_MODEL", str(exc)) from None
    if spec.provider not in EMBEDDING_PROVIDERS:
        raise SettingsError("CACHE_EMBEDDING_MODEL", f"embeddings come from "
                                                     f"{' or '.join(EMBEDDING_PROVIDERS)}, "
                                                     f"not {spec.provider}")
    return complete_route(env, spec, "CACHE_EMBEDDING_MODEL",
                          base_url=env.raw("CACHE_EMBEDDING_BASE_URL"))
