"""`llmkit inventory`: the written file is an inventory pyinfra loads, with the stack's groups and data.

The outputs are the real ones of `llmkit plan prod` (the offline plan of stacks/Pulumi.prod.yaml),
as `pulumi stack output --json` would give them; the instances are in the shape of
`aws ec2 describe-instances` / `aws autoscaling describe-auto-scaling-groups`. The written file is
loaded with pyinfra's own CLI loader (`pyinfra_cli.inventory.make_inventory`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmkit.commands.inventory import inventory as inventory_command
from llmkit.errors import ConfigError
from llmkit.inventory import (
    Bastion,
    Instance,
    LazyProxyCommand,
    StackInventory,
    parse_instances,
    stack_inventory,
)
from llmkit.plan import run_plan

ROOT = Path(__file__).resolve().parent.parent
ASG_TAG = "aws:autoscaling:groupName"
ID_32B = "i-0123456789abcdef0"
ID_70B = "i-0123456789abcdef1"
ID_70B_2 = "i-0abcdef0123456789"


@cache
def prod_outputs() -> dict[str, Any]:
    outputs = run_plan("prod", ROOT).outputs
    return json.loads(json.dumps(outputs))  # as `pulumi stack output --json` prints them


def ec2_instance(instance_id: str, ip: str, asg: str | None, state: str = "running") -> dict[str, Any]:
    tags = [{"Key": "Name", "Value": "llmkit model host"}]
    if asg is not None:
        tags.append({"Key": ASG_TAG, "Value": asg})
    return {
        "InstanceId": instance_id,
        "InstanceType": "g6.12xlarge",
        "PrivateIpAddress": ip,
        "State": {"Code": 16 if state == "running" else 80, "Name": state},
        "Tags": tags,
    }


def describe_instances() -> dict[str, Any]:
    return {
        "Reservations": [
            {
                "ReservationId": "r-1",
                "Instances": [ec2_instance(ID_32B, "10.0.1.11", "llmkit-prod-deepseek-r1-32b")],
            },
            {
                "ReservationId": "r-2",
                "Instances": [
                    ec2_instance(ID_70B, "10.0.2.12", "llmkit-prod-deepseek-r1-70b"),
                    ec2_instance(ID_70B_2, "10.0.3.13", "llmkit-prod-deepseek-r1-70b"),
                    # Left out: stopped, another stack's group, not in any group.
                    ec2_instance(
                        "i-0aaaaaaaaaaaaaaaa", "10.0.2.14", "llmkit-prod-deepseek-r1-70b", "stopped"
                    ),
                    ec2_instance("i-0bbbbbbbbbbbbbbbb", "10.1.2.15", "llmkit-dev-deepseek-r1-70b"),
                    ec2_instance("i-0cccccccccccccccc", "10.0.9.9", None),
                ],
            },
        ]
    }


def describe_auto_scaling_groups() -> dict[str, Any]:
    return {
        "AutoScalingGroups": [
            {
                "AutoScalingGroupName": "llmkit-prod-deepseek-r1-32b",
                "Instances": [
                    {"InstanceId": ID_32B, "LifecycleState": "InService", "HealthStatus": "Healthy"},
                    {"InstanceId": "i-0dddddddddddddddd", "LifecycleState": "Pending:Wait"},
                ],
            },
            {
                "AutoScalingGroupName": "llmkit-prod-deepseek-r1-70b",
                "Instances": [{"InstanceId": ID_70B, "LifecycleState": "InService"}],
            },
        ]
    }


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=2))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "outputs": write_json(tmp_path / "outputs.json", prod_outputs()),
        "instances": write_json(tmp_path / "instances.json", describe_instances()),
        "asgs": write_json(tmp_path / "asgs.json", describe_auto_scaling_groups()),
    }


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(inventory_command, [str(a) for a in args])


LOAD_INVENTORY = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import json_encode

with ctx_state.use(State(check_for_changes=False)):
    inventory = make_inventory(sys.argv[1])

def plain(data):
    json.dumps(data, default=json_encode)  # as `pyinfra FILE debug-inventory` prints it
    out = dict(data)
    kwargs = out.get("ssh_paramiko_connect_kwargs")
    if kwargs:
        sock = kwargs["sock"]
        out["ssh_paramiko_connect_kwargs"] = {
            "sock": {"type": type(sock).__name__, "command": sock.command, "started": sock.started}
        }
    return out

print(json.dumps({
    "groups": {g: [h.name for h in hosts] for g, hosts in inventory.groups.items()},
    "group_data": dict(inventory.group_data),
    "hosts": {h.name: plain(h.data.dict()) for h in inventory},
}))
"""


