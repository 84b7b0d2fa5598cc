"""The answer cache's lookups and writes over the in-process store, with an embedding model
the test controls: what is found, what is refused, and that no failure reaches a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import anyio

from cache.answers import WRITE_QUEUE, AnswerCache, CacheOptions, CacheTicket
from cache.entry import CacheMode, Entry
from cache.lexical import signature
from cache.near import IndexRecord
from cache.question import prompt_fingerprint, question_of
from cache.store import MemoryAnswers, StoreError
from providers.errors import ProviderUnavailable
from providers.types import Message

FINGERPRINT = prompt_fingerprint("v1", "")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Embeddings:
    """Vectors by word: texts with the same words point the same way."""

    name = "test/embeddings"

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False
        self.hang = False

    async def embed(self, text: str) -> list[float]:
        self.calls += 1
        if self.hang:
            await anyio.sleep(10)
        if self.failing:
            raise ProviderUnavailable("test: unavailable")
        vector = [0.0] * 16
        for word in text.replace("?", " ").replace(",", " ").split():
            vector[sum(map(ord, word)) % 16] += 1.0
        return vector

    async def aclose(self) -> None:
        pass


class BrokenStore(MemoryAnswers):
    async def get(self, tenant: str, key: str) -> None:
        raise StoreError("down")


def ticket(cache: AnswerCache, text: str, tenant: str = "acme", mode: CacheMode = "first",
           max_tokens: int = 100, earlier: Sequence[Message] = ()) -> CacheTicket:
    question = question_of(tenant, [*earlier, Message("user", text)], FINGERPRINT)
    assert question is not None
    return cache.ticket(question, mode, max_tokens)


async def store(cache: AnswerCache, text: str, answer: str = "An answer.", **kw: object) -> None:
    cache.remember(ticket(cache, text, **kw), answer, "openai/gpt-4o-mini", 9)  # type: ignore[arg-type]
    await drain(cache)


async def drain(cache: AnswerCache) -> None:
    """Store every queued answer, as the writer task does."""
    while cache._writes:
        await cache._write(cache._writes.popleft())


def memory_cache(clock: Clock, embedder: Embeddings | None = None,
                 **options: float) -> AnswerCache:
    opts = CacheOptions(**options)  # type: ignore[arg-type]
    return AnswerCache(opts, MemoryAnswers(opts.max_entries, opts.ttl_s, clock), embedder,
                       clock)


async def test_an_exact_question_is_found_and_a_different_one_is_not() -> None:
    clock = Clock()
    cache = memory_cache(clock)
    await store(cache, "How do I export my data?")
    clock.now += 42
    hit = await ticket(cache, "how do I   EXPORT my data?").lookup()
    assert hit is not None and (hit.kind, hit.similarity, hit.age_s) == ("exact", 1.0, 42)
    assert hit.entry.answer == "An answer." and hit.entry.route == "openai/gpt-4o-mini"
    assert await ticket(cache, "How do I delete my account?").lookup() is None


async def test_a_near_duplicate_is_found_by_words_without_an_embedding_model() -> None:
    cache = memory_cache(Clock())
    await store(cache, "How do I export my data to a spreadsheet?")
    hit = await ticket(cache, "How do I export my data to a spreadsheet, please?").lookup()
    assert hit is not None and hit.kind == "lexical" and 0.8 <= hit.similarity < 1


async def test_another_tenant_or_another_conversation_never_finds_it() -> None:
    cache = memory_cache(Clock())
    earlier = (Message("user", "I am on the Pro plan."), Message("assistant", "Sure."))
    await store(cache, "How do I export my data?", earlier=earlier)
    assert await ticket(cache, "How do I export my data?", tenant="globex",
                        earlier=earlier).lookup() is None
    assert await ticket(cache, "How do I export my data?").lookup() is None
    assert await ticket(cache, "How do I export my data?", earlier=earlier).lookup() is not None


async def test_a_new_prompt_version_or_system_prompt_is_a_new_question() -> None:
    def key(version: str, system: str) -> str:
        question = question_of("acme", [Message("user", "Hi?")],
                               prompt_fingerprint(version, system))
        assert question is not None
        return question.key

    assert len({key("v1", ""), key("v2", ""), key("v1", "Be brief.")}) == 3


async def test_entries_expire_and_the_oldest_go_first_past_max_entries() -> None:
    clock = Clock()
    cache = memory_cache(clock, ttl_s=60, max_entries=2)
    for text in ("First question here?", "Second question here?", "Third question here?"):
        await store(cache, text)
    assert await ticket(cache, "First question here?").lookup() is None  # evicted
    assert await ticket(cache, "Third question here?").lookup() is not None
    clock.now += 61
    assert await ticket(cache, "Third question here?").lookup() is None


async def test_an_answer_longer_than_the_request_may_be_is_not_served() -> None:
    cache = memory_cache(Clock())
    await store(cache, "How do I export my data?")  # 9 output tokens
    assert await ticket(cache, "How do I export my data?", max_tokens=8).lookup() is None
    assert await ticket(cache, "How do I export my data?", max_tokens=9).lookup() is not None


async def test_with_embeddings_a_rephrasing_is_a_semantic_hit_and_is_embedded_once() -> None:
    embeddings = Embeddings()
    cache = memory_cache(Clock(), embeddings)
    miss = ticket(cache, "How do I export my data?")
    assert await miss.lookup() is None
    cache.remember(miss, "An answer.", "openai/gpt-4o-mini", 9)
    await drain(cache)
    assert embeddings.calls == 1  # the lookup's vector was kept for the write
    hit = await ticket(cache, "My data, how do I export?").lookup()
    assert hit is not None and hit.kind == "semantic" and hit.similarity > 0.99


async def test_a_failing_embedding_model_means_lexical_matching_for_a_while() -> None:
    embeddings = Embeddings()
    cache = memory_cache(Clock(), embeddings)
    await store(cache, "How do I export my data to a spreadsheet?")
    embeddings.failing = True
    hit = await ticket(cache, "How do I export my data to a spreadsheet, please?").lookup()
    assert hit is not None and hit.kind == "lexical"
    calls = embeddings.calls
    embeddings.failing = False
    await ticket(cache, "Something else entirely?").lookup()
    assert embeddings.calls == calls  # left alone after its failure


async def test_a_hanging_embedding_model_costs_at_most_the_lookup_timeout() -> None:
    embeddings = Embeddings()
    cache = memory_cache(Clock(), embeddings, lookup_timeout_s=0.2)
    embeddings.hang = True
    with anyio.fail_after(1):
        assert await ticket(cache, "How do I export my data?").lookup() is None


async def test_a_store_that_is_down_is_a_miss_not_an_error() -> None:
    clock = Clock()
    opts = CacheOptions()
    cache = AnswerCache(opts, BrokenStore(opts.max_entries, opts.ttl_s, clock), None, clock)
    assert await ticket(cache, "How do I export my data?").lookup() is None


async def test_writes_past_the_queue_are_dropped_not_waited_for() -> None:
    cache = memory_cache(Clock())
    for index in range(WRITE_QUEUE + 10):
        cache.remember(ticket(cache, f"Question number {index}?"), "An answer.", "r", 1)
    assert len(cache._writes) == WRITE_QUEUE


async def test_clear_forgets_one_tenant_only() -> None:
    cache = memory_cache(Clock())
    await store(cache, "How do I export my data?")
    await store(cache, "How do I export my data?", tenant="globex")
    assert await cache.clear("acme") == 1
    assert await ticket(cache, "How do I export my data?").lookup() is None
    assert await ticket(cache, "How do I export my data, please?").lookup() is None
    assert await ticket(cache, "How do I export my data?", tenant="globex").lookup() is not None


async def test_vectors_another_embedding_model_made_are_never_compared() -> None:
    """A replica on another model (mid-deploy) shares its entries: found by their words only."""
    clock = Clock()
    embeddings = Embeddings()

    class Shared(MemoryAnswers):
        news_records: ClassVar[list[IndexRecord]] = []

        async def news(self, tenant: str) -> list[IndexRecord]:
            records, Shared.news_records = Shared.news_records, []
            return records

    opts = CacheOptions()
    store_ = Shared(opts.max_entries, opts.ttl_s, clock)
    cache = AnswerCache(opts, store_, embeddings, clock)
    text = "How do I export my data?"
    written = ticket(cache, text)
    vector = await embeddings.embed("my data how do I export")
    await store_.put("acme", IndexRecord(written.question.key, written.question.scope, clock(),
                                         signature(written.question.text), vector,
                                         "other/model"),
                     Entry("An answer.", clock(), 9, "openai/gpt-4o-mini"))
    Shared.news_records = [IndexRecord(written.question.key, written.question.scope, clock(),
                                       signature(written.question.text), vector, "other/model")]
    assert await ticket(cache, "My data, how do I export?").lookup() is None
    exact = await ticket(cache, text).lookup()
    assert exact is not None and exact.kind == "exact"
