"""The GPU fleet: per served model an Auto Scaling group of GPU hosts behind an internal load balancer.

For every placement (``llmkit.placement.place_models``: one per ``llmkit:models`` entry) the
component creates an instance role, a launch template, an Auto Scaling group with its scaling
policies, a target group and a listener rule; the internal Application Load Balancer and its
HTTPS listener are shared::

    app tier --HTTPS 443, Host <slug>.<internal domain>--> internal ALB (models_lb group)
              --HTTPS, model port--> GPU hosts of <slug> (model group; TLS terminator on the host)

**How the gateway addresses a model.** The listener routes on the Host header: ``<slug>.*``
goes to the model's target group, where ``<slug>`` is :func:`model_slug` of the model's name
(``deepseek-r1:32b`` -> ``deepseek-r1-32b``). The gateway calls
``https://<slug>.<the operator's internal domain>/...``; that name must resolve to the load
balancer (a private hosted zone record ``*.<domain>`` CNAME to :attr:`GpuFleet.dns_name`, not
created here) and the listener's certificate (``llmkit:fleet.tls_certificate_arn``, else the
endpoint's) must cover it, e.g. ``*.<domain>``. Any other Host gets a 404 from the listener.

Decisions, for reviewers:

- **Instances** come from a launch template with IMDSv2 required (``http_tokens=required``, hop
  limit 1, so a container on the host cannot reach the metadata service; instance tags are not
  exposed in the metadata), no public IP, the model tier's security group, detailed monitoring,
  and two gp3 volumes encrypted with the ``data`` key and deleted with the instance: the root
  (``/dev/sda1``, the Ubuntu Deep Learning AMI's root device) and the model cache (``/dev/sdf``,
  ``llmkit:fleet.model_cache_gib`` or twice the weights plus 20 GiB; 4000 IOPS and 1000 MiB/s so
  a 40 GiB model loads in under a minute; the ``model_cache`` deploy formats it once and mounts
  it at ``/var/lib/ollama``, where the model is downloaded and kept). The AMI is
  ``llmkit:fleet.ami_id`` when pinned, else ``resolve:ssm:<llmkit:fleet.ami_ssm_parameter>``:
  EC2 resolves the parameter at each launch, so no invoke is needed, but new instances then pick
  up a newer AMI without an instance refresh; pin ``ami_id`` where every host must run the same
  image.
- **User data is thin glue** (``components/templates/model_host_user_data.sh``): fetch the
  bootstrap bundle, verify it, install pyinfra from its wheels, run the host deploy of
  ``playbooks/``, wait for the model server, complete the launch lifecycle action; on any error,
  ABANDON. The host steps themselves live once, in the playbooks (design notes: "One definition
  of the host steps"). The user data holds names only (bucket, region, group, hook, log groups):
  never a secret. A host launched before the bundle is in the bucket abandons its launch: pass
  whatever puts it there as ``launch_after``.
- **The bootstrap bundle contract** (``s3://<model store>/bootstrap/``, written by the mirror)::

      manifest.json       {"files": [{"path": "wheels/pyinfra-3.10.0-py3-none-any.whl",
                                      "sha256": "<64 hex>", "size": <bytes>}, ...]}
      requirements.txt    the host virtualenv's pinned requirements (pyinfra and its dependencies)
      wheels/*.whl        every wheel requirements.txt needs, and exactly one pip-*.whl
      playbooks/site.py   the host deploy (HOST_DEPLOY), run from playbooks/ (its group_data/ applies)
      ...                 whatever else the playbooks need (the runtime release, ...)

  ``path`` is relative to ``bootstrap/`` (POSIX, no ``..``, not ``manifest.json`` itself). The host
  refuses the bundle if a listed file is missing or differs in size or sha256, or if a file is not
  listed (so the mirror deletes under ``bootstrap/`` what the manifest no longer lists).
  ``bootstrap_manifest_sha256`` (optional) pins the manifest itself in the launch template.
- **Host data** (:func:`host_data`) reaches the deploy as the data of the inventory group
  ``model_<slug>`` (``/etc/llmkit/inventory.py`` loads ``/etc/llmkit/host-data.json``), the same
  group and data :meth:`GpuFleet.inventory` returns for other inventories: runtime, model port,
  models with tag/quantization/context/concurrency, tensor parallelism (per instance type: the
  fallback types may have other GPU counts), log groups, metric names, and where the deploys
  fetch from: the model as ``source: mirror`` from ``models_mirror_url`` ``s3://<store>/``,
  verified against ``models/<slug>/manifest.json`` (the AWS CLI with the instance role, through
  the gateway endpoint), the Ollama and exporter releases from the bundle the user data keeps
  (``ollama_mirror_url`` / ``exporters_mirror_url`` ``file:///opt/llmkit/bootstrap``).
- **Instance role, one per model** (least privilege): ``s3:GetObject`` on ``models/<slug>/*`` and
  ``bootstrap/*`` of the model store only, ``s3:ListBucket`` only for those prefixes
  (``s3:prefix``), ``kms:Decrypt`` on the data key only through S3 (``kms:ViaService``) and only
  for this bucket's encryption context, ``logs:CreateLogStream``/``PutLogEvents`` on the given log
  groups only, ``cloudwatch:PutMetricData`` only into ``llmkit/Fleet`` (the action has no resource
  ARNs: ``Resource: "*"`` with a ``cloudwatch:namespace`` condition is the narrowest AWS allows),
  and completing lifecycle actions of its own group only (by the group's deterministic name; the
  ``*`` in that ARN is the group's id, unknown before the group exists). Session Manager comes from
  the AWS managed ``AmazonSSMManagedInstanceCore`` policy (note: it includes ``ssm:GetParameter(s)``
  on ``*``; keep secrets in Secrets Manager, never in plain SSM parameters).
- **Auto Scaling group** per model, named ``llmkit-<stack>-<slug>`` (the role's policy and the
  metric dimension need the name before the group exists), across the model subnets, 100 %
  On-Demand (GPU capacity), ``prioritized``: the sized instance type first, then up to
  :data:`llmkit.placement.MAX_FALLBACKS` fallbacks from the sizing's fitting choices (cheapest
  first): :attr:`llmkit.placement.Placement.instance_types`, the list the plan's ``models`` output,
  the host data and :meth:`GpuFleet.inventory` show too. A launch
  lifecycle hook (heartbeat ``llmkit:fleet.model_load_timeout_seconds``, default ABANDON) keeps a
  host out of service until its model server answers; ELB health checks; a warm pool of stopped,
  pre-initialised hosts (``llmkit:fleet.warm_pool``) that scale-in returns hosts to (warm pools
  with mixed instances policies: supported since Nov 2025; ``Hibernated`` is refused: hibernation
  needs at most 150 GiB of RAM and a root volume larger than it, and the GPU memory, that is the
  loaded model, does not survive it anyway); a rolling instance refresh that keeps
  ``llmkit:fleet.min_healthy_percent`` in service whenever the launch template changes (the group
  names the template's explicit latest version, so each new version starts a refresh). Desired
  capacity starts at ``replicas.start`` and then belongs to the scaling policies (Pulumi ignores
  later drift of it).
- **Scaling**: target tracking on the hosts' ``GPUUtilization`` (average over the group, target
  ``llmkit:fleet.gpu_target_utilization_percent``) and, for runtimes that expose a request queue
  (``components.metrics.RUNTIMES_WITH_QUEUE``), on ``QueuedRequests`` per host
  (``llmkit:fleet.queue_target_per_instance``).
- **Internal load balancer**: never internet-facing, in the model subnets, its own security group
  (``models_lb``: 443 from the app tier only), TLS 1.3 only (``llmkit.tls.ALB_TLS_POLICY``), invalid
  headers dropped, strictest desync mitigation, access logs to the log bucket under
  ``model-alb/``, the edge's idle timeout (long completions). Target groups speak HTTPS to the
  host's TLS terminator on the runtime's port (catalog), health-check ``/`` (Ollama answers
  "Ollama is running") or ``/health`` (vLLM), and balance by least outstanding requests (LLM
  requests vary by orders of magnitude in length).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from components import metrics
from components.base import Component
from components.edge import DEREGISTRATION_DELAY_SECONDS, IDLE_TIMEOUT_SECONDS
from components.model_store import BOOTSTRAP_PREFIX, MODELS_PREFIX
from llmkit.catalog import load_catalog
from llmkit.config import (
    AMI_ID,
    GPU_TARGET_UTILIZATION_PERCENT,
    MIN_HEALTHY_PERCENT,
    MODEL_LOAD_TIMEOUT_SECONDS,
    QUEUE_TARGET_PER_INSTANCE,
    ROOT_VOLUME_GIB,
    SSM_PARAMETER,
    WARM_POOL_MIN_SIZE,
    Fleet,
)
from llmkit.groups import model_group
from llmkit.sizing import GIB
from llmkit.store_layout import MANIFEST_NAME, model_slug
from llmkit.tls import ALB_TLS_POLICY

if TYPE_CHECKING:
    from llmkit.config import StackConfig
    from llmkit.placement import Placement

HTTPS_PORT = 443
# Where the user data keeps the verified bootstrap bundle (BUNDLE_DIR in the template).
HOST_BUNDLE_DIR = "/opt/llmkit/bootstrap"
ROOT_DEVICE = "/dev/sda1"  # the root device of Ubuntu AMIs (the Deep Learning Base AMI included)
MODEL_CACHE_DEVICE = "/dev/sdf"
MODEL_CACHE_IOPS = 4000
MODEL_CACHE_THROUGHPUT_MIBPS = 1000  # gp3 allows 0.25 MiB/s per provisioned IOPS
MODEL_CACHE_HEADROOM_GIB = 20
LIFECYCLE_HOOK = "llmkit-model-ready"
# Starts once the lifecycle hook completed, i.e. once the model server answers.
HEALTH_CHECK_GRACE_SECONDS = 300
INSTANCE_WARMUP_SECONDS = 300
MODEL_ALB_LOG_PREFIX = "model-alb"
SSM_MANAGED_POLICY = "AmazonSSMManagedInstanceCore"
HOST_DEPLOY = "site.py"  # in the bundle's playbooks/
HOST_DATA_SCHEMA = "llmkit.host-data/v1"
# What the load balancer probes, by runtime: Ollama answers "Ollama is running" on /.
HEALTH_CHECK_PATHS = {"ollama": "/", "vllm": "/health"}
GROUP_METRICS = (
    "GroupMinSize",
    "GroupMaxSize",
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupStandbyInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
    "WarmPoolDesiredCapacity",
    "WarmPoolWarmedCapacity",
    "WarmPoolPendingCapacity",
    "WarmPoolTerminatingCapacity",
    "WarmPoolTotalCapacity",
    "GroupAndWarmPoolDesiredCapacity",
    "GroupAndWarmPoolTotalCapacity",
)
WARM_POOL_STATES = ("Stopped", "Hibernated", "Running")
USER_DATA_TEMPLATE = Path(__file__).with_name("templates") / "model_host_user_data.sh"
USER_DATA_LIMIT_BYTES = 16 * 1024  # EC2's limit on user data before base64

_DEFAULTS = Fleet()  # llmkit:fleet's defaults
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LOG_GROUP_NAME = re.compile(r"[A-Za-z0-9_./#-]{1,512}")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]+")
_ACM_ARN = re.compile(r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+")
_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --- names -----------------------------------------------------------------------------------


def asg_name(stack: str, slug: str) -> str:
    """The Auto Scaling group's name, known before it exists: ``llmkit-<stack>-<slug>``."""
    return f"llmkit-{stack}-{slug}"


