"""Limits on the HTTP connections themselves, and the proxies whose forwarding headers count.

The service may face the internet without a proxy in front, so it bounds what a client can hold
on its own: the size of a request head, the time to send it and a body, and how many
connections are open at once. `TRUSTED_PROXIES` names the proxies (addresses or CIDRs) whose
`X-Forwarded-For` is believed for the client address in the logs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from config.env import EnvReader, SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 16_384  # request line and headers; more is answered 431
    header_timeout_s: float = 5.0  # to send the request head, from the first byte or connect
    body_timeout_s: float = 30.0  # to send the whole body, from the end of the head
    max_connections: int = 1000  # open at once in this process; one more is answered 503
    # A client that takes no data for this long is dropped: mid-stream, or when its
    # connection closes with the end of its answer still unsent.
    send_timeout_s: float = 30.0


def read_connection_limits(env: EnvReader) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=env.number("MAX_HEADER_BYTES", 16_384, int, 1024, 1_048_576),
        header_timeout_s=env.number("HEADER_TIMEOUT_S", 5.0, float, 0.1, 3600.0),
        body_timeout_s=env.number("BODY_TIMEOUT_S", 30.0, float, 0.1, 3600.0),
        max_connections=env.number("MAX_CONNECTIONS", 1000, int, 1, 1_000_000),
        send_timeout_s=env.number("SEND_TIMEOUT_S", 30.0, float, 0.1, 3600.0),
    )


def read_trusted_proxies(env: EnvReader) -> tuple[IPNetwork, ...]:
    """`TRUSTED_PROXIES`: comma-separated addresses and CIDRs, e.g. `127.0.0.1,10.0.0.0/8`."""
    raw = env.raw("TRUSTED_PROXIES")
    if raw is None:
        return ()
    networks = []
    for item in raw.split(","):
        text = item.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise SettingsError("TRUSTED_PROXIES", f"{text!r} is not an address or a CIDR "
                                                   "block") from None
    return tuple(networks)
