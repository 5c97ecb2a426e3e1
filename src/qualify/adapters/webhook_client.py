"""The webhook HTTP client: one POST of a signed JSON body, and what its answer means.

Receivers are other people's servers, named by whoever may register a webhook: a URL must not
reach into the network Qualify runs in (server-side request forgery). A receiver's address is
checked when it is registered (`internal_host`) and again when each delivery is sent: the host is
resolved, every address it resolves to must be public — not loopback, private, link-local,
multicast, unspecified or reserved — unless the operator allows it (`Allowed`, from
QUALIFY_WEBHOOK_ALLOW), and the request goes to the very address that was checked (the URL's
name kept for the Host header and TLS), so a name that resolves differently a moment later
(DNS rebinding) changes nothing. A failed delivery keeps the status and its reason, never the
receiver's answer.

What is sent and how it is signed is the webhook service's business
(qualify.service.integrations.webhooks); this module only makes the request.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from qualify import __version__

ERROR_TEXT = 300  # characters of a failure kept in `last_error`
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Allowed:
    """The internal hosts and networks webhooks may reach all the same (QUALIFY_WEBHOOK_ALLOW)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Allowed:
        """From a comma-separated list of host names, addresses and networks (`10.0.0.0/8`)."""
        hosts, networks = set(), []
        for item in (part.strip().lower() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item)
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IPAddress | None = None) -> bool:
        if host.lower().strip("[]") in self.hosts:
            return True
        return address is not None and any(address in network for network in self.networks)


PUBLIC_ONLY = Allowed()  # no internal receiver allowed: the default


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address where it is one, in any form a resolver takes: `127.0.0.1`, `[::1]`,
    and the old forms `2130706433`, `0x7f000001` or `127.1`; None for a name."""
    bare = host.strip("[]")
    try:
        return _unmapped(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))  # the C library's forms
    except OSError:
        return None


def _unmapped(address: IPAddress) -> IPAddress:
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local (cloud metadata at 169.254.169.254), multicast, unspecified
    or reserved: an address of the network Qualify runs in, not of a receiver on the internet."""
    address = _unmapped(address)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


def internal_host(host: str, allowed: Allowed) -> str | None:
    """Why `host` may not receive webhooks when it can be told from the name alone (an internal
    address written as one, `localhost`), or None. A name is checked when each delivery is sent."""
    name = host.lower().strip("[]").rstrip(".")
    if allowed.permits(name):
        return None
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is this machine"
    address = literal_address(name)
    if address is not None and is_internal(address) and not allowed.permits(name, address):
        return f"{host} is an internal address ({address})"
    return None


class ReceiverRefused(Exception):
    """The receiver's host resolves to an address webhooks may not reach."""


def _checked_address(host: str, port: int, allowed: Allowed) -> IPAddress:
    """The address to send to: every address `host` resolves to must be public or allowed."""
    why = internal_host(host, allowed)
    if why is not None:
        raise ReceiverRefused(why)
    literal = literal_address(host)
    if literal is not None:
        return literal
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ReceiverRefused(f"cannot resolve {host}: {error}") from None
    addresses = [_unmapped(ipaddress.ip_address(info[4][0])) for info in found]
    if not addresses:
        raise ReceiverRefused(f"{host} resolves to no address")
    for address in addresses:
        if is_internal(address) and not allowed.permits(host, address):
            raise ReceiverRefused(f"{host} resolves to an internal address ({address})")
    return addresses[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: delivered or not, the HTTP status if any, and why it failed."""

    delivered: bool
    status: int | None
    error: str | None


def new_client(timeout: float) -> httpx.Client:
    """The HTTP client deliveries go out with: no redirects followed, `timeout` on every phase."""
    return httpx.Client(
        timeout=timeout, follow_redirects=False, headers={"User-Agent": f"Qualify-Webhooks/{__version__}"}
    )


def post(
    client: httpx.Client, url: str, body: bytes, headers: Mapping[str, str], allowed: Allowed = PUBLIC_ONLY
) -> Outcome:
    """POST `body` to the checked address of `url`'s host (module doc); any 2xx is delivered,
    anything else (3xx included) a failure with its status and reason (not the answer's body)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = _checked_address(host, port, allowed)
    except ReceiverRefused as error:
        return Outcome(False, None, f"refused: {error}"[:ERROR_TEXT])
    shown = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, ""))
    sent = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with client.stream("POST", pinned, content=body, headers=sent, extensions=extensions) as response:
            if 200 <= response.status_code < 300:
                return Outcome(True, response.status_code, None)
            return Outcome(False, response.status_code, f"HTTP {response.status_code} {response.reason_phrase}")
    except httpx.TimeoutException as error:
        return Outcome(False, None, f"timeout ({type(error).__name__})")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
        return Outcome(False, None, f"{type(error).__name__}: {error}"[:ERROR_TEXT])