def inventory_group(slug: str) -> str:
    """The pyinfra inventory group of a model's hosts (a Python identifier): ``model_<slug>``."""
    return model_group(slug)


def target_group_name(stack: str, slug: str, port: int, protocol: str = "HTTPS") -> str:
    """At most 32 characters; the digest covers what forces a replacement, so one can be created first."""
    digest = hashlib.sha256(f"{stack}/{slug}/{protocol}/{port}/instance".encode()).hexdigest()[:8]
    return f"{slug[:23].rstrip('-')}-{digest}"


def image_id(ami_id: str | None, ssm_parameter: str) -> str:
    """The pinned AMI, or the SSM parameter that EC2 resolves at each launch."""
    return ami_id if ami_id else f"resolve:ssm:{ssm_parameter}"


def health_check_path(runtime: str) -> str:
    try:
        return HEALTH_CHECK_PATHS[runtime]
    except KeyError:
        raise ValueError(
            f"runtime {runtime!r} has no health check path; known: {', '.join(HEALTH_CHECK_PATHS)}"
        ) from None


def check_log_group_name(name: str) -> None:
    if not _LOG_GROUP_NAME.fullmatch(name):
        hint = " (give the group's name, not its ARN)" if name.startswith("arn:") else ""
        raise ValueError(f"{name!r} is not a CloudWatch Logs log group name{hint}")


