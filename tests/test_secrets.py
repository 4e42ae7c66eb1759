"""Secrets: the gateway's keys, their resource policies, rotation and the rotation function."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from components.secrets import HANDLER_FILE, Secrets, SecretsArgs
from llmkit.config import StackConfig, load_stack
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import ROOT, Recorded

SECRET = "aws:secretsmanager/secret:Secret"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"
FUNCTION = "aws:lambda/function:Function"
PERMISSION = "aws:lambda/permission:Permission"
INVOCATION = "aws:lambda/invocation:Invocation"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"

SECRETS_KEY = f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:key/secrets"
LOGS_KEY = f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:key/logs"
GATEWAY_ROLE = f"arn:aws:iam::{MOCK_ACCOUNT_ID}:role/llmkit-prod-gateway-execution"
# The mock's ARNs (arn:aws:<service>:<region>:<account>:<resource name>).
MASTER_ARN = f"arn:aws:secretsmanager:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-master-key"
SALT_ARN = f"arn:aws:secretsmanager:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-salt-key"
FUNCTION_ROLE_ARN = f"arn:aws:iam:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-rotation-role"
FUNCTION_LOGS_ARN = f"arn:aws:cloudwatch:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-rotation-logs"

RunPulumi = Callable[..., Recorded]


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack("prod", ROOT)


def deploy(
    run_pulumi: RunPulumi, cfg: StackConfig, readers: list[Any] | None = None, **overrides: Any
) -> Recorded:
    args = SecretsArgs.from_config(cfg, SECRETS_KEY, LOGS_KEY, readers or [GATEWAY_ROLE], **overrides)
    return run_pulumi(lambda: Secrets("secrets", args), stack="prod")


@pytest.fixture
def secrets(run_pulumi: RunPulumi, prod: StackConfig) -> Recorded:
    return deploy(run_pulumi, prod)


def _document(rec: Recorded, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(rec.named(name).inputs["policy"])
    return document


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resources(statement: dict[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def test_two_named_secrets_encrypted_with_the_secrets_key(secrets: Recorded) -> None:
    found = {s.name: s.inputs for s in secrets.of_type(SECRET)}
    assert sorted(found) == ["secrets-master-key", "secrets-salt-key"]
    assert found["secrets-master-key"]["name"] == "llmkit/prod/gateway/master-key"
    assert found["secrets-salt-key"]["name"] == "llmkit/prod/gateway/salt-key"
    for name, inputs in found.items():
        assert inputs["kmsKeyId"] == SECRETS_KEY, name
        assert inputs["recoveryWindowInDays"] == 30, name


def test_no_secret_value_is_in_the_plan(secrets: Recorded) -> None:
    """No secret version, no value input, no random-password invoke: values are made in AWS."""
    assert not secrets.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    for secret in secrets.of_type(SECRET):
        assert "secretString" not in secret.inputs and "secretBinary" not in secret.inputs
    for invocation in secrets.of_type(INVOCATION):
        assert set(json.loads(invocation.inputs["input"])) == {"Action", "SecretId"}
    assert "sk-" not in json.dumps([r.inputs for r in secrets.resources])


def test_each_secret_gets_its_first_value_from_the_function(secrets: Recorded) -> None:
    invocations = {i.name: i for i in secrets.of_type(INVOCATION)}
    assert sorted(invocations) == ["secrets-master-key-initial-value", "secrets-salt-key-initial-value"]
    for key, arn in (("master-key", MASTER_ARN), ("salt-key", SALT_ARN)):
        invocation = invocations[f"secrets-{key}-initial-value"]
        assert invocation.inputs["functionName"] == "llmkit-prod-rotate-api-key"
        assert json.loads(invocation.inputs["input"]) == {"Action": "initialize", "SecretId": arn}
        # the function's permissions and the secret's policy are in place first
        assert secrets.named("secrets-rotation-access").urn in invocation.dependencies
        assert secrets.named(f"secrets-{key}-policy").urn in invocation.dependencies


def test_master_key_rotates_on_the_configured_schedule(secrets: Recorded, prod: StackConfig) -> None:
    (rotation,) = secrets.of_type(ROTATION)
    assert rotation.inputs["secretId"] == MASTER_ARN
    assert rotation.inputs["rotationRules"] == {"automaticallyAfterDays": prod.secrets.rotation_days}
    assert rotation.inputs["rotateImmediately"] is True
    function_arn = f"arn:aws:lambda:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-rotation"
    assert rotation.inputs["rotationLambdaArn"] == function_arn
    assert secrets.named("secrets-rotation-invoke").urn in rotation.dependencies
    assert secrets.named("secrets-master-key-initial-value").urn in rotation.dependencies


def test_rotation_days_follow_config(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    cfg = prod.model_copy(update={"secrets": prod.secrets.model_copy(update={"rotation_days": 7})})
    (rotation,) = deploy(run_pulumi, cfg).of_type(ROTATION)
    assert rotation.inputs["rotationRules"] == {"automaticallyAfterDays": 7}


def test_salt_key_never_rotates(secrets: Recorded) -> None:
    assert [r.inputs["secretId"] for r in secrets.of_type(ROTATION)] == [MASTER_ARN]
    salt = secrets.named("secrets-salt-key").inputs
    assert salt["tags"]["llmkit:rotation"] == "disabled"  # the function refuses to rotate it
    assert secrets.named("secrets-master-key").inputs["tags"]["llmkit:rotation"] == "enabled"
    deny = next(
        s for s in _document(secrets, "secrets-salt-key-policy")["Statement"] if s["Sid"] == "DenyRotation"
    )
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert _actions(deny) == ["secretsmanager:RotateSecret"]
    assert "Condition" not in deny  # nobody, not even an administrator
    master = _document(secrets, "secrets-master-key-policy")["Statement"]
    assert not any("secretsmanager:RotateSecret" in _actions(s) for s in master)


def test_resource_policies_deny_reading_to_all_but_the_readers(secrets: Recorded) -> None:
    expected = {
        "master-key": sorted([GATEWAY_ROLE, FUNCTION_ROLE_ARN]),  # the function tests the pending key
        "salt-key": [GATEWAY_ROLE],  # the function never reads the salt key
    }
    for key, readers in expected.items():
        policy = secrets.named(f"secrets-{key}-policy")
        assert policy.inputs["secretArn"] == (MASTER_ARN if key == "master-key" else SALT_ARN)
        assert policy.inputs["blockPublicPolicy"] is True
        statements = _document(secrets, f"secrets-{key}-policy")["Statement"]
        assert all(s["Effect"] == "Deny" for s in statements), key  # the policy grants nothing
        deny = next(s for s in statements if s["Sid"] == "DenyReadingToAllButTheReaders")
        assert deny["Principal"] == "*"
        assert _actions(deny) == ["secretsmanager:GetSecretValue"]
        assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": readers}}
        # administration stays possible: only reading is denied
        denied = {a for s in statements for a in _actions(s)}
        for action in ("secretsmanager:PutResourcePolicy", "secretsmanager:DeleteSecret", "secretsmanager:*"):
            assert action not in denied, (key, action)


def test_several_readers_are_all_admitted(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    task = f"arn:aws:iam::{MOCK_ACCOUNT_ID}:role/llmkit-prod-gateway-task"
    rec = deploy(run_pulumi, prod, readers=[GATEWAY_ROLE, task])
    deny = _document(rec, "secrets-salt-key-policy")["Statement"][0]
    assert deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"] == sorted([GATEWAY_ROLE, task])


def test_function_role_is_scoped_to_the_two_secrets(secrets: Recorded) -> None:
    statements = {s["Sid"]: s for s in _document(secrets, "secrets-rotation-access")["Statement"]}
    assert set(statements) == {
        "RotateTheKeys",
        "InitializeTheNonRotatingKeys",
        "GenerateKeys",
        "UseTheSecretsKeyThroughSecretsManager",
        "WriteOwnLogs",
    }
    assert all(s["Effect"] == "Allow" for s in statements.values())
    rotate = statements["RotateTheKeys"]
    assert _resources(rotate) == [MASTER_ARN]
    assert sorted(_actions(rotate)) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ]
    init = statements["InitializeTheNonRotatingKeys"]
    assert _resources(init) == [SALT_ARN]
    assert sorted(_actions(init)) == ["secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue"]
    generate = statements["GenerateKeys"]
    assert _actions(generate) == ["secretsmanager:GetRandomPassword"] and generate["Resource"] == "*"
    kms = statements["UseTheSecretsKeyThroughSecretsManager"]
    assert _resources(kms) == [SECRETS_KEY]
    assert sorted(_actions(kms)) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-central-1.amazonaws.com"}
    }
    logs = statements["WriteOwnLogs"]
    assert _resources(logs) == [FUNCTION_LOGS_ARN, f"{FUNCTION_LOGS_ARN}:*"]
    # the only "*" resource is GetRandomPassword, which has no resource
    wildcards = [sid for sid, s in statements.items() if "*" in _resources(s)]
    assert wildcards == ["GenerateKeys"]
    assert secrets.named("secrets-rotation-access").inputs["role"] == "secrets-rotation-role-id"


def test_function_role_trusts_lambda_only(secrets: Recorded) -> None:
    trust = json.loads(secrets.named("secrets-rotation-role").inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]


def test_function_runs_the_packaged_handler(secrets: Recorded) -> None:
    (function,) = secrets.of_type(FUNCTION)
    inputs = function.inputs
    assert inputs["name"] == "llmkit-prod-rotate-api-key"
    assert inputs["runtime"] == "python3.13"
    assert inputs["handler"] == "rotate_api_key.handler"
    assert inputs["role"] == FUNCTION_ROLE_ARN
    assert inputs["reservedConcurrentExecutions"] == 2
    assert inputs["timeout"] >= 60  # initialization may wait for IAM to propagate
    assert inputs["loggingConfig"] == {"logFormat": "Text", "logGroup": "/llmkit/prod/rotate-api-key"}
    assert "code" in inputs and HANDLER_FILE.is_file() and HANDLER_FILE.name == "rotate_api_key.py"
    assert "environment" not in inputs  # nothing to configure, nothing to leak
    assert secrets.named("secrets-rotation-access").urn in function.dependencies
    assert secrets.named("secrets-rotation-logs").urn in function.dependencies


def test_function_log_group_is_encrypted_and_retained(secrets: Recorded, prod: StackConfig) -> None:
    (group,) = secrets.of_type(LOG_GROUP)
    assert group.inputs["name"] == "/llmkit/prod/rotate-api-key"
    assert group.inputs["kmsKeyId"] == LOGS_KEY
    assert group.inputs["retentionInDays"] == prod.logging.retention_days


def test_secrets_manager_may_invoke_only_for_this_account(secrets: Recorded) -> None:
    (permission,) = secrets.of_type(PERMISSION)
    assert permission.inputs["action"] == "lambda:InvokeFunction"
    assert permission.inputs["principal"] == "secretsmanager.amazonaws.com"
    assert permission.inputs["sourceAccount"] == MOCK_ACCOUNT_ID
    assert permission.inputs["function"] == "llmkit-prod-rotate-api-key"


def test_outputs_for_the_readers(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    def program() -> None:
        import pulumi

        secrets = Secrets("secrets", SecretsArgs.from_config(prod, SECRETS_KEY, LOGS_KEY, [GATEWAY_ROLE]))
        pulumi.export("arns", secrets.secret_arns)
        pulumi.export("lambda", secrets.rotation_lambda_arn)
        pulumi.export("reader", secrets.reader_policy_json)
        pulumi.export("container", secrets.container_secrets)

    rec = run_pulumi(program, stack="prod")
    assert rec.outputs["arns"] == {"master-key": MASTER_ARN, "salt-key": SALT_ARN}
    assert rec.outputs["lambda"] == f"arn:aws:lambda:eu-central-1:{MOCK_ACCOUNT_ID}:secrets-rotation"
    assert rec.outputs["container"] == [
        {"name": "LITELLM_MASTER_KEY", "valueFrom": MASTER_ARN},
        {"name": "LITELLM_SALT_KEY", "valueFrom": SALT_ARN},
    ]
    reader = {s["Sid"]: s for s in json.loads(rec.outputs["reader"])["Statement"]}
    assert _actions(reader["ReadTheGatewayKeys"]) == ["secretsmanager:GetSecretValue"]
    assert _resources(reader["ReadTheGatewayKeys"]) == [MASTER_ARN, SALT_ARN]
    kms = reader["UseTheSecretsKeyThroughSecretsManager"]
    assert _actions(kms) == ["kms:Decrypt"] and _resources(kms) == [SECRETS_KEY]
    assert kms["Condition"]["StringEquals"]["kms:ViaService"] == "secretsmanager.eu-central-1.amazonaws.com"


def test_children_are_parented_to_the_component(secrets: Recorded) -> None:
    parent = secrets.named("secrets")
    assert parent.type == "llmkit:aws:Secrets"
    children = [r for r in secrets.resources if r.name.startswith("secrets-")]
    # 2 secrets, 2 policies, 2 first values, 1 rotation, log group, role, role policy, function, permission
    assert len(children) == 12
    for child in children:
        assert child.parent == parent.urn, child.name


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"reader_role_arns": []}, "reader_role_arns"),
        ({"reader_role_arns": ["arn:aws:iam::123456789012:user/alice"]}, "not an IAM role ARN"),
        ({"reader_role_arns": ["gateway"]}, "not an IAM role ARN"),
        ({"rotation_days": 0}, "rotation_days"),
        ({"rotation_days": 1001}, "rotation_days"),
        ({"recovery_window_days": 0}, "recovery_window_days"),
        ({"recovery_window_days": 31}, "recovery_window_days"),
        ({"log_retention_days": 30}, "log_retention_days"),
        ({"reserved_concurrency": 0}, "reserved_concurrency"),
        ({"stack": "a" * 60}, "rotation function"),
    ],
)
def test_bad_args_are_refused(prod: StackConfig, overrides: dict[str, Any], word: str) -> None:
    args = SecretsArgs.from_config(prod, SECRETS_KEY, LOGS_KEY, [GATEWAY_ROLE])
    for key, value in overrides.items():
        setattr(args, key, value)
    with pytest.raises(ValueError, match=word):
        Secrets("secrets", args)


def test_unreserved_concurrency_is_allowed(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    (function,) = deploy(run_pulumi, prod, reserved_concurrency=None).of_type(FUNCTION)
    assert "reservedConcurrentExecutions" not in function.inputs
