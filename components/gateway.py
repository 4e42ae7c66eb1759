"""The app tier's LLM gateway on AWS: LiteLLM's proxy on ECS Fargate, its PostgreSQL on RDS.

Only stacks with ``llmkit:gateway`` get it (``__main__.py``). It sits between the edge and the
model tier::

    clients --TLS 1.3--> edge ALB :443 --HTTPS--> Fargate tasks (app subnets, `app` group) :app_port
        --HTTPS 443, Host <slug>.<models domain>--> the fleet's internal ALB --> GPU hosts
        --TLS, 5432--> RDS PostgreSQL (data subnets, `data` group): keys, budgets, spend logs

What it creates, and the decisions, for reviewers:

- **ECS**: a cluster with Container Insights; a Fargate task definition (``llmkit:gateway.cpu`` /
  ``memory_mib``, checked against Fargate's combinations; x86_64; the image pinned in
  ``llmkit/data/gateway.yaml`` unless ``llmkit:gateway.image`` names one) and a service of
  ``llmkit:gateway.replicas`` tasks in the app subnets, **without public IPs**, in the Firewall's
  ``app`` security group, registered by IP in the edge's app target group on
  ``llmkit:firewall.app_port``. Rolling deployments keep 100 % in service, a circuit breaker rolls
  a failing one back, and tasks get 120 s to finish streamed answers when they stop. The root
  filesystem is read-only (``/tmp`` is a task volume), every Linux capability is dropped, ECS Exec
  is off, and the task has **no task role**: LiteLLM calls no AWS API.
- **TLS on the edge -> gateway hop**: LiteLLM serves HTTPS itself (``--ssl_keyfile_path`` /
  ``--ssl_certfile_path``) with a key and a self-signed certificate it generates at container
  start (P-256, in ``/tmp``, never leaving the task). An Application Load Balancer encrypts to
  HTTPS targets but does not verify their certificates, so a CA-signed certificate would add
  distribution and renewal without adding any check; the security groups (only the edge's ``lb``
  group reaches ``app_port``) are the access control of that hop, as they are between the model
  load balancer and the GPU hosts.
- **LiteLLM's config travels in an environment variable** (``LLMKIT_LITELLM_CONFIG``), rendered
  by :func:`llmkit.gateway.render_config` from :func:`llmkit.gateway.litellm_config` (the same
  rendering as on Kubernetes and bare metal), and the container's start command writes it to
  ``/tmp/litellm/config.yaml``. So no custom image, no S3 object and no task role are needed;
  the config holds no secret (it names the environment variables of the keys and the database
  URL); it is in the task definition, hence in the reviewed plan; and a config change is a new
  task definition revision, which ECS rolls out like any other change. (An S3 object would need a
  task role, a bucket policy and a restart to take effect.)
- **Backends**: one per served model, ``https://<slug>.<models domain>`` (``model_slug`` of the
  model's name): the fleet's internal load balancer routes on ``<slug>.*`` (components/fleet.py).
  The component makes that name resolve: a Route 53 private hosted zone for the models domain
  (default ``models.<stack>.llmkit.internal``), associated with the VPC, whose ``*`` alias points
  at the internal load balancer. LiteLLM verifies the balancer's certificate: the listener's
  certificate (``llmkit:fleet.tls_certificate_arn``) must cover ``*.<models domain>``, and when a
  private CA issued it, its bundle is given as ``models_ca_bundle`` (written to the container and
  named as LiteLLM's ``ssl_verify``). Verification is never turned off: a wrong certificate makes
  model calls fail, not pass unverified.
- **Secrets, by ARN only**: ``LITELLM_MASTER_KEY`` and ``LITELLM_SALT_KEY`` are the Secrets
  component's secrets (``container_secrets``); ``DATABASE_USERNAME`` and ``DATABASE_PASSWORD`` are
  the ``username`` / ``password`` keys of the master user secret that RDS manages itself
  (``manage_master_user_password``, encrypted with the secrets key). ECS injects them at start with
  the task *execution* role, which may read exactly these secrets (GetSecretValue) and decrypt
  them with the secrets key only through Secrets Manager. No value passes through Pulumi: inputs,
  state and plan hold ARNs. ``DATABASE_HOST``, ``DATABASE_PORT`` and ``DATABASE_NAME`` are plain.
- **The database URL is composed at container start.** LiteLLM can build ``DATABASE_URL`` from
  ``DATABASE_HOST``/``_USERNAME``/``_PASSWORD``/``_NAME`` (``construct_database_url_from_env_vars``
  in ``litellm/proxy/utils.py``), but only when the config names no ``database_url`` (ours names
  ``os.environ/DATABASE_URL``) and without any way to ask for TLS. So the start command composes
  ``postgresql://<user>:<password>@<host>:<port>/<name>?sslmode=require`` itself (user and
  password URL-encoded), removes ``DATABASE_PASSWORD`` from the environment and starts LiteLLM.
- **PostgreSQL on RDS** (``llmkit:gateway.database``): PostgreSQL 16 in the data subnets (a DB
  subnet group) and the ``data`` security group (the Firewall admits only the app tier, on 5432),
  not publicly accessible; storage (gp3, autoscaling up to four times the configured size) and
  Performance Insights encrypted with the **data** key (whose policy admits RDS in stacks with a
  gateway); TLS required by the server (``rds.force_ssl = 1`` in its own parameter group) and by
  the client (``sslmode=require``: encrypted; the server certificate is not verified, which
  would need the RDS CA bundle inside the image); automated backups kept
  ``backup_retention_days`` (>= 7); Multi-AZ and IAM database authentication as configured;
  minor versions upgraded automatically; tags copied to snapshots; the ``postgresql`` log exported
  to ``/aws/rds/instance/<id>/postgresql``, created here first with the logs key and
  ``llmkit:logging.retention_days``. **Deletion** follows ``llmkit:endpoint.deletion_protection``:
  protected stacks get deletion protection, a final snapshot and keep their automated backups; a
  stack that turned protection off (a throw-away one) is deleted without a final snapshot, so a
  second ``pulumi destroy`` never trips over a snapshot name left by the first.
- **Logs**: the containers log to ``/llmkit/<stack>/gateway`` (logs key, retention from config)
  with the ``awslogs`` driver in non-blocking mode (a logging hiccup never stalls a request).
- **Management routes from the admin networks only**: on the edge's HTTPS listener, rules answer
  ``403`` to the paths of :data:`llmkit.gateway.MANAGEMENT_PATH_PREFIXES` (and ``/metrics``, which
  exposes per-key spend) unless the client address is in ``llmkit:gateway.admin_cidrs`` (empty:
  from nowhere). An ALB rule holds at most 3 values per condition and 5 per rule, so the paths
  go 3 to a rule and the CIDRs 2 to a rule: "forward" rules for every (paths, CIDRs) pair first,
  then "403" rules per group of paths (within the load balancer's quota of 100 rules: at most 30
  admin CIDRs, refused with a config error beyond). This is defence in depth at the edge: the
  ALB matches the raw, case-sensitive path, and LiteLLM's own key checks (admin keys for
  management routes) stay the authority.

Operational notes: running tasks keep the master key and the database password they started
with; RDS rotates its managed password (every 7 days by default), so tasks must be replaced
after a rotation (``aws ecs update-service --force-new-deployment``) until the gateway reads the
database password itself. Behind ``llmkit:firewall.network_firewall``, the task pulls its image
through the allow-listed domains only: mirror the image into ECR (the VPC has its endpoints) and
set ``llmkit:gateway.image``; an ECR image gets exactly the pull permissions it needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from components.base import Component
from components.edge import check_ca_bundle
from components.fleet import model_slug
from llmkit.catalog import load_catalog
from llmkit.config import LOG_RETENTION_DAYS
from llmkit.config import Gateway as GatewayConfig
from llmkit.errors import ConfigError
from llmkit.gateway import (
    MANAGEMENT_PATH_PREFIXES,
    Backend,
    litellm_config,
    litellm_release,
    render_config,
)

if TYPE_CHECKING:
    from llmkit.config import StackConfig

CONTAINER_NAME = "litellm"
# What ALB and ECS check: LiteLLM's liveness route (no auth, no database round trip, so a
# database outage does not make ECS replace every task at once).
HEALTH_CHECK_PATH = "/health/liveliness"
HEALTH_CHECK_GRACE_SECONDS = 300  # LiteLLM applies its database migrations at start
STOP_TIMEOUT_SECONDS = 120  # Fargate's maximum; the edge's deregistration delay is the same
# Paths that only the admin networks reach through the edge, besides LiteLLM's management API:
# the Prometheus metrics (per key and team spend, model names).
EXTRA_ADMIN_PATH_PREFIXES = ("/metrics",)
# AWS limits of an ALB listener rule: values per condition, values per rule.
RULE_CONDITION_VALUES = 3
RULE_VALUES = 5
ADMIN_CIDRS_PER_RULE = RULE_VALUES - RULE_CONDITION_VALUES
MAX_LISTENER_RULES = 100  # AWS's default quota of rules per Application Load Balancer
ALLOW_PRIORITY = 100  # "forward" rules of the admin networks: 100, 101, ...
DENY_PRIORITY = 200  # then the "403" rules: 200, 201, ...
FORBIDDEN_BODY = '{"error": "forbidden: this route answers only from the admin networks"}'

# Inside the container (only /tmp is writable).
RUN_DIR = "/tmp/litellm"
CONFIG_PATH = f"{RUN_DIR}/config.yaml"
MODELS_CA_PATH = f"{RUN_DIR}/models-ca.pem"
TLS_KEY_PATH = f"{RUN_DIR}/tls.key"
TLS_CERT_PATH = f"{RUN_DIR}/tls.crt"
CONFIG_ENV = "LLMKIT_LITELLM_CONFIG"
MODELS_CA_ENV = "LLMKIT_MODELS_CA_PEM"
SELF_SIGNED_DAYS = 397
# ECS caps a task definition's container definitions at 64 KiB; the config gets half of it.
MAX_CONFIG_BYTES = 32 * 1024

# The database.
POSTGRES_VERSION = "16"
PARAMETER_GROUP_FAMILY = "postgres16"
DATABASE_NAME = "litellm"
DATABASE_USER = "litellm"
DATABASE_PORT = 5432
DATABASE_ENV = {
    "host": "DATABASE_HOST",
    "port": "DATABASE_PORT",
    "name": "DATABASE_NAME",
    "username": "DATABASE_USERNAME",
    "password": "DATABASE_PASSWORD",
}
RDS_CA = "rds-ca-rsa2048-g1"
STORAGE_AUTOSCALING_FACTOR = 4
MAX_STORAGE_GIB = 65536
PERFORMANCE_INSIGHTS_DAYS = 7  # the free tier
DB_LOG_EXPORTS = ("postgresql",)

# Fargate's CPU units -> the memory (MiB) it accepts: a range in steps of 1024.
FARGATE_MEMORY = {512: (1024, 4096), 1024: (2048, 8192), 2048: (4096, 16384), 4096: (8192, 30720)}

_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")
_ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+?)(:[\w.-]+)?(@sha256:[0-9a-f]{64})?"
)

# The container's start command: `python3 -c BOOTSTRAP <litellm arguments>`. It runs in the pinned
# LiteLLM image (Python 3 with `cryptography`, a LiteLLM dependency), before LiteLLM, and only
# turns environment variables into files and the database URL (see the module doc).
BOOTSTRAP = f"""\
import datetime, os, sys, urllib.parse
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