def log_group_arn(*, partition: str, region: str, account_id: str, name: str) -> str:
    """A log group's ARN by its name (``arn:<partition>:logs:<region>:<account>:log-group:<name>``)."""
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{name}"


# --- sizing-derived values ---------------------------------------------------------------------


def instance_types(placement: Placement) -> list[str]:
    """The group's overrides: :attr:`Placement.instance_types`, also in the plan's ``models`` output.

    The sized type first, then up to :data:`llmkit.placement.MAX_FALLBACKS` more fitting types,
    cheapest first, each with its own tensor-parallel degree (:func:`tensor_parallel_by_type`).
    """
    return placement.instance_types


def tensor_parallel_by_type(placement: Placement, types: Sequence[str]) -> dict[str, int]:
    by_type = {c.instance_type: c.tensor_parallel for c in placement.sizing.choices}
    by_type[placement.choice.instance_type] = placement.choice.tensor_parallel
    return {t: by_type[t] for t in types}


def model_cache_gib(weights_bytes: int, configured: int | None = None) -> int:
    """``configured``, or room for the weights twice (a download beside the loaded copy) + 20 GiB."""
    if configured is not None:
        return configured
    return math.ceil(2 * weights_bytes / GIB) + MODEL_CACHE_HEADROOM_GIB


# --- plain documents ---------------------------------------------------------------------------


def host_data(
    placement: Placement,
    *,
    stack: str,
    region: str,
    runtime: str,
    bucket: str,
    log_groups: Mapping[str, str],
    cache_gib: int,
    lb_subnet_cidrs: Sequence[str],
    admin_cidrs: Sequence[str],
) -> dict[str, Any]:
    """What the host deploy needs to know about one model's hosts, as plain JSON values.

    ``lb_subnet_cidrs`` (the internal load balancer's subnets, whose node addresses send the
    traffic and the health checks) and ``admin_cidrs`` feed the hosts' own firewall
    (``playbooks/deploys/firewall.py``): ``gateway_hosts`` may reach the model port, the admin
    networks SSH. The security groups remain the gate in front of both.
    """
    catalog = load_catalog()
    model = catalog.model(placement.spec.name)
    slug = model_slug(model.name)
    types = instance_types(placement)
    group = asg_name(stack, slug)
    return {
        "schema": HOST_DATA_SCHEMA,
        "stack": stack,
        "region": region,
        "admin_cidrs": list(admin_cidrs),
        "gateway_hosts": list(lb_subnet_cidrs),
        "runtime": runtime,
        "model_port": catalog.runtime(runtime).port,
        # The internal load balancer sends no client certificate and checks no target certificate:
        # the host's TLS terminator makes its own; the security groups are the access control.
        "model_tls_mode": "self-signed-behind-alb",
        "health_path": health_check_path(runtime),
        # From the model store, verified against the mirror manifest `llmkit mirror push`
        # published there (the models deploy reads it with the AWS CLI and the instance role).
        "models_mirror_url": f"s3://{bucket}/",
        # The releases the bootstrap bundle carries (llmkit mirror bundle), where the user data
        # keeps it.
        "ollama_mirror_url": f"file://{HOST_BUNDLE_DIR}",
        "exporters_mirror_url": f"file://{HOST_BUNDLE_DIR}",
        "models": [
            {
                "name": model.name,
                "source": "mirror",
                "manifest": f"{MODELS_PREFIX}{slug}/{MANIFEST_NAME}",
                "slug": slug,
                "tag": model.ollama_tag if runtime == "ollama" else model.hf_repo,
                "hf_repo": model.hf_repo,
                "quantization": placement.spec.quantization,
                "context_length": placement.spec.context_length,
                "concurrency": placement.spec.concurrency,
            }
        ],
        "instance_type": placement.choice.instance_type,
        "instance_types": types,
        "tensor_parallel": placement.choice.tensor_parallel,
        "tensor_parallel_by_instance_type": tensor_parallel_by_type(placement, types),
        "mirror": f"s3://{bucket}/{MODELS_PREFIX}{slug}/",
        "bootstrap": f"s3://{bucket}/{BOOTSTRAP_PREFIX}",
        "model_cache": {"device_name": MODEL_CACHE_DEVICE, "size_gib": cache_gib},
        "log_groups": dict(log_groups),
        "metrics": {
            "namespace": metrics.NAMESPACE,
            "dimension": metrics.DIMENSION,
            "auto_scaling_group": group,
            "gpu_utilization": metrics.GPU_UTILIZATION,
            "queued_requests": metrics.QUEUED_REQUESTS if runtime in metrics.RUNTIMES_WITH_QUEUE else None,
        },
        "lifecycle": {"auto_scaling_group": group, "hook": LIFECYCLE_HOOK},
        # The hosts' own egress allow-list (playbooks/deploys/firewall.py) is off on AWS, said in
        # the ruleset: the model tier's egress gate here is its security group (443 to the VPC
        # endpoints and the S3 gateway endpoint's prefix list, nothing else) and its route tables
        # (no internet route). An allow-list on the host would need the region's S3 prefix list
        # entries, which an offline plan cannot know; without them the models deploy could not
        # read the model store.
        "egress_allow_any": True,
    }


def host_policy(
    *,
    slug: str,
    bucket_arn: str,
    data_key_arn: str,
    log_group_arns: Sequence[str],
    asg_arn: str,
    region: str,
    dns_suffix: str,
) -> dict[str, Any]:
    """The instance role's inline policy for one model's hosts (see the module doc)."""
    objects = [f"{bucket_arn}/{MODELS_PREFIX}{slug}/*", f"{bucket_arn}/{BOOTSTRAP_PREFIX}*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadOwnModelAndBootstrap",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": objects,
            },
            {
                "Sid": "ListOwnModelAndBootstrap",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {
                    "StringLike": {"s3:prefix": [f"{MODELS_PREFIX}{slug}/*", f"{BOOTSTRAP_PREFIX}*"]}
                },
            },
            {
                # With the S3 bucket key the encryption context is the bucket's ARN, without it
                # the object's: both are listed, nothing else.
                "Sid": "DecryptModelStoreThroughS3",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": data_key_arn,
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"s3.{region}.{dns_suffix}"},
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, *objects]},
                },
            },
            {
                # ":log-stream:*": the streams are named by the hosts (instance ids) at run time.
                "Sid": "WriteOwnLogGroups",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [r for arn in log_group_arns for r in (arn, f"{arn}:log-stream:*")],
            },
            {
                # PutMetricData supports no resource ARNs: "*" narrowed by the namespace condition.
                "Sid": "PublishFleetMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": metrics.NAMESPACE}},
            },
            {
                "Sid": "CompleteOwnLaunch",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:RecordLifecycleActionHeartbeat",
                ],
                "Resource": asg_arn,
            },
        ],
    }


