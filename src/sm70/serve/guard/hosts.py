"""Which `Host` headers the server answers: a guard against DNS rebinding.

A web page on `rebind.attacker.example` can point its own name at 127.0.0.1 and then talk to a
loopback server from the victim's browser; the only trace is the `Host` header, which still says
`rebind.attacker.example`. So a request is answered only when it names this server: the bound
address, a loopback name, the machine's own names when bound to every interface, or a name the
operator lists in `allowed_hosts` (the name a reverse proxy forwards, say). An IP literal of the
bound address family is safe to accept on a wildcard bind: rebinding needs a name the attacker
controls, never a bare address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def split_host(header: str) -> str:
    """`[::1]:8000` -> `::1`, `Example.org.:80` -> `example.org`; the name without the port."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


@dataclass(frozen=True)
class HostPolicy:
    bound: str
    names: frozenset[str]

    @classmethod
    def for_bind(cls, bound: str, allowed: list[str] | tuple[str, ...] = ()) -> "HostPolicy":
        names = {split_host(n) for n in allowed} | LOOPBACK_NAMES
        ip = _ip(bound)
        if ip is not None and ip.is_unspecified:
            # bound to every interface: the machine's own names are how the LAN reaches it
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        elif ip is None:
            names.add(split_host(bound))
        return cls(bound, frozenset(names))

    def allows(self, header: str | None) -> bool:
        if not header:
            return False   # HTTP/1.1 requires Host; a client that leaves it out is not a browser we serve
        host = split_host(header)
        if host in self.names:
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if ip.is_loopback:
            return True
        bound = _ip(self.bound)
        if bound is None:
            return False
        return ip == bound or (bound.is_unspecified and ip.version == bound.version)
