"""The app tier's LLM gateway (LiteLLM's proxy) on Kubernetes, with pulumi-kubernetes.

:class:`KubernetesGateway` deploys the gateway that ``llmkit:gateway`` describes into a namespace
the operator provides, between the ingress controller (in front) and the model servers (behind)::

    ingress controller --HTTPS--> Service :4000 --> gateway pods --mTLS--> model server pods
                                                        |--> PostgreSQL :5432 (keys, spend logs)
                                                        '--> kube-dns :53

It creates:

- a **ConfigMap** with LiteLLM's ``config.yaml``, exactly :func:`llmkit.gateway.render_config` of
  :func:`llmkit.gateway.litellm_config` (the same rendering as on ECS and bare metal), with
  ``ssl_verify`` / ``ssl_certificate`` pointing at the mounted backend TLS Secret;
- a **Deployment**: ``replicas``, ``image`` (default: the pinned LiteLLM image), ``cpu`` and
  ``memory_mib`` from ``llmkit:gateway`` (requests equal limits: Guaranteed QoS); non-root UID
  10001, ``runAsNonRoot``, read-only root filesystem (an ``emptyDir`` on ``/tmp``, also ``HOME``),
  no privilege escalation, ALL capabilities dropped, seccomp ``RuntimeDefault``, no service-account
  token; LiteLLM serves HTTPS itself (``--ssl_keyfile_path``/``--ssl_certfile_path``) from the
  serving-certificate Secret, so the hop from the ingress controller is encrypted too; liveness on
  ``/health/liveliness``, readiness (and a startup probe, for the database migrations LiteLLM runs
  at start) on ``/health/readiness``; ``LITELLM_MASTER_KEY``, ``LITELLM_SALT_KEY`` and
  ``DATABASE_URL`` from Secrets by ``secretKeyRef`` (this component only ever sees the Secrets'
  names); pods spread over nodes (hard) and zones (soft); a config checksum on the pod template
  rolls the pods when the config changes;
- a **PodDisruptionBudget** (at most one gateway pod evicted at a time);
- a **Service** (ClusterIP) on the gateway port (4000, from ``llmkit/data/gateway.yaml``);
- **NetworkPolicies**: a default-deny of ingress and egress for the gateway pods (or, with
  ``deny_whole_namespace``, for every pod of a namespace that holds only the gateway), then
  ingress only from the ingress controller's pods on the gateway port, egress only to the model
  server pods on their port, to the database on 5432 (CIDRs or pods) and to kube-dns on 53.

What the operator provides (none of it passes through Pulumi): the namespace; a Secret with the
keys ``LITELLM_MASTER_KEY`` and ``LITELLM_SALT_KEY``; the Secret named by
``llmkit:gateway.database.external_url_secret`` with the key ``DATABASE_URL``; a
``kubernetes.io/tls`` Secret with the gateway's serving certificate (``tls.crt``/``tls.key``, valid
for the Service's DNS name); a Secret with the CA that signed the model servers' certificates
(``ca.crt``) and the gateway's client certificate and key in one PEM file (``client.pem``).
See docs/kubernetes.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.base import Component
from llmkit.catalog import load_catalog
from llmkit.config import Gateway
from llmkit.errors import ConfigError
from llmkit.gateway import (
    DATABASE_URL_ENV,
    MASTER_KEY_ENV,
    SALT_KEY_ENV,
    Backend,
    litellm_config,
    litellm_release,
    render_config,
)

# The label every namespace carries with its own name (Kubernetes >= 1.22).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
EXTERNAL_URL_SECRET_KEY = "llmkit:gateway.database.external_url_secret"

# Inside the pod.
UID = 10001
CONFIG_DIR = "/etc/litellm/config"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
SERVING_TLS_DIR = "/etc/litellm/tls/serving"
BACKEND_TLS_DIR = "/etc/litellm/tls/backend"
# The keys the operator's Secrets hold (a kubernetes.io/tls Secret for the serving certificate).
SERVING_CERT_KEY = "tls.crt"
SERVING_KEY_KEY = "tls.key"
BACKEND_CA_KEY = "ca.crt"
BACKEND_CLIENT_KEY = "client.pem"  # certificate and key in one PEM file, as LiteLLM wants it
CA_FILE = f"{BACKEND_TLS_DIR}/{BACKEND_CA_KEY}"
CLIENT_CERTIFICATE_FILE = f"{BACKEND_TLS_DIR}/{BACKEND_CLIENT_KEY}"
TMP_DIR = "/tmp"  # LiteLLM's caches (tiktoken, prisma) and HOME; the only writable path
TMP_SIZE_LIMIT = "512Mi"
LIVENESS_PATH = "/health/liveliness"
READINESS_PATH = "/health/readiness"
PORT_NAME = "https"
DATABASE_PORT = 5432
DNS_PORT = 53
CONFIG_CHECKSUM_ANNOTATION = "llmkit.io/config-sha256"
READ_ONLY_MODE = 0o440  # files of the mounted ConfigMap and Secrets: owner and fsGroup may read

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class PodPeer:
    """Pods a NetworkPolicy admits: those labelled ``pod_labels`` in the namespaces labelled
    ``namespace_labels`` (``None``: the gateway's own namespace)."""

    pod_labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] | None = None

    @classmethod
    def in_namespace(cls, namespace: str, pod_labels: Mapping[str, str]) -> PodPeer:
        """The pods labelled ``pod_labels`` in the namespace named ``namespace``."""
        return cls(dict(pod_labels), {NAMESPACE_NAME_LABEL: namespace})

    def peer(self) -> k8s.networking.v1.NetworkPolicyPeerArgs:
        return k8s.networking.v1.NetworkPolicyPeerArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self.pod_labels)),
            namespace_selector=(
                k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self.namespace_labels))
                if self.namespace_labels is not None
                else None
            ),
        )


