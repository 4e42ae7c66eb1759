"""TLS 1.3 only: the one home of how the kit spells it, for the load balancers (components/),
the policy pack (policies/) and the hosts' nginx and PostgreSQL (playbooks/).

The host bundle ships the ``llmkit`` package and the deploys import this module on the hosts:
it imports nothing and stays Python 3.10-compatible.
"""

from __future__ import annotations

#: The ALB listeners' security policy: TLS 1.3 only, no TLS 1.2 fallback (the FIPS and
#: post-quantum variants are not needed by default).
ALB_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-3-2021-06"
#: AWS's TLS 1.3-only security policies: the default above and its FIPS and hybrid post-quantum
#: (ML-KEM) variants. The ``ELBSecurityPolicy-TLS13-1-2-*`` ones also accept TLS 1.2.
ALB_TLS13_ONLY_POLICIES = (
    ALB_TLS_POLICY,
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-PQ-2025-09",
)
#: The protocol as OpenSSL-based servers name it: nginx's ``ssl_protocols`` and
#: ``proxy_ssl_protocols``, PostgreSQL's ``ssl_min_protocol_version``.
TLS_PROTOCOL = "TLSv1.3"
