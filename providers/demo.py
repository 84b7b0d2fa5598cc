"""The embedded demo model: no keys, no network, a deterministic answer with realistic pacing.

The answer is derived from the last user message, so the same request always streams the same
text (golden evals can pin it), and pacing is configurable so time to first token and
inter-token gaps look like a hosted model's. A message starting with `/echo ` is answered
with the rest of it verbatim, which lets tests and evals script the model's exact output.
Faults can be injected by configuration for fallback drills.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio

from providers.errors import ProviderError, error_for_status
from providers.tokens import count_tokens, split_tokens
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

ECHO_PREFIX = "/echo "

_SUBJECTS = ("The service", "Each stream", "A fallback route", "The gateway", "Every token",
             "The pipeline", "A heartbeat", "The budget", "A retry", "The request")
_VERBS = ("keeps", "measures", "guards", "streams", "logs", "counts", "routes", "caps",
          "checks", "releases")
_OBJECTS = ("the first token quickly", "every answer in order", "the cost of each call",
            "a clear error when it fails", "the tenant's daily budget", "one frame at a time",
            "the request id on every line", "the upstream call on disconnect",
            "a steady pace under load", "the output before it leaves")


@dataclass(frozen=True, slots=True)
class DemoConfig:
    ttft_s: float = 0.3
    token_delay_s: float = 0.03
    answer_tokens: int = 60
    # Emit this many tokens, then fail with `fail_status`; None means never fail.
    fail_after_tokens: int | None = None
    fail_status: int = 503


def demo_answer(messages: tuple[Message, ...], answer_tokens: int) -> str:
    """The full answer the demo model gives, before any max_tokens cut."""
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    if last_user.startswith(ECHO_PREFIX):
        return last_user[len(ECHO_PREFIX):]
    words = len(last_user.split())
    sentences = [f"Hello from the hello-ship demo model: you wrote {words} "
                 f"{'word' if words == 1 else 'words'}."]
    digest = hashlib.sha256(last_user.encode("utf-8", "surrogatepass")).digest()
    used = count_tokens(sentences[0])
    counter = 0
    while used < answer_tokens:
        block = hashlib.sha256(digest + counter.to_bytes(4, "big")).digest()
        counter += 1
        sentence = (f" {_SUBJECTS[block[0] % len(_SUBJECTS)]} {_VERBS[block[1] % len(_VERBS)]}"
                    f" {_OBJECTS[block[2] % len(_OBJECTS)]}.")
        sentences.append(sentence)
        used += count_tokens(sentence)
    return "".join(sentences)


def before_stop(answer: str, stop: tuple[str, ...]) -> str:
    """The answer up to the first of the stop sequences, which is left out, as a vendor ends
    it; finishing there is a normal stop. Other sampling fields change nothing: the demo's
    answer is deterministic by design."""
    ends = [at for sequence in stop if sequence and (at := answer.find(sequence)) >= 0]
    return answer[:min(ends)] if ends else answer


class DemoProvider:
    def __init__(self, model: str, config: DemoConfig, max_tokens: int | None = None) -> None:
        self._route = f"demo/{model}"
        self._config = config
        self._max_tokens = max_tokens

    @property
    def route(self) -> str:
        return self._route

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        config = self._config
        if config.ttft_s:
            await anyio.sleep(config.ttft_s)
        answer = demo_answer(request.messages, config.answer_tokens)
        tokens = split_tokens(before_stop(answer, request.sampling.stop))
        finish: FinishReason = "stop"
        cap = min(request.max_tokens, self._max_tokens or request.max_tokens)
        if len(tokens) > cap:
            tokens, finish = tokens[:cap], "length"
        for index, token in enumerate(tokens):
            if index == config.fail_after_tokens:
                raise self._fault()
            if index and config.token_delay_s:
                await anyio.sleep(config.token_delay_s)
            yield TextDelta(token)
        if config.fail_after_tokens is not None and config.fail_after_tokens >= len(tokens):
            raise self._fault()
        input_tokens = sum(count_tokens(m.content) for m in request.messages)
        yield Usage(input_tokens=input_tokens, output_tokens=len(tokens))
        yield Finish(finish)

    def _fault(self) -> ProviderError:
        retry_after = 1.0 if self._config.fail_status == 429 else None
        return error_for_status(
            self._config.fail_status,
            f"demo fault injected: HTTP {self._config.fail_status}",
            retry_after,
        )

    async def probe(self) -> RouteHealth:
        return RouteHealth(credentials="present", reachable=True)

    async def aclose(self) -> None:
        return None
