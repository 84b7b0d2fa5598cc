"""Input moderation by OpenAI's moderation endpoint (`POST /v1/moderations`).

One request per check, every text in its `input` list; the verdict is flagged when any
text is. The vendor's failures are the project's `ProviderError`s, mapped as the chat adapter
maps them (an answer of a shape that cannot be read included), so a caller decides itself
whether an unanswered check lets the input through. Anything else (a bug here or in the SDK)
is raised as it is: no policy lets input through on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openai import BaseModel
from openai.types import ModerationCreateResponse

from providers.credentials import Secret
from providers.errors import ProviderUnavailable
from providers.openai_chat import VENDOR, vendor_error
from providers.openai_client import openai_client
from providers.types import trace_headers

DEFAULT_MODEL = "omni-moderation-latest"


@dataclass(frozen=True, slots=True)
class ModerationVerdict:
    flagged: bool
    categories: tuple[str, ...]  # the flagged categories' wire names, sorted: ("violence",)


NOT_FLAGGED = ModerationVerdict(False, ())


class OpenAIModeration:
    def __init__(self, *, api_key: Secret, base_url: str | None,
                 model: str = DEFAULT_MODEL, timeout_s: float = 2.0,
                 connect_timeout_s: float = 2.0) -> None:
        self._model = model
        self._client = openai_client(api_key, base_url, timeout_s=timeout_s,
                                     connect_timeout_s=connect_timeout_s)

    async def check(self, texts: Sequence[str], *,
                    traceparent: str | None = None) -> ModerationVerdict:
        """The verdict on all `texts` together; categories come from the flagged ones.
        `traceparent` is the W3C trace context header the call carries."""
        if isinstance(texts, str):  # a str is a Sequence[str]: one text per character
            raise TypeError("check() takes a sequence of texts, not one str")
        if not texts:
            return NOT_FLAGGED  # nothing to judge; the endpoint refuses an empty input
        try:
            response = await self._client.moderations.create(
                model=self._model, input=list(texts),
                extra_headers=trace_headers(traceparent))
        except Exception as exc:
            if (error := vendor_error(exc)) is None:
                raise  # not the vendor's doing: a bug, for the caller to report with its stack
            raise error from None
        # The SDK builds any JSON object into the response model, unchecked, and passes
        # anything else through as it was sent.
        results = response.results if isinstance(response, ModerationCreateResponse) else None
        return _verdict(results, len(texts))

    async def aclose(self) -> None:
        await self._client.close()


def _verdict(results: object, expected: int) -> ModerationVerdict:
    """Read leniently built results (the SDK does not validate them) with care: a missing
    result must not pass as a clean one, and a flagged one stays flagged even when its
    categories cannot be read (they only name the reason in the log)."""
    if not isinstance(results, list) or len(results) != expected:
        raise ProviderUnavailable(f"{VENDOR}: malformed moderation response")
    flagged = False
    categories: set[str] = set()
    for result in results:
        if not isinstance(getattr(result, "flagged", None), bool):
            raise ProviderUnavailable(f"{VENDOR}: malformed moderation response")
        if result.flagged:
            flagged = True
            categories.update(_flagged_categories(result))
    return ModerationVerdict(flagged, tuple(sorted(categories)))


def _flagged_categories(result: Any) -> list[str]:
    """Wire names ("self-harm/intent") of the categories set, including ones newer than this
    SDK; none when the vendor sent them in another shape."""
    raw: Any = getattr(result, "categories", None)
    if isinstance(raw, BaseModel):  # what the SDK builds from a JSON object
        items = raw.to_dict(warnings=False).items()
    elif isinstance(raw, dict):
        items = raw.items()
    else:  # left out, null, a list: no names to give
        return []
    return [name for name, value in items if isinstance(name, str) and value is True]
