"""The tier firewall: a chain of security groups, and optionally an AWS Network Firewall on egress.

Security groups (one per tier, plus one for the VPC interface endpoints) carry no inline rules;
every rule is its own ``aws.vpc.SecurityGroupIngressRule`` / ``SecurityGroupEgressRule``, and a
rule between two tiers names the other tier's group (``referenced_security_group_id``), never a
CIDR::

    client CIDRs --443 (+80 redirect)--> lb --app_port--> app --443--> models_lb --model_port--> model
                                                          app --data ports--> data
                                          app, model --443--> endpoints (VPC interface endpoints)
                                          app --443--> 0.0.0.0/0 (through NAT, or the Network Firewall)
                                          model --443--> the S3 gateway endpoint's prefix list

- ``lb`` admits 443 from each client CIDR, and 80 (the HTTP->HTTPS redirect listener) from the
  same CIDRs except a world-open one: port 80 is never opened to every address. Its only
  egress is the app port to the app group.
- ``app`` admits the app port from the lb group (plus config's ``extra_ingress`` for tier app);
  it may reach 443 on the models_lb group (the model tier's internal load balancer), 443 on the
  endpoints group, the data ports on the data group, and 443 anywhere for its own outbound
  calls. That last rule is the only world-wide egress: the app subnets have no internet route
  but through the NAT gateways, and with ``network_firewall`` on, the Network's routes send it
  through the firewall's domain allow-list first (see components/network.py).
- ``models_lb`` (the internal load balancer in front of the GPU hosts) admits 443 from the app
  group only, and may reach only the model port on the model group (requests, health checks).
- ``model`` admits the model port from the models_lb group only: the app tier reaches the hosts
  through the internal load balancer, nothing else reaches them. Its egress is 443 to the
  endpoints group and to the S3 gateway endpoint's prefix list, nothing else: no internet.
- ``data`` admits the data ports from the app group only; ``endpoints`` admits 443 from the app
  and model groups only. Neither has egress rules.

DNS (the Route 53 Resolver at the VPC base + 2) and the instance metadata and time services
(169.254.169.254/.123) are not filtered by security groups, so no rule is needed for them.

No rule anywhere opens 22 (SSH) or 3389 (RDP): hosts are reached through SSM Session Manager.
Before any resource is created the component checks its whole rule set against these
invariants (:func:`check_rules`) and raises ``ValueError`` on a violation, so they hold for
programmatic use as well as for a validated stack config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, Literal

import pulumi
import pulumi_aws as aws

from components.base import Component
from llmkit.catalog import load_catalog
from llmkit.config import DATA_PORTS, DEFAULT_APP_PORT, LOG_RETENTION_DAYS

if TYPE_CHECKING:
    from llmkit.config import StackConfig

GROUPS = ("lb", "app", "models_lb", "model", "data", "endpoints")
HTTPS, HTTP = 443, 80
NEVER_OPEN = {22: "SSH", 3389: "RDP"}
DOMAIN_TARGET_TYPES = ("TLS_SNI", "HTTP_HOST")
LOG_TYPES = ("ALERT", "FLOW")

Direction = Literal["ingress", "egress"]

# Which group a rule may name as its peer, per (direction, group): the chain of tiers.
ALLOWED_PEERS: dict[tuple[Direction, str], frozenset[str]] = {
    ("ingress", "lb"): frozenset(),
    ("ingress", "app"): frozenset({"lb"}),
    ("ingress", "models_lb"): frozenset({"app"}),
    ("ingress", "model"): frozenset({"models_lb"}),
    ("ingress", "data"): frozenset({"app"}),
    ("ingress", "endpoints"): frozenset({"app", "model"}),
    ("egress", "lb"): frozenset({"app"}),
    ("egress", "app"): frozenset({"models_lb", "endpoints", "data"}),
    ("egress", "models_lb"): frozenset({"model"}),
    ("egress", "model"): frozenset({"endpoints"}),
    ("egress", "data"): frozenset(),
    ("egress", "endpoints"): frozenset(),
}
CIDR_INGRESS_GROUPS = frozenset({"lb", "app"})  # only the front tiers admit addresses
CIDR_EGRESS_PORTS = {"app": frozenset({HTTPS})}  # the app's own outbound HTTPS, nothing else
PREFIX_LIST_EGRESS_GROUPS = frozenset({"model"})  # the S3 gateway endpoint

_ROLES = {
    "lb": "load balancer: client HTTPS in, the app tier out",
    "app": "app tier (gateway): from the load balancer only",
    "models_lb": "model tier load balancer: HTTPS from the app tier only, to the model port",
    "model": "model tier (GPU hosts): from the model load balancer only, no internet",
    "data": "data tier: from the app tier only",
    "endpoints": "VPC interface endpoints: HTTPS from the app and model tiers only",
}


@dataclass(frozen=True)
class IngressRule:
    """An extra TCP ingress rule from CIDRs into a front tier (config's ``firewall.extra_ingress``)."""

    tier: str
    port: int
    cidrs: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Rule:
    """One planned security group rule; exactly one of peer_group, cidr and prefix_list is set."""

    group: str
    direction: Direction
    from_port: int
    to_port: int
    description: str
    peer_group: str | None = None
    cidr: str | None = None
    prefix_list: bool = False
    protocol: str = "tcp"

    @property
    def peer(self) -> str:
        if self.peer_group is not None:
            return self.peer_group
        if self.cidr is not None:
            return self.cidr.replace("/", "_").replace(":", "_")
        return "s3"

    @property
    def role(self) -> str:
        """The resource name's role part, e.g. ``model-in-11434-app``."""
        ports = str(self.from_port) if self.from_port == self.to_port else f"{self.from_port}-{self.to_port}"
        return f"{self.group}-{'in' if self.direction == 'ingress' else 'out'}-{ports}-{self.peer}"

    @property
    def world(self) -> bool:
        return self.cidr is not None and ip_network(self.cidr, strict=False).prefixlen == 0


@dataclass
class FirewallArgs:
    """What the Firewall needs. ``from_config`` builds it from a validated stack config."""

    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    client_cidrs: list[str]
    public: bool
    model_port: int
    app_port: int = DEFAULT_APP_PORT
    data_ports: list[int] = field(default_factory=lambda: list(DATA_PORTS))
    extra_ingress: list[IngressRule] = field(default_factory=list)
    http_redirect: bool = True
    # The S3 gateway endpoint's prefix list (its ``prefix_list_id`` output); None: no S3 path.
    s3_prefix_list_id: pulumi.Input[str] | None = None
    # The Network Firewall (egress domain allow-list); the rest is used only when it is on.
    network_firewall: bool = False
    egress_allowed_domains: list[str] = field(default_factory=list)
    firewall_subnet_ids: Sequence[pulumi.Input[str]] = ()
    log_kms_key_arn: pulumi.Input[str] | None = None
    log_retention_days: int = LOG_RETENTION_DAYS[0]
    delete_protection: bool = True

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        vpc_id: pulumi.Input[str],
        *,
        firewall_subnet_ids: Sequence[pulumi.Input[str]] = (),
        s3_prefix_list_id: pulumi.Input[str] | None = None,
        log_kms_key_arn: pulumi.Input[str] | None = None,
    ) -> FirewallArgs:
        fw = cfg.firewall
        return cls(
            vpc_id=vpc_id,
            vpc_cidr=str(cfg.network.vpc_cidr),
            client_cidrs=[str(c) for c in cfg.endpoint.allowed_client_cidrs],
            public=cfg.endpoint.public,
            model_port=load_catalog().runtime(cfg.runtime).port,
            app_port=fw.app_port,
            extra_ingress=[
                IngressRule(r.tier, r.port, tuple(str(c) for c in r.cidrs), r.description)
                for r in fw.extra_ingress
            ],
            s3_prefix_list_id=s3_prefix_list_id,
            network_firewall=fw.network_firewall,
            egress_allowed_domains=list(fw.egress_allowed_domains),
            firewall_subnet_ids=firewall_subnet_ids,
            log_kms_key_arn=log_kms_key_arn,
            log_retention_days=cfg.logging.retention_days,
            delete_protection=cfg.endpoint.deletion_protection,
        )


