"""OpenAI chat completions, and any server that speaks them (LiteLLM, vLLM, Ollama, gateways).

One `AsyncOpenAI` per route, created once: its connection pool is reused by every request.
Usage comes from the vendor's own final chunk (`stream_options.include_usage`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import anyio
import httpx2
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    error_for_status,
)
from providers.routes import RouteSpec, missing_key
from providers.types import (
    CompletionRequest,
    Finish,
    FinishReason,
    Message,
    ProviderEvent,
    RouteHealth,
    TextDelta,
    Usage,
)
from providers.vendor_errors import (
    describe,
    probe_by_listing,
    retry_after_seconds,
    safe_code,
)

VENDOR = "openai"
PROBE_TIMEOUT_S = 5.0
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}


class OpenAIChatProvider:
    def __init__(self, spec: RouteSpec) -> None:
        self._spec = spec
        key = spec.credentials.key if spec.credentials else None
        self._client: AsyncOpenAI | None = None
        if key is not None:
            self._client = AsyncOpenAI(
                api_key=key.reveal(),
                base_url=spec.base_url,
                # Retries belong to the route chain, which knows about fallback and budgets.
                max_retries=0,
                timeout=openai.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 10.0)),
            )
        # OpenAI itself has renamed the cap; servers that speak its protocol know the old name.
        self._compatible_server = spec.base_url is not None

    @property
    def route(self) -> str:
        return self._spec.name

    def _require_client(self) -> AsyncOpenAI:
        if self._client is None:
            raise ProviderMisconfigured(f"{VENDOR}: {missing_key(self._spec)}")
        return self._client

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        client = self._require_client()
        cap = self._spec.output_cap(request.max_tokens)
        try:
            response = await client.chat.completions.create(
                model=self._spec.model,
                messages=[_message(m) for m in request.messages],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=cap if self._compatible_server else openai.omit,
                max_completion_tokens=openai.omit if self._compatible_server else cap,
            )
        except Exception as exc:
            raise vendor_error(exc) from None
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            async for chunk in response:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    if choice.finish_reason is not None:
                        finish = _FINISH.get(choice.finish_reason, "stop")
        except ProviderError:
            raise
        except Exception as exc:
            raise vendor_error(exc) from None
        finally:
            with anyio.move_on_after(5, shield=True):
                await response.close()
        if finish is None:
            raise ProviderUnavailable(f"{VENDOR}: the stream ended before the answer finished")
        if usage is not None:
            yield usage
        yield Finish(finish)

    async def probe(self) -> RouteHealth:
        """Lists models, which every compatible server has too."""
        if self._client is None:
            return RouteHealth("missing", reachable=None, problem=missing_key(self._spec))
        return await probe_by_listing(self._client.models.list(timeout=PROBE_TIMEOUT_S),
                                      vendor_error)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _message(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def vendor_error(exc: BaseException) -> ProviderError:
    """The project's error for whatever the SDK raised; never keeps the vendor's message."""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderUnavailable(f"{VENDOR}: timed out")
    if isinstance(exc, httpx2.TransportError):  # a body cut short, which the SDK passes on
        return ProviderUnavailable(f"{VENDOR}: connection failed")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable(f"{VENDOR}: connection failed")
    if isinstance(exc, openai.APIStatusError):
        code = _error_code(exc.body)
        message = describe(VENDOR, exc.status_code, code)
        if code == "insufficient_quota":  # a 429 that waiting will not fix: billing
            return ProviderMisconfigured(message, status_code=exc.status_code)
        return error_for_status(exc.status_code, message,
                                retry_after_seconds(exc.response.headers))
    if isinstance(exc, openai.APIError):
        # An error sent inside a 200 stream: the vendor failed mid-answer.
        code = _error_code(exc.body)
        return ProviderUnavailable(describe(VENDOR + " stream error", None, code))
    if isinstance(exc, json.JSONDecodeError | ValueError | TypeError):
        return ProviderUnavailable(f"{VENDOR}: malformed stream chunk")
    return ProviderError(f"{VENDOR}: {type(exc).__name__}")


def _error_code(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return safe_code(inner.get("code")) or safe_code(inner.get("type"))
    return None
