"""The Kubernetes rules: pod security (privileged, non-root, escalation), limits, images, default-deny.

Fixtures are pulumi-kubernetes 4.x resource inputs (camelCase ``metadata``/``spec``). Every
workload type family is covered: a compliant pod template passes every resource rule inside each
workload type, and each violation is shown in a ``Pod``, a ``Deployment`` and a ``CronJob``.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest

from llmkit.policy import UNKNOWN, Resource
from policies.k8s import TEMPLATE_PATHS, WORKLOADS, pod_template
from policies.rules.k8s_core_pod_disallow_latest_image import RULE as IMAGE
from policies.rules.k8s_core_pod_disallow_privilege_escalation import RULE as ESCALATION
from policies.rules.k8s_core_pod_disallow_privileged import RULE as PRIVILEGED
from policies.rules.k8s_core_pod_enforce_nonroot import RULE as NONROOT
from policies.rules.k8s_core_pod_enforce_resource_limits import RULE as LIMITS
from policies.rules.k8s_networking_networkpolicy_missing_default_deny import RULE as DEFAULT_DENY
from tests.pack.fixtures import PROVIDER, messages, res, skipped

POD = "kubernetes:core/v1:Pod"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRONJOB = "kubernetes:batch/v1:CronJob"
FAMILIES = (POD, DEPLOYMENT, CRONJOB)
NAMESPACE = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
RESOURCE_RULES = (PRIVILEGED, NONROOT, ESCALATION, LIMITS, IMAGE)
MODEL_NS = "llmkit-model"
MODEL_LABELS = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/component": "model-server"}
DIGEST = "sha256:" + "0123456789abcdef" * 4
ALL_TRAFFIC = (
    "accepted: a NetworkPolicy there with podSelector: {}, policyTypes: [Ingress, Egress] "
    "and no rule that allows all traffic"
)


def container(name: str = "app", **fields: Any) -> dict[str, Any]:
    """A container that passes every rule; ``fields`` replace top-level keys."""
    base: dict[str, Any] = {
        "name": name,
        "image": "registry.internal:5000/llmkit/vllm:0.6.3",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "2", "memory": "8Gi"}},
    }
    return {**base, **fields}


def secured(name: str = "app", **security: Any) -> dict[str, Any]:
    """A compliant container whose securityContext has ``security`` merged in (None deletes a key)."""
    ctx = {**container()["securityContext"], **security}
    return container(name, securityContext={k: v for k, v in ctx.items() if v is not None})


def spec(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A pod spec: the given containers (one compliant one by default) and pod-level ``fields``."""
    base: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": list(containers) or [container()],
    }
    return {**base, **fields}


