"""The token in a stream URL: signed, bound to one answer and its tenant, short-lived.

EventSource cannot send an `Authorization` header, so `POST /chat/streams` (which can) hands
out a URL whose token stands in for the key, for that one answer only:

    base64url({"s": stream id, "t": tenant, "e": expiry, unix seconds}) "." base64url(HMAC-SHA256)

The expiry bounds when a read may start. A resume (the reader says which frame it got last)
is taken with an expired token while the answer's frames are kept: EventSource reconnects
with the URL it was given. A token is never logged; the stream id is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
import redis.asyncio as redis

from tenancy.errors import StreamTokenRefused

_SIGNATURE_BYTES = 32


@dataclass(frozen=True, slots=True)
class StreamGrant:
    stream_id: str
    tenant: str
    expired: bool


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    def __init__(self, key: bytes | None, ttl_s: float) -> None:
        self.key = key or secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def issue(self, stream_id: str, tenant: str) -> str:
        claims = _b64(orjson.dumps({"s": stream_id, "t": tenant,
                                    "e": int(time.time() + self.ttl_s)}))
        return f"{claims}.{_b64(self._sign(claims))}"

    def _sign(self, claims: str) -> bytes:
        return hmac.new(self.key, claims.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def check(self, token: str, stream_id: str) -> StreamGrant:
        """The grant a token gives for `stream_id`; refused if it is not one of ours, or is
        for another answer."""
        claims, _, signature = token.partition(".")
        try:
            valid = hmac.compare_digest(_unb64(signature), self._sign(claims))
            decoded = orjson.loads(_unb64(claims)) if valid else None
        except (binascii.Error, ValueError, UnicodeEncodeError):
            decoded = None
        if not isinstance(decoded, dict) or not isinstance(decoded.get("s"), str) or not \
                isinstance(decoded.get("t"), str) or not isinstance(decoded.get("e"), int):
            raise StreamTokenRefused("invalid")
        if decoded["s"] != stream_id:  # ids are not secret; the signature was checked above
            raise StreamTokenRefused("forbidden")
        return StreamGrant(decoded["s"], decoded["t"], decoded["e"] <= time.time())


async def shared_token_key(redis_url: str, prefix: str) -> bytes:
    """The deployment's token key, made by whichever replica starts first and kept in Redis
    (without expiry), so a token from one replica is good on every other."""
    client = redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        name = f"{prefix}:stream-token-key"
        await client.set(name, secrets.token_bytes(32), nx=True)
        key = await client.get(name)
    finally:
        await client.aclose()
    if not isinstance(key, bytes) or len(key) < 32:
        raise RuntimeError(f"{prefix}:stream-token-key in Redis is not a 32-byte key")
    return key
