"""The gateway's API keys in AWS Secrets Manager, and the Lambda function that creates and rotates them.

:class:`Secrets` creates two secrets for the LiteLLM gateway of the app tier:

- ``llmkit/<stack>/gateway/master-key``: LiteLLM's admin key (``LITELLM_MASTER_KEY``; LiteLLM wants
  it to start with ``sk-``). It **rotates** every ``llmkit:secrets.rotation_days`` days
  (``aws.secretsmanager.SecretRotation``), and once right at deployment (``rotate_immediately``), so
  a broken rotation shows on day one rather than a month later. Virtual keys that clients use are
  not derived from it and survive a rotation; running gateway tasks keep the key they started with
  until they are replaced.
- ``llmkit/<stack>/gateway/salt-key``: LiteLLM's ``LITELLM_SALT_KEY``, with which the gateway
  encrypts the provider credentials it stores in its database. It **never rotates**: a new salt
  key would make every stored credential unreadable (LiteLLM has no re-encryption with a new salt
  key). So it has no rotation schedule, its resource policy denies ``secretsmanager:RotateSecret``
  to everyone, and it is tagged ``llmkit:rotation = disabled``, which the Lambda function refuses
  to rotate. Changing it is a manual migration, not an operation of this kit.

Each secret is encrypted with the **secrets** KMS key and has a recovery window (default 30 days,
7..30; 0 = immediate deletion is refused).

**No value ever passes through Pulumi.** The secrets are created without a value; the first value
of each is made *inside AWS* by the Lambda function (``GetRandomPassword``), called once by the
deployment through ``aws.lambda_.Invocation`` with ``{"Action": "initialize", "SecretId": ...}``.
The function only writes a value if the secret has none and answers with the version id alone, so
the Pulumi state and the plan hold ARNs and version ids, never a key. Rotations are made the same
way. (``aws.secretsmanager.get_random_password`` would put the value in the program and a
``SecretVersion`` would keep it, encrypted but present, in the state; ``pulumi_random`` is not a
dependency of the kit.) The function code is ``components/lambdas/rotate_api_key.py``.

**Resource policy** (``SecretPolicy`` with ``block_public_policy``), per secret: a ``Deny`` of
``secretsmanager:GetSecretValue`` to every principal whose ``aws:PrincipalArn`` is not one of the
readers: the app tier's roles (``reader_role_arns``) and, for the master key only, the rotation
function's role (it reads the pending key to test it). The function never needs to read the salt
key (initialization only describes the secret and writes), so it cannot. Administration is left
to IAM: describing, tagging, changing the policy or deleting a secret is not denied, so
administrators are not locked out; only reading a value is. Granting the readers is also IAM's
job: :attr:`Secrets.reader_policy_json` is the identity policy to attach to each reader role
(``GetSecretValue`` on the two secrets, ``kms:Decrypt`` on the secrets key through Secrets Manager
only).

**The rotation function**: Python 3.13 on arm64, not in a VPC (it only calls Secrets Manager), with
small reserved concurrency, logging to its own KMS-encrypted log group
``/llmkit/<stack>/rotate-api-key`` (logs key, ``llmkit:logging.retention_days``). Its role may:
``DescribeSecret``/``GetSecretValue``/``PutSecretValue``/``UpdateSecretVersionStage`` on the master
key, ``DescribeSecret``/``PutSecretValue`` on the salt key, ``GetRandomPassword`` (an action without
a resource), ``kms:Decrypt``/``kms:GenerateDataKey`` on the secrets key only through Secrets
Manager, and write its own log streams. Secrets Manager may invoke it only on behalf of this
account (``aws.lambda_.Permission`` with ``source_account``), as AWS documents for rotation.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component
from llmkit.config import LOG_RETENTION_DAYS, StackConfig

# The gateway's keys: key -> the environment variable LiteLLM reads it from.
ENV_VARS = {"master-key": "LITELLM_MASTER_KEY", "salt-key": "LITELLM_SALT_KEY"}
# Only these rotate; the salt key never does (see the module doc).
ROTATING = frozenset({"master-key"})
ROTATION_TAG = "llmkit:rotation"  # the function refuses to rotate a secret tagged "disabled"
SECRETS_MANAGER_SERVICE = "secretsmanager.amazonaws.com"
LAMBDA_SERVICE = "lambda.amazonaws.com"
HANDLER_FILE = Path(__file__).resolve().parent / "lambdas" / "rotate_api_key.py"
HANDLER = "rotate_api_key.handler"
RUNTIME = "python3.13"
RECOVERY_WINDOW_DAYS = (7, 30)
ROTATION_DAYS = (1, 1000)  # what Secrets Manager accepts
ROTATION_TIMEOUT_S = 120  # initialization may wait ~30 s for IAM to propagate
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

READ_ACTIONS = ["secretsmanager:GetSecretValue"]
ROTATE_ACTIONS = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
]
INITIALIZE_ACTIONS = ["secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue"]


def secret_name(stack: str, key: str) -> str:
    return f"llmkit/{stack}/gateway/{key}"


def function_name(stack: str) -> str:
    return f"llmkit-{stack}-rotate-api-key"


def function_log_group_name(stack: str) -> str:
    return f"/llmkit/{stack}/rotate-api-key"


def secret_policy(*, readers: Sequence[str], rotates: bool) -> dict[str, Any]:
    """The resource policy of one secret: nobody but `readers` reads it; a non-rotating one never rotates."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "DenyReadingToAllButTheReaders",
            "Effect": "Deny",
            "Principal": "*",
            "Action": READ_ACTIONS,
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": sorted(set(readers))}},
        }
    ]
    if not rotates:
        statements.append(
            {
                "Sid": "DenyRotation",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "secretsmanager:RotateSecret",
                "Resource": "*",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def _secret_policy_json(rotates: bool, readers: list[str]) -> str:
    return json.dumps(secret_policy(readers=readers, rotates=rotates))


def _secrets_key_use(kms_key_arn: str, actions: list[str], region: str, dns_suffix: str) -> dict[str, Any]:
    return {
        "Sid": "UseTheSecretsKeyThroughSecretsManager",
        "Effect": "Allow",
        "Action": actions,
        "Resource": kms_key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.{dns_suffix}"}},
    }


def function_policy(
    *,
    rotating_arns: Sequence[str],
    initialize_only_arns: Sequence[str],
    kms_key_arn: str,
    log_group_arn: str,
    region: str,
    dns_suffix: str = "amazonaws.com",
) -> dict[str, Any]:
    """The rotation function's identity policy, from plain values (call it inside apply)."""
    statements: list[dict[str, Any]] = []
    if rotating_arns:
        statements.append(
            {
                "Sid": "RotateTheKeys",
                "Effect": "Allow",
                "Action": ROTATE_ACTIONS,
                "Resource": list(rotating_arns),
            }
        )
    if initialize_only_arns:
        statements.append(
            {
                "Sid": "InitializeTheNonRotatingKeys",
                "Effect": "Allow",
                "Action": INITIALIZE_ACTIONS,
                "Resource": list(initialize_only_arns),
            }
        )
    statements += [
        # GetRandomPassword acts on no resource: "*" is the only possible value.
        {
            "Sid": "GenerateKeys",
            "Effect": "Allow",
            "Action": "secretsmanager:GetRandomPassword",
            "Resource": "*",
        },
        _secrets_key_use(kms_key_arn, ["kms:Decrypt", "kms:GenerateDataKey"], region, dns_suffix),
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def reader_policy(
    *, secret_arns: Sequence[str], kms_key_arn: str, region: str, dns_suffix: str = "amazonaws.com"
) -> dict[str, Any]:
    """The identity policy a reader role needs: read the keys, decrypt them through Secrets Manager."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheGatewayKeys",
                "Effect": "Allow",
                "Action": READ_ACTIONS,
                "Resource": list(secret_arns),
            },
            _secrets_key_use(kms_key_arn, ["kms:Decrypt"], region, dns_suffix),
        ],
    }


LAMBDA_ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": LAMBDA_SERVICE}, "Action": "sts:AssumeRole"}
        ],
    }
)


@dataclass
class SecretsArgs:
    """What :class:`Secrets` needs; :meth:`from_config` reads it from a stack's config.

    ``reader_role_arns``: the roles of the app tier that read the keys (for an ECS gateway that gets
    them as ``secrets`` of its container definition, the task *execution* role; for one that calls
    Secrets Manager itself, the task role). Attach :attr:`Secrets.reader_policy_json` to each.
    """

    stack: str
    region: str
    # The secrets key (KmsKeys.secrets.arn): encrypts the secrets.
    secrets_key_arn: pulumi.Input[str]
    # The logs key (KmsKeys.logs.arn): encrypts the function's log group.
    logs_key_arn: pulumi.Input[str]
    reader_role_arns: Sequence[pulumi.Input[str]]
    rotation_days: int
    log_retention_days: int
    recovery_window_days: int = RECOVERY_WINDOW_DAYS[1]
    # Rotation is rare; None leaves the function on the account's unreserved pool (accounts whose
    # concurrency quota is still 10 cannot reserve any).
    reserved_concurrency: int | None = 2
    # None: the account of the caller (aws.get_caller_identity).
    account_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        secrets_key_arn: pulumi.Input[str],
        logs_key_arn: pulumi.Input[str],
        reader_role_arns: Sequence[pulumi.Input[str]],
        **overrides: Any,
    ) -> SecretsArgs:
        values: dict[str, Any] = {
            "stack": cfg.stack or pulumi.get_stack(),
            "region": cfg.region,
            "secrets_key_arn": secrets_key_arn,
            "logs_key_arn": logs_key_arn,
            "reader_role_arns": list(reader_role_arns),
            "rotation_days": cfg.secrets.rotation_days,
            "log_retention_days": cfg.logging.retention_days,
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})

    def validate(self) -> None:
        """Raise ValueError for args that would leave the keys unreadable, unrotated or undeployable."""
        if not self.reader_role_arns:
            raise ValueError(
                "SecretsArgs.reader_role_arns is empty: nobody could read the gateway's keys; "
                "pass the app tier's role ARNs (e.g. the gateway's ECS task execution role)"
            )
        for i, arn in enumerate(self.reader_role_arns):
            if isinstance(arn, str) and not _ROLE_ARN.fullmatch(arn):
                raise ValueError(
                    f"SecretsArgs.reader_role_arns[{i}]: {arn!r} is not an IAM role ARN "
                    "(arn:aws:iam::<account>:role/<name>); the resource policy matches aws:PrincipalArn, "
                    "which is the role's ARN for its sessions"
                )
        low, high = ROTATION_DAYS
        if not low <= self.rotation_days <= high:
            raise ValueError(
                f"SecretsArgs.rotation_days must be {low}..{high} (Secrets Manager's rotation schedule), "
                f"got {self.rotation_days}"
            )
        low, high = RECOVERY_WINDOW_DAYS
        if not low <= self.recovery_window_days <= high:
            raise ValueError(
                f"SecretsArgs.recovery_window_days must be {low}..{high}, got {self.recovery_window_days} "
                "(0, deletion without recovery, is not allowed for the gateway's keys)"
            )
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"SecretsArgs.log_retention_days must be a CloudWatch Logs retention of at least "
                f"{LOG_RETENTION_DAYS[0]} days ({', '.join(map(str, LOG_RETENTION_DAYS))}), "
                f"got {self.log_retention_days}"
            )
        if self.reserved_concurrency is not None and self.reserved_concurrency < 1:
            raise ValueError(
                f"SecretsArgs.reserved_concurrency must be >= 1 or None, got {self.reserved_concurrency} "
                "(0 would throttle every rotation)"
            )
        if not _FUNCTION_NAME.fullmatch(function_name(self.stack)):
            raise ValueError(
                f"SecretsArgs.stack {self.stack!r} cannot name the rotation function "
                f"{function_name(self.stack)!r}: 64 letters, digits, - and _ at most"
            )


class Secrets(Component):
    """The gateway's keys, their policies and rotation, and the rotation function (see the module doc)."""

    TYPE = "llmkit:aws:Secrets"

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        account_id: pulumi.Input[str] = self.account_id(args.account_id)
        dns_suffix = aws.get_partition_output(opts=invoke_opts).dns_suffix
        tags = dict(args.tags)

        self._create_secrets(args, tags)
        self._create_function(args, tags, account_id, dns_suffix)
        self._create_secret_policies(args)
        self._create_reader_outputs(args, dns_suffix)

        self.register_outputs(
            {
                "secret_arns": self.secret_arns,
                "rotation_lambda_arn": self.rotation_lambda_arn,
                "reader_policy_json": self.reader_policy_json,
            }
        )

    def _create_secrets(self, args: SecretsArgs, tags: dict[str, str]) -> None:
        """The secrets, without a value (see the module doc)."""
        self.secrets: dict[str, aws.secretsmanager.Secret] = {
            key: aws.secretsmanager.Secret(
                self.child_name(key),
                name=secret_name(args.stack, key),
                description=f"llmkit {args.stack} gateway {env}, value made in AWS by the rotation function",
                kms_key_id=args.secrets_key_arn,
                recovery_window_in_days=args.recovery_window_days,
                tags={**tags, ROTATION_TAG: "enabled" if key in ROTATING else "disabled"},
                opts=self.child_opts(),
            )
            for key, env in ENV_VARS.items()
        }
        self.secret_arns: dict[str, pulumi.Output[str]] = {key: s.arn for key, s in self.secrets.items()}
        self.master_key = self.secrets["master-key"]
        self.salt_key = self.secrets["salt-key"]

    def _create_function(
        self,
        args: SecretsArgs,
        tags: dict[str, str],
        account_id: pulumi.Input[str],
        dns_suffix: pulumi.Output[str],
    ) -> None:
        """The rotation function: its log group, role, access, code, and Secrets Manager's permission."""
        self.function_log_group = aws.cloudwatch.LogGroup(
            self.child_name("rotation-logs"),
            name=function_log_group_name(args.stack),
            kms_key_id=args.logs_key_arn,
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=self.child_opts(),
        )
        self.function_role = aws.iam.Role(
            self.child_name("rotation-role"),
            description=f"The llmkit {args.stack} function that creates and rotates the gateway's keys",
            assume_role_policy=LAMBDA_ASSUME_ROLE_POLICY,
            tags=tags,
            opts=self.child_opts(),
        )
        rotating = sorted(ROTATING)
        initialize_only = sorted(set(ENV_VARS) - ROTATING)

        def function_policy_json(v: list[Any]) -> str:
            # Only builds a string from resolved values; no resources are created in apply.
            rotating_arns, initialize_arns, key_arn, log_arn, suffix = v
            return json.dumps(
                function_policy(
                    rotating_arns=rotating_arns,
                    initialize_only_arns=initialize_arns,
                    kms_key_arn=key_arn,
                    log_group_arn=log_arn,
                    region=args.region,
                    dns_suffix=suffix,
                )
            )

        self.function_policy = aws.iam.RolePolicy(
            self.child_name("rotation-access"),
            role=self.function_role.id,
            policy=pulumi.Output.all(
                pulumi.Output.all(*(self.secret_arns[k] for k in rotating)),
                pulumi.Output.all(*(self.secret_arns[k] for k in initialize_only)),
                args.secrets_key_arn,
                self.function_log_group.arn,
                dns_suffix,
            ).apply(function_policy_json),
            opts=self.child_opts(),
        )
        self.function = aws.lambda_.Function(
            self.child_name("rotation"),
            name=function_name(args.stack),
            description=f"Creates and rotates the llmkit {args.stack} gateway's API keys in Secrets Manager",
            role=self.function_role.arn,
            runtime=RUNTIME,
            architectures=["arm64"],
            handler=HANDLER,
            code=pulumi.AssetArchive({HANDLER_FILE.name: pulumi.FileAsset(str(HANDLER_FILE))}),
            timeout=ROTATION_TIMEOUT_S,
            memory_size=128,
            reserved_concurrent_executions=args.reserved_concurrency,
            logging_config={"log_format": "Text", "log_group": self.function_log_group.name},
            tags=tags,
            # Its log group and permissions first: nothing it writes is lost, no first call refused.
            opts=self.child_opts(depends_on=[self.function_policy, self.function_log_group]),
        )
        self.rotation_lambda_arn: pulumi.Output[str] = self.function.arn
        self.invoke_permission = aws.lambda_.Permission(
            self.child_name("rotation-invoke"),
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal=SECRETS_MANAGER_SERVICE,
            source_account=account_id,
            opts=self.child_opts(),
        )

    def _create_secret_policies(self, args: SecretsArgs) -> None:
        """Per secret: its resource policy, its first value and, if it rotates, its rotation."""
        self.policies: dict[str, aws.secretsmanager.SecretPolicy] = {}
        self.initial_values: dict[str, aws.lambda_.Invocation] = {}
        self.rotations: dict[str, aws.secretsmanager.SecretRotation] = {}
        readers = pulumi.Output.all(*args.reader_role_arns)
        for key, secret in self.secrets.items():
            rotates = key in ROTATING
            secret_readers = (
                pulumi.Output.all(readers, self.function_role.arn).apply(lambda v: [*v[0], v[1]])
                if rotates
                else readers
            )
            self.policies[key] = aws.secretsmanager.SecretPolicy(
                self.child_name(f"{key}-policy"),
                secret_arn=secret.arn,
                policy=secret_readers.apply(functools.partial(_secret_policy_json, rotates)),
                block_public_policy=True,
                opts=self.child_opts(),
            )
            self.initial_values[key] = aws.lambda_.Invocation(
                self.child_name(f"{key}-initial-value"),
                function_name=self.function.name,
                input=secret.arn.apply(lambda arn: json.dumps({"Action": "initialize", "SecretId": arn})),
                opts=self.child_opts(depends_on=[self.function_policy, self.policies[key]]),
            )
            if rotates:
                self.rotations[key] = aws.secretsmanager.SecretRotation(
                    self.child_name(f"{key}-rotation"),
                    secret_id=secret.arn,
                    rotation_lambda_arn=self.function.arn,
                    rotation_rules={"automatically_after_days": args.rotation_days},
                    rotate_immediately=True,
                    opts=self.child_opts(depends_on=[self.invoke_permission, self.initial_values[key]]),
                )

    def _create_reader_outputs(self, args: SecretsArgs, dns_suffix: pulumi.Output[str]) -> None:
        """What readers need: their identity policy and the ECS container secrets (no resources)."""
        all_arns = pulumi.Output.all(*self.secret_arns.values())
        self.reader_policy_json: pulumi.Output[str] = pulumi.Output.all(
            all_arns, args.secrets_key_arn, dns_suffix
        ).apply(
            lambda v: json.dumps(
                reader_policy(secret_arns=v[0], kms_key_arn=v[1], region=args.region, dns_suffix=v[2])
            )
        )
        # For an ECS container definition: [{"name": "LITELLM_MASTER_KEY", "valueFrom": <arn>}, ...].
        self.container_secrets: pulumi.Output[list[dict[str, str]]] = all_arns.apply(
            lambda arns: [
                {"name": env, "valueFrom": arn} for env, arn in zip(ENV_VARS.values(), arns, strict=True)
            ]
        )
