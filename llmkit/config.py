"""The stack configuration schema: one typed, validated model of everything a stack sets.

A stack is a Pulumi stack file ``stacks/Pulumi.<stack>.yaml`` whose ``config:`` mapping holds
``aws:region`` (read from there because pulumi-aws reads it too) and llmkit's own keys
``llmkit:<key>``. Keys of other namespaces belong to their providers and are ignored here.

Every problem is reported as a :class:`~llmkit.errors.ConfigError` that names the key path as
the user writes it (``llmkit:models[0].name``), the bad value and what is accepted; all the
problems of one stack are raised together as :class:`~llmkit.errors.ConfigErrors`.
Models, quantizations, runtimes and instance types come from :func:`llmkit.catalog.load_catalog`.
"""

from __future__ import annotations

import json
import re
import stat
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from llmkit.catalog import DEFAULT_RUNTIME, Model, Runtime, load_catalog
from llmkit.errors import ConfigError, ConfigErrors, quoted

NAMESPACE = "llmkit"
REGION_KEY = "aws:region"
STACK_FILE = re.compile(r"^Pulumi\.(?P<stack>[^/]+)\.yaml$")

PRIVATE_RANGES = tuple(IPv4Network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
AWS_SUBNET_PREFIXES = (16, 28)  # AWS accepts VPC and subnet CIDR blocks from /16 to /28
TIERS = ("dmz", "app", "model", "data")
# Subnets of the inspected egress path, carved only with llmkit:firewall.network_firewall: true:
# "firewall" holds the Network Firewall's endpoints, "nat" the NAT gateways (public, like the dmz).
EGRESS_SUBNETS = ("nat", "firewall")
LOG_RETENTION_DAYS = (180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
DATA_CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
REQUIRED_TAGS = {
    "owner": "a non-empty string naming the owning team",
    "environment": "a non-empty string naming the environment (e.g. the stack name)",
    "data-classification": f"one of: {', '.join(DATA_CLASSIFICATIONS)}",
}
_AWS_TAG = "a key of 1..128 characters not starting with aws:, and a value of at most 256 characters"
# Ports the data tier serves to the app tier (HTTPS APIs, PostgreSQL): security groups and
# network ACLs both read this one tuple.
DATA_PORTS = (443, 5432)
# The port the app tier (the gateway) listens on unless llmkit:firewall.app_port says otherwise.
DEFAULT_APP_PORT = 8443

# The hook for secrets: full key paths (e.g. "llmkit:endpoint.api_key") whose value may be a
# Pulumi secret. No key is secret today, so a `secure:` value anywhere under llmkit: is refused.
SECRET_KEYS: frozenset[str] = frozenset()

# Limits on a YAML file that a user hands the kit (stack files, Pulumi.yaml, --gateway-config): a
# stack file is a few kilobytes and a few hundred nodes. A YAML alias bomb ("billion laughs") of 2 KB
# expands to billions of nodes; it is refused from its composed node graph, before it is built.
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_NODES = 20_000  # nodes of the document once every alias is expanded
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 64

# The stack's name is part of resource names (components/); the strictest of their rules applies to
# it: S3 bucket names and DNS labels take lowercase letters, digits and "-", RDS identifiers and
# CloudTrail trails no "--" and no "-" at either end. Each entry: what, its name with the stack in it,
# and the most characters AWS (or Pulumi) accepts. ``{account}`` is an account id, 12 digits.
STACK_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
STACK_NAME_USES: tuple[tuple[str, str, int], ...] = (
    ("the model store's S3 bucket", "llmkit-{stack}-models-{account}-{region}", 63),
    ("the Auto Scaling service-linked role", "AWSServiceRoleForAutoScaling_llmkit-{stack}", 64),
    ("the gateway's RDS instance identifier", "llmkit-{stack}-gateway", 63),
    ("the key rotation Lambda function", "llmkit-{stack}-rotate-api-key", 64),
    ("the models' private DNS zone", "models.{stack}.llmkit.internal", 253),
    ("a DNS label", "{stack}", 63),
    ("the CloudTrail trail", "llmkit-{stack}", 128),
    ("a Pulumi stack", "{stack}", 100),
)
_STACK_NAME_TEXT = "lowercase letters and digits, words joined by single hyphens"

# Client and admin CIDR lists: a block wider than a /8 (more than 16.7 million addresses; every
# RFC 1918 range is a /8 or smaller, 0.0.0.0/0 is every address) spans the internet, not a network of
# the user's. Such a list must be named in llmkit:allow_world_open; the AWS resources then carry
# WORLD_OPEN_TAG and the policy pack reports it.
WORLD_PREFIX = 8
WORLD_OPEN_KEYS = ("endpoint.allowed_client_cidrs", "gateway.admin_cidrs", "firewall.extra_ingress")
WORLD_OPEN_TAG = "llmkit:allow-world-open"

# The mTLS CA bundle: the CA(s) that issue the clients' certificates, not a system trust store.
MAX_CA_CERTIFICATES = 10
MAX_CA_BUNDLE_BYTES = 256 * 1024


class _Missing:
    """The value of a key that is absent (renders as "got nothing")."""

    def __repr__(self) -> str:
        return "nothing"


MISSING: Any = _Missing()


def _one_of(names: Iterable[object]) -> str:
    return "one of: " + ", ".join(str(n) for n in names)


_PRIVATE_TEXT = f"{', '.join(map(str, PRIVATE_RANGES[:-1]))} or {PRIVATE_RANGES[-1]}"


# --- problems raised inside validation --------------------------------------------------------


_Found = tuple[str, Any, str, str]  # key, value, accepted, message: a ConfigError before its source


@dataclass(frozen=True)
class _Problem:
    """One problem found by a validator; `path` is appended to the key of the value validated."""

    message: str
    value: Any
    path: str = ""
    accepted: str | None = None  # None: the description of the field


def _error(problems: tuple[_Problem, ...]) -> PydanticCustomError:
    """The problems as one pydantic error; :func:`_translate` unpacks them again."""
    return PydanticCustomError("llmkit", "{summary}", {"problems": problems, "summary": problems[0].message})


def _fail(problems: Iterable[_Problem]) -> None:
    if found := tuple(problems):
        raise _error(found)


def _reject(message: str, value: Any, accepted: str | None = None, path: str = "") -> NoReturn:
    raise _error((_Problem(message, value, path, accepted),))


def _check(test: Callable[[Any], str | None]) -> AfterValidator:
    """An after-validator from a function that returns a problem message (or None)."""

    def validate(value: Any) -> Any:
        problem = test(value)
        if problem:
            _reject(problem, value)
        return value

    return AfterValidator(validate)


# --- value types -----------------------------------------------------------------------------


def _parse_cidr(value: Any) -> IPv4Network:
    if isinstance(value, IPv4Network):
        return value
    if not isinstance(value, str):
        _reject(f"wrong type: expected a string, got {_yaml_type(value)}", value)
    if "/" not in value:
        _reject("not a CIDR: the /prefix length is missing", value)
    try:
        return IPv4Network(value)
    except ValueError as exc:
        if ":" in value:
            _reject("an IPv6 CIDR; these lists take IPv4 CIDRs only", value)
        _reject(f"not an IPv4 CIDR ({exc})", value)


def _spans(cidrs: Sequence[IPv4Network], widest: int) -> dict[int, IPv4Network]:
    """The entries of ``cidrs`` that, merged with the others, make a block shorter than /``widest``:
    index -> that block. ``widest`` 1 finds what adds up to every address (0.0.0.0/0)."""
    found: dict[int, IPv4Network] = {}
    for block in (b for b in collapse_addresses(cidrs) if b.prefixlen < widest):
        inside = [i for i, cidr in enumerate(cidrs) if cidr.subnet_of(block)]
        # An entry inside one that is itself that wide is not to blame: only the wide one is.
        for i in [i for i in inside if cidrs[i].prefixlen < widest] or inside:
            found[i] = block
    return dict(sorted(found.items()))


def _spanned(cidr: IPv4Network, block: IPv4Network) -> str:
    """How much ``cidr`` opens, in words: alone, or as part of ``block`` with the list's other entries."""
    if block.prefixlen == 0:
        every = "every address"
    else:
        every = f"{block.num_addresses:,} addresses, more than a /{WORLD_PREFIX}"
    return every if cidr == block else f"{every} (with the list's other entries it makes {block})"


def _aws_block_size(net: IPv4Network) -> str | None:
    low, high = AWS_SUBNET_PREFIXES
    return None if low <= net.prefixlen <= high else f"/{net.prefixlen} is not a block size AWS accepts"


Cidr = Annotated[IPv4Network, BeforeValidator(_parse_cidr)]
SubnetCidr = Annotated[Cidr, _check(_aws_block_size)]
Region = Annotated[
    str, _check(lambda v: None if re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", v) else "not an AWS region name")
]
Email = Annotated[
    str, _check(lambda v: None if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v) else "not an email address")
]
ACM_ARN = re.compile(
    r"arn:aws(-[a-z]+)*:acm:(?P<region>[a-z]{2}(-[a-z]+)+-\d):\d{12}"
    r":certificate/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
)


# --- the schema --------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubnetSpec(_Section):
    """One tier's subnets: a prefix length to auto-carve, or explicit CIDRs (one per AZ)."""

    prefix: int | None = Field(
        None,
        ge=AWS_SUBNET_PREFIXES[0],
        le=AWS_SUBNET_PREFIXES[1],
        description="an integer {}..{}: the prefix length of each auto-carved subnet".format(
            *AWS_SUBNET_PREFIXES
        ),
    )
    cidrs: list[SubnetCidr] | None = Field(
        None, description="a list of IPv4 CIDRs (/{}../{}), one per AZ".format(*AWS_SUBNET_PREFIXES)
    )

    @model_validator(mode="after")
    def _one_way(self) -> SubnetSpec:
        if (self.prefix is None) == (self.cidrs is None):
            _reject(
                "give exactly one of prefix and cidrs",
                self.model_dump(exclude_none=True, mode="json"),
                "{prefix: <length>} or {cidrs: [<one CIDR per AZ>]}",
            )
        return self


class Subnets(_Section):
    dmz: SubnetSpec
    app: SubnetSpec
    model: SubnetSpec
    data: SubnetSpec
    nat: SubnetSpec | None = Field(
        None,
        description="null, or subnets for the NAT gateways; required with a Network Firewall",
    )
    firewall: SubnetSpec | None = Field(
        None,
        description="null, or subnets for the Network Firewall endpoints; required with a Network Firewall",
    )


class Network(_Section):
    az_count: int = Field(ge=1, le=6, description="an integer 1..6")
    vpc_cidr: Cidr = Field(
        description="an IPv4 CIDR (/{}../{}) in {}".format(*AWS_SUBNET_PREFIXES, _PRIVATE_TEXT)
    )
    nat_gateways: Literal["one", "per_az"] = Field("per_az", description="one of: one, per_az")
    subnets: Subnets
    _plan: dict[str, tuple[IPv4Network, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("vpc_cidr")
    @classmethod
    def _private(cls, vpc: IPv4Network) -> IPv4Network:
        if not any(vpc.subnet_of(r) for r in PRIVATE_RANGES):
            _reject("not a private (RFC 1918) range", vpc)
        if problem := _aws_block_size(vpc):
            _reject(problem, vpc)
        return vpc

    @model_validator(mode="after")
    def _carve(self) -> Network:
        plan, problems = _plan_subnets(self)
        _fail(problems)
        self._plan = plan
        return self

    def subnet_plan(self) -> dict[str, list[IPv4Network]]:
        return {tier: list(subnets) for tier, subnets in self._plan.items()}


class Replicas(_Section):
    min: int = Field(1, ge=0, description="an integer >= 0 and <= max")
    max: int = Field(1, ge=1, description="an integer >= 1 and >= min")
    desired: int | None = Field(
        None,
        ge=0,
        description="null (start at min), or an integer min..max: the Auto Scaling group's start size",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            _reject("greater than max", self.min, f"an integer 0..{self.max} (replicas.max)", ".min")
        if self.desired is not None and not self.min <= self.desired <= self.max:
            _reject(
                "outside min..max",
                self.desired,
                f"null, or an integer {self.min}..{self.max} (replicas.min..replicas.max)",
                ".desired",
            )
        return self

    @property
    def start(self) -> int:
        """The desired capacity the fleet starts with."""
        return self.min if self.desired is None else self.desired


class ModelSpec(_Section):
    name: str = Field(description="a model name from the catalog")
    quantization: str = Field(description="a quantization published for the model and served by the runtime")
    context_length: int = Field(ge=1, description="an integer 1..the model's maximum context")
    concurrency: int = Field(1, ge=1, description="an integer >= 1 (concurrent sequences per replica)")
    replicas: Replicas = Field(default_factory=Replicas)
    instance_type: str | None = Field(None, description="an instance type from the catalog")


class Endpoint(_Section):
    public: bool = Field(False, description="true (internet-facing) or false (internal)")
    allowed_client_cidrs: list[Cidr] = Field(
        min_length=1, description="a list of at least one IPv4 CIDR; 0.0.0.0/0 only when public: true"
    )
    tls_certificate_arn: Annotated[
        str, _check(lambda v: None if ACM_ARN.fullmatch(v) else "not an ACM certificate ARN")
    ] = Field(description="an ACM certificate ARN: arn:aws:acm:<region>:<account>:certificate/<uuid>")
    mtls_ca_bundle: str | None = Field(
        None,
        description="null, or a path relative to the project root to a PEM file of CA certificates",
    )
    deletion_protection: bool = Field(
        True, description="true (the load balancer cannot be deleted until this is turned off) or false"
    )

    @model_validator(mode="after")
    def _least_privilege(self) -> Endpoint:
        if self.public:
            return self
        cidrs = self.allowed_client_cidrs
        _fail(
            _Problem(
                f"{cidrs[i]} opens an internal endpoint to {_spanned(cidrs[i], block)}",
                cidrs[i],
                f".allowed_client_cidrs[{i}]",
                "the client networks' CIDRs; 0.0.0.0/0 only with llmkit:endpoint.public: true",
            )
            for i, block in _spans(cidrs, 1).items()
        )
        return self

    @field_validator("mtls_ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_ca_bundle(value, Path((info.context or {}).get("project_dir") or Path.cwd()))
        return value


def _check_ca_bundle(value: str, project_dir: Path) -> None:
    """The bundle is a file of the project (no way out by .. or a symlink) holding CA certificates."""
    if Path(value).is_absolute():
        _reject("an absolute path; stacks must work from any checkout", value)
    root = project_dir.resolve()
    path = root / value
    try:
        real = path.resolve(strict=True)
    except OSError as exc:
        _reject(f"cannot read {path} ({exc.strerror})", value)
    except RuntimeError:  # a symlink loop (Python 3.11)
        _reject(f"cannot read {path} (a symlink loop)", value)
    if not real.is_relative_to(root):
        _reject(
            f"{path} leads outside the project {root} (to {real})",
            value,
            "a path relative to the project root, to a file inside the project (not through .. or a "
            "symlink that leaves it)",
        )
    try:
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):
            _reject(f"{path} is not a regular file", value)
        if info.st_size > MAX_CA_BUNDLE_BYTES:
            _reject(f"{path} has {info.st_size} bytes, more than a bundle of CA certificates", value)
        data = real.read_bytes()[:MAX_CA_BUNDLE_BYTES]
    except OSError as exc:
        _reject(f"cannot read {path} ({exc.strerror})", value)
    if b"PRIVATE KEY" in data:
        _reject(f"{path} holds a private key; a CA bundle holds public certificates only", value)
    count = data.count(b"-----BEGIN CERTIFICATE-----")
    if not count:
        _reject(f"{path} holds no PEM certificate", value)
    if count > MAX_CA_CERTIFICATES:
        _reject(
            f"{path} holds {count} certificates, more than {MAX_CA_CERTIFICATES}: a trust store of many "
            "CAs (such as the system's) would admit any client certificate those CAs ever issued",
            value,
            f"a PEM file of at most {MAX_CA_CERTIFICATES} CA certificates: the CA(s) that issue your "
            "clients' certificates",
        )
    from cryptography import x509  # only when a stack has a bundle

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        _reject(f"{path} holds a certificate that does not parse as X.509 ({exc})", value)
    for n, certificate in enumerate(certificates, start=1):
        try:
            ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        except ValueError as exc:
            _reject(f"{path}: certificate {n} has extensions that do not parse ({exc})", value)
        if not ca:
            subject = quoted(certificate.subject.rfc4514_string(), 100)
            _reject(
                f"{path}: certificate {n} ({subject}) is not a CA certificate (basicConstraints CA:TRUE)",
                value,
                "a PEM file of CA certificates (basicConstraints CA:TRUE): the CA(s) that issue your "
                "clients' certificates, not a client's or a server's own certificate",
            )


# AWS WAF's bounds for a rate-based rule (components/edge.py checks its Args against these too).
WAF_RATE_LIMIT_RANGE = (10, 2_000_000_000)
WafEvaluationWindow = Literal[60, 120, 300, 600]
WAF_EVALUATION_WINDOWS: tuple[int, ...] = get_args(WafEvaluationWindow)


class RateLimits(_Section):
    requests_per_window: int = Field(
        1000,
        ge=WAF_RATE_LIMIT_RANGE[0],
        le=WAF_RATE_LIMIT_RANGE[1],
        description="an integer {}..{} (AWS WAF limits), per client IP".format(*WAF_RATE_LIMIT_RANGE),
    )
    window_seconds: WafEvaluationWindow = Field(
        300,
        description="one of: {} (AWS WAF evaluation windows)".format(
            ", ".join(map(str, WAF_EVALUATION_WINDOWS))
        ),
    )


Percentages = list[Annotated[int, Field(ge=1, le=1000)]]


def _increasing(thresholds: list[int]) -> list[int]:
    _fail(
        _Problem(f"not greater than the threshold before it ({before})", after, f"[{i + 1}]")
        for i, (before, after) in enumerate(pairwise(thresholds))
        if after <= before
    )
    return thresholds


class Budget(_Section):
    monthly_usd: float = Field(gt=0, description="a number > 0 (US dollars per month)")
    alert_thresholds_percent: Annotated[Percentages, AfterValidator(_increasing)] = Field(
        default_factory=lambda: [80, 95],
        min_length=1,
        description="a list of integers 1..1000, strictly increasing: alerts on the actual spend",
    )
    forecast_thresholds_percent: Annotated[Percentages, AfterValidator(_increasing)] = Field(
        default_factory=lambda: [100],
        description="a list of integers 1..1000, strictly increasing: alerts on the forecast spend",
    )
    alert_emails: list[Email] = Field(min_length=1, description="a list of at least one email address")


class Logging(_Section):
    retention_days: int = Field(
        LOG_RETENTION_DAYS[0],
        description=f"an integer >= {LOG_RETENTION_DAYS[0]} among CloudWatch Logs retention values: "
        + ", ".join(map(str, LOG_RETENTION_DAYS)),
    )

    @field_validator("retention_days")
    @classmethod
    def _cloudwatch(cls, days: int) -> int:
        if days < LOG_RETENTION_DAYS[0]:
            _reject(f"under the {LOG_RETENTION_DAYS[0]}-day minimum", days)
        if days not in LOG_RETENTION_DAYS:
            _reject("not a retention period CloudWatch Logs accepts", days)
        return days


class Kms(_Section):
    rotation_period_days: int = Field(365, ge=90, le=2560, description="an integer 90..2560")
    deletion_window_days: int = Field(30, ge=7, le=30, description="an integer 7..30")


# The public SSM parameter of the AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04).
DLAMI_SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
AMI_ID = re.compile(r"ami-[0-9a-f]{8}([0-9a-f]{9})?")
SSM_PARAMETER = re.compile(r"(/[A-Za-z0-9_.\-]+)+")

# The bounds of the fleet's numbers: the schema below and GpuFleetArgs (components/fleet.py) both
# check these, so a value the config accepts is one the component accepts, and no other.
ROOT_VOLUME_GIB = (75, 16384)
GPU_TARGET_UTILIZATION_PERCENT = (10, 95)
QUEUE_TARGET_PER_INSTANCE = (1, 1000)
WARM_POOL_MIN_SIZE = (0, 100)
MODEL_LOAD_TIMEOUT_SECONDS = (30, 7200)
MIN_HEALTHY_PERCENT = (0, 100)


class WarmPool(_Section):
    min_size: int = Field(
        1,
        ge=WARM_POOL_MIN_SIZE[0],
        le=WARM_POOL_MIN_SIZE[1],
        description="an integer {}..{}: stopped, pre-initialised instances kept ready".format(
            *WARM_POOL_MIN_SIZE
        ),
    )
    # Hibernated is left out: GPU instance types with over 150 GiB of memory cannot hibernate,
    # and a model loaded into GPU memory does not survive it.
    state: Literal["Stopped", "Running"] = Field(
        "Stopped", description="one of: Stopped, Running (what warm instances wait in)"
    )


class Fleet(_Section):
    """How the GPU hosts of every served model are launched and scaled (components/fleet.py)."""

    ami_id: Annotated[str, _check(lambda v: None if AMI_ID.fullmatch(v) else "not an AMI id")] | None = Field(
        None, description="null (the Deep Learning Base GPU AMI from SSM), or an AMI id ami-<8 or 17 hex>"
    )
    tls_certificate_arn: (
        Annotated[str, _check(lambda v: None if ACM_ARN.fullmatch(v) else "not an ACM certificate ARN")]
        | None
    ) = Field(
        None,
        description="null (the endpoint's certificate), or an ACM certificate ARN for the internal "
        "model load balancer",
    )
    ami_ssm_parameter: Annotated[
        str, _check(lambda v: None if SSM_PARAMETER.fullmatch(v) else "not an SSM parameter path")
    ] = Field(DLAMI_SSM_PARAMETER, description="an SSM parameter path that holds an AMI id")
    root_volume_gib: int = Field(
        100,
        ge=ROOT_VOLUME_GIB[0],
        le=ROOT_VOLUME_GIB[1],
        description="an integer {}..{}, at least the AMI's root snapshot".format(*ROOT_VOLUME_GIB),
    )
    model_cache_gib: int | None = Field(
        None, ge=1, le=16384, description="null (sized from the model weights), or an integer 1..16384"
    )
    gpu_target_utilization_percent: int = Field(
        70,
        ge=GPU_TARGET_UTILIZATION_PERCENT[0],
        le=GPU_TARGET_UTILIZATION_PERCENT[1],
        description="an integer {}..{}: target tracking on the hosts' GPU utilization".format(
            *GPU_TARGET_UTILIZATION_PERCENT
        ),
    )
    queue_target_per_instance: int = Field(
        4,
        ge=QUEUE_TARGET_PER_INSTANCE[0],
        le=QUEUE_TARGET_PER_INSTANCE[1],
        description="an integer {}..{}: target of queued requests per host".format(
            *QUEUE_TARGET_PER_INSTANCE
        ),
    )
    warm_pool: WarmPool = Field(default_factory=WarmPool)
    model_load_timeout_seconds: int = Field(
        1800,
        ge=MODEL_LOAD_TIMEOUT_SECONDS[0],
        le=MODEL_LOAD_TIMEOUT_SECONDS[1],
        description="an integer {}..{}: how long launch may take to load the model".format(
            *MODEL_LOAD_TIMEOUT_SECONDS
        ),
    )
    min_healthy_percent: int = Field(
        90,
        ge=MIN_HEALTHY_PERCENT[0],
        le=MIN_HEALTHY_PERCENT[1],
        description="an integer {}..{}: instance refresh keeps this share in service".format(
            *MIN_HEALTHY_PERCENT
        ),
    )


class Alarms(_Section):
    """The service-level targets that CloudWatch alarms watch (components/alarms.py)."""

    p99_latency_seconds: float = Field(2.0, gt=0, le=300, description="a number > 0 and <= 300")
    error_rate_percent: float = Field(0.1, gt=0, le=100, description="a number > 0 and <= 100 (5xx share)")
    gpu_utilization_band_percent: tuple[int, int] = Field(
        (70, 90), description="two integers low, high with 0 <= low < high <= 100"
    )
    sustained_minutes: int = Field(
        15, ge=1, le=1440, description="an integer 1..1440: how long a breach lasts before it alarms"
    )

    @field_validator("gpu_utilization_band_percent")
    @classmethod
    def _band(cls, band: tuple[int, int]) -> tuple[int, int]:
        low, high = band
        if not 0 <= low < high <= 100:
            _reject("not a band", list(band))
        return band


class Secrets(_Section):
    rotation_days: int = Field(
        30, ge=1, le=365, description="an integer 1..365 (Secrets Manager's rotation schedule)"
    )


# --- the gateway section (the app tier's LLM gateway: LiteLLM) ---------------------------------

_DURATION = re.compile(r"(?P<n>[1-9][0-9]{0,4})(?P<unit>[mhd])")
_DURATION_TEXT = "a duration such as 30m, 12h or 7d (minutes, hours or days; at most 365d)"
_DURATION_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_NAME_TEXT = "a lowercase name of letters, digits and -, starting with a letter (at most 63)"
#: Route groups a role may name (LiteLLM's own names); a path starting with / is taken as it is.
GATEWAY_ROUTE_GROUPS = ("llm_api_routes", "info_routes", "management_routes")
#: The roles a gateway has when the stack names none (the issue's matrix).
DEFAULT_GATEWAY_ROLES: dict[str, dict[str, Any]] = {
    "dev-test": {
        "routes": ["/v1/chat/completions", "/chat/completions"],
        "key_ttl": "7d",
        "max_budget_usd": 50,
        "budget_period": "30d",
        "rpm_limit": 60,
        "tpm_limit": 100000,
    },
    "production": {
        "routes": ["llm_api_routes"],
        "key_ttl": "30d",
        "rotate_after": "7d",
        "max_budget_usd": 5000,
        "budget_period": "30d",
        "rpm_limit": 600,
        "tpm_limit": 2000000,
    },
    "admin": {
        "routes": ["management_routes", "info_routes"],
        "key_ttl": "12h",
        "admin_cidr_only": True,
    },
}


def duration_seconds(text: str) -> int:
    """``"7d"`` -> 604800. The text must already be a valid duration (see :data:`Duration`)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match["n"]) * _DURATION_SECONDS[match["unit"]]


def _duration_problem(text: Any) -> str | None:
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        return "not a duration"
    return "longer than 365d" if duration_seconds(text) > 365 * 86400 else None


def _name_problem(text: Any) -> str | None:
    return None if isinstance(text, str) and _NAME.fullmatch(text) else "not a usable name"


def _route_problem(route: Any) -> str | None:
    if isinstance(route, str) and (
        route in GATEWAY_ROUTE_GROUPS or re.fullmatch(r"/[A-Za-z0-9/_.*-]*", route)
    ):
        return None
    return "not a route"


Duration = Annotated[str, _check(_duration_problem)]
GatewayName = Annotated[str, _check(_name_problem)]
Route = Annotated[str, _check(_route_problem)]


class GatewayAlias(_Section):
    """One model name that clients ask for, routed to a served model."""

    model: str = Field(description="the name of a model in llmkit:models")
    fallbacks: list[GatewayName] = Field(
        default_factory=list,
        description="a list of other aliases, tried in order when this alias's backends fail",
    )


class GatewayRole(_Section):
    """What a virtual key of this role may do: its routes, models, lifetime, budget and rate."""

    routes: list[Route] = Field(
        min_length=1,
        description="a list of at least one route: a path such as /v1/chat/completions (a trailing * "
        "for a prefix) or a group: " + ", ".join(GATEWAY_ROUTE_GROUPS),
    )
    models: list[str] = Field(
        default_factory=lambda: ["*"], description='a list of aliases, or ["*"] for every alias'
    )
    key_ttl: Duration = Field(description=_DURATION_TEXT)
    rotate_after: Duration | None = Field(
        None, description=f"{_DURATION_TEXT}, shorter than key_ttl: keys older than this are rotated"
    )
    max_budget_usd: float | None = Field(
        None, gt=0, description="a number > 0 (US dollars per budget_period)"
    )
    budget_period: Duration = Field("30d", description=_DURATION_TEXT)
    rpm_limit: int | None = Field(None, ge=1, description="an integer >= 1 (requests per minute per key)")
    tpm_limit: int | None = Field(None, ge=1, description="an integer >= 1 (tokens per minute per key)")
    admin_cidr_only: bool = Field(
        False, description="true (the role's routes answer only from llmkit:gateway.admin_cidrs) or false"
    )

    @model_validator(mode="after")
    def _rotation_inside_ttl(self) -> GatewayRole:
        if self.rotate_after is not None and duration_seconds(self.rotate_after) >= duration_seconds(
            self.key_ttl
        ):
            _reject(
                f"keys would expire (key_ttl {self.key_ttl}) before they are rotated",
                self.rotate_after,
                f"a duration shorter than key_ttl {self.key_ttl}",
                ".rotate_after",
            )
        return self


class GatewayDatabase(_Section):
    """The gateway's PostgreSQL (keys, spend and request logs)."""

    instance_class: str = Field(
        "db.t4g.medium",
        pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
        description="an RDS instance class such as db.t4g.medium",
    )
    allocated_storage_gib: int = Field(50, ge=20, le=65536, description="an integer 20..65536")
    backup_retention_days: int = Field(
        14, ge=7, le=35, description="an integer 7..35 (automated backups kept)"
    )
    multi_az: bool = Field(True, description="true (a standby in a second AZ) or false")
    iam_auth: bool = Field(
        False,
        description="true (IAM database authentication is enabled as well) or false (the password from "
        "the RDS-managed secret only)",
    )
    external_url_secret: str | None = Field(
        None,
        description="Kubernetes only: the name of a Secret in the gateway's namespace whose DATABASE_URL "
        "key points at the database",
    )


class Gateway(_Section):
    """The app tier's LLM gateway (LiteLLM's proxy at the version pinned in llmkit/data/gateway.yaml)."""

    aliases: dict[GatewayName, GatewayAlias] = Field(
        min_length=1, description="a mapping of alias -> {model, fallbacks}, at least one"
    )
    roles: dict[GatewayName, GatewayRole] = Field(
        default_factory=lambda: {k: GatewayRole.model_validate(v) for k, v in DEFAULT_GATEWAY_ROLES.items()},
        description="a mapping of role -> its routes, models, key_ttl, ... "
        "(default: dev-test, production, admin)",
    )
    admin_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="a list of IPv4 CIDRs from which the admin role's routes answer (empty: from nowhere)",
    )
    image: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9./:_-]*(@sha256:[0-9a-f]{64})?$",
        description="a container image reference, best pinned by digest (default: the pinned LiteLLM image)",
    )
    replicas: int = Field(2, ge=1, le=20, description="an integer 1..20 (gateway tasks or pods)")
    cpu: Literal[512, 1024, 2048, 4096] = Field(
        1024, description="one of: 512, 1024, 2048, 4096 (CPU units: 1024 is one vCPU or core)"
    )
    memory_mib: int = Field(2048, ge=1024, le=30720, description="an integer 1024..30720")
    num_retries: int = Field(
        3, ge=0, le=10, description="an integer 0..10 (retries on connection errors and 5xx)"
    )
    retry_backoff_seconds: float = Field(
        1.0, gt=0, le=60, description="a number > 0 and <= 60 (first backoff; it doubles per retry)"
    )
    allowed_fails: int = Field(
        3, ge=1, le=100, description="an integer 1..100 (failures in a minute before a backend cools down)"
    )
    cooldown_seconds: int = Field(30, ge=1, le=3600, description="an integer 1..3600")
    request_timeout_seconds: int = Field(600, ge=10, le=3600, description="an integer 10..3600")
    log_retention_days: int = Field(
        180, ge=180, le=3653, description="an integer 180..3653 (spend and request logs kept)"
    )
    store_prompts: bool = Field(
        False, description="true (prompts and completions are stored in the request logs) or false"
    )
    database: GatewayDatabase = Field(default_factory=GatewayDatabase)

    @model_validator(mode="after")
    def _references(self) -> Gateway:
        problems = [
            _Problem("unknown alias", name, f".aliases.{alias}.fallbacks[{i}]", _one_of(self.aliases))
            for alias, spec in self.aliases.items()
            for i, name in enumerate(spec.fallbacks)
            if name not in self.aliases or name == alias
        ]
        problems += [
            _Problem("unknown alias", name, f".roles.{role}.models[{i}]", '["*"] or ' + _one_of(self.aliases))
            for role, spec in self.roles.items()
            for i, name in enumerate(spec.models)
            if name != "*" and name not in self.aliases
        ]
        _fail(problems)
        return self


# --- the firewall section ------------------------------------------------------------------------

FIREWALL_TIERS = ("lb", "app")  # the tiers extra_ingress may open; model and data admit only their front tier
NEVER_OPEN_PORTS = {22: "SSH", 3389: "RDP"}
_NEVER_OPEN = "SSH/RDP ingress is never opened: use SSM Session Manager"
_PORT = "an integer 1..65535 other than 22 (SSH) and 3389 (RDP)"
_DOMAIN = re.compile(r"\.?(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+")
_DOMAIN_TEXT = (
    "a lowercase DNS name of at least two labels such as registry.ollama.ai, or with a leading dot "
    "(.huggingface.co) for the domain and all its subdomains"
)
# What AWS accepts in a security group rule description.
_SG_DESCRIPTION = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}")


def _not_ssh_rdp(port: int) -> str | None:
    return _NEVER_OPEN if port in NEVER_OPEN_PORTS else None


def _domain_problem(domain: str) -> str | None:
    if domain.startswith("*."):
        return f"a wildcard: write {domain[1:]} for a domain and all its subdomains"
    if len(domain.lstrip(".")) > 253 or not _DOMAIN.fullmatch(domain):
        return "not a DNS name"
    return None


Port = Annotated[int, Field(ge=1, le=65535), _check(_not_ssh_rdp)]
Domain = Annotated[str, _check(_domain_problem)]


class ExtraIngress(_Section):
    """One extra ingress rule: `port` (TCP) from `cidrs` into the `tier` security group."""

    tier: str = Field(
        description="lb or app (the model and data tiers admit only the tiers in front of them)"
    )
    port: Port = Field(description=_PORT)
    cidrs: list[Cidr] = Field(
        min_length=1, description="a list of at least one IPv4 CIDR; 0.0.0.0/0 only for tier lb, port 443"
    )
    description: str = Field(
        description="why the rule exists: 1..255 characters of letters, digits, spaces "
        "and ._-:/()#,@[]+=&;{}!$*"
    )

    @field_validator("tier")
    @classmethod
    def _front_tiers(cls, tier: str) -> str:
        if tier in ("model", "data"):
            _reject("the model and data tiers admit only the tiers in front of them", tier, "lb or app")
        if tier not in FIREWALL_TIERS:
            _reject("unknown tier", tier, "lb or app")
        return tier

    @field_validator("description")
    @classmethod
    def _aws_description(cls, text: str) -> str:
        if not _SG_DESCRIPTION.fullmatch(text):
            _reject("not a description AWS accepts for a security group rule", text)
        return text


class FirewallSection(_Section):
    network_firewall: bool = Field(
        False,
        description="true (an AWS Network Firewall in the DMZ allows egress only to egress_allowed_domains) "
        "or false",
    )
    egress_allowed_domains: list[Domain] = Field(
        default_factory=list, description=f"a list of domains, each {_DOMAIN_TEXT}"
    )
    extra_ingress: list[ExtraIngress] = Field(
        default_factory=list,
        description="a list of rules, each a mapping with keys: " + ", ".join(ExtraIngress.model_fields),
    )
    app_port: Port = Field(DEFAULT_APP_PORT, description=_PORT)

    @field_validator("egress_allowed_domains")
    @classmethod
    def _unique(cls, domains: list[str]) -> list[str]:
        _fail(
            _Problem("listed twice", domain, f"[{i}]", "each domain once")
            for i, domain in enumerate(domains)
            if domain in domains[:i]
        )
        return domains

    @model_validator(mode="after")
    def _allow_list(self) -> FirewallSection:
        if self.network_firewall and not self.egress_allowed_domains:
            _reject(
                "network_firewall: true with an empty allow-list would drop all egress",
                [],
                f"at least one domain, each {_DOMAIN_TEXT}",
                ".egress_allowed_domains",
            )
        return self


def _world_open_problems(firewall: FirewallSection, public: bool | None) -> Iterable[_Problem]:
    """Every address (0.0.0.0/0, or entries that add up to it) only on the load balancer's 443, and
    only when the endpoint is public."""
    for i, rule in enumerate(firewall.extra_ingress):
        for j, block in _spans(rule.cidrs, 1).items():
            if rule.tier == "lb" and rule.port == 443 and public is not False:
                continue  # public is None: the endpoint section is itself invalid and reported
            cidr = rule.cidrs[j]
            yield _Problem(
                f"{cidr} opens tier {rule.tier} port {rule.port} to {_spanned(cidr, block)}",
                cidr,
                f".extra_ingress[{i}].cidrs[{j}]",
                "the client networks' CIDRs; 0.0.0.0/0 only for tier lb, port 443 "
                "with llmkit:endpoint.public: true",
            )


def _world_lists(key: str, section: Any) -> Iterable[tuple[str, list[IPv4Network]]]:
    """The CIDR lists that ``key`` of :data:`WORLD_OPEN_KEYS` names: (their path in the section, CIDRs)."""
    if key == "endpoint.allowed_client_cidrs":
        yield ".allowed_client_cidrs", section.allowed_client_cidrs
    elif key == "gateway.admin_cidrs":
        yield ".admin_cidrs", section.admin_cidrs
    elif key == "firewall.extra_ingress":
        for i, rule in enumerate(section.extra_ingress):
            yield f".extra_ingress[{i}].cidrs", rule.cidrs


def _too_wide(key: str, section: Any, info: ValidationInfo) -> Iterable[_Problem]:
    """The blocks wider than a /8 in ``section``'s lists of ``key``, unless llmkit:allow_world_open
    names ``key`` (or is itself invalid, and reported)."""
    allowed = info.data.get("allow_world_open")
    if allowed is None or key in allowed:
        return
    for path, cidrs in _world_lists(key, section):
        for i, block in _spans(cidrs, WORLD_PREFIX).items():
            yield _Problem(
                f"{cidrs[i]} opens {NAMESPACE}:{key} to {_spanned(cidrs[i], block)}",
                cidrs[i],
                f"{path}[{i}]",
                f"the networks' own CIDRs, at most a /{WORLD_PREFIX} together; a wider block only with "
                f"{NAMESPACE}:allow_world_open: [{key}]",
            )


def _world_open_keys(keys: list[str]) -> list[str]:
    _fail(
        _Problem("not a list that may be opened to the world", key, f"[{i}]", _one_of(WORLD_OPEN_KEYS))
        if key not in WORLD_OPEN_KEYS
        else _Problem("listed twice", key, f"[{i}]", "each key once")
        for i, key in enumerate(keys)
        if key not in WORLD_OPEN_KEYS or key in keys[:i]
    )
    return keys


def _stack_name_problem(stack: str, region: str | None) -> tuple[str, str] | None:
    """What is wrong with ``stack`` as a part of the stack's resource names (in ``region``, when
    known), and what is accepted; None when nothing is."""
    uses = [(what, name, most) for what, name, most in STACK_NAME_USES if region or "{region}" not in name]

    def named(name: str, stack: str) -> str:
        return name.format(stack=stack, account="1" * 12, region=region)

    longest = min(most - len(named(name, "")) for _, name, most in uses)
    where = f" in {region}" if region else ""
    accepted = f"{_STACK_NAME_TEXT}, at most {longest} characters{where}"
    if not STACK_NAME.fullmatch(stack):
        return f"not a name every resource of the stack accepts ({_STACK_NAME_TEXT})", accepted
    for what, name, most in uses:
        if len(named(name, stack)) > most:
            example = name.format(stack=stack, account="<account>", region=region)
            return (
                f"{len(stack)} characters: {what} would be {example}, "
                f"{len(named(name, stack))} characters, over {most}",
                accepted,
            )
    return None


class StackConfig(_Section):
    """Everything one stack sets, validated. Build it with :func:`load_stack` or :func:`from_mapping`."""

    allowed_regions: list[Region] = Field(min_length=1, description="a list of at least one AWS region name")
    region: Region = Field(description="an AWS region name such as eu-central-1")
    # After the region: the model store's bucket name holds both, and its length limits the stack's.
    stack: str | None = None
    allow_world_open: Annotated[list[str], AfterValidator(_world_open_keys)] = Field(
        default_factory=list,
        description=f"a list of keys, each once, among: {', '.join(WORLD_OPEN_KEYS)}: the CIDR lists that "
        f"may hold a block wider than a /{WORLD_PREFIX} (0.0.0.0/0 is every address)",
    )
    network: Network
    runtime: str = Field(DEFAULT_RUNTIME, validate_default=True, description="a runtime from the catalog")
    models: list[ModelSpec] = Field(
        min_length=1,
        description="a list of at least one model, each a mapping with keys: "
        + ", ".join(ModelSpec.model_fields),
    )
    endpoint: Endpoint
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    budget: Budget
    logging: Logging = Field(default_factory=Logging)
    kms: Kms = Field(default_factory=Kms)
    firewall: FirewallSection = Field(default_factory=FirewallSection)
    fleet: Fleet = Field(default_factory=Fleet)
    alarms: Alarms = Field(default_factory=Alarms)
    secrets: Secrets = Field(default_factory=Secrets)
    gateway: Gateway | None = Field(
        None, description="a mapping with keys: " + ", ".join(Gateway.model_fields) + " (absent: no gateway)"
    )
    tags: dict[str, str] = Field(
        description="a mapping of string tags with at least: " + ", ".join(REQUIRED_TAGS)
    )

    def subnet_plan(self) -> dict[str, list[IPv4Network]]:
        """Tier -> one subnet per AZ, in AZ order; computed once during validation."""
        return self.network.subnet_plan()

    @property
    def provider_tags(self) -> dict[str, str]:
        """The tags every AWS resource of the stack gets (the provider's default tags): llmkit:tags,
        and :data:`WORLD_OPEN_TAG` naming the lists of llmkit:allow_world_open when there are any, so
        that the policy pack and AWS itself show the override."""
        world = {WORLD_OPEN_TAG: " ".join(self.allow_world_open)} if self.allow_world_open else {}
        return {**self.tags, **world}

    @field_validator("stack")
    @classmethod
    def _stack_name(cls, stack: str | None, info: ValidationInfo) -> str | None:
        if stack is not None and (problem := _stack_name_problem(stack, info.data.get("region"))):
            message, accepted = problem
            _reject(message, stack, accepted)
        return stack

    @field_validator("region")
    @classmethod
    def _resident(cls, region: str, info: ValidationInfo) -> str:
        allowed = info.data.get("allowed_regions")
        if allowed is not None and region not in allowed:
            _reject(
                "region is outside llmkit:allowed_regions (data residency)",
                region,
                "one of llmkit:allowed_regions: " + ", ".join(allowed),
            )
        return region

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, runtime: str) -> str:
        if runtime not in load_catalog().runtimes:
            _reject("unknown runtime", runtime, _one_of(load_catalog().runtimes))
        return runtime

    @field_validator("models")
    @classmethod
    def _in_catalog(cls, models: list[ModelSpec], info: ValidationInfo) -> list[ModelSpec]:
        """Each model by its catalog name (a name without a tag resolved), checked against the catalog."""
        runtime = load_catalog().runtimes.get(info.data.get("runtime", ""))
        checked = [_check_model(spec, f"[{i}]", runtime) for i, spec in enumerate(models)]
        _fail(p for _, problems in checked for p in problems)
        return [spec for spec, _ in checked]

    @field_validator("endpoint")
    @classmethod
    def _endpoint_world_open(cls, endpoint: Endpoint, info: ValidationInfo) -> Endpoint:
        _fail(_too_wide("endpoint.allowed_client_cidrs", endpoint, info))
        return endpoint

    @field_validator("endpoint")
    @classmethod
    def _certificate_region(cls, endpoint: Endpoint, info: ValidationInfo) -> Endpoint:
        region = info.data.get("region")
        match = ACM_ARN.fullmatch(endpoint.tls_certificate_arn)
        if region and match and match["region"] != region:
            _reject(
                f"the certificate is in {match['region']}, not in {REGION_KEY} {region}",
                endpoint.tls_certificate_arn,
                f"an ACM certificate ARN in {region}",
                ".tls_certificate_arn",
            )
        return endpoint

    @field_validator("firewall")
    @classmethod
    def _world_open(cls, firewall: FirewallSection, info: ValidationInfo) -> FirewallSection:
        endpoint = info.data.get("endpoint")
        found = list(_world_open_problems(firewall, endpoint.public if endpoint is not None else None))
        refused = {p.path for p in found}
        _fail(
            [
                *found,
                *(p for p in _too_wide("firewall.extra_ingress", firewall, info) if p.path not in refused),
            ]
        )
        return firewall

    @field_validator("gateway")
    @classmethod
    def _gateway_world_open(cls, gateway: Gateway | None, info: ValidationInfo) -> Gateway | None:
        if gateway is not None:
            _fail(_too_wide("gateway.admin_cidrs", gateway, info))
        return gateway

    @model_validator(mode="after")
    def _world_open_used(self) -> StackConfig:
        """An override names only lists that need it: the tag it puts on every resource stays true."""
        sections = {"endpoint": self.endpoint, "gateway": self.gateway, "firewall": self.firewall}
        _fail(
            _Problem(
                f"nothing to allow: {NAMESPACE}:{key} holds no block wider than a /{WORLD_PREFIX}",
                key,
                f":allow_world_open[{i}]",
                "only the keys whose lists hold such a block: remove this one",
            )
            for i, key in enumerate(self.allow_world_open)
            if not any(
                _spans(cidrs, WORLD_PREFIX)
                for section in [sections[key.partition(".")[0]]]
                if section is not None
                for _, cidrs in _world_lists(key, section)
            )
        )
        return self

    @field_validator("gateway")
    @classmethod
    def _served_aliases(cls, gateway: Gateway | None, info: ValidationInfo) -> Gateway | None:
        models = info.data.get("models")
        if gateway is None or models is None:
            return gateway
        served = [spec.name for spec in models]
        # An alias names a model as llmkit:models may: a name without a tag means the same entry.
        named = {name: _catalog_name(alias.model) for name, alias in gateway.aliases.items()}
        _fail(
            _Problem("not a model of llmkit:models", alias.model, f".aliases.{name}.model", _one_of(served))
            for name, alias in gateway.aliases.items()
            if named[name] not in served
        )
        aliases = {
            name: alias if alias.model == named[name] else alias.model_copy(update={"model": named[name]})
            for name, alias in gateway.aliases.items()
        }
        return gateway.model_copy(update={"aliases": aliases})

    @model_validator(mode="after")
    def _egress_subnets(self) -> StackConfig:
        """The inspected egress path needs its own subnets, and they exist only for it."""
        on = self.firewall.network_firewall
        specs = {name: getattr(self.network.subnets, name) for name in EGRESS_SUBNETS}
        _fail(
            _Problem(
                f"llmkit:firewall.network_firewall: true needs {name} subnets for the inspected egress path",
                MISSING,
                f":network.subnets.{name}",
                "a subnet spec such as {prefix: 28}, or {cidrs: [<one CIDR per AZ>]}",
            )
            if on
            else _Problem(
                f"{name} subnets are only used with llmkit:firewall.network_firewall: true",
                spec.model_dump(exclude_none=True, mode="json"),
                f":network.subnets.{name}",
                "no such key, or llmkit:firewall.network_firewall: true",
            )
            for name, spec in specs.items()
            if (spec is None) == on
        )
        return self

    @field_validator("tags")
    @classmethod
    def _required_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        problems = [
            _Problem(
                "missing required tag" if key not in tags else "empty tag",
                tags.get(key, MISSING),
                f".{key}",
                accepted,
            )
            for key, accepted in REQUIRED_TAGS.items()
            if not tags.get(key, "").strip()
        ]
        classification = tags.get("data-classification")
        if classification and classification not in DATA_CLASSIFICATIONS:
            problems.append(
                _Problem(
                    "unknown data classification",
                    classification,
                    ".data-classification",
                    REQUIRED_TAGS["data-classification"],
                )
            )
        for key, value in tags.items():
            if key.lower().startswith("aws:") or not 0 < len(key) <= 128 or len(value) > 256:
                problems.append(_Problem("not a tag AWS accepts", value, f".{key}", _AWS_TAG))
            elif key == WORLD_OPEN_TAG:
                problems.append(
                    _Problem(
                        f"a tag that llmkit sets from {NAMESPACE}:allow_world_open",
                        value,
                        f".{key}",
                        f"a tag of your own; name the lists in {NAMESPACE}:allow_world_open",
                    )
                )
        _fail(problems)
        return tags


