"""The llmkit Pulumi program: read the stack's config, compose the components.

Everything else lives in `components/` (what gets deployed) and `llmkit/` (config schema,
catalogs, sizing). `pulumi up` runs this file; `llmkit plan STACK` runs it offline.
"""

from pathlib import Path

import pulumi
import pulumi_aws as aws

from components.edge import ReverseProxy, ReverseProxyArgs
from components.firewall import Firewall, FirewallArgs
from components.keys import KmsKeys, KmsKeysArgs
from components.network import Network, NetworkArgs, PrivateEndpoints, PrivateEndpointsArgs
from components.storage import ALB_LOG_PREFIX, LogBucket, SecureBucket, SecureBucketArgs
from llmkit.config import from_pulumi_runtime
from llmkit.placement import place_models

PROJECT_DIR = Path(__file__).resolve().parent

cfg = from_pulumi_runtime(PROJECT_DIR)
placements = place_models(cfg)

# One explicit provider pinned to the configured region: every AWS resource is created
# through it (components pass it on to their children), and it stamps the stack's required
# tags onto everything taggable.
aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=dict(cfg.tags)),
)
opts = pulumi.ResourceOptions(providers={"aws": aws_provider})

keys = KmsKeys("keys", KmsKeysArgs.from_config(cfg), opts)
logs = LogBucket("logs", cfg.logging.retention_days, cfg.region, opts=opts, tags=cfg.tags)

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
    ),
    opts,
)

trust_bucket = SecureBucket(
    "trust",
    SecureBucketArgs(kms_key_arn=keys.data.arn, access_log_bucket=logs.bucket_name, tags=cfg.tags),
    opts,
)
waf_logs = aws.cloudwatch.LogGroup(
    "waf-logs",
    name=f"aws-waf-logs-llmkit-{cfg.stack}",  # WAF only delivers to groups with this prefix
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
    ),
    opts,
)

pulumi.export("region", cfg.region)
pulumi.export("runtime", cfg.runtime)
pulumi.export("vpc_id", network.vpc_id)
pulumi.export("endpoint", edge.dns_name)
pulumi.export("models", [p.summary() for p in placements])
