"""What a cached answer is filed under: the tenant, the conversation before the question, and
the question itself, each normalized so that spacing and case do not make a new question.

`scope` is everything an answer depends on besides the question: the prompt version, the
system prompt and the conversation's earlier turns. Near-duplicate matching compares only
questions of one scope, so a cached answer is never served to a conversation that went
differently, and a new `PROMPT_VERSION` or `SYSTEM_PROMPT` starts a fresh cache (the old
entries are no longer found and age out). `key` adds the question: equal keys are an exact hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from providers.types import Message


@dataclass(frozen=True, slots=True)
class Question:
    tenant: str
    scope: str  # digest of the prompt and the earlier turns
    key: str  # digest of the scope and the question
    text: str  # the question, normalized: what near-duplicates are judged on


def normalize(text: str) -> str:
    """Whitespace runs folded to one space, case folded."""
    return " ".join(text.split()).casefold()


def prompt_fingerprint(prompt_version: str, system_prompt: str) -> str:
    return _digest([("version", prompt_version), ("system", system_prompt)])


def question_of(tenant: str, messages: Sequence[Message], fingerprint: str) -> Question | None:
    """The cache's view of a conversation; None when it does not end with a user's question
    (nothing to answer from a cache)."""
    if not messages or messages[-1].role != "user":
        return None
    text = normalize(messages[-1].content)
    if not text:
        return None
    scope = _digest([("prompt", fingerprint),
                     *((m.role, normalize(m.content)) for m in messages[:-1])])
    return Question(tenant, scope, _digest([("scope", scope), ("user", text)]), text)


def _digest(parts: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for role, text in parts:
        encoded = text.encode("utf-8", "surrogatepass")
        # Lengths first, so no choice of texts can make two conversations hash alike.
        digest.update(b"%d:%d:" % (len(role), len(encoded)) + role.encode() + encoded)
    return digest.hexdigest()
