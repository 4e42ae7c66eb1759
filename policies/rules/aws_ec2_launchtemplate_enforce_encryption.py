"""Launch templates encrypt every EBS volume they map, under a customer-managed KMS key.

Every ``blockDeviceMappings[].ebs`` of an ``aws.ec2.LaunchTemplate`` has ``encrypted`` true (pulumi-aws
carries it as the string ``"true"``) and, with ``require_customer_key`` (default on), a
``kmsKeyId`` that is not an AWS managed key alias (``alias/aws/ebs``). Mappings without ``ebs``
(instance store, ``noDevice``) hold no EBS volume and are not judged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting, as_list, known
from policies.support import LAUNCH_TEMPLATES, truthy


def _aws_managed(key: str) -> bool:
    return key.startswith("alias/aws/") or ":alias/aws/" in key


def check(template: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    for index, mapping in enumerate(as_list(template.get("blockDeviceMappings"))):
        mapping = known(mapping)
        if not isinstance(mapping, Mapping):
            continue
        ebs = known(mapping.get("ebs"))
        if not isinstance(ebs, Mapping):
            continue
        where = f"blockDeviceMappings[{index}] ({known(mapping.get('deviceName'))})"
        encrypted = known(ebs.get("encrypted"))
        if not truthy(encrypted):
            shown = "not set" if encrypted is None else json.dumps(encrypted)
            yield f"{where} ebs.encrypted is {shown}: set it to true"
        if config["require_customer_key"]:
            key = known(ebs.get("kmsKeyId"))
            if not key:
                yield (
                    f"{where} has no ebs.kmsKeyId (EBS would use the AWS managed key aws/ebs): "
                    "name a customer-managed KMS key"
                )
            elif _aws_managed(str(key)):
                yield f"{where} ebs.kmsKeyId {key} is an AWS managed key: name a customer-managed KMS key"


RULE = Rule(
    name="aws-ec2-launchtemplate-enforce-encryption",
    description="Every EBS volume a launch template maps is encrypted, under a customer-managed KMS key.",
    why="Instances launched by the Auto Scaling groups would otherwise write model weights and caches to "
    "unencrypted disks, or under the AWS managed aws/ebs key whose policy the account cannot restrict.",
    severity="high",
    remediation="Set ebs.encrypted true and ebs.kmsKeyId to a customer-managed key on every "
    "blockDeviceMappings entry (GpuFleet does, with the KmsKeys data key).",
    frameworks=(
        "CIS AWS Foundations 2.2.1",
        "AWS FSBP EC2.181",
        "HIPAA 164.312(a)(2)(iv)",
        "GDPR Art. 32(1)(a)",
    ),
    resource_types=LAUNCH_TEMPLATES,
    check=check,
    settings={
        "require_customer_key": Setting(
            {"type": "boolean"},
            True,
            "require ebs.kmsKeyId naming a customer-managed key (not the AWS managed aws/ebs key)",
        )
    },
)
