"""Collecting a frame stream into one answer, for the non-streaming endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass

from streaming.frames import DoneFrame, ErrorFrame, Frame, TokenFrame


@dataclass(frozen=True, slots=True)
class CollectedAnswer:
    text: str
    terminal: DoneFrame | ErrorFrame


async def collect_answer(frames: AsyncIterable[Frame]) -> CollectedAnswer:
    parts: list[str] = []
    terminal: DoneFrame | ErrorFrame | None = None
    async for frame in frames:
        if isinstance(frame, TokenFrame):
            parts.append(frame.token)
        elif isinstance(frame, DoneFrame | ErrorFrame):
            terminal = frame
    if terminal is None:
        raise RuntimeError("the pipeline ended without a terminal frame")
    return CollectedAnswer("".join(parts), terminal)