_LLMKIT_KEYS = tuple(name for name in StackConfig.model_fields if name not in ("stack", "region"))


def _catalog_name(name: str) -> str:
    """The catalog name that ``name`` resolves to (:meth:`Catalog.resolve_model`), or ``name``."""
    try:
        return load_catalog().resolve_model(name)[0].name
    except ConfigError:
        return name


def _check_model(spec: ModelSpec, at: str, runtime: Runtime | None) -> tuple[ModelSpec, list[_Problem]]:
    """The spec with the model's catalog name, and the problems of the spec against the catalog."""
    catalog = load_catalog()
    problems = []
    model: Model | None = None
    try:
        model = catalog.resolve_model(spec.name)[0]
    except ConfigError as exc:
        problems.append(_Problem(exc.problem, spec.name, f"{at}.name", exc.accepted))
    if model is not None:
        if model.name != spec.name:
            spec = spec.model_copy(update={"name": model.name})
        served = [q for q in model.quantizations if runtime is None or q in runtime.quantizations]
        if spec.quantization not in served:
            why = [f"not published for {model.name}"] if spec.quantization not in model.quantizations else []
            if runtime is not None and spec.quantization not in runtime.quantizations:
                why.append(f"not served by runtime {runtime.name}")
            by = f" and served by {runtime.name}" if runtime is not None else ""
            problems.append(
                _Problem(
                    " and ".join(why),
                    spec.quantization,
                    f"{at}.quantization",
                    f"{_one_of(served) if served else 'none'} (published for {model.name}{by})",
                )
            )
        if spec.context_length > model.max_context:
            problems.append(
                _Problem(
                    f"over the maximum context of {model.name}",
                    spec.context_length,
                    f"{at}.context_length",
                    f"an integer 1..{model.max_context}",
                )
            )
    if spec.instance_type is not None and spec.instance_type not in catalog.instances:
        problems.append(
            _Problem(
                "unknown instance type", spec.instance_type, f"{at}.instance_type", _one_of(catalog.instances)
            )
        )
    return spec, problems


