"""A small reader of the SSE wire for tests: events, comments and the retry field, in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class SSEItem:
    """One dispatched block: an event (with data) or a comment-only block, or a retry block."""

    id: str | None = None
    event: str | None = None
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def data(self) -> Any:
        return orjson.loads("\n".join(self.data_lines))

    @property
    def is_event(self) -> bool:
        return bool(self.data_lines)


def iter_sse(lines: Iterable[str]) -> Iterator[SSEItem]:
    item = SSEItem()
    dirty = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if dirty:
                yield item
            item, dirty = SSEItem(), False
            continue
        dirty = True
        if line.startswith(":"):
            item.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            item.data_lines.append(value)
        elif name == "id":
            item.id = value
        elif name == "event":
            item.event = value
        elif name == "retry":
            item.retry = int(value)
    if dirty:
        yield item


def parse_sse(text: str) -> list[SSEItem]:
    return list(iter_sse(text.split("\n")))