# --- the rule set, as plain data -------------------------------------------------------------


def plan_rules(args: FirewallArgs) -> list[Rule]:
    """Every rule the component creates, in creation order, duplicates removed."""
    rules: list[Rule] = []
    for cidr in args.client_cidrs:
        rules.append(Rule("lb", "ingress", HTTPS, HTTPS, f"HTTPS from client network {cidr}", cidr=cidr))
        if args.http_redirect and ip_network(cidr, strict=False).prefixlen != 0:
            rules.append(
                Rule(
                    "lb",
                    "ingress",
                    HTTP,
                    HTTP,
                    f"HTTP to HTTPS redirect for client network {cidr}",
                    cidr=cidr,
                )
            )
    app, model = args.app_port, args.model_port
    rules += [
        Rule("lb", "egress", app, app, "to the app tier", peer_group="app"),
        Rule("app", "ingress", app, app, "from the load balancer", peer_group="lb"),
        Rule("app", "egress", HTTPS, HTTPS, "to the model load balancer", peer_group="models_lb"),
        Rule("models_lb", "ingress", HTTPS, HTTPS, "from the app tier", peer_group="app"),
        Rule("models_lb", "egress", model, model, "to the model hosts", peer_group="model"),
        Rule("app", "egress", HTTPS, HTTPS, "to the VPC interface endpoints", peer_group="endpoints"),
        Rule(
            "app",
            "egress",
            HTTPS,
            HTTPS,
            "outbound HTTPS through NAT or the Network Firewall",
            cidr="0.0.0.0/0",
        ),
    ]
    for port in args.data_ports:
        rules += [
            Rule("app", "egress", port, port, "to the data tier", peer_group="data"),
            Rule("data", "ingress", port, port, "from the app tier", peer_group="app"),
        ]
    rules += [
        Rule("model", "ingress", model, model, "from the model load balancer", peer_group="models_lb"),
        Rule("model", "egress", HTTPS, HTTPS, "to the VPC interface endpoints", peer_group="endpoints"),
        Rule("endpoints", "ingress", HTTPS, HTTPS, "from the app tier", peer_group="app"),
        Rule("endpoints", "ingress", HTTPS, HTTPS, "from the model tier", peer_group="model"),
    ]
    if args.s3_prefix_list_id is not None:
        rules.append(
            Rule("model", "egress", HTTPS, HTTPS, "to S3 through the gateway endpoint", prefix_list=True)
        )
    for extra in args.extra_ingress:
        rules += [
            Rule(extra.tier, "ingress", extra.port, extra.port, extra.description, cidr=cidr)
            for cidr in extra.cidrs
        ]
    unique: dict[str, Rule] = {}
    for rule in rules:
        unique.setdefault(rule.role, rule)
    return list(unique.values())