def asg_arn_pattern(*, partition: str, region: str, account_id: str, name: str) -> str:
    """The group's ARN with ``*`` for its id (a UUID AWS assigns at creation)."""
    return f"arn:{partition}:autoscaling:{region}:{account_id}:autoScalingGroup:*:autoScalingGroupName/{name}"


ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


# "@@{name}" only (no "@@name" form): bash's own $VAR and ${VAR} pass through untouched.
_PLACEHOLDER = r"""
@@(?:
  (?P<escaped>@@) |
  \{(?P<braced>[a-z_][a-z0-9_]*)\} |
  (?P<named>(?!)) |
  (?P<invalid>)
)
"""


class _ScriptTemplate(string.Template):
    """``@@{name}`` placeholders, so the shell's own ``$VAR`` and ``${VAR}`` pass through."""

    delimiter = "@@"
    pattern = _PLACEHOLDER  # type: ignore[assignment]  # a str, compiled by Template's metaclass


def render_user_data(
    data: Mapping[str, Any],
    *,
    s3_endpoint: str,
    ready_timeout_seconds: int,
    manifest_sha256: str = "",
) -> str:
    """The user data script for hosts with ``data`` (:func:`host_data`), as text."""
    if manifest_sha256 and not _SHA256.fullmatch(manifest_sha256):
        raise ValueError(f"bootstrap_manifest_sha256 must be 64 lowercase hex digits: {manifest_sha256!r}")
    slug = data["models"][0]["slug"]
    values = {
        "region": data["region"],
        "s3_endpoint": s3_endpoint,
        "bootstrap_url": data["bootstrap"],
        "manifest_sha256": manifest_sha256,
        "asg_name": data["lifecycle"]["auto_scaling_group"],
        "hook_name": data["lifecycle"]["hook"],
        "model_port": str(data["model_port"]),
        "health_path": data["health_path"],
        "ready_timeout_seconds": str(ready_timeout_seconds),
        "inventory_group": inventory_group(slug),
        "host_deploy": HOST_DEPLOY,
    }
    quoted = {key: shlex.quote(value) for key, value in values.items()}
    # Raw, inside a quoted heredoc: JSON never has a line equal to the heredoc's delimiter.
    quoted["host_data_json"] = json.dumps(data, indent=2, sort_keys=True)
    script = _ScriptTemplate(USER_DATA_TEMPLATE.read_text(encoding="utf-8")).substitute(quoted)
    if len(script.encode()) > USER_DATA_LIMIT_BYTES:
        raise ValueError(f"the user data of {slug} is {len(script.encode())} bytes, over EC2's 16 KiB")
    return script


# --- the component -----------------------------------------------------------------------------


