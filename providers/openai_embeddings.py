"""Embeddings from OpenAI's `POST /embeddings`, or any server that speaks it.

One `AsyncOpenAI` for the model's life, built as the chat adapter builds its own (no SDK
retries, the route's timeouts); the vendor's failures are mapped as the chat adapter maps
them, so no key and no vendor text reaches an error's message.
"""

from __future__ import annotations

import anyio
from openai import AsyncOpenAI, omit
from openai.types import CreateEmbeddingResponse, Embedding

from providers.errors import ProviderMisconfigured, ProviderUnavailable
from providers.openai_chat import VENDOR, vendor_error
from providers.openai_client import openai_client
from providers.spec import RouteSpec, missing_key


class OpenAIEmbeddings:
    def __init__(self, spec: RouteSpec, dimensions: int | None) -> None:
        self._spec = spec
        self._dimensions = dimensions
        key = spec.credentials.key if spec.credentials else None
        self._client: AsyncOpenAI | None = None
        if key is not None and key.reveal():
            self._client = openai_client(key, spec.base_url, timeout_s=spec.timeout_s,
                                         connect_timeout_s=spec.connect_timeout_s)

    async def vector(self, text: str) -> object:
        if self._client is None:
            raise ProviderMisconfigured(f"{VENDOR}: {missing_key(self._spec)}")
        try:
            # The SDK's timeout bounds each read; a cache lookup in front of a completion
            # must not take longer than the route's timeout as a whole.
            with anyio.fail_after(self._spec.timeout_s):
                # "float": left out, the SDK asks for base64 and decodes it itself.
                response = await self._client.embeddings.create(
                    model=self._spec.model, input=text, encoding_format="float",
                    dimensions=omit if self._dimensions is None else self._dimensions)
        except TimeoutError:
            # Ours: `transport_failure` would take it for an OSError, a connection failure.
            raise ProviderUnavailable(f"{VENDOR}: timed out") from None
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the caller to report with its stack
            raise error from None
        return _first_vector(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _first_vector(response: object) -> object:
    """The SDK builds any JSON object into its response model unchecked, and passes anything
    else through as it came; None when the answer is not one embedding."""
    data = response.data if isinstance(response, CreateEmbeddingResponse) else None
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], Embedding):
        return None
    return data[0].embedding