#: kube-dns / CoreDNS as kubeadm, EKS, GKE and AKS label it.
KUBE_DNS = PodPeer.in_namespace("kube-system", {"k8s-app": "kube-dns"})


def _problem(key: str, value: Any, accepted: str, message: str) -> ConfigError:
    return ConfigError(key=f"KubernetesGatewayArgs.{key}", value=value, accepted=accepted, message=message)


@dataclass
class KubernetesGatewayArgs:
    """What :class:`KubernetesGateway` needs; :meth:`from_config` takes the ``llmkit:gateway`` section.

    ``backends`` maps a model name (``deepseek-r1:32b``) to the places that serve it, usually
    in-cluster Services (``https://ollama-r1-32b.llmkit-model.svc:11434``); every URL must be
    ``https://``: the gateway talks mutual TLS to the model servers. ``model_port`` is the model
    server pods' port (what the NetworkPolicy opens; default: the runtime's port from the catalog).
    """

    gateway: Gateway
    namespace: str
    backends: Mapping[str, Sequence[Backend]]
    # The ingress controller's pods: the only clients of the gateway.
    ingress_controller: PodPeer
    # The model server pods: the only backends the gateway may reach.
    model_servers: PodPeer
    # Secret names, never values.
    keys_secret: str  # keys LITELLM_MASTER_KEY and LITELLM_SALT_KEY
    serving_tls_secret: str  # kubernetes.io/tls: tls.crt, tls.key (the gateway's HTTPS certificate)
    backend_tls_secret: str  # ca.crt (the model servers' CA), client.pem (client certificate + key)
    runtime: str = "ollama"
    model_port: int | None = None
    # Where PostgreSQL is: IPv4/IPv6 CIDRs (a managed database) and/or pods (an in-cluster one).
    database_cidrs: Sequence[str] = ()
    database_pods: PodPeer | None = None
    database_port: int = DATABASE_PORT
    dns: PodPeer = KUBE_DNS
    # True when the namespace holds only the gateway: the default-deny then selects every pod in it
    # (the form the policy pack's default-deny rule recognizes).
    deny_whole_namespace: bool = False
    provider: k8s.Provider | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.gateway.database.external_url_secret:
            raise ConfigError(
                key=EXTERNAL_URL_SECRET_KEY,
                value=self.gateway.database.external_url_secret,
                accepted="the name of a Secret in the gateway's namespace whose DATABASE_URL key points "
                "at the database",
                message="required on Kubernetes (the gateway keeps keys and spend logs in PostgreSQL)",
            )
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise _problem(
                "namespace", self.namespace, "a DNS label (lowercase, at most 63)", "not a namespace"
            )
        for key in ("keys_secret", "serving_tls_secret", "backend_tls_secret"):
            value = getattr(self, key)
            if not _DNS_SUBDOMAIN.fullmatch(value):
                raise _problem(key, value, "a Secret name (a lowercase DNS subdomain)", "not a Secret name")
        secret = self.gateway.database.external_url_secret
        if not _DNS_SUBDOMAIN.fullmatch(secret):
            raise ConfigError(
                key=EXTERNAL_URL_SECRET_KEY,
                value=secret,
                accepted="a Secret name (a lowercase DNS subdomain)",
                message="not a Secret name",
            )
        for model, served_by in self.backends.items():
            for backend in served_by:
                if not backend.api_base.startswith("https://"):
                    raise _problem(
                        f"backends[{model!r}]",
                        backend.api_base,
                        "an https:// URL (the gateway reaches model servers over mutual TLS)",
                        "not an HTTPS backend",
                    )
        for key in ("ingress_controller", "model_servers"):
            peer: PodPeer = getattr(self, key)
            if not peer.pod_labels:
                raise _problem(
                    f"{key}.pod_labels",
                    dict(peer.pod_labels),
                    "at least one label of those pods",
                    "an empty selector would admit every pod",
                )
        if not self.database_cidrs and self.database_pods is None:
            raise _problem(
                "database_cidrs",
                list(self.database_cidrs),
                "the database's CIDRs, or database_pods",
                "the gateway needs a route to its database",
            )
        for cidr in self.database_cidrs:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise _problem(
                    "database_cidrs", cidr, "a CIDR such as 10.40.200.0/24", "not a CIDR"
                ) from None
            if network.prefixlen == 0:
                raise _problem(
                    "database_cidrs", cidr, "the database's own CIDRs", "opens egress to everywhere"
                )
        if self.database_pods is not None and not self.database_pods.pod_labels:
            raise _problem(
                "database_pods.pod_labels",
                {},
                "the database pods' labels",
                "an empty selector admits every pod",
            )
        if self.model_port is not None and not 1 <= self.model_port <= 65535:
            raise _problem("model_port", self.model_port, "a port 1..65535", "not a port")

    @classmethod
    def from_config(cls, gateway: Gateway, **values: Any) -> KubernetesGatewayArgs:
        """Args from the ``llmkit:gateway`` section plus the Kubernetes-side ``values``."""
        return cls(gateway=gateway, **values)

    @property
    def image(self) -> str:
        return self.gateway.image or litellm_release().image

    @property
    def port(self) -> int:
        return litellm_release().port

    @property
    def backend_port(self) -> int:
        if self.model_port is not None:
            return self.model_port
        runtime = load_catalog().runtimes.get(self.runtime)
        if runtime is None:
            raise ConfigError(
                key="llmkit:runtime",
                value=self.runtime,
                accepted=", ".join(load_catalog().runtimes),
                message="unknown runtime",
            )
        return runtime.port

    def config_text(self) -> str:
        """LiteLLM's config.yaml, as llmkit.gateway renders it for every platform."""
        config = litellm_config(
            self.gateway,
            self.backends,
            runtime=self.runtime,
            ca_file=CA_FILE,
            client_certificate=CLIENT_CERTIFICATE_FILE,
        )
        return render_config(config)


