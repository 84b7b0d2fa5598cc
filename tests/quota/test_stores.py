"""Both quota stores, the in-process one and Redis (a real redis-server), held to one behaviour.

The property test runs random reserve/settle sequences against both and checks that they never
go negative, never commit more than the limit, and agree with each other verdict by verdict.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quota.ledger import (
    NOTHING_SPENT,
    Ask,
    DayUsage,
    Limits,
    QuotaStore,
    Refusal,
    Spend,
    StoreUnavailable,
)
from quota.memory_store import MemoryStore
from quota.redis_store import RedisStore
from tests.redis_server import RedisServer

DAY = "20261128"
T0 = 1_796_000_000.0
ROOMY = Limits(rpm=1_000_000, user_rpm=None, streams=1_000_000, daily_tokens=10**12,
               daily_nano_usd=None)

StoreFactory = Callable[[], QuotaStore]


def ask(tenant: str = "acme", tokens: int = 10, nano_usd: int = 0, user: str | None = None,
        day: str = DAY) -> Ask:
    return Ask(tenant, user, uuid.uuid4().hex, day, tokens, nano_usd)


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    if request.param == "memory":
        return lambda: MemoryStore(lease_s=300, retention_days=35)
    server: RedisServer = request.getfixturevalue("shared_redis")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return lambda: RedisStore(server.url, prefix=prefix, timeout_s=2, lease_s=300,
                              retention_days=35)


def run(make_store: StoreFactory, scenario: Callable[[QuotaStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = make_store()
        try:
            return await scenario(store)
        finally:
            await store.aclose()
    return asyncio.run(main())


def test_the_rate_window_slides_and_says_when_a_slot_frees(make_store: StoreFactory) -> None:
    limits = Limits(3, None, 100, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        for second in (0, 10, 20):
            assert (await store.admit(ask(), limits, T0 + second)).admitted
        refused = await store.admit(ask(), limits, T0 + 30)
        assert refused.refusal is Refusal.TENANT_RPM
        assert refused.retry_after_s == pytest.approx(30)  # the first admission leaves at 60
        assert (await store.admit(ask(), limits, T0 + 60.5)).admitted
        assert not (await store.admit(ask(), limits, T0 + 61)).admitted
        # another tenant has its own window
        assert (await store.admit(ask("other"), limits, T0 + 61)).admitted

    run(make_store, scenario)


def test_a_user_limit_holds_inside_the_tenant_limit(make_store: StoreFactory) -> None:
    limits = Limits(10, 2, 100, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        for _ in range(2):
            assert (await store.admit(ask(user="alice"), limits, T0)).admitted
        assert (await store.admit(ask(user="alice"), limits, T0)).refusal is Refusal.USER_RPM
        assert (await store.admit(ask(user="bob"), limits, T0)).admitted
        assert (await store.admit(ask(), limits, T0)).admitted  # a key without a user

    run(make_store, scenario)


def test_stream_slots_free_when_requests_finish_or_leases_lapse(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 2, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        first, second = ask(), ask()
        assert (await store.admit(first, limits, T0)).admitted
        assert (await store.admit(second, limits, T0)).admitted
        assert (await store.admit(ask(), limits, T0)).refusal is Refusal.STREAMS
        await store.finish(first, Spend(1, 1, 0))
        assert (await store.admit(ask(), limits, T0 + 1)).admitted
        # `second` was never finished (its replica died): its lease lapses after 300 s
        assert not (await store.admit(ask(), limits, T0 + 2)).admitted
        assert (await store.admit(ask(), limits, T0 + 301)).admitted

    run(make_store, scenario)


def test_a_lost_settlement_gives_its_reservation_back_when_its_lease_lapses(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 100, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> None:
        lost = ask(tokens=600)  # its replica died: no finish will ever come
        assert (await store.admit(lost, limits, T0)).admitted
        blocked = await store.admit(ask(tokens=600), limits, T0 + 10)
        assert blocked.refusal is Refusal.TOKEN_BUDGET and blocked.held_by_reservations
        assert (await store.admit(ask(tokens=600), limits, T0 + 301)).admitted
        [day] = await store.usage("acme", [DAY])
        assert day.reserved_tokens == 600 and day.requests == 0

    run(make_store, scenario)


def test_a_settlement_gives_back_its_reservation_only_once(make_store: StoreFactory) -> None:
    limits = Limits(100, None, 100, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> DayUsage:
        first, second = ask(tokens=300), ask(tokens=400)
        for each in (first, second):
            assert (await store.admit(each, limits, T0)).admitted
        await store.finish(first, Spend(10, 5, 0))
        await store.finish(first, Spend(0, 0, 0))  # a repeat must not free `second`'s share
        [day] = await store.usage("acme", [DAY])
        return day

    day = run(make_store, scenario)
    assert (day.reserved_tokens, day.spent_tokens, day.requests) == (400, 15, 1)


def test_the_same_request_admitted_or_settled_twice_counts_once(
        make_store: StoreFactory) -> None:
    """A retried call whose first reply was lost must not reserve or charge twice."""
    limits = Limits(100, None, 100, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> DayUsage:
        once = ask(tokens=300)
        for _ in range(2):
            assert (await store.admit(once, limits, T0)).admitted
        for _ in range(2):
            await store.finish(once, Spend(10, 5, 7))
        [day] = await store.usage("acme", [DAY])
        return day

    day = run(make_store, scenario)
    assert (day.reserved_tokens, day.spent_tokens, day.spent_nano_usd, day.requests) == (
        0, 15, 7, 1)


def test_finishing_a_ticket_never_admitted_changes_nothing(make_store: StoreFactory) -> None:
    """An admission whose reply was lost is settled as nothing spent, whether or not it ran:
    for a ticket the store never admitted that must free no one's slot, refund no one's
    reservation, count no request and drive nothing negative."""
    limits = Limits(100, None, 1, daily_tokens=1000, daily_nano_usd=10**6)

    async def scenario(store: QuotaStore) -> None:
        holder = ask(tokens=300, nano_usd=500)
        assert (await store.admit(holder, limits, T0)).admitted
        [before] = await store.usage("acme", [DAY])
        stranger = ask(tokens=300, nano_usd=500)  # same tenant, day and size; never admitted
        for spent in (NOTHING_SPENT, Spend(10, 5, 7), NOTHING_SPENT):
            await store.finish(stranger, spent)
        assert await store.usage("acme", [DAY]) == [before]
        assert before == DayUsage(DAY, reserved_tokens=300, reserved_nano_usd=500)
        # `holder` still has the one stream slot
        assert (await store.admit(ask(), limits, T0 + 1)).refusal is Refusal.STREAMS
        # a tenant with nothing recorded stays at nothing
        await store.finish(ask("nobody", tokens=50, nano_usd=9), Spend(1, 1, 1))
        assert await store.usage("nobody", [DAY]) == [DayUsage(DAY)]

    run(make_store, scenario)


def test_releasing_a_lost_admission_twice_gives_back_only_its_own(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 2, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> DayUsage:
        lost, other = ask(tokens=300), ask(tokens=400)
        for each in (lost, other):
            assert (await store.admit(each, limits, T0)).admitted
        for _ in range(2):
            await store.finish(lost, NOTHING_SPENT)
        # one slot came back, not two: `other` keeps its own
        assert (await store.admit(ask(tokens=1), limits, T0 + 1)).admitted
        assert (await store.admit(ask(tokens=1), limits, T0 + 1)).refusal is Refusal.STREAMS
        [day] = await store.usage("acme", [DAY])
        return day

    day = run(make_store, scenario)
    assert (day.reserved_tokens, day.spent_tokens, day.spent_nano_usd, day.requests) == (
        401, 0, 0, 1)


def test_a_ticket_whose_lease_already_lapsed_settles_to_nothing(
        make_store: StoreFactory) -> None:
    """The lease gave the reservation back unbilled; a late finish must not give it back
    again (out of a later request's share) nor count the request."""
    limits = Limits(100, None, 1, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> DayUsage:
        late = ask(tokens=600)
        assert (await store.admit(late, limits, T0)).admitted
        later = ask(tokens=300)
        assert (await store.admit(later, limits, T0 + 301)).admitted  # `late`'s lease lapsed
        await store.finish(late, Spend(100, 100, 0))
        assert (await store.admit(ask(), limits, T0 + 302)).refusal is Refusal.STREAMS
        [day] = await store.usage("acme", [DAY])
        return day

    day = run(make_store, scenario)
    assert day == DayUsage(DAY, reserved_tokens=300)


def test_the_finish_script_writes_nothing_for_a_ticket_it_does_not_hold(
        shared_redis: RedisServer) -> None:
    """Down to the keys: finishing an unknown ticket leaves every key of the tenant as it was
    (no key made, no expiry moved), and a tenant with no keys gets none."""
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    limits = Limits(100, 10, 5, daily_tokens=1000, daily_nano_usd=10**6)

    def snapshot() -> dict[bytes, tuple[bytes | None, int]]:
        with redis.Redis(port=shared_redis.port) as direct:
            # the value and the absolute expiry (PEXPIRETIME: Redis 7), in ms
            return {key: (direct.dump(key), direct.pexpiretime(key))
                    for key in direct.scan_iter(match=f"{prefix}:*")}

    async def scenario() -> tuple[dict[bytes, tuple[bytes | None, int]], ...]:
        store = RedisStore(shared_redis.url, prefix=prefix, timeout_s=2, lease_s=300,
                           retention_days=35)
        try:
            await store.finish(ask("nobody", user="u"), Spend(1, 1, 1))
            empty = snapshot()
            assert (await store.admit(ask(user="alice", tokens=300, nano_usd=5), limits,
                                      T0)).admitted
            before = snapshot()
            stranger = ask(user="alice", tokens=300, nano_usd=5)
            await store.finish(stranger, NOTHING_SPENT)
            await store.finish(stranger, Spend(10, 5, 7))
            return empty, before, snapshot()
        finally:
            await store.aclose()

    empty, before, after = asyncio.run(scenario())
    assert empty == {}
    assert len(before) == 5 and after == before


def test_budgets_count_reservations_and_settle_to_what_was_spent(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 100, daily_tokens=100, daily_nano_usd=1000)

    async def scenario(store: QuotaStore) -> list[DayUsage]:
        big = ask(tokens=60, nano_usd=100)
        assert (await store.admit(big, limits, T0)).admitted
        held = await store.admit(ask(tokens=60), limits, T0)
        assert held.refusal is Refusal.TOKEN_BUDGET and held.held_by_reservations
        await store.finish(big, Spend(20, 5, 40))  # the answer used less than reserved
        assert (await store.admit(ask(tokens=60, nano_usd=900), limits, T0)).admitted
        usd = await store.admit(ask(tokens=1, nano_usd=100), limits, T0)
        assert usd.refusal is Refusal.USD_BUDGET
        return await store.usage("acme", [DAY])

    [day] = run(make_store, scenario)
    assert day == DayUsage(DAY, requests=1, input_tokens=20, output_tokens=5,
                           spent_nano_usd=40, reserved_tokens=60, reserved_nano_usd=900)


def test_a_spent_budget_stays_spent_until_the_next_day(make_store: StoreFactory) -> None:
    limits = Limits(100, None, 100, daily_tokens=50, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> None:
        first = ask(tokens=50)
        assert (await store.admit(first, limits, T0)).admitted
        await store.finish(first, Spend(30, 20, 0))
        spent = await store.admit(ask(tokens=1), limits, T0)
        assert spent.refusal is Refusal.TOKEN_BUDGET and not spent.held_by_reservations
        assert (await store.admit(ask(tokens=50, day="20261129"), limits, T0)).admitted
        [today, tomorrow] = await store.usage("acme", [DAY, "20261129"])
        assert today.spent_tokens == 50 and tomorrow.reserved_tokens == 50

    run(make_store, scenario)


# One step: reserve `tokens`/`nano_usd`, or settle the n-th open reservation at a fraction of
# what it reserved (fractions above 1: the provider reported more than the estimate).
steps = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 400), st.integers(0, 4000)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.sampled_from([0.0, 0.3, 1.0, 1.5])),
), max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, token_limit=st.integers(1, 1500),
       usd_limit=st.one_of(st.none(), st.integers(0, 12000)))