def rule_problems(rules: Sequence[Rule], public: bool) -> list[str]:
    """Every way the rules break the firewall's invariants (empty: they hold)."""
    problems = []
    for rule in rules:
        at = f"rule {rule.role}"
        if rule.group not in GROUPS:
            problems.append(f"{at}: unknown group {rule.group!r} (one of: {', '.join(GROUPS)})")
            continue
        if rule.protocol != "tcp":
            problems.append(f"{at}: protocol {rule.protocol!r}; only tcp rules are created")
        if not 1 <= rule.from_port <= rule.to_port <= 65535:
            problems.append(f"{at}: port range {rule.from_port}..{rule.to_port} is not within 1..65535")
        problems += [
            f"{at}: opens port {port} ({name}); SSH/RDP is never opened: use SSM Session Manager"
            for port, name in NEVER_OPEN.items()
            if rule.from_port <= port <= rule.to_port
        ]
        if sum((rule.peer_group is not None, rule.cidr is not None, rule.prefix_list)) != 1:
            problems.append(f"{at}: give exactly one of a peer group, a CIDR and the prefix list")
            continue
        allowed = ALLOWED_PEERS[(rule.direction, rule.group)]
        if rule.peer_group is not None and rule.peer_group not in allowed:
            what = f"only {', '.join(sorted(allowed))}" if allowed else "no group"
            problems.append(f"{at}: the {rule.group} group may name {what} as {rule.direction} peer")
        if rule.prefix_list and (rule.direction == "ingress" or rule.group not in PREFIX_LIST_EGRESS_GROUPS):
            problems.append(f"{at}: only the model group's egress may use the S3 prefix list")
        if rule.cidr is not None:
            try:
                ip_network(rule.cidr)
            except ValueError as exc:
                problems.append(f"{at}: not a CIDR ({exc})")
                continue
            if rule.direction == "ingress" and rule.group not in CIDR_INGRESS_GROUPS:
                problems.append(
                    f"{at}: the {rule.group} group admits only the tiers in front of it, never addresses"
                )
            if (
                rule.direction == "ingress"
                and rule.world
                and not (rule.group == "lb" and (rule.from_port, rule.to_port) == (HTTPS, HTTPS) and public)
            ):
                problems.append(
                    f"{at}: {rule.cidr} ingress is allowed only on port 443 of a public load balancer"
                )
            ports = CIDR_EGRESS_PORTS.get(rule.group, frozenset())
            if rule.direction == "egress" and not (
                rule.from_port == rule.to_port and rule.from_port in ports
            ):
                problems.append(f"{at}: the {rule.group} group has no egress to addresses on this port")
    return problems