def cpu_quantity(units: int) -> str:
    """ECS CPU units (1024 = one vCPU) as a Kubernetes quantity: 1024 -> ``1000m``."""
    return f"{units * 1000 // 1024}m"


def memory_quantity(mib: int) -> str:
    return f"{mib}Mi"


class KubernetesGateway(Component):
    """LiteLLM's proxy as a hardened Deployment behind a ClusterIP Service, fenced by NetworkPolicies."""

    TYPE = "llmkit:k8s:Gateway"

    def __init__(
        self, name: str, args: KubernetesGatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        config_text = args.config_text()  # a bad alias/backend fails before anything is registered
        super().__init__(name, opts)
        self.args = args
        self.selector: dict[str, str] = {
            "app.kubernetes.io/name": "litellm",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "gateway",
        }
        self.labels: dict[str, str] = {**args.labels, **self.selector, "app.kubernetes.io/part-of": "llmkit"}
        if args.gateway.image is None:  # the version of an image given in config is not known here
            self.labels["app.kubernetes.io/version"] = litellm_release().version
        self.config_map = k8s.core.v1.ConfigMap(
            self.child_name("config"),
            metadata=self._metadata("config"),
            data={CONFIG_FILE: config_text},
            opts=self._opts(),
        )
        # The pods start fenced: the NetworkPolicies exist before the Deployment does.
        self.network_policies = self._network_policies(args)
        self.deployment = k8s.apps.v1.Deployment(
            self.child_name("deployment"),
            metadata=self._metadata(),
            spec=self._deployment_spec(args, config_text),
            opts=self._opts(depends_on=[self.config_map, *self.network_policies.values()]),
        )
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            self.child_name("pdb"),
            metadata=self._metadata("pdb"),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=self._selector(),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=self._opts(),
        )
        self.service = k8s.core.v1.Service(
            self.child_name("service"),
            metadata=self._metadata(),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=dict(self.selector),
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name=PORT_NAME,
                        port=args.port,
                        target_port=PORT_NAME,
                        protocol="TCP",
                        app_protocol="https",
                    )
                ],
            ),
            opts=self._opts(),
        )
        self.service_name = name
        self.url = f"https://{name}.{args.namespace}.svc:{args.port}"
        self.register_outputs({"service_name": self.service_name, "url": self.url})

    # --- helpers ---------------------------------------------------------------------------------

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        if self.args.provider is not None:
            kwargs.setdefault("provider", self.args.provider)
        return self.child_opts(**kwargs)

    def _metadata(self, role: str | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=self.child_name(role) if role else self.name,
            namespace=self.args.namespace,
            labels=dict(self.labels),
        )

    def _selector(self) -> k8s.meta.v1.LabelSelectorArgs:
        return k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self.selector))

    # --- the deployment --------------------------------------------------------------------------

    def _deployment_spec(
        self, args: KubernetesGatewayArgs, config_text: str
    ) -> k8s.apps.v1.DeploymentSpecArgs:
        gw = args.gateway
        checksum = hashlib.sha256(config_text.encode()).hexdigest()
        return k8s.apps.v1.DeploymentSpecArgs(
            replicas=gw.replicas,
            revision_history_limit=5,
            selector=self._selector(),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=dict(self.labels),
                    annotations={CONFIG_CHECKSUM_ANNOTATION: checksum},
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    automount_service_account_token=False,
                    enable_service_links=False,
                    # In-flight completions (up to the request timeout) may finish on a rollout.
                    termination_grace_period_seconds=gw.request_timeout_seconds,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True,
                        run_as_user=UID,
                        run_as_group=UID,
                        fs_group=UID,
                        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                    ),
                    topology_spread_constraints=[
                        k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1,
                            topology_key="kubernetes.io/hostname",
                            when_unsatisfiable="DoNotSchedule",
                            node_taints_policy="Honor",
                            label_selector=self._selector(),
                        ),
                        k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1,
                            topology_key="topology.kubernetes.io/zone",
                            when_unsatisfiable="ScheduleAnyway",
                            label_selector=self._selector(),
                        ),
                    ],
                    containers=[self._container(args)],
                    volumes=self._volumes(args),
                ),
            ),
        )

    def _container(self, args: KubernetesGatewayArgs) -> k8s.core.v1.ContainerArgs:
        gw = args.gateway
        quantities = {"cpu": cpu_quantity(gw.cpu), "memory": memory_quantity(gw.memory_mib)}
        return k8s.core.v1.ContainerArgs(
            name="litellm",
            image=args.image,
            image_pull_policy="IfNotPresent",
            # The image's entrypoint runs `litellm "$@"`.
            args=[
                "--config",
                CONFIG_PATH,
                "--port",
                str(args.port),
                "--ssl_keyfile_path",
                f"{SERVING_TLS_DIR}/{SERVING_KEY_KEY}",
                "--ssl_certfile_path",
                f"{SERVING_TLS_DIR}/{SERVING_CERT_KEY}",
            ],
            ports=[k8s.core.v1.ContainerPortArgs(name=PORT_NAME, container_port=args.port, protocol="TCP")],
            env=[
                _secret_env(MASTER_KEY_ENV, args.keys_secret, MASTER_KEY_ENV),
                _secret_env(SALT_KEY_ENV, args.keys_secret, SALT_KEY_ENV),
                _secret_env(DATABASE_URL_ENV, str(gw.database.external_url_secret), DATABASE_URL_ENV),
                k8s.core.v1.EnvVarArgs(name="HOME", value=TMP_DIR),
            ],
            resources=k8s.core.v1.ResourceRequirementsArgs(requests=quantities, limits=dict(quantities)),
            security_context=k8s.core.v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                privileged=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                run_as_user=UID,
                run_as_group=UID,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            # LiteLLM applies its database migrations at start: give it up to 5 minutes.
            startup_probe=_probe(READINESS_PATH, period=10, timeout=5, failures=30),
            liveness_probe=_probe(LIVENESS_PATH, period=15, timeout=5, failures=4),
            readiness_probe=_probe(READINESS_PATH, period=10, timeout=5, failures=3),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name="config", mount_path=CONFIG_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="serving-tls", mount_path=SERVING_TLS_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="backend-tls", mount_path=BACKEND_TLS_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path=TMP_DIR),
            ],
        )

    def _volumes(self, args: KubernetesGatewayArgs) -> list[k8s.core.v1.VolumeArgs]:
        def items(*keys: str) -> list[k8s.core.v1.KeyToPathArgs]:
            return [k8s.core.v1.KeyToPathArgs(key=k, path=k) for k in keys]

        return [
            k8s.core.v1.VolumeArgs(
                name="config",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                    name=self.child_name("config"), items=items(CONFIG_FILE), default_mode=READ_ONLY_MODE
                ),
            ),
            k8s.core.v1.VolumeArgs(
                name="serving-tls",
                secret=k8s.core.v1.SecretVolumeSourceArgs(
                    secret_name=args.serving_tls_secret,
                    items=items(SERVING_CERT_KEY, SERVING_KEY_KEY),
                    default_mode=READ_ONLY_MODE,
                ),
            ),
            k8s.core.v1.VolumeArgs(
                name="backend-tls",
                secret=k8s.core.v1.SecretVolumeSourceArgs(
                    secret_name=args.backend_tls_secret,
                    items=items(BACKEND_CA_KEY, BACKEND_CLIENT_KEY),
                    default_mode=READ_ONLY_MODE,
                ),
            ),
            k8s.core.v1.VolumeArgs(
                name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=TMP_SIZE_LIMIT)
            ),
        ]

    # --- the network policies --------------------------------------------------------------------

    def _policy(
        self,
        role: str,
        *,
        pod_selector: k8s.meta.v1.LabelSelectorArgs,
        types: list[str],
        ingress: list[k8s.networking.v1.NetworkPolicyIngressRuleArgs] | None = None,
        egress: list[k8s.networking.v1.NetworkPolicyEgressRuleArgs] | None = None,
    ) -> k8s.networking.v1.NetworkPolicy:
        return k8s.networking.v1.NetworkPolicy(
            self.child_name(role),
            metadata=self._metadata(role),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=pod_selector, policy_types=types, ingress=ingress, egress=egress
            ),
            opts=self._opts(),
        )

    def _network_policies(self, args: KubernetesGatewayArgs) -> dict[str, k8s.networking.v1.NetworkPolicy]:
        gateway_pods = self._selector()
        tcp = k8s.networking.v1.NetworkPolicyPortArgs
        database_peers = [
            k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr))
            for cidr in args.database_cidrs
        ]
        if args.database_pods is not None:
            database_peers.append(args.database_pods.peer())
        return {
            "deny-all": self._policy(
                "deny-all",
                pod_selector=k8s.meta.v1.LabelSelectorArgs() if args.deny_whole_namespace else gateway_pods,
                types=["Ingress", "Egress"],
            ),
            "from-ingress": self._policy(
                "from-ingress",
                pod_selector=gateway_pods,
                types=["Ingress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[args.ingress_controller.peer()],
                        ports=[tcp(port=args.port, protocol="TCP")],
                    )
                ],
            ),
            "to-models": self._policy(
                "to-models",
                pod_selector=gateway_pods,
                types=["Egress"],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[args.model_servers.peer()], ports=[tcp(port=args.backend_port, protocol="TCP")]
                    )
                ],
            ),
            "to-database": self._policy(
                "to-database",
                pod_selector=gateway_pods,
                types=["Egress"],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=database_peers, ports=[tcp(port=args.database_port, protocol="TCP")]
                    )
                ],
            ),
            "to-dns": self._policy(
                "to-dns",
                pod_selector=gateway_pods,
                types=["Egress"],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[args.dns.peer()],
                        ports=[tcp(port=DNS_PORT, protocol="UDP"), tcp(port=DNS_PORT, protocol="TCP")],
                    )
                ],
            ),
        }


def _secret_env(name: str, secret: str, key: str) -> k8s.core.v1.EnvVarArgs:
    return k8s.core.v1.EnvVarArgs(
        name=name,
        value_from=k8s.core.v1.EnvVarSourceArgs(
            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key, optional=False)
        ),
    )


def _probe(path: str, *, period: int, timeout: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=PORT_NAME, scheme="HTTPS"),
        period_seconds=period,
        timeout_seconds=timeout,
        failure_threshold=failures,
    )


__all__ = [
    "KUBE_DNS",
    "KubernetesGateway",
    "KubernetesGatewayArgs",
    "PodPeer",
    "cpu_quantity",
    "memory_quantity",
]