# --- the subnet plan ---------------------------------------------------------------------------


def _minus(block: IPv4Network, used: IPv4Network) -> Iterable[IPv4Network]:
    if not block.overlaps(used):
        return [block]
    return [] if block.subnet_of(used) else block.address_exclude(used)


def _free_blocks(vpc: IPv4Network, used: Iterable[IPv4Network]) -> list[IPv4Network]:
    """The free space of `vpc` as maximal aligned blocks, lowest address first."""
    free = [vpc]
    for subnet in used:
        free = [piece for block in free for piece in _minus(block, subnet)]
    return sorted(collapse_addresses(free))


def _plan_subnets(net: Network) -> tuple[dict[str, tuple[IPv4Network, ...]], list[_Problem]]:
    """Place the explicit subnets, then carve the others largest first, aligned, lowest address first."""
    at = f"{NAMESPACE}:network"
    vpc, azs = net.vpc_cidr, net.az_count
    problems: list[_Problem] = []
    placed: list[tuple[IPv4Network, str]] = []  # explicit subnets and their key paths
    plan: dict[str, tuple[IPv4Network, ...]] = {}
    tiers = [t for t in (*TIERS, *EGRESS_SUBNETS) if getattr(net.subnets, t) is not None]
    for tier in tiers:
        cidrs = getattr(net.subnets, tier).cidrs
        if cidrs is None:
            continue
        path = f".subnets.{tier}.cidrs"
        if len(cidrs) != azs:
            accepted = f"exactly {azs} CIDRs, one per AZ ({at}.az_count)"
            problems.append(_Problem(f"{len(cidrs)} CIDRs for {azs} AZs", cidrs, path, accepted))
        for i, cidr in enumerate(cidrs):
            where = f"{path}[{i}]"
            if not cidr.subnet_of(vpc):
                problems.append(
                    _Problem(f"outside the VPC {vpc}", cidr, where, f"a subnet of {at}.vpc_cidr {vpc}")
                )
            problems += [
                _Problem(
                    f"overlaps {other} at {at}{other_at}",
                    cidr,
                    where,
                    "a subnet that overlaps no other subnet",
                )
                for other, other_at in placed
                if other.overlaps(cidr)
            ]
            placed.append((cidr, where))
        plan[tier] = tuple(cidrs)
    used = [cidr for cidr, _ in placed]
    carved = [(s.prefix, tier) for tier in tiers if (s := getattr(net.subnets, tier)).prefix is not None]
    for prefix, tier in sorted(carved, key=lambda item: item[0]):  # largest first, stable in tier order
        subnets: list[IPv4Network] = []
        while len(subnets) < azs:
            block = next((b for b in _free_blocks(vpc, used + subnets) if b.prefixlen <= prefix), None)
            if block is None:
                free = sum(b.num_addresses for b in _free_blocks(vpc, used))
                message = (
                    f"{azs} x /{prefix} subnets do not fit: they need {azs * 2 ** (32 - prefix)} addresses "
                    f"in aligned /{prefix} blocks, {vpc} has {free} free"
                )
                accepted = f"a longer prefix length or a larger {at}.vpc_cidr"
                problems.append(_Problem(message, prefix, f".subnets.{tier}.prefix", accepted))
                break
            subnets.append(next(block.subnets(new_prefix=prefix)))
        else:
            used += subnets
            plan[tier] = tuple(subnets)
    return {tier: plan[tier] for tier in tiers if tier in plan}, problems