def test_the_ledger_never_goes_negative_or_past_its_limit(
        make_store: StoreFactory, steps: list[tuple[str, int, float]], token_limit: int,
        usd_limit: int | None) -> None:
    limits = Limits(10**6, None, 10**6, token_limit, usd_limit)
    tenant = uuid.uuid4().hex[:8]

    async def scenario(store: QuotaStore) -> None:
        open_asks: list[Ask] = []
        overspent = False  # once real use beat an estimate, only non-negativity is promised
        spent_tokens = spent_usd = 0
        for step in steps:
            if step[0] == "reserve":
                wanted = ask(tenant, tokens=int(step[1]), nano_usd=int(step[2]))
                [before] = await store.usage(tenant, [DAY])
                verdict = await store.admit(wanted, limits, T0)
                fits = (before.spent_tokens + before.reserved_tokens + wanted.tokens
                        <= token_limit) and (
                    usd_limit is None
                    or before.spent_nano_usd + before.reserved_nano_usd + wanted.nano_usd
                    <= usd_limit)
                assert verdict.admitted == fits
                if verdict.admitted:
                    open_asks.append(wanted)
            elif open_asks:
                done = open_asks.pop(int(step[1]) % len(open_asks))
                fraction = float(step[2])
                overspent |= fraction > 1
                spend = Spend(int(done.tokens * fraction) // 2,
                              int(done.tokens * fraction) - int(done.tokens * fraction) // 2,
                              int(done.nano_usd * fraction))
                spent_tokens += spend.tokens
                spent_usd += spend.nano_usd
                await store.finish(done, spend)
            [day] = await store.usage(tenant, [DAY])
            assert min(day.reserved_tokens, day.reserved_nano_usd, day.spent_tokens,
                       day.spent_nano_usd) >= 0
            assert day.reserved_tokens == sum(a.tokens for a in open_asks)
            assert (day.spent_tokens, day.spent_nano_usd) == (spent_tokens, spent_usd)
            if not overspent:
                assert day.spent_tokens + day.reserved_tokens <= token_limit
                if usd_limit is not None:
                    assert day.spent_nano_usd + day.reserved_nano_usd <= usd_limit

    run(make_store, scenario)