def workload(
    type_: str = DEPLOYMENT,
    name: str = "w",
    pod: dict[str, Any] | None = None,
    *,
    namespace: str | None = "llmkit-app",
    labels: dict[str, str] | None = None,
    provider: dict[str, Any] | None = None,
) -> Resource:
    """A workload of ``type_`` running ``pod`` (a pod spec), shaped as pulumi-kubernetes inputs."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    labels = labels if labels is not None else {"app.kubernetes.io/name": name}
    template = {"metadata": {"labels": labels}, "spec": pod if pod is not None else spec()}
    path = TEMPLATE_PATHS[type_]
    if not path:
        props: dict[str, Any] = {"metadata": {**metadata, "labels": labels}, "spec": template["spec"]}
    elif path[1] == "jobTemplate":
        props = {
            "metadata": metadata,
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    else:
        props = {"metadata": metadata, "spec": {"selector": {"matchLabels": labels}, "template": template}}
    return res(type_, name, provider=provider, **props)


# --- all rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", WORKLOADS)
def test_a_hardened_pod_passes_every_rule_in_every_workload_type(type_: str) -> None:
    pod = spec(
        container("vllm"), initContainers=[container("fetch")], ephemeralContainers=[container("debug")]
    )
    for rule in RESOURCE_RULES:
        assert messages(rule, workload(type_, pod=pod)) == [], rule.name
        assert set(rule.resource_types) == set(WORKLOADS)


@pytest.mark.parametrize("type_", WORKLOADS)
def test_every_rule_finds_its_violation_in_every_workload_type(type_: str) -> None:
    bad = container(
        "vllm",
        image="vllm/vllm-openai:latest",
        securityContext={"privileged": True, "runAsNonRoot": False, "allowPrivilegeEscalation": False},
        resources={},
    )
    pod = spec(bad)
    for rule in RESOURCE_RULES:
        found = messages(rule, workload(type_, "w", pod))
        assert len(found) == 1, (rule.name, found)
        assert found[0][1].startswith('container "vllm": '), (rule.name, found)


@pytest.mark.parametrize(
    ("type_", "path"),
    [
        (POD, ("spec",)),
        (DEPLOYMENT, ("spec", "template", "spec")),
        ("kubernetes:apps/v1:StatefulSet", ("spec", "template", "spec")),
        ("kubernetes:apps/v1:DaemonSet", ("spec", "template", "spec")),
        ("kubernetes:apps/v1:ReplicaSet", ("spec", "template", "spec")),
        ("kubernetes:batch/v1:Job", ("spec", "template", "spec")),
        (CRONJOB, ("spec", "jobTemplate", "spec", "template", "spec")),
    ],
)
def test_the_pod_spec_is_read_where_each_workload_keeps_it(type_: str, path: tuple[str, ...]) -> None:
    w = workload(type_, pod=spec(container("x")))
    assert w.get(*path, "containers", 0, "name") == "x"
    assert [c.name for c in pod_template(w).containers()] == ["x"]


def test_each_rule_lives_in_its_own_module() -> None:
    for rule in (*RESOURCE_RULES, DEFAULT_DENY):
        module = importlib.import_module(f"policies.rules.{rule.name.replace('-', '_')}")
        assert module.RULE is rule
        assert rule.enforcement == "mandatory"
        assert any(f.startswith(("CIS Kubernetes", "PSS", "NSA-CISA")) for f in rule.frameworks)


def test_containers_without_a_name_are_named_by_position() -> None:
    unnamed = {"image": "a:1", "securityContext": {"privileged": True}}
    w = res(POD, "p", metadata={"name": "p"}, spec={"containers": [container("x"), unnamed]})
    assert messages(PRIVILEGED, w) == [
        ("p", 'container "containers[1]": securityContext.privileged is true; accepted: false or unset')
    ]


# --- k8s-core-pod-disallow-privileged -----------------------------------------------------------


@pytest.mark.parametrize("type_", FAMILIES)
def test_a_privileged_container_of_any_kind_fails(type_: str) -> None:
    pod = spec(
        secured("vllm", privileged=True),
        initContainers=[secured("fetch", privileged="true")],
        ephemeralContainers=[secured("debug", privileged=True)],
    )
    assert messages(PRIVILEGED, workload(type_, "w", pod)) == [
        ("w", 'container "vllm": securityContext.privileged is true; accepted: false or unset'),
        ("w", 'init container "fetch": securityContext.privileged is true; accepted: false or unset'),
        ("w", 'ephemeral container "debug": securityContext.privileged is true; accepted: false or unset'),
    ]


@pytest.mark.parametrize("type_", FAMILIES)
def test_host_namespaces_fail(type_: str) -> None:
    pod = spec(hostNetwork=True, hostPID=True, hostIPC=True)
    assert messages(PRIVILEGED, workload(type_, "w", pod)) == [
        (
            "w",
            "pod spec: hostNetwork is true, sharing the node's network namespace; accepted: false or unset",
        ),
        ("w", "pod spec: hostPID is true, sharing the node's process ID namespace; accepted: false or unset"),
        ("w", "pod spec: hostIPC is true, sharing the node's IPC namespace; accepted: false or unset"),
    ]


def test_windows_host_process_fails_at_pod_and_container_level() -> None:
    pod = spec(
        secured("svc", windowsOptions={"hostProcess": True}),
        securityContext={"runAsNonRoot": True, "windowsOptions": {"hostProcess": True}},
    )
    assert messages(PRIVILEGED, workload(DEPLOYMENT, "w", pod)) == [
        ("w", "pod securityContext: windowsOptions.hostProcess is true; accepted: false or unset"),
        (
            "w",
            'container "svc": securityContext.windowsOptions.hostProcess is true; accepted: false or unset',
        ),
    ]


def test_explicit_false_host_flags_pass() -> None:
    pod = spec(secured(privileged=False), hostNetwork=False, hostPID=False, hostIPC="false")
    assert messages(PRIVILEGED, workload(POD, pod=pod)) == []


def test_an_unknown_privileged_flag_is_skipped() -> None:
    w = workload(DEPLOYMENT, pod=spec(secured(privileged=UNKNOWN)))
    assert messages(PRIVILEGED, w) == []
    assert skipped(PRIVILEGED, w) == [(PRIVILEGED.name, w.urn)]
    unknown_spec = workload(POD, pod=spec(hostNetwork=UNKNOWN))
    assert skipped(PRIVILEGED, unknown_spec) == [(PRIVILEGED.name, unknown_spec.urn)]


# --- k8s-core-pod-enforce-nonroot ---------------------------------------------------------------

NONROOT_ACCEPTED = "accepted: true in the container's or the pod's securityContext"


@pytest.mark.parametrize("type_", FAMILIES)
def test_non_root_at_pod_level_covers_every_container(type_: str) -> None:
    pod = spec(
        secured("vllm", runAsNonRoot=None, runAsUser=None),
        initContainers=[secured("fetch", runAsNonRoot=None)],
    )
    assert messages(NONROOT, workload(type_, pod=pod)) == []


def test_non_root_at_container_level_alone_passes() -> None:
    pod = spec(secured("vllm"), securityContext={})
    assert messages(NONROOT, workload(POD, pod=pod)) == []


@pytest.mark.parametrize("type_", FAMILIES)
def test_run_as_non_root_unset_everywhere_fails_for_each_container(type_: str) -> None:
    pod = spec(
        secured("vllm", runAsNonRoot=None),
        initContainers=[secured("fetch", runAsNonRoot=None)],
        securityContext={"runAsUser": 10001},
    )
    unset = f"runAsNonRoot is unset in the container's and the pod's securityContext; {NONROOT_ACCEPTED}"
    assert messages(NONROOT, workload(type_, "w", pod)) == [
        ("w", f'container "vllm": {unset}'),
        ("w", f'init container "fetch": {unset}'),
    ]


def test_a_container_false_overrides_the_pods_true() -> None:
    pod = spec(secured("vllm", runAsNonRoot=False))
    assert messages(NONROOT, workload(CRONJOB, "w", pod)) == [
        ("w", f'container "vllm": securityContext.runAsNonRoot is false; {NONROOT_ACCEPTED}')
    ]


def test_a_pod_false_fails_containers_that_do_not_override_it() -> None:
    pod = spec(
        secured("vllm", runAsNonRoot=None),
        secured("proxy", runAsNonRoot=True),
        securityContext={"runAsNonRoot": False, "runAsUser": 10001},
    )
    assert messages(NONROOT, workload(DEPLOYMENT, "w", pod)) == [
        (
            "w",
            f'container "vllm": runAsNonRoot is unset, and the pod\'s securityContext.runAsNonRoot is false; '
            f"{NONROOT_ACCEPTED}",
        )
    ]


@pytest.mark.parametrize("type_", FAMILIES)
def test_uid_zero_fails_wherever_it_is_written(type_: str) -> None:
    pod = spec(
        secured("vllm", runAsUser=0),
        ephemeralContainers=[secured("debug", runAsUser="0")],
        securityContext={"runAsNonRoot": True, "runAsUser": 0},
    )
    uid = "runAsUser is 0 (root); accepted: a non-zero UID, or unset with runAsNonRoot: true"
    assert messages(NONROOT, workload(type_, "w", pod)) == [
        ("w", f"pod securityContext: {uid}"),
        ("w", f'container "vllm": securityContext.{uid}'),
        ("w", f'ephemeral container "debug": securityContext.{uid}'),
    ]


def test_an_unknown_run_as_non_root_is_skipped() -> None:
    w = workload(DEPLOYMENT, pod=spec(secured(runAsNonRoot=UNKNOWN)))
    assert messages(NONROOT, w) == []
    assert skipped(NONROOT, w) == [(NONROOT.name, w.urn)]


# --- k8s-core-pod-disallow-privilege-escalation -------------------------------------------------


@pytest.mark.parametrize("type_", FAMILIES)
def test_privilege_escalation_unset_or_true_fails(type_: str) -> None:
    pod = spec(
        secured("vllm", allowPrivilegeEscalation=None),
        initContainers=[secured("fetch", allowPrivilegeEscalation=True)],
        ephemeralContainers=[secured("debug", allowPrivilegeEscalation="true")],
    )
    assert messages(ESCALATION, workload(type_, "w", pod)) == [
        (
            "w",
            'container "vllm": securityContext.allowPrivilegeEscalation is unset '
            "(Kubernetes defaults it to true); accepted: false",
        ),
        ("w", 'init container "fetch": securityContext.allowPrivilegeEscalation is true; accepted: false'),
        (
            "w",
            'ephemeral container "debug": securityContext.allowPrivilegeEscalation is true; accepted: false',
        ),
    ]


@pytest.mark.parametrize("type_", FAMILIES)
def test_capabilities_must_drop_all(type_: str) -> None:
    pod = spec(secured("vllm", capabilities=None), secured("proxy", capabilities={"drop": ["NET_RAW"]}))
    assert messages(ESCALATION, workload(type_, "w", pod)) == [
        (
            "w",
            'container "vllm": securityContext.capabilities.drop is unset; accepted: a list containing "ALL"',
        ),
        (
            "w",
            'container "proxy": securityContext.capabilities.drop is ["NET_RAW"]; '
            'accepted: a list containing "ALL"',
        ),
    ]


@pytest.mark.parametrize("type_", FAMILIES)
def test_added_capabilities_beyond_the_allowed_fail(type_: str) -> None:
    pod = spec(
        secured("vllm", capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN", "NET_RAW"]})
    )
    assert messages(ESCALATION, workload(type_, "w", pod)) == [
        (
            "w",
            'container "vllm": securityContext.capabilities.add has SYS_ADMIN, NET_RAW; '
            "accepted: NET_BIND_SERVICE",
        )
    ]


def test_allowed_capabilities_setting_changes_the_outcome() -> None:
    pod = spec(secured("vllm", capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}))
    w = workload(DEPLOYMENT, "w", pod)
    assert messages(ESCALATION, w) == []
    assert messages(ESCALATION, w, allowed_capabilities=[]) == [
        ("w", 'container "vllm": securityContext.capabilities.add has NET_BIND_SERVICE; accepted: none')
    ]
    ptrace = workload(
        DEPLOYMENT, "w", spec(secured("vllm", capabilities={"drop": ["ALL"], "add": ["SYS_PTRACE"]}))
    )
    assert messages(ESCALATION, ptrace, allowed_capabilities=["SYS_PTRACE"]) == []


def test_windows_pods_are_exempt_from_linux_only_controls() -> None:
    pod = spec(secured("svc", allowPrivilegeEscalation=None, capabilities=None), os={"name": "windows"})
    assert messages(ESCALATION, workload(DEPLOYMENT, pod=pod)) == []
    linux = spec(secured("svc", allowPrivilegeEscalation=None), os={"name": "linux"})
    assert len(messages(ESCALATION, workload(DEPLOYMENT, pod=linux))) == 1


def test_unknown_capabilities_are_skipped() -> None:
    w = workload(POD, pod=spec(secured(capabilities={"drop": UNKNOWN})))
    assert messages(ESCALATION, w) == []
    assert skipped(ESCALATION, w) == [(ESCALATION.name, w.urn)]


# --- k8s-core-pod-enforce-resource-limits -------------------------------------------------------

LIMITS_ACCEPTED = "accepted: both limits.cpu and limits.memory set"
NO_GPU = (
    "model server in namespace llmkit-model: no container sets resources.limits nvidia.com/gpu to at least 1"
    "{seen}; accepted: a whole number >= 1 on the container that serves the model"
)


def gpu_container(name: str = "vllm", gpus: Any = 1) -> dict[str, Any]:
    return container(name, resources={"limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": gpus}})


def model_server(type_: str = DEPLOYMENT, *containers: dict[str, Any], **kwargs: Any) -> Resource:
    kwargs.setdefault("namespace", MODEL_NS)
    kwargs.setdefault("labels", MODEL_LABELS)
    return workload(type_, "ms", spec(*containers), **kwargs)


@pytest.mark.parametrize("type_", FAMILIES)
def test_containers_without_cpu_or_memory_limits_fail(type_: str) -> None:
    pod = spec(
        container("vllm", resources={"requests": {"cpu": "1"}}),
        container("proxy", resources={"limits": {"cpu": "1"}}),
        initContainers=[container("fetch", resources={"limits": {"memory": "1Gi", "cpu": ""}})],
        ephemeralContainers=[container("debug", resources=None)],
    )
    assert messages(LIMITS, workload(type_, "w", pod)) == [
        ("w", f'container "vllm": resources.limits has no cpu and no memory; {LIMITS_ACCEPTED}'),
        ("w", f'container "proxy": resources.limits has no memory; {LIMITS_ACCEPTED}'),
        ("w", f'init container "fetch": resources.limits has no cpu; {LIMITS_ACCEPTED}'),
    ]


@pytest.mark.parametrize("type_", FAMILIES)
def test_a_model_server_with_a_gpu_limit_passes(type_: str) -> None:
    assert messages(LIMITS, model_server(type_, gpu_container(gpus=1))) == []
    assert messages(LIMITS, model_server(type_, gpu_container(gpus="2"))) == []


@pytest.mark.parametrize("type_", FAMILIES)
def test_a_model_server_without_a_gpu_limit_fails(type_: str) -> None:
    assert messages(LIMITS, model_server(type_, container("vllm"))) == [("ms", NO_GPU.format(seen=""))]


def test_a_gpu_limit_below_one_or_not_whole_fails_and_is_shown() -> None:
    found = messages(
        LIMITS, model_server(DEPLOYMENT, gpu_container("vllm", "0"), gpu_container("proxy", "0.5"))
    )
    assert found == [("ms", NO_GPU.format(seen=' (container "vllm" has 0; container "proxy" has 0.5)'))]
    assert messages(LIMITS, model_server(DEPLOYMENT, gpu_container("vllm", True))) != []


def test_a_sidecar_needs_no_gpu_when_the_server_has_one() -> None:
    assert messages(LIMITS, model_server(DEPLOYMENT, gpu_container("vllm"), container("proxy"))) == []


def test_an_init_container_gpu_does_not_make_a_model_server() -> None:
    pod = spec(container("vllm"), initContainers=[gpu_container("warmup")])
    w = workload(DEPLOYMENT, "ms", pod, namespace=MODEL_NS, labels=MODEL_LABELS)
    assert messages(LIMITS, w) == [("ms", NO_GPU.format(seen=""))]


def test_a_model_server_needs_both_the_labels_and_a_model_namespace() -> None:
    elsewhere = model_server(DEPLOYMENT, container("vllm"), namespace="llmkit-app")
    unlabelled = model_server(DEPLOYMENT, container("downloader"), labels={"app.kubernetes.io/name": "fetch"})
    partly = model_server(
        DEPLOYMENT, container("vllm"), labels={"app.kubernetes.io/component": "model-server"}
    )
    assert messages(LIMITS, elsewhere) == []
    assert messages(LIMITS, unlabelled) == []
    assert messages(LIMITS, partly) == [("ms", NO_GPU.format(seen=""))]


def test_labels_on_the_workload_but_not_the_pod_template_do_not_count() -> None:
    w = model_server(DEPLOYMENT, container("vllm"), labels={})
    props = copy.deepcopy(dict(w.props))
    props["metadata"]["labels"] = MODEL_LABELS
    assert messages(LIMITS, res(DEPLOYMENT, "ms", **props)) == []


def test_the_namespace_can_come_from_the_provider() -> None:
    provider = {**PROVIDER, "namespace": MODEL_NS}
    w = model_server(DEPLOYMENT, container("vllm"), namespace=None, provider=provider)
    assert messages(LIMITS, w) == [("ms", NO_GPU.format(seen=""))]
    assert messages(LIMITS, model_server(DEPLOYMENT, container("vllm"), namespace=None)) == []  # "default"


def test_model_server_settings_change_the_outcome() -> None:
    w = model_server(DEPLOYMENT, container("vllm"), namespace="gpu", labels={"tier": "model"})
    assert messages(LIMITS, w) == []
    found = messages(LIMITS, w, model_namespaces=["gpu"], model_server_labels={"tier": "model"})
    assert found == [("ms", NO_GPU.format(seen="").replace("llmkit-model", "gpu"))]
    everything = model_server(DEPLOYMENT, container("helper"), labels={})
    assert messages(LIMITS, everything, model_server_labels={}) == [("ms", NO_GPU.format(seen=""))]


def test_an_unknown_gpu_limit_is_skipped() -> None:
    w = model_server(DEPLOYMENT, gpu_container(gpus=UNKNOWN))
    assert messages(LIMITS, w) == []
    assert skipped(LIMITS, w) == [(LIMITS.name, w.urn)]


# --- k8s-core-pod-disallow-latest-image ---------------------------------------------------------

TAG_ACCEPTED = "accepted: an explicit tag other than latest, or an @sha256: digest"
DIGEST_ACCEPTED = "accepted: an @sha256: digest (require_digest is on)"


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.6.3",
        "registry.internal:5000/llmkit/vllm:0.6.3",
        f"ollama/ollama@{DIGEST}",
        f"ollama/ollama:latest@{DIGEST}",
        f"registry.internal:5000/ollama@{DIGEST}",
        "sha512-ok/img@sha512:" + "ab" * 64,
    ],
)
def test_pinned_images_pass(image: str) -> None:
    assert messages(IMAGE, workload(POD, pod=spec(container(image=image)))) == []


@pytest.mark.parametrize("type_", FAMILIES)
def test_latest_and_tagless_images_fail_in_every_container_kind(type_: str) -> None:
    pod = spec(
        container("vllm", image="vllm/vllm-openai:latest"),
        container("proxy", image="nginx"),
        initContainers=[container("fetch", image="registry.internal:5000/llmkit/fetch")],
        ephemeralContainers=[container("debug", image="busybox:Latest")],
    )
    assert messages(IMAGE, workload(type_, "w", pod)) == [
        ("w", f'container "vllm": image vllm/vllm-openai:latest uses the mutable tag latest; {TAG_ACCEPTED}'),
        ("w", f'container "proxy": image nginx has no tag, so it pulls latest; {TAG_ACCEPTED}'),
        (
            "w",
            'init container "fetch": image registry.internal:5000/llmkit/fetch has no tag, '
            f"so it pulls latest; {TAG_ACCEPTED}",
        ),
        (
            "w",
            f'ephemeral container "debug": image busybox:Latest uses the mutable tag Latest; {TAG_ACCEPTED}',
        ),
    ]


def test_missing_and_malformed_images_fail() -> None:
    pod = spec(
        container("a", image=None), container("b", image=""), container("c", image="ollama/ollama@sha256:abc")
    )
    assert messages(IMAGE, workload(DEPLOYMENT, "w", pod)) == [
        ("w", f'container "a": no image is set; {TAG_ACCEPTED}'),
        ("w", f'container "b": no image is set; {TAG_ACCEPTED}'),
        (
            "w",
            f'container "c": image ollama/ollama@sha256:abc has a malformed digest sha256:abc; '
            f"{TAG_ACCEPTED}",
        ),
    ]


def test_require_digest_accepts_only_digests() -> None:
    tagged = workload(CRONJOB, "w", spec(container("vllm", image="vllm/vllm-openai:v0.6.3")))
    pinned = workload(CRONJOB, "w", spec(container("vllm", image=f"vllm/vllm-openai@{DIGEST}")))
    assert messages(IMAGE, tagged) == []
    assert messages(IMAGE, tagged, require_digest=True) == [
        ("w", f'container "vllm": image vllm/vllm-openai:v0.6.3 is not pinned by digest; {DIGEST_ACCEPTED}')
    ]
    assert messages(IMAGE, pinned, require_digest=True) == []


def test_an_unknown_image_is_skipped() -> None:
    w = workload(DEPLOYMENT, pod=spec(container(image=UNKNOWN)))
    assert messages(IMAGE, w) == []
    assert skipped(IMAGE, w) == [(IMAGE.name, w.urn)]


# --- k8s-networking-networkpolicy-missing-default-deny ------------------------------------------


def namespace(name: str = MODEL_NS, resource: str = "ns") -> Resource:
    return res(NAMESPACE, resource, metadata={"name": name})


def netpol(
    name: str = "deny",
    ns: str | None = MODEL_NS,
    type_: str = NETPOL,
    **spec_fields: Any,
) -> Resource:
    body: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], **spec_fields}
    metadata: dict[str, Any] = {"name": name}
    if ns is not None:
        metadata["namespace"] = ns
    return res(type_, name, metadata=metadata, spec={k: v for k, v in body.items() if v is not None})


def no_default_deny(ns: str = MODEL_NS, near: str = "") -> str:
    return f"namespace {ns} has no default-deny NetworkPolicy{near}; {ALL_TRAFFIC}"


def test_a_model_namespace_with_a_default_deny_passes() -> None:
    allow = netpol(
        "allow-app",
        podSelector={"matchLabels": MODEL_LABELS},
        policyTypes=["Ingress"],
        ingress=[
            {
                "from": [{"namespaceSelector": {"matchLabels": {"name": "llmkit-app"}}}],
                "ports": [{"port": 8000}],
            }
        ],
    )
    assert (
        messages(DEFAULT_DENY, namespace(), netpol(), allow, model_server(DEPLOYMENT, gpu_container())) == []
    )
    legacy = netpol(type_="kubernetes:extensions/v1beta1:NetworkPolicy")
    assert messages(DEFAULT_DENY, namespace(), legacy) == []


def test_a_created_model_namespace_without_a_policy_fails_on_the_namespace() -> None:
    found = messages(DEFAULT_DENY, namespace(), model_server(DEPLOYMENT, gpu_container()))
    assert found == [("ns", no_default_deny())]


def test_workloads_in_a_model_namespace_the_stack_does_not_create_fail_each() -> None:
    stack = [model_server(t, gpu_container()) for t in FAMILIES]
    stack = [res(w.type, f"ms-{i}", **w.props) for i, w in enumerate(stack)]
    assert messages(DEFAULT_DENY, *stack) == [(f"ms-{i}", no_default_deny()) for i in range(3)]
    assert messages(DEFAULT_DENY, *stack, netpol()) == []


def test_the_provider_default_namespace_places_workloads_and_policies() -> None:
    provider = {**PROVIDER, "namespace": MODEL_NS}
    w = model_server(DEPLOYMENT, gpu_container(), namespace=None, provider=provider)
    assert messages(DEFAULT_DENY, w) == [("ms", no_default_deny())]
    policy = netpol(ns=None)
    assert messages(DEFAULT_DENY, w, res(NETPOL, "deny", provider=provider, **policy.props)) == []
    assert messages(DEFAULT_DENY, w, policy) == [("ms", no_default_deny())]  # lands in "default"


@pytest.mark.parametrize(
    ("fields", "near"),
    [
        ({"policyTypes": ["Ingress"]}, 'deny: policyTypes is ["Ingress"], without Egress'),
        ({"policyTypes": None}, "deny: policyTypes is unset, without Ingress and Egress"),
        ({"egress": [{}]}, "deny: egress[0] allows all traffic (no to peers, no ports)"),
        ({"ingress": [{"from": []}]}, "deny: ingress[0] allows all traffic (no from peers, no ports)"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]},
            "deny: egress[0] allows all traffic to 0.0.0.0/0",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}]},
            "deny: ingress[0] allows all traffic from ::/0",
        ),
        (
            {"ingress": [{"from": [{"namespaceSelector": {}}]}]},
            "deny: ingress[0] allows all traffic from every pod in every namespace",
        ),
        (
            {"egress": [{"to": [{"namespaceSelector": {"matchLabels": {}}, "podSelector": {}}]}]},
            "deny: egress[0] allows all traffic to every pod in every namespace",
        ),
        (
            {"policyTypes": ["Egress"], "ingress": [{}]},
            'deny: policyTypes is ["Egress"], without Ingress; '
            "ingress[0] allows all traffic (no from peers, no ports)",
        ),
    ],
)
def test_a_select_all_policy_that_is_not_a_default_deny_fails(fields: dict[str, Any], near: str) -> None:
    assert messages(DEFAULT_DENY, namespace(), netpol(**fields)) == [
        ("ns", no_default_deny(near=f" ({near})"))
    ]


def test_narrow_rules_may_live_in_the_default_deny() -> None:
    dns = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}],
    }
    world_on_443 = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}
    same_namespace: dict[str, Any] = {"from": [{"podSelector": {}}]}
    policy = netpol(egress=[dns, world_on_443], ingress=[same_namespace])
    assert messages(DEFAULT_DENY, namespace(), policy) == []


def test_policies_that_select_some_pods_or_sit_elsewhere_do_not_count() -> None:
    some = netpol("some", podSelector={"matchLabels": {"app": "vllm"}})
    expressions = netpol("expr", podSelector={"matchExpressions": [{"key": "app", "operator": "Exists"}]})
    elsewhere = netpol("other-ns", ns="llmkit-app")
    assert messages(DEFAULT_DENY, namespace(), some, expressions, elsewhere) == [("ns", no_default_deny())]


def test_one_good_default_deny_is_enough_beside_a_near_miss() -> None:
    near_miss = netpol("ingress-only", policyTypes=["Ingress"])
    assert messages(DEFAULT_DENY, namespace(), near_miss, netpol()) == []
    assert messages(DEFAULT_DENY, namespace(), netpol(), near_miss) == []


def test_other_namespaces_are_out_of_scope_unless_configured() -> None:
    app = [namespace("llmkit-app", "app-ns"), workload(DEPLOYMENT, "api", namespace="llmkit-app")]
    assert messages(DEFAULT_DENY, *app) == []
    assert messages(DEFAULT_DENY, *app, model_namespaces=["llmkit-app", MODEL_NS]) == [
        ("app-ns", no_default_deny("llmkit-app"))
    ]


def test_an_auto_named_namespace_is_not_a_model_namespace() -> None:
    assert messages(DEFAULT_DENY, res(NAMESPACE, MODEL_NS, metadata={})) == []


def test_an_unknown_namespace_skips_the_stack_rule() -> None:
    w = model_server(DEPLOYMENT, gpu_container(), namespace=UNKNOWN)
    assert messages(DEFAULT_DENY, w) == []
    assert skipped(DEFAULT_DENY, w) == [(DEFAULT_DENY.name, "(stack)")]