@dataclass
class GpuFleetArgs:
    """What :class:`GpuFleet` needs. :meth:`from_config` reads the ``llmkit:fleet`` section.

    Resource inputs: ``vpc_id`` and ``subnet_ids`` (the model tier's, one per AZ),
    ``host_security_group_id`` (the model group) and ``lb_security_group_id`` (the models_lb
    group), the model store's ``model_bucket_name``/``model_bucket_arn``, ``data_key_arn`` (EBS
    and the model store), ``log_group_names`` (purpose -> log group name, e.g.
    ``{"model-server": "/llmkit/<stack>/model-server"}``: the hosts write there and nowhere else;
    names, not ARNs: the hosts need the names, and the ARNs follow from them),
    ``access_log_bucket`` (the log bucket; the ALB writes under ``access_log_prefix``),
    ``certificate_arn`` (ACM, the internal listener's).
    """

    stack: str
    region: str
    runtime: str
    placements: Sequence[Placement]
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    host_security_group_id: pulumi.Input[str]
    lb_security_group_id: pulumi.Input[str]
    model_bucket_name: pulumi.Input[str]
    model_bucket_arn: pulumi.Input[str]
    data_key_arn: pulumi.Input[str]
    log_group_names: Mapping[str, pulumi.Input[str]]
    access_log_bucket: pulumi.Input[str]
    certificate_arn: pulumi.Input[str]
    deletion_protection: bool
    # The defaults are the config schema's (llmkit.config.Fleet), not a second copy.
    ami_id: str | None = _DEFAULTS.ami_id
    ami_ssm_parameter: str = _DEFAULTS.ami_ssm_parameter
    root_volume_gib: int = _DEFAULTS.root_volume_gib
    model_cache_gib: int | None = _DEFAULTS.model_cache_gib
    gpu_target_utilization_percent: int = _DEFAULTS.gpu_target_utilization_percent
    queue_target_per_instance: int = _DEFAULTS.queue_target_per_instance
    warm_pool_min_size: int = _DEFAULTS.warm_pool.min_size
    warm_pool_state: str = _DEFAULTS.warm_pool.state
    model_load_timeout_seconds: int = _DEFAULTS.model_load_timeout_seconds
    min_healthy_percent: int = _DEFAULTS.min_healthy_percent
    # The sha256 of bootstrap/manifest.json, pinned into the user data; None: not pinned.
    bootstrap_manifest_sha256: pulumi.Input[str] | None = None
    access_log_prefix: str = MODEL_ALB_LOG_PREFIX
    # None: the account of the caller (aws.get_caller_identity).
    account_id: pulumi.Input[str] | None = None
    # Resources the groups launch after, e.g. whatever puts the bootstrap bundle in the bucket:
    # hosts launched before it is there abandon their launch, and Auto Scaling tries again.
    launch_after: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    # The hosts' own firewall: the model port from the model subnets (where the internal load
    # balancer's nodes are), SSH from these networks (the VPC: a bastion; Session Manager needs
    # no port). from_config fills both from the network plan.
    lb_subnet_cidrs: Sequence[str] = ()
    admin_cidrs: Sequence[str] = ()
    # The Auto Scaling service-linked role the groups launch with; it must be allowed to use the
    # data key (KmsKeysArgs.service_linked_role_arns) for the encrypted volumes. None: AWS's
    # default AWSServiceRoleForAutoScaling.
    service_linked_role_arn: pulumi.Input[str] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        placements: Sequence[Placement],
        *,
        vpc_id: pulumi.Input[str],
        subnet_ids: Sequence[pulumi.Input[str]],
        host_security_group_id: pulumi.Input[str],
        lb_security_group_id: pulumi.Input[str],
        model_bucket_name: pulumi.Input[str],
        model_bucket_arn: pulumi.Input[str],
        data_key_arn: pulumi.Input[str],
        log_group_names: Mapping[str, pulumi.Input[str]],
        access_log_bucket: pulumi.Input[str],
        deletion_protection: bool | None = None,
        **overrides: Any,
    ) -> GpuFleetArgs:
        """Args from the stack's config and the placements, plus the other components' outputs.

        ``deletion_protection`` defaults to ``llmkit:endpoint.deletion_protection``; the
        certificate is ``llmkit:fleet.tls_certificate_arn``, else the endpoint's.
        """
        fleet = cfg.fleet
        values: dict[str, Any] = {
            "stack": cfg.stack or pulumi.get_stack(),
            "region": cfg.region,
            "lb_subnet_cidrs": [str(n) for n in cfg.subnet_plan()["model"]],
            "admin_cidrs": [str(cfg.network.vpc_cidr)],
            "runtime": cfg.runtime,
            "placements": list(placements),
            "vpc_id": vpc_id,
            "subnet_ids": subnet_ids,
            "host_security_group_id": host_security_group_id,
            "lb_security_group_id": lb_security_group_id,
            "model_bucket_name": model_bucket_name,
            "model_bucket_arn": model_bucket_arn,
            "data_key_arn": data_key_arn,
            "log_group_names": log_group_names,
            "access_log_bucket": access_log_bucket,
            "certificate_arn": fleet.tls_certificate_arn or cfg.endpoint.tls_certificate_arn,
            "deletion_protection": (
                cfg.endpoint.deletion_protection if deletion_protection is None else deletion_protection
            ),
            "ami_id": fleet.ami_id,
            "ami_ssm_parameter": fleet.ami_ssm_parameter,
            "root_volume_gib": fleet.root_volume_gib,
            "model_cache_gib": fleet.model_cache_gib,
            "gpu_target_utilization_percent": fleet.gpu_target_utilization_percent,
            "queue_target_per_instance": fleet.queue_target_per_instance,
            "warm_pool_min_size": fleet.warm_pool.min_size,
            "warm_pool_state": fleet.warm_pool.state,
            "model_load_timeout_seconds": fleet.model_load_timeout_seconds,
            "min_healthy_percent": fleet.min_healthy_percent,
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})

    def slugs(self) -> dict[str, Placement]:
        """Slug -> placement, in config order."""
        return {model_slug(p.spec.name): p for p in self.placements}

    def cache_gib(self, placement: Placement) -> int:
        return model_cache_gib(placement.sizing.breakdown.weights_bytes, self.model_cache_gib)

    def _validate_placements(self) -> None:
        """One slug per model; a cache that holds the weights; a choice the sizing offered."""
        seen: dict[str, str] = {}
        for placement in self.placements:
            slug = model_slug(placement.spec.name)
            if slug in seen:
                raise ValueError(
                    f"models {seen[slug]!r} and {placement.spec.name!r} share the slug {slug!r}: one "
                    "Auto Scaling group, target group and host name per model"
                )
            seen[slug] = placement.spec.name
            weights_gib = math.ceil(placement.sizing.breakdown.weights_bytes / GIB)
            if self.cache_gib(placement) < weights_gib:
                raise ValueError(
                    f"model_cache_gib {self.model_cache_gib} cannot hold the {weights_gib} GiB of weights "
                    f"of {placement.spec.name} ({placement.spec.quantization}); raise "
                    "llmkit:fleet.model_cache_gib or leave it null"
                )
            if not placement.sizing.choices or placement.choice not in placement.sizing.choices:
                raise ValueError(f"{placement.spec.name}: the placement's choice is not a sizing choice")

    def validate(self) -> None:
        """Raise ValueError for args that would make an unsafe or undeployable fleet."""
        if not self.placements:
            raise ValueError("GpuFleetArgs.placements is empty: there is no model to serve")
        if not _STACK.fullmatch(self.stack):
            raise ValueError(f"stack {self.stack!r} cannot be part of a group name")
        catalog = load_catalog()
        if self.runtime not in catalog.runtimes:
            raise ValueError(f"runtime {self.runtime!r} is not in the catalog: {', '.join(catalog.runtimes)}")
        health_check_path(self.runtime)
        self._validate_placements()
        if isinstance(self.subnet_ids, Sequence) and len(self.subnet_ids) < 2:
            raise ValueError("an application load balancer needs subnet_ids in at least two AZs")
        if self.ami_id is not None and not AMI_ID.fullmatch(self.ami_id):
            raise ValueError(f"ami_id {self.ami_id!r} is not an AMI id (ami-<8 or 17 hex>)")
        if self.ami_id is None and not SSM_PARAMETER.fullmatch(self.ami_ssm_parameter):
            raise ValueError(f"ami_ssm_parameter {self.ami_ssm_parameter!r} is not an SSM parameter path")
        if not self.log_group_names:
            raise ValueError("log_group_names is empty: the hosts need a log group to write to")
        for key in ("lb_subnet_cidrs", "admin_cidrs"):
            if not getattr(self, key):
                raise ValueError(
                    f"{key} is empty: the hosts' firewall would close "
                    f"{'the model port to the load balancer' if key == 'lb_subnet_cidrs' else 'SSH to all'} "
                    "(the deploy refuses to run)"
                )
            for cidr in getattr(self, key):
                ipaddress.ip_network(cidr)
        for name in self.log_group_names.values():
            if isinstance(name, str):
                check_log_group_name(name)
        if isinstance(self.model_bucket_name, str) and not _BUCKET.fullmatch(self.model_bucket_name):
            raise ValueError(f"model_bucket_name {self.model_bucket_name!r} is not an S3 bucket name")
        if isinstance(self.data_key_arn, str) and not _KMS_KEY_ARN.fullmatch(self.data_key_arn):
            raise ValueError(
                f"data_key_arn {self.data_key_arn!r} is not a KMS key ARN: EBS and the model store need "
                "the data key's ARN (not an alias)"
            )
        if isinstance(self.certificate_arn, str) and not _ACM_ARN.fullmatch(self.certificate_arn):
            raise ValueError(f"certificate_arn {self.certificate_arn!r} is not an ACM certificate ARN")
        if isinstance(self.bootstrap_manifest_sha256, str) and not _SHA256.fullmatch(
            self.bootstrap_manifest_sha256
        ):
            raise ValueError(
                "bootstrap_manifest_sha256 must be 64 lowercase hex digits: "
                f"{self.bootstrap_manifest_sha256!r}"
            )
        if self.warm_pool_state not in WARM_POOL_STATES:
            raise ValueError(f"warm_pool_state must be one of {', '.join(WARM_POOL_STATES)}")
        if self.warm_pool_state == "Hibernated":
            raise ValueError(
                "warm_pool_state Hibernated is not supported for GPU hosts (llmkit:fleet.warm_pool.state): "
                "hibernation needs at most 150 GiB of RAM and a root volume larger than it, and the "
                "loaded model in GPU memory does not survive it; use Stopped"
            )
        checks = [
            ("model_load_timeout_seconds", self.model_load_timeout_seconds, *MODEL_LOAD_TIMEOUT_SECONDS),
            ("min_healthy_percent", self.min_healthy_percent, *MIN_HEALTHY_PERCENT),
            (
                "gpu_target_utilization_percent",
                self.gpu_target_utilization_percent,
                *GPU_TARGET_UTILIZATION_PERCENT,
            ),
            ("queue_target_per_instance", self.queue_target_per_instance, *QUEUE_TARGET_PER_INSTANCE),
            ("warm_pool_min_size", self.warm_pool_min_size, *WARM_POOL_MIN_SIZE),
            ("root_volume_gib", self.root_volume_gib, *ROOT_VOLUME_GIB),
        ]
        for key, value, low, high in checks:
            if not low <= value <= high:
                raise ValueError(f"{key} must be {low}..{high}, got {value}")