# --- pydantic errors -> ConfigError --------------------------------------------------------------

_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}


def _yaml_type(value: Any) -> str:
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "a mapping"),
        (list, "a list"),
    ):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _plain(value: Any) -> Any:
    """A value as the user wrote it in YAML (CIDRs back to strings)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, IPv4Network) else value


def _key_path(loc: tuple[int | str, ...]) -> str:
    if not loc:  # a check across sections: its problems carry ":<section>..." paths
        return NAMESPACE
    head, *rest = loc
    key = {"region": REGION_KEY, "stack": "stack"}.get(str(head), f"{NAMESPACE}:{head}")
    return key + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)


def _schema_at(loc: tuple[int | str, ...]) -> tuple[Any, FieldInfo | None]:
    """The type at `loc` in StackConfig and the innermost field on the way (for its description)."""
    kind: Any = StackConfig
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            info = kind.model_fields.get(str(part))
            kind = info.annotation if info else None
        else:  # a list index or a dict key: the element type
            kind = (get_args(kind) or (None,))[-1]
        while get_origin(kind) in (Annotated, Union, types.UnionType):
            kind = next(a for a in get_args(kind) if a is not type(None))
    return kind, info


def _keys_of(kind: Any) -> list[str]:
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _translate(exc: ValidationError) -> list[_Found]:
    out = []
    for err in exc.errors(include_url=False):
        loc, kind = err["loc"], err["type"]
        key = _key_path(loc)
        schema, info = _schema_at(loc)
        keys = _keys_of(schema)
        accepted = (
            f"a mapping with keys: {', '.join(keys)}" if keys else info.description if info else None
        ) or "see docs/configuration.md"
        value, message = _plain(err.get("input")), err["msg"].replace("Input should be", "must be")
        if kind == "llmkit":
            out += [
                (key + p.path, _plain(p.value), p.accepted or accepted, p.message)
                for p in err["ctx"]["problems"]
            ]
            continue
        if kind == "extra_forbidden":
            accepted, message = _one_of(_keys_of(_schema_at(loc[:-1])[0])), "unknown key"
        elif kind == "missing":
            value, message = MISSING, "missing required key"
        elif kind.removesuffix("_type").removesuffix("_parsing") in _TYPE_NAMES:
            expected = _TYPE_NAMES[kind.removesuffix("_type").removesuffix("_parsing")]
            message = f"wrong type: expected {expected}, got {_yaml_type(value)}"
        out.append((key, value, accepted, message))
    return out


# --- loading -----------------------------------------------------------------------------------


def _under(key: str, parent: str) -> bool:
    """Whether `key` is `parent` or a key path inside it."""
    return key == parent or key.startswith((f"{parent}.", f"{parent}["))


def _decode_json(value: Any) -> Any:
    """The Pulumi runtime delivers structured config as JSON text: use the parsed object or array."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, dict | list):
            return parsed
    return value


