"""site.py: which deploys each host gets, in what order, and the group_data defaults.

site.py is loaded the way the pyinfra CLI loads a deploy file (``load_deploy_file``) against hosts
on pyinfra's ``@fake`` connector. The deploys are stand-ins put into ``sys.modules`` (each runs one
``echo <deploy>``), so this tests the composition, not the deploys (their own tests do that). The
group data and the example inventory are read by pyinfra's own inventory loader.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import ipaddress
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.connectors.fake import FakeConnector
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from playbooks import site

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "playbooks" / "site.py"
GROUP_DATA = ROOT / "playbooks" / "group_data"
EXAMPLE = ROOT / "playbooks" / "inventories" / "onprem.example.py"

EVERY_FIRST = ["hardening", "firewall"]
GPU = ["gpu_driver", "cuda", "container_toolkit", "model_cache", "ollama", "models", "tls_terminator"]
GATEWAY = ["gateway"]
PROXY = ["reverse_proxy"]
EVERY_LAST = ["monitoring"]

# The host-data keys of the playbooks contract (docs: playbooks/group_data/all.py).
CONTRACT_KEYS: dict[str, Any] = {
    "require_gpu": False,
    "nvidia_driver_branch": None,
    "nvidia_driver_source": "distro",
    "nvidia_driver_replace_newer": False,
    "cuda_version": None,
    "container_toolkit": False,
    "ollama_version": None,
    "ollama_sha256": None,
    "ollama_mirror_url": None,
    "ollama_bind": "127.0.0.1",
    "ollama_allow_any_address": False,
    "ollama_port": 11434,
    "ollama_models_path": "/var/lib/ollama/models",
    "ollama_num_parallel": None,
    "ollama_max_loaded_models": None,
    "ollama_keep_alive": None,
    "models": [],
    "models_mirror_url": None,
    "prune_models": False,
    "pki_dir": None,
    "tls_cert": None,
    "tls_key": None,
    "tls_ca": None,
    "model_port": 11434,
    "model_bind_address": None,
    "proxy_server_name": None,
    "client_cidrs": [],
    "mtls_client_ca": None,
    "rate_limit_per_second": 5,
    "rate_limit_burst": 20,
    "api_key_header": None,
    "client_max_body_size": "1m",
    "log_retention_days": 180,
    "admin_cidrs": [],
    "gateway_hosts": [],
    "dns_servers": None,
    "ntp_servers": [],
    "egress_allow": [],
    "egress_allow_any": False,
    "ssh_permit_root_login": "prohibit-password",
    "unattended_upgrades": True,
    "node_exporter_port": 9100,
    "gpu_exporter_port": 9835,
}


# --- stand-in deploys -----------------------------------------------------------------------------

ALL_STEPS = (*site.FIRST, *site.GPU, *site.GATEWAY, *site.PROXY, *site.LAST)


STAND_IN = """from pyinfra.api.deploy import deploy
from pyinfra.operations import server

@deploy("stand-in {name}")
def {name}():
    server.shell(name="{name}", commands=["echo {name}"])
"""


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deploy site.py calls, as a module in sys.modules that echoes the deploy's name.

    Each stand-in is its own file with its operation on the same line: pyinfra identifies an
    operation across hosts by the line numbers of the calls that made it, so only site.py's own
    call lines keep two deploys' operations apart.
    """
    modules: dict[str, types.ModuleType] = {}
    for module_name, function_name in ALL_STEPS:
        module = modules.setdefault(module_name, types.ModuleType(f"playbooks.deploys.{module_name}"))
        namespace: dict[str, Any] = {}
        source = STAND_IN.format(name=function_name)
        exec(compile(source, f"<stand-in {module_name}.{function_name}>", "exec"), namespace)
        setattr(module, function_name, namespace[function_name])
    for module_name, module in modules.items():
        monkeypatch.setitem(sys.modules, f"playbooks.deploys.{module_name}", module)


def load_site(groups: dict[str, list[tuple[str, dict[str, Any]]]]) -> Inventory:
    """site.py executed for each host as `pyinfra INVENTORY playbooks/site.py` does, then run.

    Like ``pyinfra_cli.util.load_deploy_file`` (CLI mode: operations ordered by call lines), but
    without importing ``pyinfra_cli``, whose import monkey-patches the process with gevent (and
    would stall the Pulumi mock runtime of the other tests).
    """
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    names = list(dict.fromkeys(name for members in groups.values() for name, _ in members))
    inventory = Inventory(
        (names, {}),
        **{
            group: ([(name, {**data, **fake}) for name, data in members], {})
            for group, members in groups.items()
        },
    )
    state = State(inventory, Config())
    connect_all(state)
    code = compile(SITE.read_text(), str(SITE), "exec")
    old_cli = pyinfra.is_cli
    pyinfra.is_cli = True
    try:
        state.set_stage(StateStage.Prepare)
        state.current_deploy_filename = str(SITE)
        state.current_exec_filename = str(SITE)
        state.current_op_file_number = 0
        with ctx_state.use(state), ctx_inventory.use(inventory):
            for member in inventory:
                with ctx_config.use(state.config.copy()), ctx_host.use(member):
                    exec(code, {"__file__": str(SITE)})
    finally:
        pyinfra.is_cli = old_cli
    # One operation per deploy across all hosts: no operation stands for two deploys.
    for meta in state.op_meta.values():
        assert len({name.split(" | ")[0] for name in meta.names}) == 1, meta.names
    run_ops(state)
    return inventory


