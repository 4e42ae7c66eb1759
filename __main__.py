"""The llmkit Pulumi program: read the stack's config, compose the components.

Everything else lives in `components/` (what gets deployed) and `llmkit/` (config schema,
catalogs, sizing). `pulumi up` runs this file; `llmkit plan STACK` runs it offline.
"""

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws

from components.alarms import Alarms, AlarmsArgs
from components.audit import AuditTrail, AuditTrailArgs, trail_name
from components.budget import Budget, BudgetArgs
from components.edge import ReverseProxy, ReverseProxyArgs
from components.firewall import Firewall, FirewallArgs
from components.fleet import MODEL_ALB_LOG_PREFIX, GpuFleet, GpuFleetArgs
from components.gateway import HEALTH_CHECK_PATH, Gateway, GatewayArgs
from components.keys import KmsKeys, KmsKeysArgs
from components.model_store import (
    ModelStore,
    ModelStoreArgs,
    bucket_arn,
    model_store_bucket_name,
    s3_endpoint_policy,
)
from components.network import Network, NetworkArgs, PrivateEndpoints, PrivateEndpointsArgs
from components.secrets import Secrets, SecretsArgs
from components.storage import ALB_LOG_PREFIX, LogBucket, SecureBucket, SecureBucketArgs
from llmkit.config import from_pulumi_runtime
from llmkit.placement import place_models

PROJECT_DIR = Path(__file__).resolve().parent

cfg = from_pulumi_runtime(PROJECT_DIR)
stack = cfg.stack or pulumi.get_stack()
placements = place_models(cfg)

# One explicit provider pinned to the configured region: every AWS resource is created
# through it (components pass it on to their children), and it stamps the stack's required
# tags onto everything taggable, with llmkit:allow-world-open when the stack sets that override.
aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.provider_tags),
)
opts = pulumi.ResourceOptions(providers={"aws": aws_provider})
account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=aws_provider)).account_id

# --- keys and logs ------------------------------------------------------------------------------
# The fleet's groups launch with their own Auto Scaling service-linked role, which the data key's
# policy names (EBS volumes encrypted with a customer-managed key need it). A per-stack suffix
# keeps it independent of the account's default role.
autoscaling_role = aws.iam.ServiceLinkedRole(
    "autoscaling-role",
    aws_service_name="autoscaling.amazonaws.com",
    custom_suffix=f"llmkit-{stack}",
    description=f"EC2 Auto Scaling for the llmkit {stack} GPU fleet",
    opts=opts,
)
keys = KmsKeys("keys", KmsKeysArgs.from_config(cfg, service_linked_role_arns=[autoscaling_role.arn]), opts)
logs = LogBucket(
    "logs",
    cfg.logging.retention_days,
    cfg.region,
    opts=opts,
    tags=cfg.tags,
    cloudtrail_trail_name=trail_name(stack),
    alb_log_prefixes=(ALB_LOG_PREFIX, MODEL_ALB_LOG_PREFIX),
)
audit = AuditTrail(
    "audit",
    AuditTrailArgs.from_config(cfg, keys.logs.arn, logs.bucket_name, log_bucket_policy=logs.policy),
    opts,
)

# --- network and firewall -----------------------------------------------------------------------
network = Network("net", NetworkArgs.from_config(cfg, flow_logs_key_arn=keys.logs.arn), opts)

s3_prefix_list = aws.ec2.get_prefix_list(
    name=f"com.amazonaws.{cfg.region}.s3", opts=pulumi.InvokeOptions(provider=aws_provider)
)
firewall = Firewall(
    "fw",
    FirewallArgs.from_config(
        cfg,
        network.vpc_id,
        firewall_subnet_ids=network.subnet_ids.get("firewall", ()),
        s3_prefix_list_id=s3_prefix_list.id,
        log_kms_key_arn=keys.logs.arn,
    ),
    opts,
)
if network.egress_firewall:
    network.route_app_egress_through(firewall.firewall_endpoint_ids)

# The model store's name is fixed in advance, so the S3 endpoint's policy and the fleet's roles
# can name it before the bucket (whose policy names them) exists.
model_bucket = model_store_bucket_name(stack, cfg.region, account_id)
endpoints = PrivateEndpoints(
    "vpce",
    PrivateEndpointsArgs(
        vpc_id=network.vpc_id,
        region=cfg.region,
        subnet_ids=network.subnet_ids["model"],
        route_table_ids=[
            *network.route_table_ids["model"],
            *network.route_table_ids["data"],
            *network.route_table_ids["app"],
        ],
        security_group_id=firewall.group_ids["endpoints"],
        s3_policy=s3_endpoint_policy(
            region=cfg.region, model_store_arn=bucket_arn(model_bucket), account_id=account_id
        ),
    ),
    opts,
)

# --- the edge -----------------------------------------------------------------------------------
trust_bucket = SecureBucket(
    "trust",
    SecureBucketArgs(kms_key_arn=keys.data.arn, access_log_bucket=logs.bucket_name, tags=cfg.tags),
    opts,
)
waf_logs = aws.cloudwatch.LogGroup(
    "waf-logs",
    name=f"aws-waf-logs-llmkit-{stack}",  # WAF only delivers to groups with this prefix
    kms_key_id=keys.logs.arn,
    retention_in_days=cfg.logging.retention_days,
    opts=opts,
)
edge = ReverseProxy(
    "edge",
    ReverseProxyArgs.from_config(
        cfg,
        PROJECT_DIR,
        vpc_id=network.vpc_id,
        dmz_subnet_ids=network.subnet_ids["dmz"],
        lb_security_group_id=firewall.group_ids["lb"],
        access_log_bucket=logs.bucket_name,
        access_log_prefix=ALB_LOG_PREFIX,
        trust_store_bucket=trust_bucket.bucket_name,
        waf_log_group_arn=waf_logs.arn,
        app_port=cfg.firewall.app_port,
        # The app tier's health route: the gateway's when the stack has one.
        **({"health_check_path": HEALTH_CHECK_PATH} if cfg.gateway else {}),
    ),
    opts,
)

