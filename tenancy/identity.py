"""Who is calling: API keys -> tenant (and optional user), and each tenant's limits.

Keys are configured as SHA-256 digests, so the config file holds nothing that authenticates.
The tenant always comes from the credential, never from the request body.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cache.entry import CacheMode
from quota.ledger import Limits
from tenancy.errors import OpenModeRefused, Unauthenticated

ANONYMOUS = "anonymous"
ADMIN = "admin"  # the identity of an admin key calling the chat endpoints
DIGEST_PREFIX = "sha256:"
SystemMessages = Literal["allow", "drop", "refuse"]
SYSTEM_MESSAGE_POLICIES: tuple[SystemMessages, ...] = ("allow", "drop", "refuse")


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    user: str | None = None
    # Which of the tenant's keys: the first 12 hex digits of its digest, as the config file
    # lists it, so a rotation can tell when nobody uses the old key any more. Never the key.
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    limits: Limits
    max_output_tokens: int
    # The caller's own `system` messages: "allow" (sent on), "drop" (removed before anything
    # sees them) or "refuse" (the request is refused); CALLER_SYSTEM_MESSAGES by default.
    system_messages: SystemMessages = "allow"
    # The names the tenant may ask for in `model` (POST /v1/chat/completions); None: any.
    models: tuple[str, ...] | None = None
    cache: CacheMode | None = None  # the answer cache's mode for it; None: CACHE_MODE


@dataclass(frozen=True, slots=True)
class Tenancy:
    """Keys, tenants and their policies; with no keys at all the service is in open mode."""

    default_policy: TenantPolicy
    policies: Mapping[str, TenantPolicy] = field(default_factory=dict)
    keys: Mapping[bytes, Identity] = field(default_factory=dict, repr=False)
    admin_keys: frozenset[bytes] = field(default_factory=frozenset, repr=False)
    metrics_keys: frozenset[bytes] = field(default_factory=frozenset, repr=False)  # scrape only
    open_mode_anywhere: bool = False  # ALLOW_OPEN_MODE: no keys, yet not only on loopback

    @property
    def open_mode(self) -> bool:
        return not self.keys

    def policy(self, tenant: str) -> TenantPolicy:
        return self.policies.get(tenant, self.default_policy)

    def identify(self, authorization: str | None, local: bool,
                 pinning: bool = False) -> Identity:
        """The caller's identity from its `Authorization` header, or `Unauthenticated`.

        `local`: the caller is on this host (not merely its connection: a proxy on the same
        host forwards anyone's). Open mode serves nobody else unless ALLOW_OPEN_MODE says so.
        An admin key is no tenant's: it may only chat `pinning` a route, to evaluate it.
        """
        if self.open_mode:
            if not local and not self.open_mode_anywhere:
                raise OpenModeRefused()
            return Identity(ANONYMOUS)
        digest = _digest_of_bearer(authorization)
        identity = self.keys.get(digest) if digest is not None else None
        if identity is None:
            if pinning and digest is not None and self._admin_digest(digest):
                return Identity(ADMIN)
            raise Unauthenticated(key_sent=authorization is not None)
        return identity

    def may_pin_routes(self, identity: Identity) -> bool:
        """Pinning a request to one route (`X-Route`) is for operators: an admin key, or
        anyone in open mode on loopback (not with ALLOW_OPEN_MODE, which serves anyone)."""
        return identity.tenant == ADMIN or (self.open_mode and not self.open_mode_anywhere)

    def is_admin(self, authorization: str | None) -> bool:
        digest = _digest_of_bearer(authorization)
        return digest is not None and self._admin_digest(digest)

    def may_scrape(self, authorization: str | None) -> bool:
        """An admin key or a `[metrics]` key may read `/metrics`."""
        digest = _digest_of_bearer(authorization)
        return digest is not None and (self._admin_digest(digest) or any(
            hmac.compare_digest(digest, key) for key in self.metrics_keys))

    def _admin_digest(self, digest: bytes) -> bool:
        # Digests of secrets, so even a timing leak of the comparison says nothing useful;
        # compare_digest keeps it constant anyway.
        return any(hmac.compare_digest(digest, admin) for admin in self.admin_keys)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


KEY_ID_DIGITS = 12


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hashed_form(key: str) -> str:
    """The `sha256:` form of a key, as the config file takes it."""
    return DIGEST_PREFIX + key_digest(key).hex()


def new_key() -> str:
    return "hs_" + secrets.token_urlsafe(32)


def _digest_of_bearer(authorization: str | None) -> bytes | None:
    if authorization is None:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    # A dict lookup by digest: the probe's timing depends on a hash of a hash of the key,
    # which tells an attacker nothing about any configured key.
    return key_digest(key)

