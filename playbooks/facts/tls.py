"""Facts the TLS terminator needs: the address it binds to when ``model_bind_address`` is unset.

The terminator never listens on 0.0.0.0 by default. Without an explicit ``model_bind_address`` it
binds to the source address of the host's IPv4 default route (``ip -4 route get``: a routing
table lookup, no packet leaves the host), which on an AWS model host is the primary private
address the internal load balancer targets. Multi-homed bare-metal hosts should set
``model_bind_address`` to their model-tier address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyinfra.api import FactBase

# Any unicast address works: the kernel only looks up the route, it sends nothing.
ROUTE_PROBE = "192.0.2.1"  # TEST-NET-1 (RFC 5737)


def parse_route_source(lines: Iterable[str]) -> str | None:
    """The ``src`` address of ``ip -4 -o route get`` output, or None when there is no route."""
    for line in lines:
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word == "src":
                candidate = words[i + 1]
                try:
                    return str(ipaddress.IPv4Address(candidate))
                except ValueError:
                    return None
    return None


class DefaultRouteSource(FactBase[str | None]):
    """The IPv4 source address the host uses for its default route (None: no default route)."""

    def requires_command(self) -> str:
        return "ip"

    def command(self) -> str:
        return f"ip -4 -o route get {ROUTE_PROBE} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return parse_route_source(output)
