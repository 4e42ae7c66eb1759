"""The app tier's LLM gateway on AWS (components/gateway.py), on Pulumi's mock runtime.

The stack tests read the graph `llmkit plan` records for the real stack files (staging and prod
have `llmkit:gateway`, dev has none), so they check the composition in `__main__.py`; the
component tests vary what the stacks do not (admin networks, an ECR image, a CA bundle, deletion
protection off, bad sizes). The start command itself is run for real, against a stand-in for
the `litellm` executable.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.gateway import (
    BOOTSTRAP,
    CONFIG_ENV,
    CONTAINER_NAME,
    HEALTH_CHECK_PATH,
    MODELS_CA_ENV,
    MODELS_CA_PATH,
    RULE_CONDITION_VALUES,
    RULE_VALUES,
    RUN_DIR,
    Gateway,
    GatewayArgs,
    admin_path_patterns,
    admin_rules,
    backends,
    default_models_domain,
    ecr_repository,
)
from llmkit.config import StackConfig, load_stack
from llmkit.errors import ConfigError
from llmkit.gateway import MANAGEMENT_PATH_PREFIXES, litellm_config, litellm_release, render_config
from llmkit.plan import MOCK_ACCOUNT_ID, Plan, PlannedResource, run_plan
from tests.conftest import Recorded

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CA = ROOT / "stacks" / "certs" / "prod-clients-ca.pem"
WITH_GATEWAY = ["staging", "prod"]

CLUSTER = "aws:ecs/cluster:Cluster"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
DB = "aws:rds/instance:Instance"
DB_SUBNETS = "aws:rds/subnetGroup:SubnetGroup"
DB_PARAMS = "aws:rds/parameterGroup:ParameterGroup"
RULE = "aws:lb/listenerRule:ListenerRule"
ZONE = "aws:route53/zone:Zone"
RECORD = "aws:route53/record:Record"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
GATEWAY_TYPES = (CLUSTER, TASK, SERVICE, DB, DB_SUBNETS, DB_PARAMS, ZONE, RECORD)

RunPulumi = Callable[..., Recorded]


def mock_arn(service: str, name: str) -> str:
    return f"arn:aws:{service}:eu-central-1:{MOCK_ACCOUNT_ID}:{name}"


DB_SECRET = f"arn:aws:secretsmanager:eu-central-1:{MOCK_ACCOUNT_ID}:secret:rds!gateway-db"


@cache
def plan_of(stack: str) -> Plan:
    return run_plan(stack, ROOT)


def of_type(plan: Plan, token: str) -> list[PlannedResource]:
    return [r for r in plan.resources if r.type == token]


def named(plan: Plan, name: str) -> PlannedResource:
    (found,) = [r for r in plan.resources if r.name == name]
    return found


def container(plan: Plan) -> dict[str, Any]:
    (task,) = of_type(plan, TASK)
    (definition,) = json.loads(task.inputs["containerDefinitions"])
    assert isinstance(definition, dict)
    return definition


def env_of(definition: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in definition["environment"]}


def secrets_of(definition: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in definition["secrets"]}


def policy(resource: PlannedResource) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resource.inputs["policy"])
    return document


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- the stacks ---------------------------------------------------------------------------------


def test_a_stack_without_a_gateway_plans_none_of_it() -> None:
    plan = plan_of("dev")
    assert plan.config.gateway is None
    assert not [r for r in plan.resources if r.type in GATEWAY_TYPES or r.type == "llmkit:aws:Gateway"]
    assert not [r for r in of_type(plan, RULE) if r.name.startswith("gateway-")]
    assert "gateway" not in plan.outputs
    # The edge and the data key stay as they were.
    (targets,) = [t for t in of_type(plan, "aws:lb/targetGroup:TargetGroup") if t.name == "edge-app"]
    assert targets.inputs["healthCheck"]["path"] == "/healthz"
    assert "rds." not in named(plan, "keys-data").inputs["policy"]


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_fargate_service_in_the_app_subnets_without_public_ips(stack: str) -> None:
    plan = plan_of(stack)
    assert plan.config.gateway is not None
    (service,) = of_type(plan, SERVICE)
    azs = plan.config.network.az_count
    network = service.inputs["networkConfiguration"]
    assert network["subnets"] == [f"net-app-{i}-id" for i in range(azs)]
    assert network["assignPublicIp"] is False
    assert network["securityGroups"] == ["fw-app-id"]
    assert service.inputs["launchType"] == "FARGATE"
    assert service.inputs["desiredCount"] == plan.config.gateway.replicas
    assert service.inputs["enableExecuteCommand"] is False
    assert service.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service.inputs["deploymentMinimumHealthyPercent"] == 100
    # Registered by IP in the edge's app target group, on the app port.
    assert service.inputs["loadBalancers"] == [
        {
            "targetGroupArn": mock_arn("lb", "edge-app"),
            "containerName": CONTAINER_NAME,
            "containerPort": plan.config.firewall.app_port,
        }
    ]
    # Tasks start once the target group hangs on a listener and the keys exist and can be read.
    for dependency in ("edge-https", "gateway-execution-read-keys", "secrets-master-key-initial-value"):
        assert named(plan, dependency).urn in service.dependencies, dependency
    (cluster,) = of_type(plan, CLUSTER)
    assert cluster.inputs["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert service.inputs["cluster"] == mock_arn("ecs", cluster.name)


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_the_edge_target_group_takes_tasks_by_ip_on_the_gateway_health_route(stack: str) -> None:
    plan = plan_of(stack)
    (targets,) = [t for t in of_type(plan, "aws:lb/targetGroup:TargetGroup") if t.name == "edge-app"]
    assert targets.inputs["targetType"] == "ip"
    assert targets.inputs["protocol"] == "HTTPS"
    assert targets.inputs["port"] == plan.config.firewall.app_port
    assert targets.inputs["healthCheck"]["path"] == HEALTH_CHECK_PATH
    assert targets.inputs["healthCheck"]["protocol"] == "HTTPS"


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_task_definition_runs_the_pinned_litellm_with_tls_hardened(stack: str) -> None:
    plan = plan_of(stack)
    gateway = plan.config.gateway
    assert gateway is not None
    (task,) = of_type(plan, TASK)
    assert task.inputs["requiresCompatibilities"] == ["FARGATE"]
    assert task.inputs["networkMode"] == "awsvpc"
    assert (task.inputs["cpu"], task.inputs["memory"]) == (str(gateway.cpu), str(gateway.memory_mib))
    assert task.inputs["executionRoleArn"] == mock_arn("iam", "gateway-execution-role")
    assert "taskRoleArn" not in task.inputs  # LiteLLM calls no AWS API
    definition = container(plan)
    port = plan.config.firewall.app_port
    assert definition["image"] == litellm_release().image
    assert definition["entryPoint"] == ["python3", "-c", BOOTSTRAP]
    command = definition["command"]
    assert command[command.index("--port") + 1] == str(port)
    assert {"--ssl_keyfile_path", "--ssl_certfile_path", "--config"} <= set(command)
    assert definition["portMappings"] == [{"containerPort": port, "hostPort": port, "protocol": "tcp"}]
    assert definition["readonlyRootFilesystem"] is True
    assert definition["mountPoints"] == [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}]
    assert definition["linuxParameters"]["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in definition
    logs = definition["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == f"/llmkit/{stack}/gateway"
    group = named(plan, "gateway-logs")
    assert group.inputs["name"] == f"/llmkit/{stack}/gateway"
    assert group.inputs["kmsKeyId"] == mock_arn("kms", "keys-logs")
    assert group.inputs["retentionInDays"] == plan.config.logging.retention_days


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_keys_and_database_credentials_arrive_by_arn(stack: str) -> None:
    plan = plan_of(stack)
    definition = container(plan)
    assert secrets_of(definition) == {
        "LITELLM_MASTER_KEY": mock_arn("secretsmanager", "secrets-master-key"),
        "LITELLM_SALT_KEY": mock_arn("secretsmanager", "secrets-salt-key"),
        "DATABASE_USERNAME": f"{DB_SECRET}:username::",
        "DATABASE_PASSWORD": f"{DB_SECRET}:password::",
    }
    env = env_of(definition)
    assert env["DATABASE_HOST"] == f"llmkit-{stack}-gateway.offline.eu-central-1.rds.amazonaws.com"
    assert (env["DATABASE_PORT"], env["DATABASE_NAME"]) == ("5432", "litellm")
    assert not set(env) & set(secrets_of(definition))
    assert "DATABASE_URL" not in env  # composed in the container, never in the plan


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_no_secret_value_is_in_the_plan(stack: str) -> None:
    plan = plan_of(stack)
    graph = json.dumps(plan.to_graph())
    assert "[secret]" not in graph  # nothing the program handled was a secret
    for r in plan.resources:
        assert not {"password", "passwordWo", "secretString", "secretBinary"} & set(r.inputs), r.name
    (db,) = of_type(plan, DB)
    assert db.inputs["manageMasterUserPassword"] is True
    assert db.inputs["masterUserSecretKmsKeyId"] == mock_arn("kms", "keys-secrets")
    # No connection string with credentials, no private key, no API key anywhere.
    assert not re.search(r"postgres(ql)?://[^:%\s\"]+:[^@%\s\"]+@", graph)
    assert "PRIVATE KEY-----" not in graph
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", graph)


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_litellm_config_is_the_shared_rendering_with_a_backend_per_model(stack: str) -> None:
    plan = plan_of(stack)
    gateway = plan.config.gateway
    assert gateway is not None
    domain = default_models_domain(stack)
    served = [spec.name for spec in plan.config.models]
    expected = render_config(litellm_config(gateway, backends(served, domain), runtime=plan.config.runtime))
    config = env_of(container(plan))[CONFIG_ENV]
    assert config == expected
    bases = {d["model_name"]: d["litellm_params"]["api_base"] for d in json_yaml(config)["model_list"]}
    for alias, spec in gateway.aliases.items():
        slug = spec.model.replace(":", "-")
        assert bases[alias] == f"https://{slug}.{domain}"
    # The names resolve to the fleet's internal load balancer, inside the VPC only.
    (zone,) = of_type(plan, ZONE)
    assert zone.inputs["name"] == domain
    assert zone.inputs["vpcs"] == [{"vpcId": "net-vpc-id", "vpcRegion": "eu-central-1"}]
    (record,) = of_type(plan, RECORD)
    assert record.inputs["name"] == f"*.{domain}"
    assert record.inputs["aliases"][0]["name"] == "fleet-alb-offline.eu-central-1.elb.amazonaws.com"


def json_yaml(text: str) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_database_is_private_encrypted_backed_up_and_requires_tls(stack: str) -> None:
    plan = plan_of(stack)
    gateway = plan.config.gateway
    assert gateway is not None
    (db,) = of_type(plan, DB)
    data_key = mock_arn("kms", "keys-data")
    expected = {
        "engine": "postgres",
        "identifier": f"llmkit-{stack}-gateway",
        "instanceClass": gateway.database.instance_class,
        "allocatedStorage": gateway.database.allocated_storage_gib,
        "storageEncrypted": True,
        "kmsKeyId": data_key,
        "publiclyAccessible": False,
        "backupRetentionPeriod": gateway.database.backup_retention_days,
        "multiAz": gateway.database.multi_az,
        "iamDatabaseAuthenticationEnabled": gateway.database.iam_auth,
        "deletionProtection": plan.config.endpoint.deletion_protection,
        "skipFinalSnapshot": not plan.config.endpoint.deletion_protection,
        "performanceInsightsEnabled": True,
        "performanceInsightsKmsKeyId": data_key,
        "autoMinorVersionUpgrade": True,
        "copyTagsToSnapshot": True,
        "enabledCloudwatchLogsExports": ["postgresql"],
        "vpcSecurityGroupIds": ["fw-data-id"],
        "dbSubnetGroupName": "gateway-db-subnets",
        "parameterGroupName": "gateway-db-params",
    }
    assert {k: db.inputs.get(k) for k in expected} == expected
    assert db.inputs["backupRetentionPeriod"] >= 7
    (subnets,) = of_type(plan, DB_SUBNETS)
    assert subnets.inputs["subnetIds"] == [f"net-data-{i}-id" for i in range(plan.config.network.az_count)]
    (params,) = of_type(plan, DB_PARAMS)
    assert params.inputs["family"] == "postgres16"
    assert {p["name"]: p["value"] for p in params.inputs["parameters"]} == {"rds.force_ssl": "1"}
    # The exported log has its group first, with the logs key and the configured retention.
    logs = named(plan, "gateway-db-logs")
    assert logs.inputs["name"] == f"/aws/rds/instance/llmkit-{stack}-gateway/postgresql"
    assert logs.inputs["kmsKeyId"] == mock_arn("kms", "keys-logs")
    assert logs.inputs["retentionInDays"] == plan.config.logging.retention_days
    assert logs.urn in db.dependencies


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_the_data_key_admits_rds(stack: str) -> None:
    document = policy(named(plan_of(stack), "keys-data"))
    use = next(s for s in document["Statement"] if "kms:Decrypt" in as_list(s["Action"]))
    assert "rds.eu-central-1.amazonaws.com" in use["Condition"]["StringEquals"]["kms:ViaService"]


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_the_execution_role_reads_exactly_the_gateways_secrets(stack: str) -> None:
    plan = plan_of(stack)
    readable: set[str] = set()
    for name in ("gateway-execution-read-keys", "gateway-execution-access"):
        resource = named(plan, name)
        assert resource.inputs["role"] in ("gateway-execution-role", "gateway-execution-role-id")
        for statement in policy(resource)["Statement"]:
            actions = as_list(statement["Action"])
            assert "*" not in actions and "secretsmanager:*" not in actions
            if "secretsmanager:GetSecretValue" in actions:
                readable |= set(as_list(statement["Resource"]))
            if "kms:Decrypt" in actions:
                assert statement["Resource"] == mock_arn("kms", "keys-secrets")
                assert statement["Condition"] == {
                    "StringEquals": {"kms:ViaService": "secretsmanager.eu-central-1.amazonaws.com"}
                }
    assert readable == {
        mock_arn("secretsmanager", "secrets-master-key"),
        mock_arn("secretsmanager", "secrets-salt-key"),
        DB_SECRET,
    }
    # A public image needs no registry permission.
    assert "ecr:" not in named(plan, "gateway-execution-access").inputs["policy"]


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_the_firewall_opens_exactly_the_gateways_paths(stack: str) -> None:
    plan = plan_of(stack)
    port = plan.config.firewall.app_port
    rules = {
        r.name: r.inputs
        for r in plan.resources
        if r.type.startswith("aws:vpc/securityGroup") and r.name.startswith("fw-")
    }
    assert rules[f"fw-app-in-{port}-lb"]["referencedSecurityGroupId"] == "fw-lb-id"
    assert rules["fw-data-in-5432-app"]["referencedSecurityGroupId"] == "fw-app-id"
    assert rules["fw-app-out-5432-data"]["referencedSecurityGroupId"] == "fw-data-id"
    assert rules["fw-app-out-443-models_lb"]["referencedSecurityGroupId"] == "fw-models_lb-id"
    assert not [n for n in rules if n.startswith("fw-data-in-") and not n.endswith("-app")]


@pytest.mark.parametrize("stack", WITH_GATEWAY)
def test_management_routes_answer_only_the_admin_networks(stack: str) -> None:
    plan = plan_of(stack)
    gateway = plan.config.gateway
    assert gateway is not None
    rules = [r for r in of_type(plan, RULE) if r.name.startswith("gateway-admin-")]
    assert rules
    allowed: set[tuple[str, str]] = set()
    denied: set[str] = set()
    for rule in rules:
        assert rule.inputs["listenerArn"] == mock_arn("lb", "edge-https")
        conditions = rule.inputs["conditions"]
        values = [v for c in conditions for part in c.values() for v in part["values"]]
        assert len(values) <= RULE_VALUES
        assert all(len(part["values"]) <= RULE_CONDITION_VALUES for c in conditions for part in c.values())
        paths = next(c["pathPattern"]["values"] for c in conditions if "pathPattern" in c)
        (action,) = rule.inputs["actions"]
        if action["type"] == "forward":
            assert action["targetGroupArn"] == mock_arn("lb", "edge-app")
            cidrs = next(c["sourceIp"]["values"] for c in conditions if "sourceIp" in c)
            allowed |= {(p, c) for p in paths for c in cidrs}
        else:
            assert action["type"] == "fixed-response"
            assert action["fixedResponse"]["statusCode"] == "403"
            assert len(conditions) == 1
            denied |= set(paths)
    patterns = set(admin_path_patterns())
    assert denied == patterns
    assert allowed == {(p, str(c)) for p in patterns for c in gateway.admin_cidrs}
    for prefix in MANAGEMENT_PATH_PREFIXES:
        assert any(p.startswith(prefix) for p in patterns), prefix
    # Every allow rule is evaluated before every deny rule.
    priorities = {r.name: r.inputs["priority"] for r in rules}
    allow = [p for n, p in priorities.items() if "-allow-" in n]
    deny = [p for n, p in priorities.items() if "-deny-" in n]
    assert max(allow) < min(deny)
    assert len(set(priorities.values())) == len(rules)


def test_prod_exports_the_gateway_without_secrets() -> None:
    outputs = plan_of("prod").outputs
    assert outputs["gateway"] == {
        "cluster": "llmkit-prod-gateway",
        "service": "llmkit-prod-gateway",
        "database_endpoint": "llmkit-prod-gateway.offline.eu-central-1.rds.amazonaws.com:5432",
        "models_domain": "models.prod.llmkit.internal",
    }


# --- the component, with what the stacks do not vary ------------------------------------------


@cache
def prod() -> StackConfig:
    return load_stack("prod", ROOT)


def make_args(cfg: StackConfig | None = None, **overrides: Any) -> GatewayArgs:
    inputs: dict[str, Any] = {
        "vpc_id": "vpc-1",
        "app_subnet_ids": ["subnet-app-a", "subnet-app-b"],
        "data_subnet_ids": ["subnet-data-a", "subnet-data-b"],
        "app_security_group_id": "sg-app",
        "data_security_group_id": "sg-data",
        "target_group_arn": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/app/1",
        "https_listener_arn": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:listener/app/edge/1/2",
        "models_lb_dns_name": "internal-fleet.eu-central-1.elb.amazonaws.com",
        "models_lb_zone_id": "Z215JYRZR1TBD5",
        "execution_role_name": "gateway-execution",
        "execution_role_arn": "arn:aws:iam::123456789012:role/gateway-execution",
        "container_secrets": [
            {"name": "LITELLM_MASTER_KEY", "valueFrom": "arn:master"},
            {"name": "LITELLM_SALT_KEY", "valueFrom": "arn:salt"},
        ],
        "data_key_arn": "arn:data-key",
        "logs_key_arn": "arn:logs-key",
        "secrets_key_arn": "arn:secrets-key",
    }
    return GatewayArgs.from_config(cfg or prod(), **{**inputs, **overrides})


def with_gateway(**changes: Any) -> StackConfig:
    cfg = prod()
    assert cfg.gateway is not None
    return cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update=changes)})


def deploy(run_pulumi: RunPulumi, args: GatewayArgs) -> Recorded:
    return run_pulumi(lambda: Gateway("gateway", args), stack="prod")


def rec_container(rec: Recorded) -> dict[str, Any]:
    (task,) = rec.of_type(TASK)
    (definition,) = json.loads(task.inputs["containerDefinitions"])
    assert isinstance(definition, dict)
    return definition


def test_children_are_parented_and_outputs_registered(run_pulumi: RunPulumi) -> None:
    rec = deploy(run_pulumi, make_args())
    (component,) = rec.of_type("llmkit:aws:Gateway")
    children = [r for r in rec.resources if r is not component]
    assert children
    for child in children:
        assert child.parent == component.urn, child.name
        assert child.name.startswith("gateway-"), child.name


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5])
def test_admin_cidrs_are_split_within_alb_limits(run_pulumi: RunPulumi, count: int) -> None:
    cidrs = [f"10.{i}.0.0/24" for i in range(count)]
    rec = deploy(run_pulumi, make_args(with_gateway(admin_cidrs=cidrs)))
    rules = rec.of_type(RULE)
    allowed: list[tuple[str, str]] = []
    for rule in rules:
        conditions = rule.inputs["conditions"]
        assert sum(len(part["values"]) for c in conditions for part in c.values()) <= RULE_VALUES
        if rule.inputs["actions"][0]["type"] == "forward":
            paths = conditions[0]["pathPattern"]["values"]
            allowed += [(p, c) for p in paths for c in conditions[1]["sourceIp"]["values"]]
    patterns = admin_path_patterns()
    assert sorted(allowed) == sorted((p, c) for p in patterns for c in cidrs)  # each pair exactly once
    deny = [r for r in rules if r.inputs["actions"][0]["type"] == "fixed-response"]
    assert sorted(p for r in deny for p in r.inputs["conditions"][0]["pathPattern"]["values"]) == sorted(
        patterns
    )
    assert len(rules) == len(admin_rules(cidrs))


def test_too_many_admin_networks_are_refused() -> None:
    assert len(admin_rules([f"10.{i}.0.0/24" for i in range(30)])) == 96  # 15 x 6 + 6: fits
    with pytest.raises(ConfigError, match=r"llmkit:gateway\.admin_cidrs: 102 listener rules") as refused:
        admin_rules([f"10.{i}.0.0/24" for i in range(31)])
    assert refused.value.accepted == "at most 30 CIDRs"


def test_an_unprotected_stack_deletes_its_database_without_a_final_snapshot(run_pulumi: RunPulumi) -> None:
    (db,) = deploy(run_pulumi, make_args(deletion_protection=False)).of_type(DB)
    assert db.inputs["deletionProtection"] is False
    assert db.inputs["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db.inputs
    (db,) = deploy(run_pulumi, make_args()).of_type(DB)
    assert db.inputs["deletionProtection"] is True
    assert db.inputs["skipFinalSnapshot"] is False
    assert db.inputs["finalSnapshotIdentifier"] == "llmkit-prod-gateway-final"
    assert db.inputs["deleteAutomatedBackups"] is False


def test_an_ecr_image_gets_exactly_its_pull_permissions(run_pulumi: RunPulumi) -> None:
    image = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror/litellm-database@sha256:" + "a" * 64
    assert ecr_repository(image) == ("123456789012", "eu-central-1", "mirror/litellm-database")
    assert ecr_repository(litellm_release().image) is None
    rec = deploy(run_pulumi, make_args(with_gateway(image=image)))
    assert rec_container(rec)["image"] == image
    document = json.loads(rec.named("gateway-execution-access").inputs["policy"])
    pull = next(s for s in document["Statement"] if s.get("Sid") == "PullTheGatewayImage")
    assert pull["Resource"] == "arn:aws:ecr:eu-central-1:123456789012:repository/mirror/litellm-database"
    assert "ecr:GetAuthorizationToken" in json.dumps(document)


def test_a_ca_bundle_verifies_the_model_load_balancer(run_pulumi: RunPulumi) -> None:
    rec = deploy(run_pulumi, make_args(models_ca_bundle=SAMPLE_CA))
    env = env_of(rec_container(rec))
    assert env[MODELS_CA_ENV] == SAMPLE_CA.read_text()
    assert f"ssl_verify: {MODELS_CA_PATH}" in env[CONFIG_ENV]
    # Without one, LiteLLM keeps its default verification (never turned off).
    env = env_of(rec_container(deploy(run_pulumi, make_args())))
    assert MODELS_CA_ENV not in env
    assert "ssl_verify" not in env[CONFIG_ENV]


def test_fargate_sizes_follow_the_config(run_pulumi: RunPulumi) -> None:
    (task,) = deploy(run_pulumi, make_args(with_gateway(cpu=2048, memory_mib=8192, replicas=4))).of_type(TASK)
    assert (task.inputs["cpu"], task.inputs["memory"]) == ("2048", "8192")


@pytest.mark.parametrize(
    ("overrides", "gateway_changes", "message"),
    [
        ({}, {"cpu": 1024, "memory_mib": 1024}, "memory_mib: does not fit llmkit:gateway.cpu 1024"),
        ({}, {"cpu": 512, "memory_mib": 1536}, "steps of 1024"),
        ({"models_domain": "Not A Domain"}, {}, "models_domain"),
        ({"data_subnet_ids": ["subnet-data-a"]}, {}, "two AZs"),
        ({"app_port": 11434}, {}, "model runtime's port"),
        ({"log_retention_days": 30}, {}, "log_retention_days"),
    ],
)
def test_bad_args_are_refused_before_anything_is_registered(
    run_pulumi: RunPulumi, overrides: dict[str, Any], gateway_changes: dict[str, Any], message: str
) -> None:
    args = make_args(with_gateway(**gateway_changes), **overrides)
    with pytest.raises((ValueError, ConfigError), match=re.escape(message)):
        args.validate()
    registered: list[Any] = []

    def program() -> None:
        try:
            Gateway("gateway", args)
        except (ValueError, ConfigError):
            registered.append("refused")

    rec = run_pulumi(program, stack="prod")
    assert registered == ["refused"]
    assert rec.resources == []


def test_from_config_needs_a_gateway_section() -> None:
    with pytest.raises(ValueError, match="no llmkit:gateway"):
        make_args(load_stack("dev", ROOT))


# --- the start command, run for real -------------------------------------------------------------


def test_the_start_command_writes_the_files_composes_the_url_and_starts_litellm(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    report = tmp_path / "report.json"
    fake = bin_dir / "litellm"  # stands in for LiteLLM: records what it was started with
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(report)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    password = "p@ss:w/rd?#%&= x"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        CONFIG_ENV: "model_list: []\n",
        MODELS_CA_ENV: SAMPLE_CA.read_text(),
        "DATABASE_HOST": "db.example.internal",
        "DATABASE_PORT": "5432",
        "DATABASE_NAME": "litellm",
        "DATABASE_USERNAME": "lite llm",
        "DATABASE_PASSWORD": password,
    }
    script = BOOTSTRAP.replace(RUN_DIR, str(run_dir))
    result = subprocess.run(
        [sys.executable, "-c", script, "--config", f"{run_dir}/config.yaml", "--port", "8443"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    started = json.loads(report.read_text())
    assert started["argv"] == ["--config", f"{run_dir}/config.yaml", "--port", "8443"]
    url = started["env"]["DATABASE_URL"]
    assert url == (
        "postgresql://lite%20llm:p%40ss%3Aw%2Frd%3F%23%25%26%3D%20x@db.example.internal:5432/litellm"
        "?sslmode=require"
    )
    # The password and the config leave the environment once they are where they belong.
    assert "DATABASE_PASSWORD" not in started["env"]
    assert CONFIG_ENV not in started["env"] and MODELS_CA_ENV not in started["env"]
    assert (run_dir / "config.yaml").read_text() == "model_list: []\n"
    assert (run_dir / "models-ca.pem").read_text() == SAMPLE_CA.read_text()
    for name in ("config.yaml", "models-ca.pem", "tls.key", "tls.crt"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    # A key and a self-signed certificate for it.
    key = serialization.load_pem_private_key((run_dir / "tls.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((run_dir / "tls.crt").read_bytes())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert cert.issuer == cert.subject
