"""Embeddings from Amazon Titan text embedding models on Bedrock (`InvokeModel`), with aioboto3.

The session and client are made as the Converse adapter makes its own: on first use, with
the AWS credential chain, the route's region, endpoint and timeouts, and no SDK retries. The
vendor's failures are mapped as that adapter maps them.

Titan v2 takes `dimensions` (256, 512 or 1024) and `normalize`; v1 takes the text alone and
answers 1536 numbers, so no length can be asked of it.
"""

from __future__ import annotations

import anyio
import orjson
from botocore.exceptions import IncompleteReadError

from providers.bedrock_converse import vendor_error
from providers.bedrock_runtime import VENDOR, BedrockRuntime
from providers.errors import ProviderUnavailable
from providers.spec import RouteSpec

# Model ids of the first generation, which refuse any field but `inputText`.
_V1_MODELS = ("amazon.titan-embed-text-v1", "amazon.titan-embed-g1-text-02")


class TitanEmbeddings:
    def __init__(self, spec: RouteSpec, dimensions: int | None) -> None:
        self._spec = spec
        self._fields: dict[str, object] = {}
        if spec.model.startswith(_V1_MODELS):
            if dimensions is not None:
                raise ValueError(f"{spec.name} has a fixed length of 1536: set no dimensions")
        else:
            # Unit vectors, as OpenAI's are: a cache may compare them by their dot product.
            self._fields["normalize"] = True
            if dimensions is not None:
                self._fields["dimensions"] = dimensions
        self._runtime = BedrockRuntime(spec)

    async def vector(self, text: str) -> object:
        body = orjson.dumps({"inputText": text, **self._fields})
        try:
            client = await self._runtime.client()
            # aiobotocore bounds connecting and each read, not the wait for a pooled
            # connection nor the call as a whole.
            with anyio.fail_after(self._spec.timeout_s):
                response = await client.invoke_model(
                    modelId=self._spec.model, contentType="application/json",
                    accept="application/json", body=body)
                stream = response["body"]
                try:
                    raw = await stream.read()
                finally:
                    stream.close()  # after a read to the end, a no-op; else the connection goes
        except IncompleteReadError:  # a BotoCoreError, which the shared mapping calls config
            raise ProviderUnavailable(f"{VENDOR}: connection failed (IncompleteReadError)"
                                      ) from None
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the caller to report with its stack
            raise error from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return answer.get("embedding") if isinstance(answer, dict) else None

    async def aclose(self) -> None:
        await self._runtime.aclose()