def _strip_secure(value: Any, key: str, found: list[str]) -> Any:
    """Replace Pulumi secrets (`{secure: ...}`) on keys not declared secret by None; record their keys."""
    if isinstance(value, dict):
        if set(value) == {"secure"} and key not in SECRET_KEYS:
            found.append(key)
            return None
        return {k: _strip_secure(v, f"{key}.{k}", found) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secure(v, f"{key}[{i}]", found) for i, v in enumerate(value)]
    return value


def from_mapping(
    raw: dict[str, Any], *, source: str, stack: str | None = None, project_dir: Path | None = None
) -> StackConfig:
    """Validate a flat Pulumi config mapping (``{"aws:region": ..., "llmkit:network": {...}}``).

    Keys without a namespace belong to the project (``llmkit``), as in Pulumi. ``project_dir``
    (default: the current directory) is where relative paths such as ``mtls_ca_bundle`` start.
    """
    data: dict[str, Any] = {}
    found: list[_Found] = []
    secure: list[str] = []
    for raw_key, raw_value in raw.items():
        key = raw_key if ":" in raw_key else f"{NAMESPACE}:{raw_key}"
        namespace, _, name = key.partition(":")
        if key == REGION_KEY:
            data["region"] = raw_value
        elif namespace == NAMESPACE and name in _LLMKIT_KEYS:
            data[name] = _strip_secure(_decode_json(raw_value), key, secure)
        elif namespace == NAMESPACE:
            hint = f"; the region is read from {REGION_KEY}" if name == "region" else ""
            accepted = _one_of(f"{NAMESPACE}:{k}" for k in _LLMKIT_KEYS)
            found.append((key, raw_value, accepted, f"unknown key{hint}"))
    found += [
        (
            key,
            "[secret]",
            "a plain value: this key is not a secret",
            "a Pulumi secret (secure:) on a key that is not secret; set it in plain text",
        )
        for key in secure
    ]
    try:
        config = StackConfig.model_validate({**data, "stack": stack}, context={"project_dir": project_dir})
    except ValidationError as exc:
        # a refused secret is reported once, not again as the missing or mistyped value it left
        found += [f for f in _translate(exc) if not any(_under(f[0], k) for k in secure)]
    if found:
        raise _errors(source, found)
    return config


