"""The llmkit Pulumi program: read the stack's config, compose the components.

Everything else lives in `components/` (what gets deployed) and `llmkit/` (config schema,
catalogs, sizing). `pulumi up` runs this file; `llmkit plan STACK` runs it offline.
"""

import pulumi
import pulumi_aws as aws

from llmkit.config import from_pulumi_runtime
from llmkit.placement import place_models

cfg = from_pulumi_runtime()
placements = place_models(cfg)

# One explicit provider pinned to the configured region: every AWS resource is created
# through it (components inherit it from their parent), and it stamps the stack's
# required tags onto everything taggable.
aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=dict(cfg.tags)),
)

pulumi.export("region", cfg.region)
pulumi.export("runtime", cfg.runtime)
pulumi.export("models", [p.summary() for p in placements])
