"""The offline plan: run the real Pulumi program on Pulumi's mock runtime and record a graph.

No cloud account and no Pulumi CLI are involved. The program (`__main__.py`) runs in this
process exactly as `pulumi up` would run it, against the stack's real config file; a
recording resource monitor keeps every RegisterResource request the program makes. Those
requests are what the Pulumi engine would see, so the recorded graph (type token, name,
parent, provider, dependencies, inputs) is the artefact that security teams review and that
the policy pack evaluates offline.

Secret values are redacted at the wire level: a value the program marked secret (an
`Output` secret, a `pulumi.secret(...)`, a secret config value) never reaches the graph.
"""

from __future__ import annotations

import gc
import json
import runpy
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.config import StackConfig, load_stack, read_yaml
from llmkit.errors import ConfigError, LlmkitError
from llmkit.placement import Placement, place_models

GRAPH_SCHEMA = "llmkit.plan/v1"
REDACTED = "[secret]"
UNKNOWN_VALUE = "[unknown]"
# The account every offline plan pretends to run in; it appears in mocked ARNs only.
MOCK_ACCOUNT_ID = "123456789012"

# Elastic Load Balancing's log-delivery accounts for the regions our stacks use
# (docs.aws.amazon.com/elasticloadbalancing/latest/application/enable-access-logging.html).
ELB_LOG_ACCOUNTS = {"eu-central-1": "054676820928", "eu-west-1": "156460612806", "us-east-1": "127311923021"}

# Pulumi's wire-format sentinels (pulumi.runtime.rpc); stable across SDK versions.
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def redact(value: Any) -> Any:
    """Turn a decoded protobuf property value into plain JSON with secrets removed."""
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _SECRET_SIG:
            return REDACTED
        if sig == _OUTPUT_SIG:
            if value.get("secret"):
                return REDACTED
            return redact(value["value"]) if "value" in value else UNKNOWN_VALUE
        if sig == _RESOURCE_SIG:
            return {"$ref": value.get("urn")}
        if sig in (_ASSET_SIG, _ARCHIVE_SIG):
            return {"$asset": value.get("path") or value.get("uri") or "[inline]"}
        return {k: redact(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Struct carries every number as a double
    if value == _UNKNOWN:
        return UNKNOWN_VALUE
    return value


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    dependencies: list[str]
    inputs: dict[str, Any]
    # The id and ARN the (mock) provider assigned: what other resources' inputs name it by.
    id: str | None = None
    arn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "id": self.id,
            "arn": self.arn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "dependencies": self.dependencies,
            "inputs": self.inputs,
        }


# Offline answers for the data-source invokes the program makes. A component that adds an
# invoke adds its answer here; an invoke without one fails the plan loudly rather than
# quietly planning against an empty result.
InvokeAnswer = Callable[[dict[str, Any], str], dict[str, Any]]


def _azs(args: dict[str, Any], region: str) -> dict[str, Any]:
    names = [f"{region}{s}" for s in "abcdef"]
    return {"names": names, "zoneIds": [f"{region[:3]}{i}-az{i}" for i in range(1, 7)], "id": region}


INVOKES: dict[str, InvokeAnswer] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": _azs,
    "aws:index/getCallerIdentity:getCallerIdentity": lambda a, r: {
        "accountId": MOCK_ACCOUNT_ID,
        "arn": f"arn:aws:iam::{MOCK_ACCOUNT_ID}:user/llmkit-plan",
        "userId": "AIDAPLANOFFLINE",
        "id": MOCK_ACCOUNT_ID,
    },
    "aws:index/getRegion:getRegion": lambda a, r: {"name": r, "region": r, "id": r},
    "aws:elb/getServiceAccount:getServiceAccount": lambda a, r: {
        # The account that writes ALB access logs in the region (AWS publishes one per region).
        "arn": f"arn:aws:iam::{ELB_LOG_ACCOUNTS.get(r, MOCK_ACCOUNT_ID)}:root",
        "id": ELB_LOG_ACCOUNTS.get(r, MOCK_ACCOUNT_ID),
    },
    "aws:ec2/getPrefixList:getPrefixList": lambda a, r: {
        "id": f"pl-offline-{a.get('name', 'unnamed')}",
        "prefixListId": f"pl-offline-{a.get('name', 'unnamed')}",
        "name": a.get("name", ""),
        "cidrBlocks": [],
    },
    "aws:index/getPartition:getPartition": lambda a, r: {
        "partition": "aws",
        "dnsSuffix": "amazonaws.com",
        "id": "aws",
    },
}


