"""Who is on the other end of a request: its credential, its address, and whether it is local.

Open mode (no API keys configured) serves local callers only, and only they may then pin a
route or read `/metrics`. A caller is local when its connection comes from a loopback address
and no forwarding header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) names anyone else:
behind a proxy on the same host every connection comes from loopback, and only the proxy's
header says who is really calling. The headers are read whether or not the proxy is trusted,
since a forged one can only make a request look remote, and so be refused.

For the logs, the client address is the connection's peer or, when the peer is a trusted proxy
(`TRUSTED_PROXIES`), the address it forwarded for: the rightmost `X-Forwarded-For` entry that
is not a trusted proxy itself, as nginx's realip module picks it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

from starlette.types import Scope

from app.errors import ApiError
from config.connections import IPNetwork
from tenancy.identity import is_loopback

_FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def authorization(scope: Scope) -> str | None:
    """The request's `Authorization` header; two of them are refused rather than guessed."""
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) > 1:
        raise ApiError(400, "ambiguous_credentials", "Send one Authorization header, not "
                                                      f"{len(values)}.")
    return values[0].decode("latin-1") if values else None


def is_local(scope: Scope) -> bool:
    """From loopback (or a Unix socket), and forwarded for nobody but loopback."""
    client = scope.get("client")
    if client is not None and not is_loopback(client[0]):
        return False
    return all(is_loopback(address) for name, value in scope["headers"] if name in _FORWARDING
               for address in forwarded_for(name, value.decode("latin-1")))


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str | None:
    """An IP address, never other text a header carried (it goes into the logs as it is)."""
    client = scope.get("client")
    if client is None:
        return None
    peer: str = client[0]
    if not _in(peer, trusted):
        return peer
    forwarded = [address for name, value in scope["headers"] if name == b"x-forwarded-for"
                 for address in forwarded_for(name, value.decode("latin-1"))]
    chosen = next((address for address in reversed(forwarded) if not _in(address, trusted)),
                  forwarded[0] if forwarded else peer)
    ip = _ip(chosen)
    return str(ip) if ip is not None else peer


def forwarded_for(name: bytes, value: str) -> Iterator[str]:
    """The client addresses a forwarding header names, without quotes, brackets or ports.
    `Forwarded` (RFC 7239) names them in `for=` parameters; the others list them."""
    if name == b"forwarded":
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, node = pair.partition("=")
                if key.strip().lower() == "for":
                    yield _host(node.strip().strip('"'))
    else:
        for item in value.split(","):
            if item.strip():
                yield _host(item.strip())


def _host(node: str) -> str:
    """`[2001:db8::1]:4711` -> `2001:db8::1`, `192.0.2.1:80` -> `192.0.2.1`; an obfuscated
    or `unknown` node stays as it is (and is not loopback)."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, if it is one; not with an IPv6 zone (`fe80::1%<any text>`), whose text
    would otherwise reach the logs."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id else ip


def _in(address: str, networks: Sequence[IPNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in networks)
