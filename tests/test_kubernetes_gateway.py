"""KubernetesGateway: LiteLLM's proxy on Kubernetes, on the mock runtime (the graph `llmkit plan` records).

Values are collected from the recorded inputs (camelCase, as the policy pack sees them) and
asserted outside any callback.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from components.kubernetes_gateway import (
    BACKEND_TLS_DIR,
    CONFIG_CHECKSUM_ANNOTATION,
    EXTERNAL_URL_SECRET_KEY,
    SERVING_TLS_DIR,
    KubernetesGateway,
    KubernetesGatewayArgs,
    PodPeer,
    cpu_quantity,
)
from llmkit.config import Gateway
from llmkit.errors import ConfigError
from llmkit.gateway import Backend, litellm_config, litellm_release, render_config
from llmkit.plan import PlannedResource
from llmkit.policy import Resource, evaluate, resources_from_graph
from policies.rules import load_rules
from policies.rules.k8s_networking_networkpolicy_missing_default_deny import RULE as DEFAULT_DENY
from tests.conftest import ROOT, Recorded

RunPulumi = Callable[..., Recorded]

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"

NS = "llmkit-app"
SELECTOR = {
    "app.kubernetes.io/name": "litellm",
    "app.kubernetes.io/instance": "gateway",
    "app.kubernetes.io/component": "gateway",
}
INGRESS = PodPeer.in_namespace("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
MODELS = PodPeer.in_namespace("llmkit-model", {"app.kubernetes.io/component": "model-server"})
BACKENDS = {
    "deepseek-r1:32b": [
        Backend("r1-32b-a", "https://r1-32b-a.llmkit-model.svc:11434"),
        Backend("r1-32b-b", "https://r1-32b-b.llmkit-model.svc:11434"),
    ],
    "deepseek-r1:70b": [Backend("r1-70b", "https://r1-70b.llmkit-model.svc:11434")],
}
DB_CIDR = "10.40.200.0/24"


def gateway_section(**overrides: Any) -> Gateway:
    section: dict[str, Any] = {
        "aliases": {
            "general": {"model": "deepseek-r1:32b"},
            "reasoning": {"model": "deepseek-r1:70b", "fallbacks": ["general"]},
        },
        "replicas": 3,
        "cpu": 2048,
        "memory_mib": 4096,
        "database": {"external_url_secret": "gateway-database"},
    }
    section.update(overrides)
    return Gateway.model_validate(section)


def make_args(gateway: Gateway | None = None, **overrides: Any) -> KubernetesGatewayArgs:
    values: dict[str, Any] = {
        "namespace": NS,
        "backends": BACKENDS,
        "ingress_controller": INGRESS,
        "model_servers": MODELS,
        "keys_secret": "gateway-keys",
        "serving_tls_secret": "gateway-serving-tls",
        "backend_tls_secret": "gateway-backend-tls",
        "database_cidrs": [DB_CIDR],
    }
    values.update(overrides)
    return KubernetesGatewayArgs.from_config(gateway or gateway_section(), **values)


def deploy(run_pulumi: RunPulumi, args: KubernetesGatewayArgs | None = None) -> Recorded:
    args = args or make_args()
    return run_pulumi(lambda: KubernetesGateway("gateway", args))


@pytest.fixture
def rec(run_pulumi: RunPulumi) -> Recorded:
    return deploy(run_pulumi)


def pod_spec(rec: Recorded) -> dict[str, Any]:
    spec: dict[str, Any] = rec.named("gateway-deployment").inputs["spec"]["template"]["spec"]
    return spec


def container(rec: Recorded) -> dict[str, Any]:
    (only,) = pod_spec(rec)["containers"]
    c: dict[str, Any] = only
    return c


def policy(rec: Recorded, role: str) -> dict[str, Any]:
    spec: dict[str, Any] = rec.named(f"gateway-{role}").inputs["spec"]
    return spec


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def policy_resources(rec: Recorded) -> list[Resource]:
    graph = {"schema": "llmkit.plan/v1", "resources": [r.to_dict() for r in rec.resources]}
    return resources_from_graph(graph)


# --- the component and its children -------------------------------------------------------------


def test_every_child_is_parented_and_named_after_the_component(rec: Recorded) -> None:
    (component,) = rec.of_type("llmkit:k8s:Gateway")
    children = [r for r in rec.resources if r is not component]
    assert {r.type for r in children} == {CONFIG_MAP, DEPLOYMENT, PDB, SERVICE, NETPOL}
    assert all(r.parent == component.urn for r in children)
    assert all(r.name.startswith("gateway-") for r in children)
    assert all(r.inputs["metadata"]["namespace"] == NS for r in children)
    assert rec.of_type(SECRET) == []  # the Secrets are the operator's


def test_the_deployment_waits_for_its_config_and_its_network_policies(rec: Recorded) -> None:
    deps = set(rec.named("gateway-deployment").dependencies)
    fences = {r.urn for r in rec.of_type(NETPOL)}
    assert len(fences) == 5
    assert fences | {rec.named("gateway-config").urn} <= deps


# --- the deployment -----------------------------------------------------------------------------


def test_the_deployment_runs_non_root_read_only_without_privileges(rec: Recorded) -> None:
    spec = pod_spec(rec)
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    ctx = container(rec)["securityContext"]
    assert ctx == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "add" not in ctx["capabilities"]


def test_tmp_is_the_only_writable_path(rec: Recorded) -> None:
    mounts = {m["mountPath"]: m for m in container(rec)["volumeMounts"]}
    writable = [path for path, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"]
    volumes = {v["name"]: v for v in pod_spec(rec)["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] == {"sizeLimit": "512Mi"}
    assert {"name": "HOME", "value": "/tmp"} in container(rec)["env"]


def test_replicas_image_and_resources_come_from_config(rec: Recorded) -> None:
    spec = rec.named("gateway-deployment").inputs["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    c = container(rec)
    assert c["image"] == litellm_release().image
    expected = {"cpu": "2000m", "memory": "4096Mi"}
    assert c["resources"] == {"requests": expected, "limits": expected}
    assert [cpu_quantity(u) for u in (512, 1024, 2048, 4096)] == ["500m", "1000m", "2000m", "4000m"]


def test_an_image_from_config_replaces_the_pinned_one(run_pulumi: RunPulumi) -> None:
    image = "registry.internal/litellm-database@sha256:" + "ab" * 32
    rec = deploy(run_pulumi, make_args(gateway_section(image=image)))
    assert container(rec)["image"] == image
    assert "app.kubernetes.io/version" not in rec.named("gateway-deployment").inputs["metadata"]["labels"]


def test_secrets_reach_the_pod_only_by_secret_key_refs(rec: Recorded) -> None:
    env = {e["name"]: e for e in container(rec)["env"]}
    refs = {
        name: e["valueFrom"]["secretKeyRef"]
        for name, e in env.items()
        if "valueFrom" in e and "value" not in e
    }
    assert refs == {
        "LITELLM_MASTER_KEY": {"name": "gateway-keys", "key": "LITELLM_MASTER_KEY", "optional": False},
        "LITELLM_SALT_KEY": {"name": "gateway-keys", "key": "LITELLM_SALT_KEY", "optional": False},
        "DATABASE_URL": {"name": "gateway-database", "key": "DATABASE_URL", "optional": False},
    }
    assert set(env) - set(refs) == {"HOME"}
    # No secret literal anywhere in the graph: the config names environment variables only.
    config = yaml.safe_load(rec.named("gateway-config").inputs["data"]["config.yaml"])
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert config["general_settings"]["database_url"] == "os.environ/DATABASE_URL"
    everything = [s for r in rec.resources for s in strings(r.inputs)]
    assert not [s for s in everything if s.startswith(("sk-", "postgres://", "postgresql://"))]
    assert not [s for s in everything if "BEGIN" in s and "PRIVATE KEY" in s]


def test_probes_use_litellm_health_endpoints_over_https(rec: Recorded) -> None:
    c = container(rec)
    get = {k: c[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert get["livenessProbe"] == {"path": "/health/liveliness", "port": "https", "scheme": "HTTPS"}
    assert get["readinessProbe"] == {"path": "/health/readiness", "port": "https", "scheme": "HTTPS"}
    assert get["startupProbe"] == get["readinessProbe"]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    assert c["ports"] == [{"name": "https", "containerPort": 4000, "protocol": "TCP"}]


def test_litellm_serves_tls_with_the_mounted_serving_certificate(rec: Recorded) -> None:
    c = container(rec)
    args = c["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags == {
        "--config": "/etc/litellm/config/config.yaml",
        "--port": "4000",
        "--ssl_keyfile_path": f"{SERVING_TLS_DIR}/tls.key",
        "--ssl_certfile_path": f"{SERVING_TLS_DIR}/tls.crt",
    }
    volumes = {v["name"]: v for v in pod_spec(rec)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    serving = volumes[mounts[SERVING_TLS_DIR]]["secret"]
    backend = volumes[mounts[BACKEND_TLS_DIR]]["secret"]
    assert serving["secretName"] == "gateway-serving-tls"
    assert [i["key"] for i in serving["items"]] == ["tls.crt", "tls.key"]
    assert backend["secretName"] == "gateway-backend-tls"
    assert [i["path"] for i in backend["items"]] == ["ca.crt", "client.pem"]
    assert serving["defaultMode"] == backend["defaultMode"] == 0o440


def test_pods_spread_over_nodes_and_zones(rec: Recorded) -> None:
    spread = {c["topologyKey"]: c for c in pod_spec(rec)["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert all(c["maxSkew"] == 1 and c["labelSelector"] == {"matchLabels": SELECTOR} for c in spread.values())
    template = rec.named("gateway-deployment").inputs["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= template.items()


def test_a_disruption_budget_keeps_all_but_one_pod(rec: Recorded) -> None:
    spec = rec.named("gateway-pdb").inputs["spec"]
    assert spec == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": SELECTOR},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def test_the_service_is_cluster_internal_on_the_gateway_port(rec: Recorded) -> None:
    spec = rec.named("gateway-service").inputs["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["selector"] == SELECTOR
    assert spec["ports"] == [
        {"name": "https", "port": 4000, "targetPort": "https", "protocol": "TCP", "appProtocol": "https"}
    ]
    assert rec.named("gateway-service").inputs["metadata"]["name"] == "gateway"


# --- the config ---------------------------------------------------------------------------------


def test_the_config_map_holds_exactly_llmkit_gateways_rendering(rec: Recorded) -> None:
    text = rec.named("gateway-config").inputs["data"]["config.yaml"]
    expected = render_config(
        litellm_config(
            gateway_section(),
            BACKENDS,
            runtime="ollama",
            ca_file=f"{BACKEND_TLS_DIR}/ca.crt",
            client_certificate=f"{BACKEND_TLS_DIR}/client.pem",
        )
    )
    assert text == expected
    settings = yaml.safe_load(text)["litellm_settings"]
    assert settings["ssl_verify"] == "/etc/litellm/tls/backend/ca.crt"
    assert settings["ssl_certificate"] == "/etc/litellm/tls/backend/client.pem"
    annotations = rec.named("gateway-deployment").inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations[CONFIG_CHECKSUM_ANNOTATION] == hashlib.sha256(text.encode()).hexdigest()
    volumes = {v["name"]: v for v in pod_spec(rec)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == rec.named("gateway-config").inputs["metadata"]["name"]


def test_a_vllm_runtime_renders_vllm_routes_and_opens_its_port(run_pulumi: RunPulumi) -> None:
    rec = deploy(run_pulumi, make_args(runtime="vllm"))
    config = yaml.safe_load(rec.named("gateway-config").inputs["data"]["config.yaml"])
    assert all(d["litellm_params"]["model"].startswith("hosted_vllm/") for d in config["model_list"])
    assert policy(rec, "to-models")["egress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]


# --- the network policies -----------------------------------------------------------------------


def test_a_default_deny_fences_the_gateway_pods(rec: Recorded) -> None:
    deny = policy(rec, "deny-all")
    assert deny == {"podSelector": {"matchLabels": SELECTOR}, "policyTypes": ["Ingress", "Egress"]}


def test_only_the_ingress_controller_reaches_the_gateway_port(rec: Recorded) -> None:
    ingress = [(r.name, rule) for r in rec.of_type(NETPOL) for rule in r.inputs["spec"].get("ingress", [])]
    assert ingress == [
        (
            "gateway-from-ingress",
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                    }
                ],
                "ports": [{"port": 4000, "protocol": "TCP"}],
            },
        )
    ]
    assert policy(rec, "from-ingress")["podSelector"] == {"matchLabels": SELECTOR}


def test_egress_goes_only_to_the_models_the_database_and_dns(rec: Recorded) -> None:
    egress = {r.name: r.inputs["spec"]["egress"] for r in rec.of_type(NETPOL) if "egress" in r.inputs["spec"]}
    assert egress == {
        "gateway-to-models": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llmkit-model"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-server"}},
                    }
                ],
                "ports": [{"port": 11434, "protocol": "TCP"}],
            }
        ],
        "gateway-to-database": [
            {"to": [{"ipBlock": {"cidr": DB_CIDR}}], "ports": [{"port": 5432, "protocol": "TCP"}]}
        ],
        "gateway-to-dns": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }
        ],
    }
    for name in egress:
        assert rec.named(name).inputs["spec"]["policyTypes"] == ["Egress"]
        assert rec.named(name).inputs["spec"]["podSelector"] == {"matchLabels": SELECTOR}


def test_an_in_cluster_database_and_another_model_port(run_pulumi: RunPulumi) -> None:
    database = PodPeer({"app.kubernetes.io/name": "postgresql"})  # in the gateway's namespace
    rec = deploy(run_pulumi, make_args(database_cidrs=[], database_pods=database, model_port=8443))
    assert policy(rec, "to-database")["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }
    ]
    assert policy(rec, "to-models")["egress"][0]["ports"] == [{"port": 8443, "protocol": "TCP"}]


def test_the_whole_namespace_can_be_denied(run_pulumi: RunPulumi) -> None:
    rec = deploy(run_pulumi, make_args(deny_whole_namespace=True))
    assert policy(rec, "deny-all") == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


# --- the policy pack ----------------------------------------------------------------------------


def test_the_policy_pack_finds_nothing(rec: Recorded) -> None:
    report = evaluate(policy_resources(rec), load_rules())
    assert report.violations == []
    assert report.skipped == []
    k8s_rules = [r for r in load_rules() if r.name.startswith("k8s-")]
    assert len(k8s_rules) == 6
    assert {t for r in k8s_rules for t in r.resource_types} >= {DEPLOYMENT}


def test_the_default_deny_rule_accepts_a_gateway_namespace_denied_whole(run_pulumi: RunPulumi) -> None:
    # Where reviewers treat the gateway's namespace like a model namespace, deny_whole_namespace
    # gives it the default-deny the rule looks for; a gateway-only deny is not that.
    settings = {DEFAULT_DENY.name: {"model_namespaces": [NS]}}
    whole = deploy(run_pulumi, make_args(deny_whole_namespace=True))
    assert evaluate(policy_resources(whole), [DEFAULT_DENY], settings).violations == []
    partial = deploy(run_pulumi, make_args())
    found = evaluate(policy_resources(partial), [DEFAULT_DENY], settings).violations
    assert [v.resource_name for v in found] == ["gateway-deployment"]


def test_a_broken_pod_is_caught_by_the_pack(rec: Recorded) -> None:
    # The test above is not vacuous: the same graph with privilege escalation on fails.
    resources = policy_resources(rec)
    (deployment,) = [r for r in resources if r.type == DEPLOYMENT]
    props = json.loads(json.dumps(dict(deployment.props)))
    props["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    broken = Resource(
        deployment.type, deployment.name, deployment.urn, props, deployment.id, deployment.provider
    )
    names = {v.rule for v in evaluate([broken], load_rules()).violations}
    assert names == {"k8s-core-pod-disallow-privilege-escalation"}


# --- the provider -------------------------------------------------------------------------------


def test_children_use_the_given_provider(run_pulumi: RunPulumi) -> None:
    def program() -> None:
        provider = k8s.Provider("cluster", namespace=NS)
        KubernetesGateway("gateway", make_args(provider=provider), pulumi.ResourceOptions())

    rec = run_pulumi(program)
    (provider,) = rec.of_type("pulumi:providers:kubernetes")
    custom: list[PlannedResource] = [
        r for r in rec.resources if r.custom and r.type.startswith("kubernetes:")
    ]
    assert custom
    assert all((r.provider or "").startswith(provider.urn) for r in custom)


# --- errors -------------------------------------------------------------------------------------


def test_a_missing_external_url_secret_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        make_args(gateway_section(database={}))
    assert raised.value.key == EXTERNAL_URL_SECRET_KEY == "llmkit:gateway.database.external_url_secret"
    assert "llmkit:gateway.database.external_url_secret" in str(raised.value)
    assert "required on Kubernetes" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (
            {"backends": {"deepseek-r1:32b": [Backend("plain", "http://r1.llmkit-model.svc:11434")]}},
            "backends",
        ),
        ({"ingress_controller": PodPeer({})}, "ingress_controller.pod_labels"),
        ({"model_servers": PodPeer({}, {"kubernetes.io/metadata.name": "x"})}, "model_servers.pod_labels"),
        ({"database_cidrs": []}, "database_cidrs"),
        ({"database_cidrs": ["0.0.0.0/0"]}, "database_cidrs"),
        ({"database_cidrs": ["10.40.200.1/24"]}, "database_cidrs"),
        ({"database_pods": PodPeer({})}, "database_pods.pod_labels"),
        ({"namespace": "Llmkit_App"}, "namespace"),
        ({"keys_secret": "Keys!"}, "keys_secret"),
        ({"model_port": 70000}, "model_port"),
    ],
)
def test_unsafe_or_malformed_args_are_refused(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_args(**overrides)
    assert raised.value.key.startswith(f"KubernetesGatewayArgs.{key}")


def test_an_alias_without_a_backend_fails_before_anything_is_registered(run_pulumi: RunPulumi) -> None:
    args = make_args(backends={"deepseek-r1:32b": BACKENDS["deepseek-r1:32b"]})
    with pytest.raises(ConfigError, match=r"llmkit:gateway\.aliases\.reasoning\.model"):
        deploy(run_pulumi, args)


# --- the documented example ---------------------------------------------------------------------


def test_the_example_program_in_docs_runs(run_pulumi: RunPulumi) -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    (program,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (stack_file,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    section = yaml.safe_load(stack_file)["config"]["llmkit:gateway"]
    rec = run_pulumi(
        lambda: exec(compile(program, "docs/kubernetes.md", "exec"), {"__name__": "__main__"}),
        config={"llmkit:gateway": json.dumps(section)},
    )
    assert rec.outputs == {"gateway_url": "https://gateway.llmkit-app.svc:4000"}
    assert rec.named("gateway-deny-all").inputs["spec"]["podSelector"] == {}
    assert evaluate(policy_resources(rec), load_rules()).violations == []