def check_rules(rules: Sequence[Rule], public: bool) -> None:
    """Raise ``ValueError`` listing every broken invariant."""
    if problems := rule_problems(rules, public):
        raise ValueError("unsafe firewall rules:\n  - " + "\n  - ".join(problems))


def domain_rule_capacity(domains: Sequence[str]) -> int:
    """The domain list's capacity, fixed at creation: twice what it needs, in steps of 100."""
    needed = len(domains) * len(DOMAIN_TARGET_TYPES)
    return max(100, math.ceil(2 * needed / 100) * 100)


def _endpoints_by_az(statuses: Any) -> dict[str, str]:
    """Availability zone -> firewall endpoint id, from the firewall's ``firewall_statuses``."""
    found: dict[str, str] = {}
    for status in statuses or []:
        for sync in status.sync_states or []:
            for attachment in sync.attachments or []:
                if sync.availability_zone and attachment.endpoint_id:
                    found[sync.availability_zone] = attachment.endpoint_id
    return found


# --- the component ---------------------------------------------------------------------------


class Firewall(Component):
    """The tier security groups and their rules; the egress Network Firewall when enabled.

    Attributes: ``groups`` / ``group_ids`` (keys lb, app, model, data, endpoints), ``rules``
    (role -> rule resource), and with ``network_firewall``: ``rule_group``, ``policy``,
    ``network_firewall``, ``log_groups`` (ALERT, FLOW), ``logging`` and
    ``firewall_endpoint_ids`` (availability zone -> endpoint id; ``{}`` when disabled).
    """

    TYPE = "llmkit:aws:Firewall"

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        planned = plan_rules(args)
        check_rules(planned, args.public)
        if args.network_firewall:
            if not args.egress_allowed_domains:
                raise ValueError("network_firewall needs at least one egress_allowed_domains entry")
            if not args.firewall_subnet_ids:
                raise ValueError(
                    "network_firewall needs firewall_subnet_ids (one per AZ) for the firewall endpoints"
                )
        super().__init__(name, opts)

        self.groups: dict[str, aws.ec2.SecurityGroup] = {
            tier: aws.ec2.SecurityGroup(
                self.child_name(tier),
                vpc_id=args.vpc_id,
                description=f"llmkit {_ROLES[tier]}",
                revoke_rules_on_delete=True,  # the groups reference each other
                tags={"Name": self.child_name(tier), "llmkit:tier": tier},
                opts=self.child_opts(),
            )
            for tier in GROUPS
        }
        self.group_ids: dict[str, pulumi.Output[str]] = {tier: sg.id for tier, sg in self.groups.items()}

        self.rules: dict[str, aws.vpc.SecurityGroupIngressRule | aws.vpc.SecurityGroupEgressRule] = {}
        for rule in planned:
            peer: dict[str, Any] = {}
            if rule.peer_group is not None:
                peer["referenced_security_group_id"] = self.group_ids[rule.peer_group]
            elif rule.cidr is not None:
                v6 = ip_network(rule.cidr).version == 6
                peer["cidr_ipv6" if v6 else "cidr_ipv4"] = rule.cidr
            else:
                peer["prefix_list_id"] = args.s3_prefix_list_id
            kind = (
                aws.vpc.SecurityGroupIngressRule
                if rule.direction == "ingress"
                else aws.vpc.SecurityGroupEgressRule
            )
            self.rules[rule.role] = kind(
                self.child_name(rule.role),
                security_group_id=self.group_ids[rule.group],
                ip_protocol=rule.protocol,
                from_port=rule.from_port,
                to_port=rule.to_port,
                description=rule.description,
                tags={"Name": self.child_name(rule.role)},
                opts=self.child_opts(),
                **peer,
            )

        self.rule_group: aws.networkfirewall.RuleGroup | None = None
        self.policy: aws.networkfirewall.FirewallPolicy | None = None
        self.network_firewall: aws.networkfirewall.Firewall | None = None
        self.log_groups: dict[str, aws.cloudwatch.LogGroup] = {}
        self.logging: aws.networkfirewall.LoggingConfiguration | None = None
        self.firewall_endpoint_ids: pulumi.Output[dict[str, str]] = pulumi.Output.from_input({})
        if args.network_firewall:
            self._network_firewall(args)

        self.register_outputs(
            {
                "group_ids": self.group_ids,
                "network_firewall_arn": self.network_firewall.arn if self.network_firewall else None,
                "firewall_endpoint_ids": self.firewall_endpoint_ids,
            }
        )

    def _network_firewall(self, args: FirewallArgs) -> None:
        nfw = aws.networkfirewall
        self.rule_group = nfw.RuleGroup(
            self.child_name("egress-domains"),
            type="STATEFUL",
            capacity=domain_rule_capacity(args.egress_allowed_domains),
            description="llmkit egress allow-list: TLS SNI and HTTP Host of these domains only",
            rule_group=nfw.RuleGroupRuleGroupArgs(
                rule_variables=nfw.RuleGroupRuleGroupRuleVariablesArgs(
                    ip_sets=[
                        nfw.RuleGroupRuleGroupRuleVariablesIpSetArgs(
                            key="HOME_NET",
                            ip_set=nfw.RuleGroupRuleGroupRuleVariablesIpSetIpSetArgs(
                                definitions=[args.vpc_cidr]
                            ),
                        )
                    ]
                ),
                rules_source=nfw.RuleGroupRuleGroupRulesSourceArgs(
                    rules_source_list=nfw.RuleGroupRuleGroupRulesSourceRulesSourceListArgs(
                        generated_rules_type="ALLOWLIST",
                        target_types=list(DOMAIN_TARGET_TYPES),
                        targets=list(args.egress_allowed_domains),
                    )
                ),
                stateful_rule_options=nfw.RuleGroupRuleGroupStatefulRuleOptionsArgs(
                    rule_order="STRICT_ORDER"
                ),
            ),
            opts=self.child_opts(),
        )
        self.policy = nfw.FirewallPolicy(
            self.child_name("egress-policy"),
            description="llmkit egress: every packet to the stateful engine; allow-listed domains only",
            firewall_policy=nfw.FirewallPolicyFirewallPolicyArgs(
                stateless_default_actions=["aws:forward_to_sfe"],
                stateless_fragment_default_actions=["aws:forward_to_sfe"],
                stateful_engine_options=nfw.FirewallPolicyFirewallPolicyStatefulEngineOptionsArgs(
                    rule_order="STRICT_ORDER", stream_exception_policy="DROP"
                ),
                stateful_default_actions=["aws:drop_established", "aws:alert_established"],
                stateful_rule_group_references=[
                    nfw.FirewallPolicyFirewallPolicyStatefulRuleGroupReferenceArgs(
                        resource_arn=self.rule_group.arn, priority=1
                    )
                ],
            ),
            opts=self.child_opts(),
        )
        self.network_firewall = nfw.Firewall(
            self.child_name("egress"),
            vpc_id=args.vpc_id,
            firewall_policy_arn=self.policy.arn,
            subnet_mappings=[nfw.FirewallSubnetMappingArgs(subnet_id=s) for s in args.firewall_subnet_ids],
            delete_protection=args.delete_protection,
            description="llmkit egress firewall: domain allow-list for the app tier's outbound traffic",
            opts=self.child_opts(),
        )
        stack = pulumi.get_stack()
        self.log_groups = {
            log_type: aws.cloudwatch.LogGroup(
                self.child_name(f"egress-{log_type.lower()}-logs"),
                name=f"/llmkit/{stack}/{self.name}/network-firewall/{log_type.lower()}",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.log_kms_key_arn,
                opts=self.child_opts(),
            )
            for log_type in LOG_TYPES
        }
        self.logging = nfw.LoggingConfiguration(
            self.child_name("egress-logging"),
            firewall_arn=self.network_firewall.arn,
            logging_configuration=nfw.LoggingConfigurationLoggingConfigurationArgs(
                log_destination_configs=[
                    nfw.LoggingConfigurationLoggingConfigurationLogDestinationConfigArgs(
                        log_destination={"logGroup": group.name},
                        log_destination_type="CloudWatchLogs",
                        log_type=log_type,
                    )
                    for log_type, group in self.log_groups.items()
                ]
            ),
            opts=self.child_opts(),
        )
        self.firewall_endpoint_ids = self.network_firewall.firewall_statuses.apply(_endpoints_by_az)