class GpuFleet(Component):
    """Per model: role, launch template, Auto Scaling group, scaling, target group; one internal ALB."""

    TYPE = "llmkit:aws:GpuFleet"

    def __init__(self, name: str, args: GpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        if len(f"{name}-alb") + 8 > 32:
            raise ValueError(f"GpuFleet name {name!r} is too long: its load balancer's auto-name needs <= 32")
        super().__init__(name, opts)
        self.args = args
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        self._partition = aws.get_partition_output(opts=invoke_opts)
        self._account_id: pulumi.Input[str] = self.account_id(args.account_id)
        self._runtime_port: int = load_catalog().runtime(args.runtime).port
        self.placements: dict[str, Placement] = args.slugs()
        self._log_group_names = pulumi.Output.all(**args.log_group_names)

        self._create_load_balancer()

        self.target_groups: dict[str, aws.lb.TargetGroup] = {}
        self.listener_rules: dict[str, aws.lb.ListenerRule] = {}
        self.roles: dict[str, aws.iam.Role] = {}
        self.role_policies: dict[str, aws.iam.RolePolicy] = {}
        self.ssm_attachments: dict[str, aws.iam.RolePolicyAttachment] = {}
        self.instance_profiles: dict[str, aws.iam.InstanceProfile] = {}
        self.launch_templates: dict[str, aws.ec2.LaunchTemplate] = {}
        self.groups: dict[str, aws.autoscaling.Group] = {}
        self.scaling_policies: dict[str, dict[str, aws.autoscaling.Policy]] = {}
        self.host_headers: dict[str, str] = {}
        self._host_data: dict[str, pulumi.Output[dict[str, Any]]] = {}

        for priority, (slug, placement) in enumerate(self.placements.items(), start=1):
            self._create_model(priority, slug, placement)

        self.asg_names: dict[str, pulumi.Output[str]] = {s: g.name for s, g in self.groups.items()}
        self.target_group_arns: dict[str, pulumi.Output[str]] = {
            s: t.arn for s, t in self.target_groups.items()
        }
        self.target_group_arn_suffixes: dict[str, pulumi.Output[str]] = {
            s: t.arn_suffix for s, t in self.target_groups.items()
        }
        self.role_arns: dict[str, pulumi.Output[str]] = {s: r.arn for s, r in self.roles.items()}
        self.launch_template_ids: dict[str, pulumi.Output[str]] = {
            s: t.id for s, t in self.launch_templates.items()
        }
        self.register_outputs(
            {
                "dns_name": self.dns_name,
                "lb_arn_suffix": self.lb_arn_suffix,
                "asg_names": self.asg_names,
                "target_group_arns": self.target_group_arns,
                "target_group_arn_suffixes": self.target_group_arn_suffixes,
                "role_arns": self.role_arns,
                "launch_template_ids": self.launch_template_ids,
            }
        )

    # --- the internal load balancer ------------------------------------------------------------
    def _create_load_balancer(self) -> None:
        args = self.args
        self.load_balancer = aws.lb.LoadBalancer(
            self.child_name("alb"),
            load_balancer_type="application",
            internal=True,
            subnets=list(args.subnet_ids),
            security_groups=[args.lb_security_group_id],
            ip_address_type="ipv4",
            drop_invalid_header_fields=True,
            desync_mitigation_mode="strictest",
            enable_deletion_protection=args.deletion_protection,
            idle_timeout=IDLE_TIMEOUT_SECONDS,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                bucket=args.access_log_bucket, prefix=args.access_log_prefix, enabled=True
            ),
            opts=self.child_opts(),
        )
        self.dns_name: pulumi.Output[str] = self.load_balancer.dns_name
        self.lb_arn_suffix: pulumi.Output[str] = self.load_balancer.arn_suffix
        self.https_listener = aws.lb.Listener(
            self.child_name("https"),
            load_balancer_arn=self.load_balancer.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=ALB_TLS_POLICY,
            certificate_arn=args.certificate_arn,
            routing_http_response_server_enabled=False,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="fixed-response",
                    fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                        content_type="text/plain", message_body="no such model\n", status_code="404"
                    ),
                )
            ],
            opts=self.child_opts(),
        )

    # --- per model -----------------------------------------------------------------------------
    def _create_model(self, priority: int, slug: str, placement: Placement) -> None:
        """One model's route, identity, launch template, group and scaling, in that order."""
        args = self.args
        group_name = asg_name(args.stack, slug)
        tags = {
            **args.tags,
            "Name": group_name,
            "llmkit:model": placement.spec.name,
            "llmkit:stack": args.stack,
        }
        target_group = self._create_routing(priority, slug, placement)
        profile = self._create_identity(slug, placement, group_name)
        template = self._create_launch_template(slug, placement, tags, profile)
        group = self._create_group(slug, placement, group_name, tags, template, target_group)
        self._create_scaling(slug, group_name, group)

    # --- routing -------------------------------------------------------------------------------
    def _create_routing(self, priority: int, slug: str, placement: Placement) -> aws.lb.TargetGroup:
        args = self.args
        target_group = aws.lb.TargetGroup(
            self.child_name(f"tg-{slug}"),
            name=target_group_name(args.stack, slug, self._runtime_port),
            vpc_id=args.vpc_id,
            target_type="instance",
            protocol="HTTPS",
            port=self._runtime_port,
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            load_balancing_algorithm_type="least_outstanding_requests",
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol="HTTPS",
                port="traffic-port",
                path=health_check_path(args.runtime),
                matcher="200",
                interval=15,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=3,
            ),
            tags={"llmkit:model": placement.spec.name},
            opts=self.child_opts(),
        )
        self.target_groups[slug] = target_group
        self.host_headers[slug] = f"{slug}.*"
        self.listener_rules[slug] = aws.lb.ListenerRule(
            self.child_name(f"route-{slug}"),
            listener_arn=self.https_listener.arn,
            priority=priority * 10,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    host_header=aws.lb.ListenerRuleConditionHostHeaderArgs(values=[self.host_headers[slug]])
                )
            ],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=target_group.arn)],
            opts=self.child_opts(),
        )
        return target_group

    # --- identity ------------------------------------------------------------------------------
    def _create_identity(self, slug: str, placement: Placement, group_name: str) -> aws.iam.InstanceProfile:
        args = self.args
        partition = self._partition
        role = aws.iam.Role(
            self.child_name(f"host-{slug}"),
            description=f"llmkit {args.stack} GPU hosts serving {placement.spec.name}",
            assume_role_policy=ASSUME_ROLE_POLICY,
            opts=self.child_opts(),
        )
        self.roles[slug] = role

        def policy_json(values: dict[str, Any]) -> str:
            # Only builds a string from resolved values; no resources are created in apply.
            document = host_policy(
                slug=slug,
                bucket_arn=values["bucket_arn"],
                data_key_arn=values["data_key_arn"],
                log_group_arns=[
                    log_group_arn(
                        partition=values["partition"],
                        region=args.region,
                        account_id=values["account_id"],
                        name=name,
                    )
                    for name in values["log_group_names"].values()
                ],
                asg_arn=asg_arn_pattern(
                    partition=values["partition"],
                    region=args.region,
                    account_id=values["account_id"],
                    name=group_name,
                ),
                region=args.region,
                dns_suffix=values["dns_suffix"],
            )
            return json.dumps(document)

        self.role_policies[slug] = aws.iam.RolePolicy(
            self.child_name(f"host-{slug}-access"),
            role=role.id,
            policy=pulumi.Output.all(
                bucket_arn=args.model_bucket_arn,
                data_key_arn=args.data_key_arn,
                log_group_names=self._log_group_names,
                partition=partition.partition,
                dns_suffix=partition.dns_suffix,
                account_id=self._account_id,
            ).apply(policy_json),
            opts=self.child_opts(),
        )
        self.ssm_attachments[slug] = aws.iam.RolePolicyAttachment(
            self.child_name(f"host-{slug}-ssm"),
            role=role.name,
            policy_arn=partition.partition.apply(lambda p: f"arn:{p}:iam::aws:policy/{SSM_MANAGED_POLICY}"),
            opts=self.child_opts(),
        )
        profile = aws.iam.InstanceProfile(
            self.child_name(f"host-{slug}-profile"),
            role=role.name,
            opts=self.child_opts(),
        )
        self.instance_profiles[slug] = profile
        return profile

    # --- launch template -----------------------------------------------------------------------
    def _create_launch_template(
        self, slug: str, placement: Placement, tags: dict[str, str], profile: aws.iam.InstanceProfile
    ) -> aws.ec2.LaunchTemplate:
        args = self.args
        cache_gib = args.cache_gib(placement)

        def host_data_of(values: dict[str, Any]) -> dict[str, Any]:
            return host_data(
                placement,
                stack=args.stack,
                region=args.region,
                runtime=args.runtime,
                bucket=values["bucket"],
                log_groups=values["log_groups"],
                cache_gib=cache_gib,
                lb_subnet_cidrs=args.lb_subnet_cidrs,
                admin_cidrs=args.admin_cidrs,
            )

        data = pulumi.Output.all(bucket=args.model_bucket_name, log_groups=self._log_group_names).apply(
            host_data_of
        )
        self._host_data[slug] = data

        def user_data(values: dict[str, Any]) -> str:
            script = render_user_data(
                values["data"],
                s3_endpoint=f"https://s3.{args.region}.{values['dns_suffix']}",
                ready_timeout_seconds=args.model_load_timeout_seconds,
                manifest_sha256=values["manifest"] or "",
            )
            return base64.b64encode(script.encode()).decode()

        template = aws.ec2.LaunchTemplate(
            self.child_name(f"lt-{slug}"),
            description=f"llmkit {args.stack} GPU hosts serving {placement.spec.name}",
            image_id=image_id(args.ami_id, args.ami_ssm_parameter),
            instance_type=placement.choice.instance_type,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                http_protocol_ipv6="disabled",
                instance_metadata_tags="disabled",
            ),
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0,
                    associate_public_ip_address="false",
                    delete_on_termination="true",
                    security_groups=[args.host_security_group_id],
                )
            ],
            block_device_mappings=_block_devices(args, cache_gib),
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags)
                for kind in ("instance", "volume", "network-interface")
            ],
            user_data=pulumi.Output.all(
                data=data,
                dns_suffix=self._partition.dns_suffix,
                manifest=args.bootstrap_manifest_sha256,
            ).apply(user_data),
            update_default_version=True,
            opts=self.child_opts(),
        )
        self.launch_templates[slug] = template
        return template

    # --- the group -----------------------------------------------------------------------------
    def _create_group(
        self,
        slug: str,
        placement: Placement,
        group_name: str,
        tags: dict[str, str],
        template: aws.ec2.LaunchTemplate,
        target_group: aws.lb.TargetGroup,
    ) -> aws.autoscaling.Group:
        args = self.args
        spec = placement.spec
        group = aws.autoscaling.Group(
            self.child_name(f"asg-{slug}"),
            name=group_name,
            min_size=spec.replicas.min,
            max_size=spec.replicas.max,
            desired_capacity=spec.replicas.start,
            vpc_zone_identifiers=list(args.subnet_ids),
            mixed_instances_policy=_mixed_instances_policy(placement, template),
            service_linked_role_arn=args.service_linked_role_arn,
            health_check_type="ELB",
            health_check_grace_period=HEALTH_CHECK_GRACE_SECONDS,
            default_instance_warmup=INSTANCE_WARMUP_SECONDS,
            target_group_arns=[target_group.arn],
            initial_lifecycle_hooks=[
                aws.autoscaling.GroupInitialLifecycleHookArgs(
                    name=LIFECYCLE_HOOK,
                    lifecycle_transition="autoscaling:EC2_INSTANCE_LAUNCHING",
                    heartbeat_timeout=args.model_load_timeout_seconds,
                    default_result="ABANDON",
                )
            ],
            warm_pool=aws.autoscaling.GroupWarmPoolArgs(
                pool_state=args.warm_pool_state,
                min_size=args.warm_pool_min_size,
                instance_reuse_policy=aws.autoscaling.GroupWarmPoolInstanceReusePolicyArgs(
                    reuse_on_scale_in=True
                ),
            ),
            instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
                strategy="Rolling",
                preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(
                    min_healthy_percentage=args.min_healthy_percent,
                    skip_matching=True,
                ),
            ),
            enabled_metrics=[aws.autoscaling.Metric(m) for m in GROUP_METRICS],
            metrics_granularity="1Minute",
            # `pulumi up` waits for the hosts to load the model and pass the health checks.
            wait_for_capacity_timeout=f"{args.model_load_timeout_seconds + HEALTH_CHECK_GRACE_SECONDS}s",
            tags=[
                aws.autoscaling.GroupTagArgs(key=key, value=value, propagate_at_launch=True)
                for key, value in sorted(tags.items())
            ],
            opts=self.child_opts(
                # The hosts complete their lifecycle action with the role's policy: it exists first.
                # A target group joins a group only once a listener routes to it.
                depends_on=[
                    self.role_policies[slug],
                    self.ssm_attachments[slug],
                    self.listener_rules[slug],
                    *args.launch_after,
                ],
                # Desired capacity belongs to the scaling policies once the group exists.
                ignore_changes=["desiredCapacity"],
            ),
        )
        self.groups[slug] = group
        return group

    # --- scaling -------------------------------------------------------------------------------
    def _create_scaling(self, slug: str, group_name: str, group: aws.autoscaling.Group) -> None:
        args = self.args
        policies = {
            "gpu": aws.autoscaling.Policy(
                self.child_name(f"scale-{slug}-gpu"),
                autoscaling_group_name=group.name,
                policy_type="TargetTrackingScaling",
                estimated_instance_warmup=INSTANCE_WARMUP_SECONDS,
                target_tracking_configuration=_target_tracking(
                    metrics.GPU_UTILIZATION, group_name, args.gpu_target_utilization_percent
                ),
                opts=self.child_opts(),
            )
        }
        if args.runtime in metrics.RUNTIMES_WITH_QUEUE:
            policies["queue"] = aws.autoscaling.Policy(
                self.child_name(f"scale-{slug}-queue"),
                autoscaling_group_name=group.name,
                policy_type="TargetTrackingScaling",
                estimated_instance_warmup=INSTANCE_WARMUP_SECONDS,
                target_tracking_configuration=_target_tracking(
                    metrics.QUEUED_REQUESTS, group_name, args.queue_target_per_instance
                ),
                opts=self.child_opts(),
            )
        self.scaling_policies[slug] = policies

    def inventory(self) -> pulumi.Output[dict[str, Any]]:
        """The hosts' pyinfra groups and their data: ``{"model_<slug>": {"data": {...}}}``.

        The data is :func:`host_data`, exactly what the user data writes to
        ``/etc/llmkit/host-data.json`` and hands to the deploy as the group's data.
        """
        groups = {inventory_group(slug): data for slug, data in self._host_data.items()}
        return pulumi.Output.all(**groups).apply(
            lambda resolved: {group: {"data": data} for group, data in resolved.items()}
        )