# --- compute: the GPU fleet and its model store -------------------------------------------------
fleet = GpuFleet(
    "fleet",
    GpuFleetArgs.from_config(
        cfg,
        placements,
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids["model"],
        host_security_group_id=firewall.group_ids["model"],
        lb_security_group_id=firewall.group_ids["models_lb"],
        model_bucket_name=model_bucket,
        model_bucket_arn=bucket_arn(model_bucket),
        data_key_arn=keys.data.arn,
        log_group_names={"model-server": audit.log_groups["model-server"].name},
        access_log_bucket=logs.bucket_name,
        service_linked_role_arn=autoscaling_role.arn,
        # Hosts reach AWS only through the endpoints: they launch once those exist.
        launch_after=[*endpoints.interfaces.values(), endpoints.gateway],
    ),
    opts,
)
model_store = ModelStore(
    "models",
    ModelStoreArgs.from_config(
        cfg,
        account_id=account_id,
        kms_key_arn=keys.data.arn,
        access_log_bucket=logs.bucket_name,
        s3_endpoint_id=endpoints.gateway.id,
        reader_role_arns=list(fleet.role_arns.values()),
    ),
    opts,
)

# --- the app tier's identity and its secrets ----------------------------------------------------
# The gateway (an ECS task) gets its keys injected by ECS with this execution role; it is the only
# reader of the keys besides their rotation function.
gateway_execution_role = aws.iam.Role(
    "gateway-execution-role",
    description=f"ECS task execution role of the llmkit {stack} gateway: pulls its image, reads its keys",
    assume_role_policy=account_id.apply(
        lambda account: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                    }
                ],
            }
        )
    ),
    opts=opts,
)
secrets = Secrets(
    "secrets",
    SecretsArgs.from_config(cfg, keys.secrets.arn, keys.logs.arn, [gateway_execution_role.arn]),
    opts,
)
gateway_read_keys = aws.iam.RolePolicy(
    "gateway-execution-read-keys",
    role=gateway_execution_role.id,
    policy=secrets.reader_policy_json,
    opts=opts,
)

# --- the app tier: the LLM gateway (only with llmkit:gateway) ------------------------------------
gateway: Gateway | None = None
if cfg.gateway is not None:
    gateway = Gateway(
        "gateway",
        GatewayArgs.from_config(
            cfg,
            vpc_id=network.vpc_id,
            app_subnet_ids=network.subnet_ids["app"],
            data_subnet_ids=network.subnet_ids["data"],
            app_security_group_id=firewall.group_ids["app"],
            data_security_group_id=firewall.group_ids["data"],
            target_group_arn=edge.target_group.arn,
            https_listener_arn=edge.https_listener.arn,
            models_lb_dns_name=fleet.dns_name,
            models_lb_zone_id=fleet.load_balancer.zone_id,
            execution_role_name=gateway_execution_role.name,
            execution_role_arn=gateway_execution_role.arn,
            container_secrets=secrets.container_secrets,
            data_key_arn=keys.data.arn,
            logs_key_arn=keys.logs.arn,
            secrets_key_arn=keys.secrets.arn,
            # Tasks start once the target group is on a listener and the keys can be read.
            launch_after=[edge.https_listener, gateway_read_keys, *secrets.initial_values.values()],
        ),
        opts,
    )

# --- cost and service levels --------------------------------------------------------------------
budget = Budget("budget", BudgetArgs.from_config(cfg, keys.secrets.arn), opts)
alarms = Alarms(
    "alarms",
    AlarmsArgs.from_config(
        cfg,
        topic_arn=budget.topic_arn,
        load_balancers=[("edge", edge.load_balancer.arn_suffix), ("models", fleet.lb_arn_suffix)],
        target_groups=[
            ("edge-app", edge.target_group.arn_suffix, edge.load_balancer.arn_suffix),
            *[
                (slug, suffix, fleet.lb_arn_suffix)
                for slug, suffix in fleet.target_group_arn_suffixes.items()
            ],
        ],
        asg_names=list(fleet.asg_names.items()),
    ),
    opts,
)

# --- outputs ------------------------------------------------------------------------------------
pulumi.export("region", cfg.region)
pulumi.export("runtime", cfg.runtime)
pulumi.export("vpc_id", network.vpc_id)
pulumi.export("endpoint", edge.dns_name)
pulumi.export("endpoint_url", pulumi.Output.concat("https://", edge.dns_name))
pulumi.export("models_endpoint", fleet.dns_name)
pulumi.export("model_bucket", model_store.bucket_name)
pulumi.export("asg_names", fleet.asg_names)
pulumi.export("key_arns", {purpose: key.arn for purpose, key in keys.keys.items()})
pulumi.export("secret_arns", secrets.secret_arns)
pulumi.export("alert_topic", budget.topic_arn)
pulumi.export("inventory", fleet.inventory())
if gateway is not None:
    pulumi.export(
        "gateway",
        {
            "cluster": gateway.cluster_name,
            "service": gateway.service_name,
            "database_endpoint": gateway.database_endpoint,
            "models_domain": gateway.models_domain,
        },
    )
pulumi.export("models", [p.summary() for p in placements])