LOAD_INVENTORY = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

path, group_data = sys.argv[1], sys.argv[2:]
with ctx_state.use(State(check_for_changes=False)):
    inventory = make_inventory(path, group_data_directories=group_data or None)
print(json.dumps({
    "data": inventory.get_data(),
    "groups": {g: [h.name for h in hosts] for g, hosts in inventory.groups.items()},
    "hosts": {h.name: {"groups": list(h.groups), "data": h.data.dict()} for h in inventory},
}, default=repr))
"""


def pyinfra_inventory(path: Path, *group_data: Path) -> dict[str, Any]:
    """An inventory file loaded by pyinfra's CLI loader, in a child process (see load_site)."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_INVENTORY, str(path), *map(str, group_data)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def ran(inventory: Inventory, name: str) -> list[str]:
    connector = inventory.get_host(name).connector
    assert isinstance(connector, FakeConnector)
    return [str(c).removeprefix("echo ") for c in connector.executed_commands if str(c).startswith("echo ")]


SITE_HOSTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "proxy": [("@fake/proxy-1", {"ssh_hostname": "10.10.0.5"})],
    "gpu": [("@fake/gpu-1", {"ssh_hostname": "10.20.1.11", "model_bind_address": "10.20.1.11"})],
    "monitoring": [("@fake/mon-1", {"ssh_hostname": "10.40.0.9"})],
    "gateway": [("@fake/gw-1", {"ssh_hostname": "10.30.0.10"})],
    "model_deepseek_r1_32b": [("@fake/i-0123456789abcdef0", {})],
    "other": [("@fake/bastion-1", {})],
}


# --- composition ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("stand_ins")
def test_each_group_gets_its_deploys_in_order() -> None:
    inventory = load_site(SITE_HOSTS)
    assert ran(inventory, "@fake/gpu-1") == EVERY_FIRST + GPU + EVERY_LAST
    # AWS model hosts (group model_<slug>) are gpu hosts.
    assert ran(inventory, "@fake/i-0123456789abcdef0") == EVERY_FIRST + GPU + EVERY_LAST
    assert ran(inventory, "@fake/proxy-1") == EVERY_FIRST + PROXY + EVERY_LAST
    assert ran(inventory, "@fake/mon-1") == EVERY_FIRST + EVERY_LAST
    assert ran(inventory, "@fake/gw-1") == EVERY_FIRST + GATEWAY + EVERY_LAST
    assert ran(inventory, "@fake/bastion-1") == EVERY_FIRST + EVERY_LAST
    for member in inventory:  # steps_for (documentation, tools) says what run() does
        assert ran(inventory, member.name) == [f for _, f in site.steps_for(member.groups)]


@pytest.mark.usefixtures("stand_ins")
def test_a_host_in_two_roles_gets_both_once() -> None:
    both = [("@fake/edge-1", {"ssh_hostname": "10.10.0.7"})]
    inventory = load_site({"proxy": both, "gpu": both})
    assert ran(inventory, "@fake/edge-1") == EVERY_FIRST + GPU + PROXY + EVERY_LAST
    app = [("@fake/app-1", {"ssh_hostname": "10.30.0.11"})]
    inventory = load_site({"gateway": app, "proxy": app})
    assert ran(inventory, "@fake/app-1") == EVERY_FIRST + GATEWAY + PROXY + EVERY_LAST


def test_steps_for_groups() -> None:
    assert site.is_gpu_host(["model_deepseek_r1_70b"])
    assert site.is_gpu_host(["gpu"])
    assert not site.is_gpu_host(["proxy", "monitoring", "gpu_spares"])
    assert [f for _, f in site.steps_for(["monitoring"])] == EVERY_FIRST + EVERY_LAST


def test_the_real_deploy_modules_expose_what_site_calls() -> None:
    """Each deploy module that exists has the function site.py calls (modules still being
    written are skipped, so this test tightens as they land)."""
    missing, skipped = [], []
    for module_name, function_name in ALL_STEPS:
        full = f"{site.DEPLOYS_PACKAGE}.{module_name}"
        if importlib.util.find_spec(full) is None:
            skipped.append(full)
            continue
        try:
            module = importlib.import_module(full)
        except ImportError as exc:  # a sibling it needs is not there yet
            skipped.append(f"{full} ({exc})")
            continue
        if not callable(getattr(module, function_name, None)):
            missing.append(f"{full}.{function_name}")
    assert not missing
    assert not skipped, f"not importable: {', '.join(skipped)}"


