"""EBS volumes are encrypted: standalone volumes and the volumes an instance declares.

- ``aws.ebs.Volume``: ``encrypted`` true;
- ``aws.ec2.Instance``: ``rootBlockDevice.encrypted`` true (a missing ``rootBlockDevice`` leaves the
  root volume's encryption to the AMI's snapshot and the account default, so it fails too) and
  ``encrypted`` true on every ``ebsBlockDevices`` entry.

Booleans may arrive as strings (``"true"``). Launch templates have their own rule
(``aws-ec2-launchtemplate-enforce-encryption``), which also requires a customer-managed key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, as_list, known
from policies.support import INSTANCES, truthy

VOLUMES = ("aws:ebs/volume:Volume",)


def _shown(value: Any) -> str:
    return "not set" if value is None else f"{json.dumps(value)}"


def check(resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if resource.type in VOLUMES:
        value = resource.get("encrypted")
        if not truthy(value):
            yield f"encrypted is {_shown(value)}: set encrypted: true"
        return
    root = resource.get("rootBlockDevice")
    value = resource.get("rootBlockDevice", "encrypted")
    if root is None:
        yield (
            "rootBlockDevice is not set (the root volume is encrypted only if the AMI's snapshot is): "
            "declare rootBlockDevice with encrypted: true"
        )
    elif not truthy(value):
        yield f"rootBlockDevice.encrypted is {_shown(value)}: set it to true"
    for index, device in enumerate(as_list(resource.get("ebsBlockDevices"))):
        device = known(device)
        if not isinstance(device, Mapping):
            continue
        value = known(device.get("encrypted"))
        if not truthy(value):
            name = known(device.get("deviceName"))
            yield f"ebsBlockDevices[{index}] ({name}) encrypted is {_shown(value)}: set it to true"


RULE = Rule(
    name="aws-ebs-volume-enforce-encryption",
    description="EBS volumes, and the root and EBS block devices of EC2 instances, are encrypted.",
    why="An unencrypted volume, or a snapshot of it, exposes model weights, caches and host credentials to "
    "anyone who can read or share the snapshot, and fails encryption-at-rest requirements.",
    severity="high",
    remediation="Set encrypted: true on aws.ebs.Volume, and on the instance's rootBlockDevice and every "
    "ebsBlockDevices entry, with a customer-managed kmsKeyId (GpuFleet's launch templates do this with the "
    "KmsKeys data key).",
    frameworks=(
        "CIS AWS Foundations 2.2.1",
        "AWS FSBP EC2.3",
        "HIPAA 164.312(a)(2)(iv)",
        "GDPR Art. 32(1)(a)",
    ),
    resource_types=(*VOLUMES, *INSTANCES),
    check=check,
)
