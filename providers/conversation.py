"""Reshaping a chat for vendors that take the system prompt apart and want strict turns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from providers.types import Message


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str


def split_system(messages: tuple[Message, ...]) -> tuple[list[str], list[Turn]]:
    """System texts, and the user/assistant turns with consecutive same-role messages merged.

    Anthropic and Bedrock take the system prompt as its own parameter, want the user to
    speak first and reject two turns of the same role in a row; a caller's `[user, user]`
    history is still one valid question. Assistant turns before the user's first (a chat
    UI's greeting) are left out: they answer nothing.
    """
    system: list[str] = []
    turns: list[Turn] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
        elif not turns and message.role == "assistant":
            continue
        elif turns and turns[-1].role == message.role:
            turns[-1] = Turn(message.role, turns[-1].text + "\n\n" + message.content)
        else:
            turns.append(Turn(message.role, message.content))
    return system, turns