# --- defaults -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("stand_ins")
def test_defaults_fill_only_what_the_inventory_leaves_out() -> None:
    aws_models = [{"name": "deepseek-r1:32b", "slug": "deepseek-r1-32b", "concurrency": 8}]
    inventory = load_site(
        {
            "gpu": [
                ("@fake/gpu-1", {"admin_cidrs": ["10.99.0.0/24"], "ssh_permit_root_login": "no"}),
                ("@fake/gpu-2", {}),
            ],
            "model_deepseek_r1_32b": [("@fake/i-0123456789abcdef0", {"models": aws_models})],
        }
    )
    gpu1, gpu2 = inventory.get_host("@fake/gpu-1"), inventory.get_host("@fake/gpu-2")
    model_host = inventory.get_host("@fake/i-0123456789abcdef0")
    assert gpu1.data.admin_cidrs == ["10.99.0.0/24"]
    assert gpu1.data.ssh_permit_root_login == "no"
    assert gpu2.data.admin_cidrs == []
    assert gpu2.data.ssh_permit_root_login == "prohibit-password"
    assert model_host.data.models == aws_models
    for member in (gpu1, gpu2, model_host):
        assert member.data.ollama_bind == "127.0.0.1"
        assert set(CONTRACT_KEYS) <= set(member.data.dict())
    # Mutable defaults are copies: one host's list is not another's.
    gpu2.data.models.append("x")  # host.data hands out copies; the stored value must stay empty
    assert gpu2.data.models == []
    assert gpu2.data.override_datas["models"] is not gpu1.data.override_datas["models"]


def test_fill_defaults_never_overrides_group_data() -> None:
    inventory = Inventory(
        (["@fake/a"], {}),
        proxy=(["@fake/a"], {"rate_limit_per_second": 50, "client_cidrs": ["198.51.100.0/24"]}),
    )
    site.fill_defaults(inventory, site.group_defaults())
    member = inventory.get_host("@fake/a")
    assert member.data.rate_limit_per_second == 50
    assert member.data.client_cidrs == ["198.51.100.0/24"]
    assert member.data.rate_limit_burst == 20


def test_group_data_holds_every_contract_key_with_its_secure_default() -> None:
    defaults = site.group_defaults()
    for key, value in CONTRACT_KEYS.items():
        assert key in defaults, key
        assert defaults[key] == value, key
    # Nothing but host data: no imported modules or helpers leak in.
    assert all(isinstance(v, str | int | bool | list | type(None)) for v in defaults.values())


def test_every_group_data_key_is_documented() -> None:
    """Each assignment in group_data/all.py has a comment right above it (or above its block)."""
    source = (GROUP_DATA / "all.py").read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            assert isinstance(target, ast.Name)
            above = node.lineno - 2
            while above >= 0 and not lines[above].startswith("#") and lines[above].strip():
                above -= 1  # a key of a block documented together (tls_cert, tls_key, tls_ca)
            assert lines[above].startswith("# "), f"{target.id} has no comment"


def test_pyinfra_reads_group_data_as_site_py_does() -> None:
    """With --group-data (or --chdir playbooks), pyinfra itself loads all.py: the same values."""
    loaded = pyinfra_inventory(EXAMPLE, GROUP_DATA)
    assert loaded["data"] == site.group_defaults()
    assert set(loaded["groups"]) == {"proxy", "gpu", "monitoring", "onprem.example"}


# --- the example inventory ------------------------------------------------------------------------

DOC_NETS = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "10.0.0.0/8")
]


def test_example_inventory_loads_with_documented_safe_values() -> None:
    loaded = pyinfra_inventory(EXAMPLE)
    groups = loaded["groups"]
    assert all(groups[g] for g in ("proxy", "gpu", "monitoring")), groups
    for name, member in loaded["hosts"].items():
        data = member["data"]
        address = ipaddress.ip_address(data["ssh_hostname"])
        assert any(address in net for net in DOC_NETS), name
        for cidr in data["admin_cidrs"] + data["client_cidrs"]:
            network = ipaddress.ip_network(cidr)
            assert any(network.version == n.version and network.subnet_of(n) for n in DOC_NETS), cidr  # type: ignore[arg-type]
        # Nothing secret: key material comes from pki_dir, SSH keys from the agent.
        assert not {"tls_key", "ssh_password", "ssh_key_password", "_sudo_password"} & set(data)
        assert data["ssh_permit_root_login"] in ("no", "prohibit-password")
        steps = [f for _, f in site.steps_for(member["groups"])]
        if name in groups["gpu"]:
            assert "tls_terminator" in steps
            ipaddress.ip_address(data["model_bind_address"])
        if name in groups["proxy"]:
            assert "reverse_proxy" in steps
            assert data["proxy_server_name"]
    assert "PRIVATE KEY" not in EXAMPLE.read_text()


def test_site_runs_only_when_pyinfra_executes_it() -> None:
    """Imported (tests, tools) or while pyinfra executes another file, site.py runs nothing."""
    inventory = Inventory((["@fake/a"], {}))
    state = State(inventory, Config())
    with ctx_state.use(state), ctx_host.use(inventory.get_host("@fake/a")):
        state.current_exec_filename = str(ROOT / "playbooks" / "deploys" / "ollama.py")
        assert not site.run_by_pyinfra()
        state.current_exec_filename = str(SITE)
        assert site.run_by_pyinfra()