def _mock_state(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """The outputs a created resource would have: its inputs plus the ids AWS would assign."""
    state = dict(inputs)
    if typ.startswith("aws:"):
        service = typ.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{service}:{region}:{MOCK_ACCOUNT_ID}:{name}")
    state.setdefault("name", inputs.get("name", name))
    if typ == "aws:lb/loadBalancer:LoadBalancer":
        state.setdefault("dnsName", f"{name}-offline.{region}.elb.amazonaws.com")
        state.setdefault("arnSuffix", f"app/{name}/0123456789abcdef")
        state.setdefault("zoneId", "ZOFFLINEELB")  # the load balancers' hosted zone (alias records)
    if typ == "aws:lb/targetGroup:TargetGroup":
        state.setdefault("arnSuffix", f"targetgroup/{name}/0123456789abcdef")
    if typ == "aws:rds/instance:Instance":
        address = f"{inputs.get('identifier', name)}.offline.{region}.rds.amazonaws.com"
        port = int(inputs.get("port", 5432))  # numbers arrive as doubles
        state.setdefault("address", address)
        state.setdefault("endpoint", f"{address}:{port}")
        if inputs.get("manageMasterUserPassword"):
            # The secret RDS creates for the master user: its ARN only, never a value.
            state.setdefault(
                "masterUserSecrets",
                [
                    {
                        "secretArn": f"arn:aws:secretsmanager:{region}:{MOCK_ACCOUNT_ID}:secret:rds!{name}",
                        "kmsKeyId": inputs.get("masterUserSecretKmsKeyId", ""),
                        "secretStatus": "active",
                    }
                ],
            )
    return state


# Told the number of resources registered so far, after each registration (progress display).
OnRegister = Callable[[int], None]


def _make_recorder(region: str, on_register: OnRegister | None = None) -> Any:
    """Build the recording monitor and mocks (imports pulumi lazily: it is slow to import)."""
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

    class PlanMocks(Mocks):
        def __init__(self) -> None:
            self.subnet_azs: dict[str, str] = {}  # subnet id -> availability zone

        def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
            rid = f"{args.name}-id"
            state = _mock_state(args.typ, args.name, args.inputs, region)
            if args.typ == "aws:ec2/subnet:Subnet":
                self.subnet_azs[rid] = str(args.inputs.get("availabilityZone", ""))
            elif args.typ == "aws:networkfirewall/firewall:Firewall":
                # AWS reports one endpoint per mapped subnet, keyed by the subnet's AZ.
                state["firewallStatuses"] = [
                    {
                        "syncStates": [
                            {
                                "availabilityZone": self.subnet_azs.get(m.get("subnetId", ""), "unknown"),
                                "attachments": [
                                    {
                                        "endpointId": f"vpce-{args.name}-{n}",
                                        "subnetId": m.get("subnetId", ""),
                                        "status": "READY",
                                    }
                                ],
                            }
                            for n, m in enumerate(args.inputs.get("subnetMappings", []))
                        ]
                    }
                ]
            return rid, state

        def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
            answer = INVOKES.get(args.token)
            if answer is None:
                raise LlmkitError(
                    f"the offline plan has no answer for the invoke {args.token!r}; "
                    "add one to llmkit.plan.INVOKES"
                )
            return answer(dict(args.args), region), []

    class RecordingMonitor(MockMonitor):
        def __init__(self) -> None:
            super().__init__(PlanMocks())
            self.recorded: list[PlannedResource] = []

        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
                # The state our mocks gave it, as the base monitor keeps it (not decoded again).
                arn = self.resources[response.urn].state.get("arn") if request.custom else None
                self.recorded.append(
                    PlannedResource(
                        urn=response.urn,
                        type=request.type,
                        name=request.name,
                        parent=request.parent or None,
                        custom=bool(request.custom),
                        provider=request.provider or None,
                        dependencies=sorted(set(request.dependencies)),
                        inputs=redact(raw),
                        id=(response.id or None) if request.custom else None,
                        arn=arn if isinstance(arn, str) else None,
                    )
                )
                if on_register is not None:
                    on_register(len(self.recorded))
            return response

    return RecordingMonitor()


@dataclass
class Plan:
    project: str
    stack: str
    config: StackConfig
    placements: list[Placement]
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    seconds: float  # wall time of running the program (imports of pulumi and pulumi-aws included)
    warnings: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # CPU time of the same (all threads): what a busy machine moves least

    def component_of(
        self, resource: PlannedResource, by_urn: Mapping[str, PlannedResource] | None = None
    ) -> str:
        """The top-level component a resource belongs to (or '(stack)' for top-level ones)."""
        if by_urn is None:
            by_urn = {r.urn: r for r in self.resources}
        top = resource
        while top.parent and top.parent in by_urn:
            top = by_urn[top.parent]
        return f"{top.type} {top.name}" if top is not resource or not top.custom else "(stack)"

    def resources_per_component(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        by_urn = {r.urn: r for r in self.resources}
        for r in self.resources:
            if r.custom:
                counts[self.component_of(r, by_urn)] += 1
        return dict(sorted(counts.items()))

    def to_graph(self) -> dict[str, Any]:
        return {
            "schema": GRAPH_SCHEMA,
            "project": self.project,
            "stack": self.stack,
            "resources": [r.to_dict() for r in self.resources],
            "outputs": self.outputs,
        }


def find_project_dir(start: Path | None = None) -> Path:
    """The directory holding Pulumi.yaml, searched upward from ``start`` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "Pulumi.yaml").is_file():
            return d
    raise ConfigError(
        key="--project-dir",
        value=str(here),
        accepted="a directory (or a child of one) that holds Pulumi.yaml",
        message="no Pulumi project found",
    )


def _project_name(project_dir: Path) -> str:
    path = project_dir / "Pulumi.yaml"
    try:
        doc = read_yaml(path)  # the user's file: within the limits on size and aliases
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            key="Pulumi.yaml",
            value=str(path),
            accepted="a Pulumi project file (YAML)",
            message=str(getattr(exc, "problem", None) or exc),
        ) from None
    return str(doc.get("name", "project")) if isinstance(doc, dict) else "project"


def _runtime_config(stack_file: Path) -> tuple[dict[str, str], list[str]]:
    """The stack file's config as the Pulumi engine hands it to a program.

    Structured values travel as JSON strings. Ciphertext (`secure:`) cannot be decrypted
    offline, so such keys get a placeholder and are marked secret: the graph then shows
    them as redacted, and the program sees that they are secrets.
    """
    doc = read_yaml(stack_file) or {}  # load_stack has read it within the limits already
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (doc.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[key] = f"offline-placeholder-for-{key}"
            secret_keys.append(key)
        elif isinstance(value, dict | list):
            config[key] = json.dumps(value)
        else:
            config[key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration (and back on after, if it was on).

    A plan allocates millions of objects and frees almost none: pulumi-aws's generated classes
    (imported while the program runs), and per resource its inputs, outputs, futures and
    tasks. Each time enough have been allocated, the collector walks them, and the walks grow
    with the heap: a third of the planning time of a stack, for no memory back (the plan's peak
    memory is the same without them, within 2%). Cycles made meanwhile are collected at the
    first collection after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@collector_paused()
def record(
    program: Callable[[], Any],
    *,
    project: str = "llmkit",
    stack: str = "test",
    region: str = "eu-central-1",
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    on_register: OnRegister | None = None,
) -> tuple[list[PlannedResource], dict[str, Any]]:
    """Run ``program`` on Pulumi's mock runtime; return what it registered and exported.

    Every plan and every component test goes through here, so tests see exactly the graph
    that `llmkit plan` writes. ``on_register`` is told the count after each registration.
    Python's garbage collector is paused meanwhile (:func:`collector_paused`).
    """
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime import settings
    from pulumi.runtime.config import set_all_config
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    monitor = _make_recorder(region, on_register)
    settings.set_root_resource(None)  # type: ignore[arg-type]  # a fresh Stack per run
    set_all_config(dict(config or {}), secret_keys or [])
    pulumi_mocks.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)

    outputs: dict[str, Any] = {}

    async def body() -> None:
        program()
        root = settings.get_root_resource()
        for name, value in getattr(root, "outputs", {}).items():
            out = pulumi.Output.from_input(value)
            if await out.is_secret():
                outputs[name] = REDACTED
            else:
                outputs[name] = redact(await out.future(with_unknowns=True))

    settings.SETTINGS.rpc_manager.clear()
    try:
        _sync_await(run_pulumi_func(body))
    finally:
        settings.SETTINGS.rpc_manager.clear()
    return list(monitor.recorded), outputs


def run_plan(stack: str, project_dir: Path | None = None, on_register: OnRegister | None = None) -> Plan:
    """Validate the stack's config, then run the program offline and record its graph.

    Bad config raises ``ConfigErrors`` before any part of the program runs. ``on_register`` is
    told the number of resources registered so far, after each one (for a progress display).
    """
    project_dir = find_project_dir(project_dir)
    stack_file = project_dir / "stacks" / f"Pulumi.{stack}.yaml"
    # Bad input stops here, before any resource is planned.
    cfg = load_stack(stack, project_dir)
    placements = place_models(cfg, source=str(stack_file))
    program = project_dir / "__main__.py"
    project = _project_name(project_dir)
    started, started_cpu = time.perf_counter(), time.process_time()
    config, secret_keys = _runtime_config(stack_file)
    resources, outputs = record(
        lambda: runpy.run_path(str(program), run_name="__main__"),
        project=project,
        stack=stack,
        region=cfg.region,
        config=config,
        secret_keys=secret_keys,
        on_register=on_register,
    )
    return Plan(
        project=project,
        stack=stack,
        config=cfg,
        placements=placements,
        resources=resources,
        outputs=outputs,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - started_cpu,
    )


def write_graph(plan: Plan, path: Path) -> None:
    path.write_text(json.dumps(plan.to_graph(), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def summarise(plan: Plan) -> Mapping[str, Any]:
    """What `llmkit plan` prints, as data (the CLI renders it)."""
    return {
        "stack": plan.stack,
        "region": plan.config.region,
        "resources": sum(1 for r in plan.resources if r.custom),
        "components": plan.resources_per_component(),
        "sizing": [p.summary() for p in plan.placements],
        "outputs": plan.outputs,
        "seconds": round(plan.seconds, 2),
        "cpu_seconds": round(plan.cpu_seconds, 2),
    }
