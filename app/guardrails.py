"""The guardrails at the edge: each tenant's input guard and output guard, built once.

The input guard runs after admission (a flood of refused requests still counts against the
caller's rate limit) and before any provider call: pattern and PII detectors first, then the
optional moderation backend. A refusal is a 400 `input_blocked` that names the category,
never the text. The output guard is handed to the pipeline, where every route's answer passes
through it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import anyio

from app.errors import ApiError
from app.schemas import ChatInput
from config.guard import GuardSettings
from guard.builtin import BUILTIN
from guard.detectors import Detector, PatternDetector
from guard.input import InputGuard
from guard.policy import GuardPolicy
from guard.scan import Scanner
from providers.errors import ProviderError
from providers.openai_moderation import OpenAIModeration
from providers.types import Message
from streaming.output_guard import OutputGuard
from telemetry import trace_context
from telemetry.metrics import GUARD_HITS

logger = logging.getLogger("hello_ship.guard")

INPUT_BLOCKED = "The request was refused by the content policy."
# The longest blocked phrase (or plugged-in detector's value) sure to be judged whole when the
# hold time cuts a sentence: the answer streams this far behind the model meanwhile.
PHRASE_HOLD_BACK = 64
MODERATION_RETRY_AFTER_S = 5


class Guardrails:
    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings
        self._input: dict[GuardPolicy, InputGuard] = {}
        self._output: dict[GuardPolicy, OutputGuard] = {}
        # Policies whose input check runs plugged-in detectors, whose cost nobody here
        # measured: in a worker thread, other requests go on while such a detector runs Python
        # code or waits (Python hands the loop its turn every few milliseconds). Built-ins and
        # configured patterns run inline: a regex search holds the GIL, a thread would not help.
        self._scan_in_thread: set[GuardPolicy] = set()
        for policy in {settings.policy, *settings.tenant_policies.values()}:
            self._input[policy] = InputGuard(settings.detectors, policy)
            if any(map(_plugged_in, self._input[policy].detectors)):
                self._scan_in_thread.add(policy)
            detectors = [detector for detector in settings.detectors
                         if policy.on_output(detector.category) != "allow"]
            # The built-ins' values are runs the scan's own hold back knows, so their text
            # leaves word by word; a phrase or an operator's detector may span words.
            self._output[policy] = OutputGuard(
                Scanner(detectors), policy, settings.buffer_chars, settings.hold_s,
                whole_sentences=not all(map(_built_in, detectors)),
                phrase_hold_back=phrase_hold_back(detectors, settings.buffer_chars))
        self._personal = Scanner([detector for detector in BUILTIN.values()
                                  if detector.category in ("pii", "secret")])
        moderation = settings.moderation
        self._moderation = None
        if moderation.backend == "openai" and moderation.api_key is not None:
            self._moderation = OpenAIModeration(
                api_key=moderation.api_key, base_url=moderation.base_url,
                model=moderation.model, timeout_s=moderation.timeout_s,
                connect_timeout_s=moderation.timeout_s)

    def output_guard(self, tenant: str) -> OutputGuard:
        return self._output[self._settings.policy_for(tenant)]

    async def check_input(self, chat: ChatInput, tenant: str) -> ChatInput:
        """The request as it may be sent on, or `ApiError` 400 `input_blocked`."""
        policy = self._settings.policy_for(tenant)
        texts = [message.content for message in chat.messages]
        if policy in self._scan_in_thread:
            verdict = await anyio.to_thread.run_sync(self._input[policy].check, texts)
        else:
            verdict = self._input[policy].check(texts)
        if verdict.refused is not None:
            raise self._refusal(verdict.refused.category, verdict.refused.detector)
        if verdict.redactions:
            chat = replace(chat, redacted=True, messages=tuple(
                Message(message.role, text) for message, text in zip(
                    chat.messages, verdict.texts, strict=True)))
            self._redacted(verdict.redactions)
        if self._moderation is not None:
            await self._moderate(chat)
        return chat

    def personal(self, messages: Sequence[Message]) -> bool:
        """Whether the built-in detectors find personal data or a secret in these messages,
        whatever the policy lets through: such a conversation's answer is never cached."""
        return any(self._personal.findings(message.content) for message in messages)

    async def _moderate(self, chat: ChatInput) -> None:
        assert self._moderation is not None
        moderation = self._settings.moderation
        try:
            # The SDK's timeouts are per read; this bounds the whole check, connection and
            # all, by the one figure the operator set.
            with anyio.fail_after(moderation.timeout_s):
                result = await self._moderation.check([m.content for m in chat.messages],
                                                      traceparent=_traceparent())
        except (ProviderError, TimeoutError) as exc:
            policy = moderation.on_error
            logger.warning("moderation_failed", extra={
                "error_class": type(exc).__name__,
                "status_code": exc.status_code if isinstance(exc, ProviderError) else None,
                "policy": policy})
            GUARD_HITS.labels("input", "moderation_unavailable",
                              "refuse" if policy == "closed" else "allow").inc()
            if policy == "closed":
                raise ApiError(503, "moderation_unavailable",
                               "The content check is unavailable; please retry shortly.",
                               headers={"Retry-After": str(MODERATION_RETRY_AFTER_S)},
                               retryable=True) from None
            return
        if result.flagged:
            raise self._refusal("moderation", "moderation",
                                moderation_categories=list(result.categories))

    def _refusal(self, category: str, detector: str, **details: object) -> ApiError:
        logger.info("input_blocked", extra={"category": category, "detector": detector,
                                            **details})
        GUARD_HITS.labels("input", detector, "refuse").inc()
        return ApiError(400, "input_blocked", INPUT_BLOCKED, reason=category)

    def _redacted(self, redactions: Counter[str]) -> None:
        logger.info("input_redacted", extra={"redactions": dict(redactions)})
        for detector, count in redactions.items():
            GUARD_HITS.labels("input", detector, "redact").inc(count)

    async def aclose(self) -> None:
        if self._moderation is not None:
            await self._moderation.aclose()


def phrase_hold_back(detectors: Sequence[Detector], buffer_chars: int) -> int:
    """How much text a release forced mid-sentence keeps back for detectors other than the
    built-ins (whose values the hold back of the scan knows): their longest match, at most
    `PHRASE_HOLD_BACK`, and never so much that a full buffer could release nothing."""
    reach = max((detector.reach for detector in detectors if not _built_in(detector)),
                default=0)
    return min(reach, PHRASE_HOLD_BACK, buffer_chars // 2)


def _built_in(detector: Detector) -> bool:
    return BUILTIN.get(detector.name) is detector


def _plugged_in(detector: Detector) -> bool:
    """Neither built in nor a configured pattern: the operator's own code."""
    return not _built_in(detector) and not isinstance(detector, PatternDetector)


def _traceparent() -> str | None:
    ctx = trace_context.current.get()
    return ctx.outgoing_traceparent() if ctx is not None else None