def _errors(source: str, found: Iterable[_Found]) -> ConfigErrors:
    return ConfigErrors([ConfigError(*f, source=source) for f in found], source=source)


def _file_error(path: Path, key: str, value: Any, accepted: str, message: str) -> ConfigErrors:
    return _errors(str(path), [(key, value, accepted, message)])


def _stacks_in(stacks_dir: Path) -> str:
    """The stacks that have a ``Pulumi.<stack>.yaml`` in `stacks_dir`, in words."""
    found = sorted(
        m["stack"] for p in stacks_dir.glob("Pulumi.*.yaml") if (m := STACK_FILE.fullmatch(p.name))
    )
    return _one_of(found) if found else f"none: {stacks_dir} has no Pulumi.<stack>.yaml"


# --- reading a user's YAML -------------------------------------------------------------------------


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML document over the limits (:data:`MAX_YAML_BYTES`, ...): refused before it is built."""


def _limit(problem: str, mark: Any = None) -> YamlLimitError:
    return YamlLimitError(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts aliases and nesting while it composes the node graph."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise _limit(f"more than {MAX_YAML_ALIASES} aliases (*name)", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _limit(f"nested more than {MAX_YAML_DEPTH} deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand past :data:`MAX_YAML_NODES`, or that holds a cycle.

    An alias is the node it names, shared: the graph stays as small as the text, but everything that
    walks the document (validation, JSON, an error's quote) walks every expansion. Sizes are counted
    once per node (depth first, without recursion), so the check costs what the text does.
    """
    size: dict[int, int] = {}
    path: set[int] = set()  # the nodes being counted: one met again below itself is a cycle
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:
        node, counted = todo.pop()
        if counted:
            path.discard(id(node))
            size[id(node)] = min(1 + sum(size[id(c)] for c in _children(node)), MAX_YAML_NODES + 1)
            if size[id(node)] > MAX_YAML_NODES:
                raise _limit(
                    f"more than {MAX_YAML_NODES} nodes once its aliases are expanded (an alias bomb?)",
                    node.start_mark,
                )
            continue
        if id(node) in size:
            continue
        path.add(id(node))
        todo.append((node, True))
        for child in _children(node):
            if id(child) in path:
                raise _limit("an alias inside the node it names (a cycle)", child.start_mark)
            if id(child) not in size:
                todo.append((child, False))