def _block_devices(args: GpuFleetArgs, cache_gib: int) -> list[aws.ec2.LaunchTemplateBlockDeviceMappingArgs]:
    """The root volume and the model cache volume, both encrypted with the data key."""
    return [
        aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
            device_name=ROOT_DEVICE,
            ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                volume_size=args.root_volume_gib,
                volume_type="gp3",
                encrypted="true",
                kms_key_id=args.data_key_arn,
                delete_on_termination="true",
            ),
        ),
        aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
            device_name=MODEL_CACHE_DEVICE,
            ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                volume_size=cache_gib,
                volume_type="gp3",
                iops=MODEL_CACHE_IOPS,
                throughput=MODEL_CACHE_THROUGHPUT_MIBPS,
                encrypted="true",
                kms_key_id=args.data_key_arn,
                delete_on_termination="true",
            ),
        ),
    ]


def _mixed_instances_policy(
    placement: Placement, template: aws.ec2.LaunchTemplate
) -> aws.autoscaling.GroupMixedInstancesPolicyArgs:
    """On-demand only, the placement's instance types in order, the template's latest version."""
    return aws.autoscaling.GroupMixedInstancesPolicyArgs(
        instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
            on_demand_allocation_strategy="prioritized",
            on_demand_base_capacity=0,
            on_demand_percentage_above_base_capacity=100,
        ),
        launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
            launch_template_specification=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                launch_template_id=template.id,
                # An explicit version: each new template version starts a refresh.
                version=template.latest_version.apply(_version),
            ),
            overrides=[
                aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t)
                for t in instance_types(placement)
            ],
        ),
    )


def _version(version: int | None) -> str | None:
    """A launch template version as the group names it (the mock runtime may not report one)."""
    return None if version is None else str(version)


def _target_tracking(
    metric: str, group_name: str, target: float
) -> aws.autoscaling.PolicyTargetTrackingConfigurationArgs:
    """Target tracking on a host metric averaged over the group's hosts."""
    return aws.autoscaling.PolicyTargetTrackingConfigurationArgs(
        target_value=target,
        customized_metric_specification=aws.autoscaling.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationArgs(
            namespace=metrics.NAMESPACE,
            metric_name=metric,
            statistic="Average",
            metric_dimensions=[
                aws.autoscaling.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricDimensionArgs(
                    name=metrics.DIMENSION, value=group_name
                )
            ],
        ),
    )