def write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

env = os.environ
os.makedirs({RUN_DIR!r}, mode=0o700, exist_ok=True)
write({CONFIG_PATH!r}, env.pop({CONFIG_ENV!r}))
ca = env.pop({MODELS_CA_ENV!r}, "")
if ca:
    write({MODELS_CA_PATH!r}, ca)
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmkit-gateway")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days={SELF_SIGNED_DAYS}))
    .sign(key, hashes.SHA256())
)
write({TLS_KEY_PATH!r}, key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
write({TLS_CERT_PATH!r}, cert.public_bytes(serialization.Encoding.PEM))
quote = lambda value: urllib.parse.quote(value, safe="")
env["DATABASE_URL"] = "postgresql://%s:%s@%s:%s/%s?sslmode=require" % (
    quote(env["{DATABASE_ENV["username"]}"]), quote(env.pop("{DATABASE_ENV["password"]}")),
    env["{DATABASE_ENV["host"]}"], env["{DATABASE_ENV["port"]}"], quote(env["{DATABASE_ENV["name"]}"]))
os.execvp("litellm", ["litellm", *sys.argv[1:]])
"""


def default_models_domain(stack: str) -> str:
    """The private DNS domain the gateway reaches the models under: ``models.<stack>.llmkit.internal``."""
    return f"models.{stack}.llmkit.internal"


def database_identifier(stack: str) -> str:
    return f"llmkit-{stack}-gateway"


def database_log_group_name(stack: str, log: str = "postgresql") -> str:
    """Where RDS exports a log: AWS fixes the name, so the group is made first under it."""
    return f"/aws/rds/instance/{database_identifier(stack)}/{log}"


def log_group_name(stack: str) -> str:
    return f"/llmkit/{stack}/gateway"


def backends(served_models: Sequence[str], models_domain: str) -> dict[str, list[Backend]]:
    """Model name -> its one backend, the fleet's internal load balancer under the model's host name."""
    return {
        name: [Backend(name=model_slug(name), api_base=f"https://{model_slug(name)}.{models_domain}")]
        for name in served_models
    }


def admin_path_patterns() -> list[str]:
    """ALB path patterns of the routes only the admin networks reach (``/key/`` -> ``/key/*``)."""
    patterns = []
    for prefix in (*MANAGEMENT_PATH_PREFIXES, *EXTRA_ADMIN_PATH_PREFIXES):
        patterns += [prefix + "*"] if prefix.endswith("/") else [prefix, prefix + "/*"]
    return list(dict.fromkeys(patterns))


def _chunks(values: Sequence[str], size: int) -> list[list[str]]:
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


def admin_rules(admin_cidrs: Sequence[str]) -> list[tuple[str, int, list[str], list[str]]]:
    """The edge listener rules, as (action, priority, path patterns, source CIDRs).

    ``forward`` rules (paths x admin CIDRs) come first, then ``deny`` rules (paths only); each
    within AWS's limits of 3 values per condition and 5 per rule.
    """
    paths = _chunks(admin_path_patterns(), RULE_CONDITION_VALUES)
    cidrs = _chunks(list(admin_cidrs), ADMIN_CIDRS_PER_RULE)
    allow = [(p, c) for c in cidrs for p in paths]
    if len(allow) + len(paths) > MAX_LISTENER_RULES:
        most = (MAX_LISTENER_RULES - len(paths)) // len(paths) * ADMIN_CIDRS_PER_RULE
        raise ConfigError(
            key="llmkit:gateway.admin_cidrs",
            value=list(admin_cidrs),
            accepted=f"at most {most} CIDRs",
            message=f"{len(allow) + len(paths)} listener rules at the edge, over the load balancer's quota "
            f"of {MAX_LISTENER_RULES}: list fewer, wider admin networks",
        )
    rules = [("forward", ALLOW_PRIORITY + i, p, c) for i, (p, c) in enumerate(allow)]
    rules += [("deny", DENY_PRIORITY + i, p, []) for i, p in enumerate(paths)]
    return rules


def ecr_repository(image: str) -> tuple[str, str, str] | None:
    """(account, region, repository) of an ECR image reference; None for any other registry."""
    match = _ECR_IMAGE.fullmatch(image)
    return (match["account"], match["region"], match["repository"]) if match else None


def execution_policy(
    *,
    database_secret_arn: str,
    secrets_key_arn: str,
    log_group_arn: str,
    region: str,
    image: str,
    partition: str = "aws",
    dns_suffix: str = "amazonaws.com",
) -> dict[str, Any]:
    """What the execution role needs besides the gateway's keys: the database secret, logs, the image."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadTheDatabaseSecret",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": database_secret_arn,
        },
        {
            "Sid": "UseTheSecretsKeyThroughSecretsManager",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": secrets_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.{dns_suffix}"}},
        },
        {
            "Sid": "WriteTheGatewayLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
        },
    ]
    ecr = ecr_repository(image)
    if ecr is not None:
        account, ecr_region, repository = ecr
        statements += [
            # GetAuthorizationToken acts on no resource: "*" is the only possible value.
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "PullTheGatewayImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                "Resource": f"arn:{partition}:ecr:{ecr_region}:{account}:repository/{repository}",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass
class GatewayArgs:
    """What :class:`Gateway` needs; :meth:`from_config` reads the stack's part of it.

    Resource inputs: the VPC and its app/data subnets, the Firewall's ``app`` and ``data`` groups,
    the edge's app target group and HTTPS listener, the fleet's internal load balancer (DNS name
    and hosted zone), the gateway's ECS task execution role (name and ARN), the Secrets
    component's ``container_secrets``, and the data, logs and secrets keys. ``launch_after``: what
    must exist before the first task starts (the listener the target group hangs on, the
    execution role's policies, the keys' first values).
    """

    stack: str
    region: str
    gateway: GatewayConfig
    runtime: str
    served_models: Sequence[str]
    app_port: int
    log_retention_days: int
    deletion_protection: bool
    vpc_id: pulumi.Input[str]
    app_subnet_ids: Sequence[pulumi.Input[str]]
    data_subnet_ids: Sequence[pulumi.Input[str]]
    app_security_group_id: pulumi.Input[str]
    data_security_group_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    https_listener_arn: pulumi.Input[str]
    models_lb_dns_name: pulumi.Input[str]
    models_lb_zone_id: pulumi.Input[str]
    execution_role_name: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]
    # Secrets.container_secrets: [{"name": "LITELLM_MASTER_KEY", "valueFrom": <arn>}, ...]
    container_secrets: pulumi.Input[Sequence[Mapping[str, str]]]
    data_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    secrets_key_arn: pulumi.Input[str]
    models_domain: str
    # The CA bundle (PEM) that verifies the internal load balancer's certificate; None: the
    # image's public trust store (an ACM-issued certificate).
    models_ca_bundle: Path | None = None
    launch_after: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: StackConfig, **resource_inputs: Any) -> GatewayArgs:
        """Args from the stack's config (it must have ``llmkit:gateway``) plus the resource inputs."""
        if cfg.gateway is None:
            raise ValueError("GatewayArgs.from_config: the stack has no llmkit:gateway section")
        stack = cfg.stack or pulumi.get_stack()
        values: dict[str, Any] = {
            "stack": stack,
            "region": cfg.region,
            "gateway": cfg.gateway,
            "runtime": cfg.runtime,
            "served_models": [spec.name for spec in cfg.models],
            "app_port": cfg.firewall.app_port,
            "log_retention_days": cfg.logging.retention_days,
            "deletion_protection": cfg.endpoint.deletion_protection,
            "models_domain": default_models_domain(stack),
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **resource_inputs})

    @property
    def image(self) -> str:
        return self.gateway.image or litellm_release().image

    def config_yaml(self) -> str:
        """LiteLLM's config.yaml for this stack (no secret in it)."""
        config = litellm_config(
            self.gateway,
            backends(self.served_models, self.models_domain),
            runtime=self.runtime,
            ca_file=MODELS_CA_PATH if self.models_ca_bundle is not None else None,
        )
        return render_config(config)

    def validate(self) -> None:
        """Raise ConfigError (a config value) or ValueError (an argument) for an undeployable gateway."""
        gw = self.gateway
        low, high = FARGATE_MEMORY[gw.cpu]
        if not (low <= gw.memory_mib <= high and gw.memory_mib % 1024 == 0):
            raise ConfigError(
                key="llmkit:gateway.memory_mib",
                value=gw.memory_mib,
                accepted=f"with llmkit:gateway.cpu {gw.cpu}: {low}..{high} in steps of 1024 (Fargate)",
                message=f"does not fit llmkit:gateway.cpu {gw.cpu} on Fargate",
            )
        if not _DNS_NAME.fullmatch(self.models_domain):
            raise ValueError(f"models_domain {self.models_domain!r} is not a lowercase DNS name")
        model_ports = {rt.port for rt in load_catalog().runtimes.values()}
        if self.app_port in model_ports:
            raise ValueError(
                f"app_port {self.app_port} is a model runtime's port: the gateway is the app tier"
            )
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"log_retention_days must be a CloudWatch Logs retention of at least {LOG_RETENTION_DAYS[0]} "
                f"days, got {self.log_retention_days}"
            )
        if gw.database.backup_retention_days < 7:
            raise ValueError("llmkit:gateway.database.backup_retention_days must be at least 7")
        if isinstance(self.app_subnet_ids, Sequence) and not self.app_subnet_ids:
            raise ValueError("app_subnet_ids is empty: the gateway's tasks need the app subnets")
        if isinstance(self.data_subnet_ids, Sequence) and len(self.data_subnet_ids) < 2:
            raise ValueError("a DB subnet group needs data_subnet_ids in at least two AZs")
        if self.models_ca_bundle is not None:
            check_ca_bundle(self.models_ca_bundle)
        size = len(self.config_yaml().encode())
        if size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"LiteLLM's config is {size} bytes, over the {MAX_CONFIG_BYTES} this component passes"
            )
        admin_rules([str(c) for c in gw.admin_cidrs])  # raises when there would be too many rules


def _first_secret_arn(secrets: Any) -> str:
    """The ARN of the master user secret RDS manages (``master_user_secrets[0].secret_arn``)."""
    if not secrets:
        raise ValueError("the database has no managed master user secret")
    first = secrets[0]
    if isinstance(first, Mapping):
        return str(first.get("secret_arn") or first.get("secretArn"))
    return str(first.secret_arn)


class Gateway(Component):
    """LiteLLM on ECS Fargate behind the edge, with its PostgreSQL on RDS (see the module doc).

    Attributes: ``cluster``, ``task_definition``, ``service``, ``log_group``, ``db_subnet_group``,
    ``db_parameter_group``, ``db_log_group``, ``database``, ``execution_access``, ``zone``,
    ``models_record``, ``listener_rules``; outputs ``service_name``, ``cluster_name``,
    ``database_endpoint``, ``database_secret_arn``, ``models_domain``.
    """

    TYPE = "llmkit:aws:Gateway"

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)
        self.args = args
        tags = dict(args.tags)
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke_opts)

        self._create_logs(tags)
        self._create_database(tags)
        self._create_execution_access(partition)
        self._create_models_dns(tags)
        self._create_ecs(tags)
        self._create_service(tags)
        self._create_admin_routes(tags)

        self.register_outputs(
            {
                "service_name": self.service_name,
                "cluster_name": self.cluster_name,
                "database_endpoint": self.database_endpoint,
                "database_secret_arn": self.database_secret_arn,
                "models_domain": self.models_domain,
            }
        )

    # --- logs ----------------------------------------------------------------------------------
    def _create_logs(self, tags: dict[str, str]) -> None:
        args = self.args
        self.log_group = aws.cloudwatch.LogGroup(
            self.child_name("logs"),
            name=log_group_name(args.stack),
            kms_key_id=args.logs_key_arn,
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=self.child_opts(),
        )

    # --- the database --------------------------------------------------------------------------
    def _create_database(self, tags: dict[str, str]) -> None:
        args = self.args
        db = args.gateway.database
        identifier = database_identifier(args.stack)
        self.db_subnet_group = aws.rds.SubnetGroup(
            self.child_name("db-subnets"),
            description=f"llmkit {args.stack} gateway database: the data subnets",
            subnet_ids=list(args.data_subnet_ids),
            tags=tags,
            opts=self.child_opts(),
        )
        self.db_parameter_group = aws.rds.ParameterGroup(
            self.child_name("db-params"),
            family=PARAMETER_GROUP_FAMILY,
            description=f"llmkit {args.stack} gateway database: TLS required",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1")],
            tags=tags,
            opts=self.child_opts(),
        )
        self.db_log_group = aws.cloudwatch.LogGroup(
            self.child_name("db-logs"),
            name=database_log_group_name(args.stack),
            kms_key_id=args.logs_key_arn,
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=self.child_opts(),
        )
        protected = args.deletion_protection
        self.database = aws.rds.Instance(
            self.child_name("db"),
            identifier=identifier,
            engine="postgres",
            engine_version=POSTGRES_VERSION,
            instance_class=db.instance_class,
            allocated_storage=db.allocated_storage_gib,
            max_allocated_storage=min(db.allocated_storage_gib * STORAGE_AUTOSCALING_FACTOR, MAX_STORAGE_GIB),
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.data_key_arn,
            db_name=DATABASE_NAME,
            username=DATABASE_USER,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=args.secrets_key_arn,
            port=DATABASE_PORT,
            db_subnet_group_name=self.db_subnet_group.name,
            vpc_security_group_ids=[args.data_security_group_id],
            parameter_group_name=self.db_parameter_group.name,
            publicly_accessible=False,
            network_type="IPV4",
            ca_cert_identifier=RDS_CA,
            multi_az=db.multi_az,
            iam_database_authentication_enabled=db.iam_auth,
            backup_retention_period=db.backup_retention_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            deletion_protection=protected,
            skip_final_snapshot=not protected,
            final_snapshot_identifier=f"{identifier}-final" if protected else None,
            delete_automated_backups=not protected,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.data_key_arn,
            performance_insights_retention_period=PERFORMANCE_INSIGHTS_DAYS,
            enabled_cloudwatch_logs_exports=list(DB_LOG_EXPORTS),
            tags=tags,
            # Its log group first: RDS would otherwise make one without a key or a retention.
            opts=self.child_opts(depends_on=[self.db_log_group]),
        )
        self.database_endpoint: pulumi.Output[str] = self.database.endpoint
        self.database_secret_arn: pulumi.Output[str] = self.database.master_user_secrets.apply(
            _first_secret_arn
        )

    # --- the task execution role's further permissions ----------------------------------------
    def _create_execution_access(self, partition: pulumi.Output[aws.GetPartitionResult]) -> None:
        args = self.args
        image = args.image
        self.execution_access = aws.iam.RolePolicy(
            self.child_name("execution-access"),
            role=args.execution_role_name,
            policy=pulumi.Output.all(
                self.database_secret_arn,
                args.secrets_key_arn,
                self.log_group.arn,
                partition.partition,
                partition.dns_suffix,
            ).apply(
                lambda v: json.dumps(
                    execution_policy(
                        database_secret_arn=v[0],
                        secrets_key_arn=v[1],
                        log_group_arn=v[2],
                        region=args.region,
                        image=image,
                        partition=v[3],
                        dns_suffix=v[4],
                    )
                )
            ),
            opts=self.child_opts(),
        )

    # --- DNS: <slug>.<models domain> -> the fleet's internal load balancer ----------------------
    def _create_models_dns(self, tags: dict[str, str]) -> None:
        args = self.args
        self.models_domain = args.models_domain
        self.zone = aws.route53.Zone(
            self.child_name("models-zone"),
            name=args.models_domain,
            comment=f"llmkit {args.stack}: the model hosts' names, for the gateway",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=args.vpc_id, vpc_region=args.region)],
            tags=tags,
            opts=self.child_opts(),
        )
        self.models_record = aws.route53.Record(
            self.child_name("models-record"),
            zone_id=self.zone.zone_id,
            name=f"*.{args.models_domain}",
            type="A",
            aliases=[
                aws.route53.RecordAliasArgs(
                    name=args.models_lb_dns_name,
                    zone_id=args.models_lb_zone_id,
                    evaluate_target_health=False,
                )
            ],
            opts=self.child_opts(),
        )

    # --- ECS -----------------------------------------------------------------------------------
    def _create_ecs(self, tags: dict[str, str]) -> None:
        args = self.args
        gw = args.gateway
        self.cluster = aws.ecs.Cluster(
            self.child_name("cluster"),
            name=f"llmkit-{args.stack}-gateway",
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=tags,
            opts=self.child_opts(),
        )
        self.task_definition = aws.ecs.TaskDefinition(
            self.child_name("task"),
            family=f"llmkit-{args.stack}-gateway",
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(gw.cpu),
            memory=str(gw.memory_mib),
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="X86_64"
            ),
            execution_role_arn=args.execution_role_arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name="tmp")],
            container_definitions=pulumi.Output.all(
                args.container_secrets, self.database.address, self.database_secret_arn, self.log_group.name
            ).apply(self._container_definitions()),
            tags=tags,
            opts=self.child_opts(),
        )

    def _container_definitions(self) -> Callable[[list[Any]], str]:
        """The function that turns the resolved secrets, database and log group into the task's JSON."""
        args = self.args
        image = args.image
        config_yaml = args.config_yaml()
        ca_pem = args.models_ca_bundle.read_text(encoding="utf-8") if args.models_ca_bundle else None
        environment = {
            CONFIG_ENV: config_yaml,
            DATABASE_ENV["port"]: str(DATABASE_PORT),
            DATABASE_ENV["name"]: DATABASE_NAME,
            **({MODELS_CA_ENV: ca_pem} if ca_pem else {}),
        }
        command = [
            "--config",
            CONFIG_PATH,
            "--host",
            "0.0.0.0",
            "--port",
            str(args.app_port),
            "--ssl_keyfile_path",
            TLS_KEY_PATH,
            "--ssl_certfile_path",
            TLS_CERT_PATH,
        ]

        def container_definitions(values: list[Any]) -> str:
            # Only builds a string from resolved values; no resources are created in apply.
            keys, database_host, database_secret, log_group = values
            secrets = [{"name": s["name"], "valueFrom": s["valueFrom"]} for s in keys]
            secrets += [
                {"name": DATABASE_ENV[field_], "valueFrom": f"{database_secret}:{field_}::"}
                for field_ in ("username", "password")
            ]
            env = {**environment, DATABASE_ENV["host"]: database_host}
            return json.dumps(
                [
                    {
                        "name": CONTAINER_NAME,
                        "image": image,
                        "essential": True,
                        "entryPoint": ["python3", "-c", BOOTSTRAP],
                        "command": command,
                        "portMappings": [
                            {"containerPort": args.app_port, "hostPort": args.app_port, "protocol": "tcp"}
                        ],
                        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                        "secrets": secrets,
                        "readonlyRootFilesystem": True,
                        "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
                        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
                        "stopTimeout": STOP_TIMEOUT_SECONDS,
                        "logConfiguration": {
                            "logDriver": "awslogs",
                            "options": {
                                "awslogs-group": log_group,
                                "awslogs-region": args.region,
                                "awslogs-stream-prefix": "gateway",
                                "mode": "non-blocking",
                                "max-buffer-size": "25m",
                            },
                        },
                    }
                ]
            )

        return container_definitions

    # --- the service, registered in the edge's app target group -------------------------------
    def _create_service(self, tags: dict[str, str]) -> None:
        args = self.args
        self.service = aws.ecs.Service(
            self.child_name("service"),
            name=f"llmkit-{args.stack}-gateway",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=args.gateway.replicas,
            launch_type="FARGATE",
            platform_version="LATEST",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=list(args.app_subnet_ids),
                security_groups=[args.app_security_group_id],
                assign_public_ip=False,
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=args.target_group_arn,
                    container_name=CONTAINER_NAME,
                    container_port=args.app_port,
                )
            ],
            health_check_grace_period_seconds=HEALTH_CHECK_GRACE_SECONDS,
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            availability_zone_rebalancing="ENABLED",
            enable_execute_command=False,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            wait_for_steady_state=False,
            tags=tags,
            opts=self.child_opts(depends_on=[self.execution_access, *args.launch_after]),
        )
        self.service_name: pulumi.Output[str] = self.service.name
        self.cluster_name: pulumi.Output[str] = self.cluster.name

    # --- the management routes, from the admin networks only ----------------------------------
    def _create_admin_routes(self, tags: dict[str, str]) -> None:
        args = self.args
        self.listener_rules: list[aws.lb.ListenerRule] = []
        for action, priority, paths, cidrs in admin_rules([str(c) for c in args.gateway.admin_cidrs]):
            conditions = [
                aws.lb.ListenerRuleConditionArgs(
                    path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=paths)
                )
            ]
            if action == "forward":
                conditions.append(
                    aws.lb.ListenerRuleConditionArgs(
                        source_ip=aws.lb.ListenerRuleConditionSourceIpArgs(values=cidrs)
                    )
                )
                actions = [
                    aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=args.target_group_arn)
                ]
            else:
                actions = [
                    aws.lb.ListenerRuleActionArgs(
                        type="fixed-response",
                        fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
                            content_type="application/json", message_body=FORBIDDEN_BODY, status_code="403"
                        ),
                    )
                ]
            self.listener_rules.append(
                aws.lb.ListenerRule(
                    self.child_name(f"admin-{'allow' if action == 'forward' else 'deny'}-{priority}"),
                    listener_arn=args.https_listener_arn,
                    priority=priority,
                    conditions=conditions,
                    actions=actions,
                    tags=tags,
                    opts=self.child_opts(),
                )
            )