def parse_yaml(text: str) -> Any:
    """One YAML document (safe tags only) within the limits on aliases, nesting and expanded size.

    Raises :class:`YamlLimitError` past a limit, and ``yaml.YAMLError`` for what is not YAML.
    """
    if len(text) > MAX_YAML_BYTES:
        raise _limit(f"{len(text)} characters, over the limit of {MAX_YAML_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """:func:`parse_yaml` of a user's file: a regular file of at most :data:`MAX_YAML_BYTES`, read no
    further than that. Raises ``OSError``, ``UnicodeDecodeError`` and ``yaml.YAMLError``."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block the read, or never end
        raise _limit("not a regular file")
    too_big = _limit(f"more than {MAX_YAML_BYTES} bytes: over the limit for a YAML file")
    if info.st_size > MAX_YAML_BYTES:
        raise too_big
    with path.open("rb") as file:
        data = file.read(MAX_YAML_BYTES + 1)  # the file may have grown since
    if len(data) > MAX_YAML_BYTES:
        raise too_big
    return parse_yaml(data.decode("utf-8"))


_YAML_LIMITS = (
    f"at most {MAX_YAML_BYTES} bytes, {MAX_YAML_ALIASES} aliases, {MAX_YAML_NODES} nodes once aliases are "
    f"expanded, nesting {MAX_YAML_DEPTH} deep"
)


def load_stack_file(path: Path) -> StackConfig:
    """Load and validate one stack file; the stack name comes from ``Pulumi.<stack>.yaml``."""
    try:
        document = read_yaml(path)
    except YamlLimitError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        accepted = f"a stack file within the limits: {_YAML_LIMITS}"
        raise _file_error(path, "file", path.name, accepted, f"refused: {exc.problem}{where}") from None
    except FileNotFoundError:
        raise _file_error(
            path,
            "file",
            path.name,
            _stacks_in(path.parent),
            "no such stack file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _file_error(path, "file", path.name, "a readable UTF-8 file", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise _file_error(path, "file", path.name, "a YAML document", f"not YAML: {problem}{where}") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise _file_error(
            path,
            "config",
            config,
            "a mapping of Pulumi config keys (aws:region, llmkit:...)",
            "the file has no top-level config: mapping",
        )
    match = STACK_FILE.fullmatch(path.name)
    return from_mapping(
        config,
        source=str(path),
        stack=match["stack"] if match else None,
        project_dir=path.resolve().parent.parent,
    )


def load_stack(stack: str, project_dir: Path) -> StackConfig:
    """Load ``project_dir/stacks/Pulumi.<stack>.yaml``.

    The name is checked first, before it touches the file system: it becomes part of the stack's
    resource names (and of the path). The file's region then bounds its length further.
    """
    stacks_dir = project_dir / "stacks"
    if problem := _stack_name_problem(stack, None):
        raise _errors(str(stacks_dir), [("stack", stack, problem[1], problem[0])])
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise _errors(
            str(stacks_dir), [("stack", stack, _stacks_in(stacks_dir), f"unknown stack: no {path}")]
        )
    return load_stack_file(path)


def from_pulumi_runtime(project_dir: Path | None = None) -> StackConfig:
    """Inside a Pulumi program: validate the stack's config as the Pulumi runtime delivers it."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret = set(runtime_config.get_config_secret_keys_env()) | set(
        filter(runtime_config.is_config_secret, raw)
    )
    for key in secret & raw.keys():
        if key.startswith(f"{NAMESPACE}:") and not any(_under(s, key) for s in SECRET_KEYS):
            raw[key] = {"secure": "[secret]"}  # never let a decrypted secret reach an error message
    stack = pulumi.get_stack()
    return from_mapping(raw, source=f"stack {stack}", stack=stack, project_dir=project_dir or Path.cwd())