def load(path: Path) -> dict[str, Any]:
    """The file loaded as `pyinfra FILE ...` loads an inventory (pyinfra's CLI loader).

    In a child process: importing ``pyinfra_cli`` monkey-patches the process with gevent, which
    stalls the Pulumi mock runtime the plan (and other tests) use.
    """
    done = subprocess.run(
        [sys.executable, "-c", LOAD_INVENTORY, str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def sock(loaded: dict[str, Any], name: str) -> dict[str, Any]:
    value: dict[str, Any] = loaded["hosts"][name]["ssh_paramiko_connect_kwargs"]["sock"]
    assert value["type"] == "LazyProxyCommand"
    return value


# --- the written inventory ------------------------------------------------------------------------


def test_ssm_inventory_has_the_stack_groups_hosts_and_data(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "inventories" / "prod.py"
    result = run("prod", "--outputs", files["outputs"], "--instances", files["instances"], "--write", target)
    assert result.exit_code == 0, result.output
    assert "3 host(s) in 2 group(s), via ssm" in result.stderr

    loaded = load(target)
    expected = prod_outputs()["inventory"]
    assert set(expected) == {"model_deepseek_r1_32b", "model_deepseek_r1_70b"}
    assert loaded["groups"]["model_deepseek_r1_32b"] == [ID_32B]
    assert loaded["groups"]["model_deepseek_r1_70b"] == [ID_70B, ID_70B_2]
    for group, entry in expected.items():
        assert loaded["group_data"][group] == entry["data"]
    data = loaded["hosts"][ID_70B]
    # The deploys read the fleet's host data through host.data, exactly as the boot run does.
    assert data["models"][0]["name"] == "deepseek-r1:70b"
    assert data["stack"] == "prod"
    assert data["metrics"]["auto_scaling_group"] == "llmkit-prod-deepseek-r1-70b"
    assert data["ssh_user"] == "ubuntu"
    assert data["ssh_hostname"] == ID_70B
    assert data["_sudo"] is True
    proxy = sock(loaded, ID_70B)
    assert not proxy["started"]  # loading the inventory starts no session
    assert shlex.split(proxy["command"]) == [
        "aws",
        "ssm",
        "start-session",
        "--target",
        ID_70B,
        "--document-name",
        "AWS-StartSSHSession",
        "--parameters",
        "portNumber=22",
        "--region",
        "eu-central-1",
    ]
    # Only the stack's running instances: stopped, other stacks' and group-less ones are left out.
    assert set(loaded["hosts"]) == {ID_32B, ID_70B, ID_70B_2}


def test_bastion_inventory_names_hosts_by_private_address(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "prod.py"
    result = run(
        "prod",
        *("--outputs", files["outputs"], "--instances", files["instances"]),
        *("--via", "bastion", "--bastion", "ec2-user@bastion.example.com:2222", "--ssh-user", "admin"),
        *("--write", target),
    )
    assert result.exit_code == 0, result.output
    loaded = load(target)
    assert loaded["groups"]["model_deepseek_r1_32b"] == ["10.0.1.11"]
    assert loaded["hosts"]["10.0.1.11"]["ssh_user"] == "admin"
    assert shlex.split(sock(loaded, "10.0.1.11")["command"]) == [
        "ssh",
        "-W",
        "10.0.1.11:22",
        "-p",
        "2222",
        "ec2-user@bastion.example.com",
    ]


def test_auto_scaling_group_listing_is_enough_for_ssm(files: dict[str, Path]) -> None:
    result = run("prod", "--outputs", files["outputs"], "--instances", files["asgs"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    compile(text, "inventory.py", "exec")  # printed to stdout: valid Python too
    assert ID_32B in text and ID_70B in text
    assert "i-0dddddddddddddddd" not in text  # still in its lifecycle hook: not in service


def test_empty_group_is_kept_with_a_warning(files: dict[str, Path], tmp_path: Path) -> None:
    only_32b = {"Reservations": [describe_instances()["Reservations"][0]]}
    instances = write_json(tmp_path / "some.json", only_32b)
    target = tmp_path / "prod.py"
    result = run("prod", "--outputs", files["outputs"], "--instances", instances, "--write", target)
    assert result.exit_code == 0, result.output
    assert "warning: no running instance in model_deepseek_r1_70b" in result.stderr
    loaded = load(target)
    assert loaded["group_data"]["model_deepseek_r1_70b"]["stack"] == "prod"
    assert list(loaded["hosts"]) == [ID_32B]


# --- input errors: exit 2, the file and the key named, no traceback -------------------------------


def expect_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_wrong_stack_is_refused(files: dict[str, Path]) -> None:
    result = run("staging", "--outputs", files["outputs"], "--instances", files["instances"])
    expect_error(
        result, str(files["outputs"]), "inventory.model_deepseek_r1_32b.data.stack", "'prod'", "'staging'"
    )


def test_outputs_declaring_another_stack_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    outputs = write_json(tmp_path / "o.json", {**prod_outputs(), "stack": "dev"})
    expect_error(run("prod", "--outputs", outputs, "--instances", files["instances"]), str(outputs), "stack:")


def test_missing_inventory_output_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    outputs = write_json(tmp_path / "o.json", {k: v for k, v in prod_outputs().items() if k != "inventory"})
    expect_error(
        run("prod", "--outputs", outputs, "--instances", files["instances"]),
        str(outputs),
        "inventory: no `inventory` output",
    )


def test_bad_json_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    outputs = tmp_path / "o.json"
    outputs.write_text('{"region": "eu-central-1",')
    expect_error(
        run("prod", "--outputs", outputs, "--instances", files["instances"]), str(outputs), "not JSON"
    )
    instances = tmp_path / "i.json"
    instances.write_text("Reservations: []")
    expect_error(
        run("prod", "--outputs", files["outputs"], "--instances", instances), str(instances), "not JSON"
    )


def test_group_without_data_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    outputs = write_json(tmp_path / "o.json", {**prod_outputs(), "inventory": {"model_x": {"hosts": []}}})
    expect_error(
        run("prod", "--outputs", outputs, "--instances", files["instances"]), "inventory.model_x.data"
    )


def test_instances_of_another_shape_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    instances = write_json(tmp_path / "i.json", {"Instances": []})
    expect_error(
        run("prod", "--outputs", files["outputs"], "--instances", instances),
        str(instances),
        "(top level)",
        "describe-instances",
    )


def test_no_instance_of_the_stack_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    other = {
        "Reservations": [{"Instances": [ec2_instance(ID_32B, "10.1.0.5", "llmkit-dev-deepseek-r1-32b")]}]
    }
    instances = write_json(tmp_path / "i.json", other)
    expect_error(
        run("prod", "--outputs", files["outputs"], "--instances", instances),
        str(instances),
        "no running instance of stack prod",
        "llmkit-prod-deepseek-r1-32b",
    )


def test_bastion_options_are_checked(files: dict[str, Path]) -> None:
    base = ("prod", "--outputs", files["outputs"], "--instances", files["instances"])
    expect_error(run(*base, "--via", "bastion"), "--bastion", "needs the bastion host")
    expect_error(run(*base, "--bastion", "bastion.example.com"), "--bastion", "only for --via bastion")
    expect_error(run(*base, "--via", "bastion", "--bastion", "a b"), "--bastion", "not a bastion address")
    # The Auto Scaling listing has no private addresses: a bastion cannot reach the hosts.
    asgs = ("prod", "--outputs", files["outputs"], "--instances", files["asgs"])
    expect_error(run(*asgs, "--via", "bastion", "--bastion", "b.example.com"), "PrivateIpAddress")


# --- parts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bastion.example.com", Bastion("bastion.example.com")),
        ("ec2-user@192.0.2.10", Bastion("192.0.2.10", "ec2-user")),
        ("ops@bastion.example.com:2222", Bastion("bastion.example.com", "ops", 2222)),
        ("ops@[2001:db8::10]:22", Bastion("2001:db8::10", "ops", 22)),
    ],
)
def test_bastion_parse(text: str, expected: Bastion) -> None:
    assert Bastion.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "ops@", "bastion.example.com:99999", "Bad User@host", "-oProxyCommand=x"]
)
def test_bastion_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--bastion"):
        Bastion.parse(text)


def test_stack_inventory_takes_the_region_from_the_outputs() -> None:
    parsed = stack_inventory(prod_outputs(), "prod", "outputs.json")
    assert isinstance(parsed, StackInventory)
    assert parsed.region == "eu-central-1"
    assert parsed.auto_scaling_groups() == {
        "llmkit-prod-deepseek-r1-32b": "model_deepseek_r1_32b",
        "llmkit-prod-deepseek-r1-70b": "model_deepseek_r1_70b",
    }
    with pytest.raises(ConfigError, match="not the outputs of a stack"):
        stack_inventory(["inventory"], "prod", "outputs.json")


def test_parse_instances_keeps_running_instances_of_auto_scaling_groups() -> None:
    found = parse_instances(describe_instances(), "instances.json")
    assert Instance(ID_32B, "llmkit-prod-deepseek-r1-32b", "10.0.1.11") in found
    assert all(i.instance_id != "i-0aaaaaaaaaaaaaaaa" for i in found)  # stopped
    assert all(i.instance_id != "i-0cccccccccccccccc" for i in found)  # in no group
    bad = {"Reservations": [{"Instances": [{**ec2_instance(ID_32B, "10.0.1.1", "g"), "InstanceId": "x"}]}]}
    with pytest.raises(ConfigError, match=r"Reservations\[0\]\.Instances\[0\]\.InstanceId"):
        parse_instances(bad, "instances.json")


def test_lazy_proxy_command_starts_on_first_use_and_restarts_after_close() -> None:
    proxy = LazyProxyCommand("cat")  # a local command: echoes what the SSH client would send
    assert not proxy.started and proxy.closed
    proxy.settimeout(5)
    assert proxy.started
    assert proxy.send(b"SSH-2.0-test\r\n") == 14
    assert proxy.recv(14) == b"SSH-2.0-test\r\n"
    proxy.close()
    assert not proxy.started and proxy.closed
    proxy.send(b"again")  # a reconnect starts a new process
    assert proxy.recv(5) == b"again"
    proxy.close()
