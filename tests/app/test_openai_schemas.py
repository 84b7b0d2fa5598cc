"""OpenAI request bodies: what is taken, what is refused naming the parameter, never dropped."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import ApiError
from app.openai_schemas import parse_completions
from app.schemas import InputLimits
from providers.types import Message, Sampling

LIMITS = InputLimits(max_input_chars=1000, max_messages=8, max_output_tokens=100)
USER = [{"role": "user", "content": "hi"}]


def parse(**body: Any) -> Any:
    return parse_completions({"model": "default", "messages": USER, **body}, LIMITS)


def test_a_plain_body_is_the_request_chat_would_make() -> None:
    parsed = parse()
    assert parsed.model == "default" and parsed.stream is False
    assert parsed.chat.messages == (Message("user", "hi"),)
    assert parsed.chat.max_tokens == 100 and parsed.chat.sampling == Sampling()


def test_roles_content_parts_caps_and_sampling_are_carried() -> None:
    parsed = parse(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok", "refusal": None},
        {"role": "user", "content": "go"}],
        max_completion_tokens=500, max_tokens=5, temperature=0, top_p=1, stop="END", seed=-3,
        safety_identifier="u-1", stream=True, stream_options={"include_usage": True},
        n=1, tools=[], response_format={"type": "text"}, parallel_tool_calls=False)
    assert [m.role for m in parsed.chat.messages] == ["system", "user", "assistant", "user"]
    assert parsed.chat.messages[1].content == "a\nb"
    assert parsed.chat.max_tokens == 100  # the newer cap wins, clamped to the server's
    assert parsed.chat.sampling == Sampling(0.0, 1.0, ("END",), -3, "u-1")
    assert parsed.stream and parsed.include_usage


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"n": 2}, "n", "unsupported_parameter"),
    ({"tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
    ({"tool_choice": "auto"}, "tool_choice", "unsupported_parameter"),
    ({"logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "unsupported_parameter"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
    ({"audio": {"voice": "x"}}, "audio", "unsupported_parameter"),
    ({"reasoning_effort": "high"}, "reasoning_effort", "unsupported_parameter"),
    ({"n": True}, "n", "unsupported_parameter"),  # not n: 1
    ({"logprobs": 0}, "logprobs", "unsupported_parameter"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}, *USER]},
     "messages[0].tool_calls", "unsupported_parameter"),
    ({"Weird Key!": 1}, None, "unknown_parameter"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
     "messages[0].role", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0].type", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]},
     "messages[0].name", "unsupported_parameter"),
    ({"model": ""}, "model", "invalid_request"),
    ({"stream": "yes"}, "stream", "invalid_request"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_request"),
    ({"user": 5}, "user", "invalid_request"),
])
def test_what_the_service_cannot_do_is_a_400_naming_it(body: dict[str, Any], param: str | None,
                                                       code: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse(**body)
    assert (raised.value.status, raised.value.code) == (400, code)
    assert raised.value.fields["param"] == param


@pytest.mark.parametrize("body", [
    {"messages": []}, {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "assistant", "content": "only me"}]},
    {"temperature": 3}, {"top_p": -1}, {"seed": 1.5}, {"stop": ["a"] * 5}, {"max_tokens": 0},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
])
def test_invalid_values_are_refused_as_on_chat(body: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as raised:
        parse(**body)
    # 422 from /chat's own checks: answered 400 under /v1/, as OpenAI does (app.errors)
    assert raised.value.status in (400, 422)


def test_what_frameworks_send_for_unset_parameters_is_taken() -> None:
    parsed = parse(audio=None, reasoning_effort=None, prediction=None, verbosity=None,
                   web_search_options=None, prompt_cache_key=None, n=None, tools=None,
                   user="u-2", safety_identifier=None, messages=[
                       {"role": "assistant", "content": "Hi.", "tool_calls": None,
                        "function_call": None, "audio": None, "annotations": [],
                        "refusal": None}, {"role": "user", "content": "go", "name": None}])
    assert parsed.chat.sampling.user == "u-2"
    assert [m.role for m in parsed.chat.messages] == ["assistant", "user"]


def test_too_much_input_stays_a_413() -> None:
    with pytest.raises(ApiError) as raised:
        parse(messages=[{"role": "user", "content": "x" * 1001}])
    assert (raised.value.status, raised.value.code) == (413, "input_too_large")