def test_the_redis_store_reconnects_after_a_redis_restart() -> None:
    from tests.redis_server import redis_server

    async def scenario(server: RedisServer) -> None:
        store = RedisStore(server.url, prefix="restart", timeout_s=1, lease_s=300,
                           retention_days=35)
        try:
            assert (await store.admit(ask(), ROOMY, T0)).admitted
            server.kill()
            with redis_server(server.port):
                # the pooled connection is dead; the store must not fail the next call for it
                assert (await store.admit(ask(), ROOMY, T0)).admitted
        finally:
            await store.aclose()

    with redis_server() as server:
        asyncio.run(scenario(server))


def test_concurrent_admissions_take_exactly_what_the_budget_holds(
        make_store: StoreFactory) -> None:
    limits = Limits(10**6, None, 10**6, daily_tokens=1000, daily_nano_usd=None)

    async def scenario(store: QuotaStore) -> int:
        verdicts = await asyncio.gather(
            *(store.admit(ask(tokens=300), limits, T0) for _ in range(20)))
        return sum(v.admitted for v in verdicts)

    assert run(make_store, scenario) == 3


def test_a_user_limit_is_per_tenant_and_says_when_a_slot_frees(
        make_store: StoreFactory) -> None:
    """User ids are the tenant's own: "alice" of acme and "alice" of globex are two people."""
    limits = Limits(10, 1, 100, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        assert (await store.admit(ask("acme", user="alice"), limits, T0)).admitted
        assert (await store.admit(ask("globex", user="alice"), limits, T0 + 5)).admitted
        refused = await store.admit(ask("acme", user="alice"), limits, T0 + 20)
        assert refused.refusal is Refusal.USER_RPM
        assert refused.retry_after_s == pytest.approx(40)
        # without a user limit a user is held only by the tenant's
        unlimited = Limits(10, None, 100, 10**9, None)
        assert (await store.admit(ask("acme", user="alice"), unlimited, T0 + 21)).admitted

    run(make_store, scenario)


def test_a_rate_slot_frees_a_minute_after_to_the_millisecond(make_store: StoreFactory) -> None:
    limits = Limits(1, 1, 100, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        assert (await store.admit(ask(user="u"), limits, T0)).admitted
        assert not (await store.admit(ask(user="u"), limits, T0 + 59.999)).admitted
        assert (await store.admit(ask(user="u"), limits, T0 + 60)).admitted

    run(make_store, scenario)


def test_a_stream_refusal_says_to_retry_in_a_second_and_a_lease_ends_on_time(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 1, 10**9, None)

    async def scenario(store: QuotaStore) -> None:
        assert (await store.admit(ask(), limits, T0)).admitted  # never finished
        refused = await store.admit(ask(), limits, T0 + 299.999)
        assert refused.refusal is Refusal.STREAMS and refused.retry_after_s == 1.0
        assert (await store.admit(ask(), limits, T0 + 300)).admitted  # the lease is 300 s

    run(make_store, scenario)


def test_a_lapsed_lease_of_another_day_leaves_that_days_ledger_alone(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 1, daily_tokens=1000, daily_nano_usd=10**6)

    async def scenario(store: QuotaStore) -> list[DayUsage]:
        assert (await store.admit(ask(tokens=600, nano_usd=70), limits, T0)).admitted
        assert (await store.admit(ask(tokens=5, day="20261129"), limits, T0 + 301)).admitted
        return await store.usage("acme", [DAY, "20261129"])

    assert run(make_store, scenario) == [
        DayUsage(DAY, reserved_tokens=600, reserved_nano_usd=70),
        DayUsage("20261129", reserved_tokens=5)]


def test_a_budget_filled_exactly_by_what_was_spent_is_held_only_by_reservations(
        make_store: StoreFactory) -> None:
    limits = Limits(100, None, 100, daily_tokens=100, daily_nano_usd=100)

    async def scenario(store: QuotaStore) -> None:
        spent = ask(tokens=40, nano_usd=40)
        assert (await store.admit(spent, limits, T0)).admitted
        await store.finish(spent, Spend(20, 20, 40))
        assert (await store.admit(ask(tokens=30), limits, T0)).admitted  # still open
        tokens = await store.admit(ask(tokens=60), limits, T0)
        assert tokens.refusal is Refusal.TOKEN_BUDGET and tokens.held_by_reservations
        assert (await store.admit(ask(tokens=1, nano_usd=30), limits, T0)).admitted
        usd = await store.admit(ask(tokens=1, nano_usd=60), limits, T0)
        assert usd.refusal is Refusal.USD_BUDGET and usd.held_by_reservations
        over = await store.admit(ask(tokens=61), limits, T0)
        assert over.refusal is Refusal.TOKEN_BUDGET and not over.held_by_reservations

    run(make_store, scenario)


def test_the_memory_store_forgets_days_past_its_retention() -> None:
    limits = Limits(100, None, 100, 10**9, None)
    days = ["20261126", "20261127", "20261128", "20261129"]

    async def scenario() -> list[DayUsage]:
        store = MemoryStore(lease_s=300, retention_days=2)
        for day in days:
            once = ask(tokens=10, day=day)
            assert (await store.admit(once, limits, T0)).admitted
            await store.finish(once, Spend(3, 4, 0))
        return await store.usage("acme", days)

    used = DayUsage("", requests=1, input_tokens=3, output_tokens=4)
    oldest, _, yesterday, today = asyncio.run(scenario())
    assert oldest == DayUsage("20261126")
    assert [yesterday, today] == [replace(used, day=day) for day in days[2:]]


def test_every_redis_key_of_a_tenant_is_under_the_prefix_and_its_hash_tag(
        shared_redis: RedisServer) -> None:
    """One request's keys share a Redis Cluster slot (the tenant in braces), so its script
    may touch them all; the prefix keeps deployments sharing a Redis apart."""
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    limits = Limits(100, 10, 5, daily_tokens=1000, daily_nano_usd=None)

    async def scenario() -> None:
        store = RedisStore(shared_redis.url, prefix=prefix, timeout_s=2, lease_s=300,
                           retention_days=35)
        try:
            assert (await store.admit(ask(user="alice"), limits, T0)).admitted
            assert (await store.admit(ask("globex", user="alice"), limits, T0)).admitted
        finally:
            await store.aclose()

    asyncio.run(scenario())
    with redis.Redis(port=shared_redis.port) as direct:
        keys = {key.decode() for key in direct.scan_iter(match=f"{prefix}:*")}
    assert keys == {f"{prefix}:{{{tenant}}}:{part}" for tenant in ("acme", "globex")
                    for part in ("rpm", "user:alice:rpm", "streams", f"day:{DAY}", "holds")}


def test_redis_that_does_not_answer_in_time_is_unavailable_and_not_asked_twice(
        shared_redis: RedisServer) -> None:
    """Within its timeout, once: a call that timed out is not sent again (the script may have
    run; it would only be waited for twice), nor waited for past the socket timeout."""
    import redis

    from tests.redis_server import RedisProxy, redis_proxy

    prefix = f"t{uuid.uuid4().hex[:12]}"
    admit_script = files("quota").joinpath("lua", "admit.lua").read_text()

    async def scenario(proxy: RedisProxy) -> tuple[str, float]:
        store = RedisStore(proxy.url, prefix=prefix, timeout_s=0.3, lease_s=300,
                           retention_days=35)
        try:
            assert (await store.admit(ask(), ROOMY, T0)).admitted  # connected, script loaded
            proxy.hold_script_replies(admit_script, 1.5)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as unavailable:
                await store.admit(ask(), ROOMY, T0 + 1)
            return str(unavailable.value), time.monotonic() - started
        finally:
            await store.aclose()

    with redis_proxy(shared_redis) as proxy:
        error, waited = asyncio.run(scenario(proxy))
    assert error == "TimeoutError"
    assert 0.25 <= waited < 0.5  # one socket timeout: not two, nor the 0.9 s backstop
    with redis.Redis(port=shared_redis.port) as direct:
        assert direct.zcard(f"{prefix}:{{acme}}:rpm") == 2  # the first admission and this one


def test_redis_that_is_gone_is_unavailable() -> None:
    from tests.redis_server import redis_server

    async def scenario(server: RedisServer) -> str:
        store = RedisStore(server.url, prefix="gone", timeout_s=1, lease_s=300,
                           retention_days=35)
        try:
            assert (await store.admit(ask(), ROOMY, T0)).admitted
            server.kill()
            with pytest.raises(StoreUnavailable) as unavailable:
                await store.admit(ask(), ROOMY, T0)
            return str(unavailable.value)
        finally:
            await store.aclose()

    with redis_server() as server:
        assert asyncio.run(scenario(server)) == "ConnectionError"
