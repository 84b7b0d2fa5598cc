"""Answers a browser can open and resume: stream tokens, the resume grace, CORS.

`STREAM_TOKEN_KEY` signs the tokens in stream URLs; replicas must share it. Unset, a key is
made once and kept in Redis when `REDIS_URL` is set (every replica finds it there), else made
per process (one replica, or sticky sessions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from config.env import EnvReader, SettingsError


@dataclass(frozen=True, slots=True)
class StreamSettings:
    token_ttl_s: float = 60.0  # a stream URL's token starts a read this long after it is made
    # An answer no reader follows keeps running this long, for the reader to come back.
    resume_grace_s: float = 10.0
    max_frames: int = 4096  # an answer's frames kept for resuming; older ones are dropped
    token_key: bytes | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()


def read_stream_settings(env: EnvReader) -> StreamSettings:
    key = env.raw("STREAM_TOKEN_KEY")
    if key is not None and len(key) < 32:
        raise SettingsError("STREAM_TOKEN_KEY", "must be a secret of at least 32 characters")
    return StreamSettings(
        token_ttl_s=env.number("STREAM_TOKEN_TTL_S", 60.0, float, 1.0, 86_400.0),
        resume_grace_s=env.number("RESUME_GRACE_S", 10.0, float, 0.0, 3600.0),
        max_frames=env.number("RESUME_MAX_FRAMES", 4096, int, 16, 1_000_000),
        token_key=key.encode() if key else None,
        cors_origins=_origins(env.raw("CORS_ALLOW_ORIGINS")),
    )


def _origins(raw: str | None) -> tuple[str, ...]:
    """`CORS_ALLOW_ORIGINS`: comma-separated origins (`https://chat.example.com`); never `*`,
    which would let any page start answers with a key it holds."""
    if not raw:
        return ()
    origins = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise SettingsError("CORS_ALLOW_ORIGINS", f"{origin!r} is not an origin "
                                                      "(scheme://host[:port])")
        origins.append(origin)
    return tuple(origins)
