"""Text embeddings for a semantic answer cache: one vector per text, from a vendor's endpoint.

Two kinds of route can embed: `openai` (any server with OpenAI's `POST /embeddings`) and
`bedrock` (Amazon Titan text embeddings through `InvokeModel`). Each vendor's module asks for
the vector and maps the vendor's failures; this one holds the contract they share: the vector
is checked here (a non-empty list of finite numbers, of the length asked for), so a cache
never stores, or compares against, a vector it cannot use.

The vendor SDKs are imported only when an embedder is built: a process that does not embed
does not carry them.
"""

from __future__ import annotations

import math
from typing import Protocol

from providers.errors import ProviderMisconfigured, ProviderUnavailable
from providers.spec import RouteSpec

EMBEDDING_PROVIDERS: tuple[str, ...] = ("openai", "bedrock")


class Embedder(Protocol):
    """One embedding model, with its client, created once and reused.

    `embed` raises `ProviderError`s only, for every vendor failure: a status, a timeout, a
    broken connection, an answer it cannot read.
    """

    @property
    def name(self) -> str:
        """The route name of the model: `openai/text-embedding-3-small`."""
        ...

    async def embed(self, text: str) -> list[float]: ...

    async def aclose(self) -> None: ...


class VendorEmbeddings(Protocol):
    """What a vendor's module does: one request, and the vector as the vendor sent it (None
    when the answer around it was not of the vendor's shape)."""

    async def vector(self, text: str) -> object: ...

    async def aclose(self) -> None: ...


def build_embedder(spec: RouteSpec, dimensions: int | None) -> Embedder:
    """The embedder of `spec`'s model; `dimensions` None takes the model's own length.

    Raises ValueError for a route that cannot embed. A missing key is not an error here but
    on each `embed`, as a chat route reports it on each request.
    """
    if dimensions is not None and dimensions < 1:
        raise ValueError(f"embedding dimensions must be a positive number, not {dimensions}")
    vendor: VendorEmbeddings
    if spec.provider == "openai":
        from providers.openai_embeddings import OpenAIEmbeddings

        vendor = OpenAIEmbeddings(spec, dimensions)
    elif spec.provider == "bedrock":
        from providers.titan_embeddings import TitanEmbeddings

        vendor = TitanEmbeddings(spec, dimensions)
    else:
        raise ValueError(
            f"{spec.name} cannot embed: provider {spec.provider!r} has no embedding endpoint"
            f" here; use one of {', '.join(EMBEDDING_PROVIDERS)}")
    return CheckedEmbedder(spec, dimensions, vendor)


class CheckedEmbedder:
    def __init__(self, spec: RouteSpec, dimensions: int | None,
                 vendor: VendorEmbeddings) -> None:
        self._spec = spec
        self._dimensions = dimensions
        self._vendor = vendor

    @property
    def name(self) -> str:
        return self._spec.name

    async def embed(self, text: str) -> list[float]:
        return read_vector(await self._vendor.vector(text), self._spec.provider,
                           self._dimensions)

    async def aclose(self) -> None:
        await self._vendor.aclose()


def read_vector(value: object, vendor: str, dimensions: int | None) -> list[float]:
    """The vector as floats. The SDKs build their answers without checking them, and one NaN
    would make every similarity against it NaN, so nothing but finite numbers passes."""
    if not isinstance(value, list) or not value:
        raise malformed_embedding(vendor)
    vector: list[float] = []
    for number in value:
        # bool is an int, and JSON's true is no coordinate.
        if type(number) not in (float, int) or not math.isfinite(number):
            raise malformed_embedding(vendor)
        vector.append(float(number))
    if dimensions is not None and len(vector) != dimensions:
        # A model (or a compatible server) that ignores `dimensions` answers every text
        # wrongly alike: the configuration is wrong, and retrying will not fix it.
        raise ProviderMisconfigured(
            f"{vendor}: the embedding has {len(vector)} dimensions, not the {dimensions} "
            "configured (does the model take a dimensions setting?)")
    return vector


def malformed_embedding(vendor: str) -> ProviderUnavailable:
    """An answer of a shape the adapter cannot use: a wire problem, which a retry may fix."""
    return ProviderUnavailable(f"{vendor}: malformed embedding response")
