import time

import pytest

from providers.demo import DemoConfig, DemoProvider, demo_answer
from providers.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from providers.tokens import count_tokens, split_tokens
from providers.types import CompletionRequest, Finish, Message, Sampling, TextDelta, Usage

INSTANT = DemoConfig(ttft_s=0, token_delay_s=0)


def ask(text: str, max_tokens: int = 1000) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), max_tokens=max_tokens)


async def run(provider: DemoProvider, request: CompletionRequest) -> list[object]:
    return [event async for event in provider.stream(request)]


def test_the_answer_is_deterministic_and_depends_on_the_message() -> None:
    a = demo_answer(ask("refund policy").messages, 60)
    assert a == demo_answer(ask("refund policy").messages, 60)
    assert a != demo_answer(ask("shipping times").messages, 60)
    assert a.startswith("Hello from the hello-ship demo model: you wrote 2 words.")
    assert count_tokens(a) >= 60


@pytest.mark.parametrize(("message", "counted"), [
    ("hi", "you wrote 1 word."), ("hi there", "you wrote 2 words."), ("   ", "you wrote 0 words."),
])
def test_the_answer_counts_the_words_in_good_english(message: str, counted: str) -> None:
    assert demo_answer(ask(message).messages, 60).startswith(
        f"Hello from the hello-ship demo model: {counted}")


def test_echo_answers_verbatim() -> None:
    assert demo_answer(ask("/echo exactly this, please.").messages, 60) == "exactly this, please."


async def test_stream_yields_the_answer_then_usage_and_finish() -> None:
    events = await run(DemoProvider("hello-1", INSTANT), ask("/echo one two three."))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "one two three."
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.output_tokens == len(split_tokens("one two three."))
    assert usage.input_tokens == count_tokens("/echo one two three.")
    assert events[-1] == Finish("stop")


async def test_max_tokens_cuts_the_answer_with_finish_length() -> None:
    events = await run(DemoProvider("hello-1", INSTANT), ask("anything", max_tokens=5))
    assert sum(isinstance(e, TextDelta) for e in events) == 5
    assert events[-1] == Finish("length")


async def test_pacing_delays_the_first_token() -> None:
    provider = DemoProvider("hello-1", DemoConfig(ttft_s=0.2, token_delay_s=0))
    start = time.monotonic()
    stream = provider.stream(ask("hi"))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    assert time.monotonic() - start >= 0.19
    await stream.aclose()


@pytest.mark.parametrize(("status", "error_class"), [
    (503, ProviderUnavailable), (429, ProviderRateLimited), (400, ProviderRejected),
])
async def test_injected_faults_raise_after_n_tokens(status: int, error_class: type) -> None:
    config = DemoConfig(ttft_s=0, token_delay_s=0, fail_after_tokens=3, fail_status=status)
    received = []
    with pytest.raises(error_class) as caught:
        async for event in DemoProvider("hello-1", config).stream(ask("anything")):
            received.append(event)
    assert len(received) == 3
    assert caught.value.status_code == status
    assert caught.value.retryable is (status != 400)
    if status == 429:
        assert caught.value.retry_after == 1.0


async def test_route_names_the_demo_provider() -> None:
    assert DemoProvider("hello-1", INSTANT).route == "demo/hello-1"


@pytest.mark.parametrize(("stop", "answer"), [
    (("two",), "one "),
    ((" three", "two", "absent"), "one "),  # the first one met in the answer, not in `stop`
    (("absent",), "one two three."),
    ((), "one two three."),
])
async def test_the_answer_ends_before_the_first_stop_sequence(stop: tuple[str, ...],
                                                              answer: str) -> None:
    request = CompletionRequest(messages=(Message("user", "/echo one two three."),),
                                max_tokens=1000, sampling=Sampling(stop=stop))
    events = await run(DemoProvider("hello-1", INSTANT), request)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == answer
    assert events[-1] == Finish("stop")
