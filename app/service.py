"""The chat service: turns a validated request into a pipeline job and logs its life.

Every chat endpoint goes through here, so `/chat`, `/chat/stream` and OpenAI's
`/v1/chat/completions` share limits, logs and the pipeline; they differ only in how the
frames leave.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from app.guardrails import Guardrails
from app.request_metrics import observe_answer
from app.schemas import ChatInput, InputLimits
from cache.answers import AnswerCache, CacheTicket
from cache.question import prompt_fingerprint, question_of
from config.models import catalog_for
from config.settings import Settings
from providers.tokens import count_tokens
from providers.types import CompletionRequest, Message
from streaming.chain import RouteChain
from streaming.fallback_budget import FallbackWatch
from streaming.output_guard import OutputStage
from streaming.pipeline import STREAMED, ChatJob, Endpoint
from streaming.record import StreamRecord
from telemetry.metrics import GUARD_HITS
from telemetry.trace_context import RequestContext
from tenancy.admission import Bill
from tenancy.identity import Identity

logger = logging.getLogger("hello_ship.request")


class ChatService:
    def __init__(self, settings: Settings, chain: RouteChain, guardrails: Guardrails,
                 cache: AnswerCache | None = None) -> None:
        self.settings = settings
        self.chain = chain
        self.guardrails = guardrails
        self.cache = cache
        self._prompt_fingerprint = prompt_fingerprint(settings.prompt_version,
                                                      settings.system_prompt)
        self.fallback_watch = FallbackWatch(settings.fallback_alert_share)
        self.models = catalog_for([link.provider.route for link in chain.links], settings.models)
        self._system: tuple[Message, ...] = (
            (Message("system", settings.system_prompt),) if settings.system_prompt else ())

    def input_limits(self, identity: Identity) -> InputLimits:
        """The request limits for the caller: its tenant may have its own output cap and its
        own policy on the caller's `system` messages."""
        policy = self.settings.tenancy.policy(identity.tenant)
        return InputLimits(
            max_input_chars=self.settings.max_input_chars,
            max_messages=self.settings.max_messages,
            max_output_tokens=policy.max_output_tokens,
            system_messages=policy.system_messages,
        )

    def prompt(self, chat: ChatInput) -> tuple[Message, ...]:
        """Everything the provider is sent: the system prompt, then the caller's messages."""
        return self._system + chat.messages

    def start(self, chat: ChatInput, identity: Identity, ctx: RequestContext, *,
              endpoint: Endpoint, on_terminal: Callable[[StreamRecord], Awaitable[None]],
              chain: RouteChain | None = None, pinned: bool = False,
              stream_id: str | None = None) -> ChatJob:
        """Build the job and write the request's start line; `chain` replaces the configured
        one (the routes a `model` stands for, or one an operator `pinned`); `stream_id` makes
        the answer resumable."""
        messages = self.prompt(chat)
        chain = chain or self.chain
        stream = endpoint in STREAMED
        ticket = None if pinned else self._cache_ticket(chat, identity)
        job = ChatJob(
            request_id=ctx.request_id,
            request=CompletionRequest(
                messages=messages, max_tokens=chat.max_tokens,
                deadline_at=ctx.started_at + self.settings.retry.request_timeout_s,
                traceparent=ctx.outgoing_traceparent(), sampling=chat.sampling),
            provider=chain,
            stage=OutputStage(self.guardrails.output_guard(identity.tenant)),
            record=StreamRecord(started_at=ctx.started_at,
                                released=None if ticket is None else []),
            heartbeat_s=self.settings.heartbeat_s if stream else None,
            idle_timeout_s=self.settings.idle_timeout_s,
            deadline_s=self.settings.retry.request_timeout_s,
            degraded_message=self.settings.degraded_message,
            on_terminal=on_terminal,
            endpoint=endpoint,
            pinned=pinned,
            stream_id=stream_id,
            cache=ticket,
        )
        logger.info("request_start", extra={
            **self._labels(chat, identity, stream, chain.route),
            "input_messages": len(chat.messages),
            "input_chars": chat.input_chars,
            "input_hash": self._text_hash(chat.messages),
            "input_tokens_est": sum(count_tokens(m.content) for m in messages),
            "max_tokens": chat.max_tokens,
            # The count only, and only when there were any: their text is gone.
            **({"system_messages_dropped": chat.dropped_system_messages}
               if chat.dropped_system_messages else {}),
        })
        return job

    def finish(self, chat: ChatInput, identity: Identity, job: ChatJob, bill: Bill, *,
               stream: bool, http_status: int) -> None:
        """Write the request's end line from what the pipeline recorded."""
        record = job.record
        usage = record.usage
        # An operator's pinned route, and an answer the cache gave before any model was asked
        # (FAQ mode), are not the chain falling back.
        counts_as_fallback = not job.pinned and not (
            record.cache_hit is not None and job.cache is not None and job.cache.first)
        observe_answer(record, bill, job.route, job.endpoint, http_status,
                       counts_as_fallback=counts_as_fallback)
        if record.fallback_tier is not None and counts_as_fallback:
            self.fallback_watch.record(record.fallback_tier)
        redactions = job.stage.redactions
        for detector, count in redactions.items():
            GUARD_HITS.labels("output", detector, "redact").inc(count)
        if record.blocked_by is not None:
            GUARD_HITS.labels("output", record.blocked_by, "block").inc()
        if redactions:  # once per answer, as the input's are: never per token
            logger.info("output_redacted", extra={"redactions": dict(redactions)})
        logger.info("request_end", extra={
            **self._labels(chat, identity, stream, job.provider.route),
            "model_route": job.route,
            "fallback_tier": record.fallback_tier,
            "attempts": record.attempts,
            "status": record.outcome,
            "http_status": http_status,
            "latency_ms": round((time.monotonic() - record.started_at) * 1000, 1),
            "ttft_ms": record.ttft_ms(),
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cost_usd": bill.cost_usd,
            "usage_estimated": bill.estimated,
            "tokens_emitted": record.tokens_emitted,
            "finish_reason": record.finish_reason,
            "error_code": record.error_code,
            "incident_id": record.incident_id,
            "output_redactions": dict(redactions) if redactions else None,
            "blocked_by": record.blocked_by,
            "cache_match": record.cache_hit.kind if record.cache_hit else None,
        })
        self._remember(chat, job)

    def _cache_ticket(self, chat: ChatInput, identity: Identity) -> CacheTicket | None:
        """The request's use of the answer cache, if its tenant's mode allows any."""
        if self.cache is None:
            return None
        mode = self.settings.tenancy.policy(identity.tenant).cache or self.settings.cache.mode
        if mode == "off" or chat.sampling.stop:
            # With stop sequences, a cached answer may run past where this one would stop.
            return None
        question = question_of(identity.tenant, chat.messages, self._prompt_fingerprint)
        return None if question is None else self.cache.ticket(question, mode, chat.max_tokens)

    def _remember(self, chat: ChatInput, job: ChatJob) -> None:
        """Offer a whole, untouched answer to the cache: never one the output guard changed
        or stopped, one to a question with personal data or a secret in it, a cut-off or
        failed one, or one the cache served."""
        ticket, record = job.cache, job.record
        if (not isinstance(ticket, CacheTicket) or record.outcome != "ok"
                or record.finish_reason != "stop" or record.cache_hit is not None
                or record.released is None or job.stage.redactions or record.blocked_by
                or chat.redacted or record.usage is None or record.model_route is None):
            return
        answer = "".join(record.released)
        if not answer.strip() or self.guardrails.personal(chat.messages):
            return
        ticket.cache.remember(ticket, answer, record.model_route, record.usage.output_tokens)

    def _labels(self, chat: ChatInput, identity: Identity, stream: bool,
                route: str) -> dict[str, object]:
        return {
            "tenant_id": identity.tenant,
            "user_id": identity.user,
            "key_id": identity.key_id,
            "feature": chat.feature,
            "model_route": route,
            "prompt_version": self.settings.prompt_version,
            "stream": stream,
        }

    def _text_hash(self, messages: tuple[Message, ...]) -> str:
        """A keyed hash of the user's text: lets lines be correlated, never reversed."""
        digest = hmac.new(self.settings.log_hash_key, digestmod=hashlib.sha256)
        for message in messages:
            digest.update(message.role.encode() + b"\0")
            digest.update(message.content.encode("utf-8", "surrogatepass") + b"\0")
        return digest.hexdigest()[:16]
