"""The prompts a load test sends: a built-in set of varied lengths, or the user's JSON lines.

A file's line is `{"prompt": "..."}`, `{"messages": [{"role": ..., "content": ...}]}` or a
bare JSON string; blank lines are skipped. Prompts are sent in order and reused in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, str]]


class PromptsError(Exception):
    """The prompts file cannot be used; the message names the line."""


BUILTIN_TEXTS = (
    "Say hello in five words.",
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about a lighthouse in winter.",
    "Explain what a load balancer does, in three sentences, to someone new to computing.",
    "List five tips for writing clear error messages in a web API, one line each.",
    "Summarise the plot of Romeo and Juliet in a short paragraph.",
    "Translate 'the train leaves at nine from platform four' into Spanish and French.",
    "A customer writes: 'My order arrived damaged and I want a refund.' Draft a polite reply "
    "from the support team that apologises, explains the refund steps and offers a discount.",
    "Compare TCP and UDP: give two differences, one use case for each, and a closing line.",
    "Write a short product description for a stainless steel water bottle that keeps drinks "
    "cold for 24 hours, in a friendly tone, under 80 words.",
    "Give a step-by-step recipe for a simple tomato pasta for two people.",
    "What are three common causes of slow database queries, and how would you find each?",
)

BUILTIN = tuple(Prompt([{"role": "user", "content": text}]) for text in BUILTIN_TEXTS)


def load_prompts(path: str) -> tuple[Prompt, ...]:
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as error:
        raise PromptsError(f"cannot read {path}: {error.strerror}") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            prompts.append(_prompt(line, f"{path}:{number}"))
    if not prompts:
        raise PromptsError(f"{path} has no prompts")
    return tuple(prompts)


def _prompt(line: bytes, where: str) -> Prompt:
    try:
        value: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise PromptsError(f"{where}: not JSON") from None
    if isinstance(value, dict) and "prompt" in value:
        value = value["prompt"]
    if isinstance(value, str):
        if not value.strip():
            raise PromptsError(f"{where}: the prompt is empty")
        return Prompt([{"role": "user", "content": value}])
    if isinstance(value, dict) and isinstance(value.get("messages"), list) and value["messages"]:
        messages = []
        for message in value["messages"]:
            if not (isinstance(message, dict) and message.get("role") in ROLES
                    and isinstance(message.get("content"), str)):
                raise PromptsError(f"{where}: each message needs a role ({', '.join(ROLES)}) "
                                   "and a string content")
            messages.append({"role": message["role"], "content": message["content"]})
        return Prompt(messages)
    raise PromptsError(f'{where}: expected {{"prompt": "..."}}, {{"messages": [...]}} or a '
                       "JSON string")
