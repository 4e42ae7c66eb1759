"""Hostile stack files and config: alias bombs, names no resource accepts, files from outside the
project, trust stores posing as a CA, and CIDR lists open to the world.

Each goes through the real loader (``load_stack_file``) or the real ``llmkit plan`` CLI, on crafted
files in a temporary copy of the project. The alias bombs run ``llmkit`` in a child process with a
memory limit and a timeout, so that a loader without limits fails the test instead of the machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmkit.cli import main
from llmkit.config import (
    MAX_CA_CERTIFICATES,
    MAX_YAML_ALIASES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    STACK_NAME_USES,
    WORLD_OPEN_TAG,
    YamlLimitError,
    from_mapping,
    load_stack_file,
    parse_yaml,
    read_yaml,
)
from llmkit.errors import MAX_QUOTED, ConfigError, ConfigErrors, quoted

ROOT = Path(__file__).resolve().parent.parent
RULE = "aws-provider-config-disallow-world-open-override"
# Enough for the CLI to start and refuse a file; far too little to expand an alias bomb.
CHILD_MEMORY = 1024 * 1024 * 1024
CHILD_TIMEOUT = 60


def project(tmp_path: Path) -> Path:
    """A copy of the project's Pulumi program and stacks (with their CA bundle) to plant files in."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "stacks", copy / "stacks")
    return copy


def stack_doc(stack: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return doc


def write_stack(project_dir: Path, name: str, config: dict[str, Any]) -> Path:
    path = project_dir / "stacks" / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


def with_keys(stack: str, **llmkit: Any) -> dict[str, Any]:
    """A real stack's config with llmkit: keys replaced (a value of None removes the key)."""
    config = stack_doc(stack)["config"]
    for key, value in llmkit.items():
        if value is None:
            config.pop(f"llmkit:{key}", None)
        else:
            config[f"llmkit:{key}"] = value
    return config


def plan(*args: str) -> Any:
    return CliRunner().invoke(main, ["plan", *args])


def refused(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        load_stack_file(path)
    return caught.value.errors


# --- YAML within limits: alias bombs, size, depth -----------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9, indent: str = "  ", prefix: str = "lol:") -> str:
    """The "billion laughs": ``levels`` keys, each a list of ``width`` aliases of the one before.

    Under 1 KB of text that expands to ``width ** levels`` (387 million) strings.
    """
    lines = [f"{indent}{prefix}l0: &l0 [{', '.join(['lol'] * width)}]"]
    for n in range(1, levels):
        lines.append(f"{indent}{prefix}l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def run_llmkit(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``llmkit ARGS`` in a child process with a memory limit: (the process, its seconds)."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "llmkit.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"llmkit {' '.join(args)} ran for {CHILD_TIMEOUT} s on a 1 KB file", pytrace=False)
    return done, time.monotonic() - started


def _bomb_in_a_foreign_key(p: Path) -> list[str]:
    # Keys of other namespaces pass through to the program's config, as JSON: the whole expansion.
    text = (p / "stacks" / "Pulumi.dev.yaml").read_text().replace("config:\n", "config:\n" + alias_bomb(), 1)
    (p / "stacks" / "Pulumi.bomb.yaml").write_text(text)
    return ["plan", "bomb"]


def _bomb_as_a_bad_value(p: Path) -> list[str]:
    # A value of the wrong type: the error quotes it.
    text = (p / "stacks" / "Pulumi.dev.yaml").read_text().replace("config:\n", "config:\n" + alias_bomb(), 1)
    text = text.replace("    owner: platform-team\n", "    owner: *l8\n")
    (p / "stacks" / "Pulumi.bomb.yaml").write_text(text)
    return ["plan", "bomb"]


def _bomb_in_pulumi_yaml(p: Path) -> list[str]:
    text = (p / "Pulumi.yaml").read_text()
    (p / "Pulumi.yaml").write_text(
        "x-lol:\n" + alias_bomb() + "name: *l8\n" + text.replace("name:", "x-name:")
    )
    return ["plan", "dev"]


def _bomb_as_a_gateway_config(p: Path) -> list[str]:
    (p / "gateway.yaml").write_text(alias_bomb(indent="", prefix="") + "aliases: {general: {model: *l8}}\n")
    return [
        "keys",
        "issue",
        "dev-test",
        "--alias",
        "ops-key",
        "--gateway-config",
        "gateway.yaml",
        "--url",
        "https://127.0.0.1:9",
    ]


BOMBS: dict[str, Callable[[Path], list[str]]] = {
    "stack-file-foreign-key": _bomb_in_a_foreign_key,
    "stack-file-bad-value": _bomb_as_a_bad_value,
    "pulumi-yaml": _bomb_in_pulumi_yaml,
    "keys-gateway-config": _bomb_as_a_gateway_config,
}


@pytest.mark.parametrize("plant", BOMBS.values(), ids=BOMBS)
def test_an_alias_bomb_is_refused_at_once_with_a_short_error(
    tmp_path: Path, plant: Callable[[Path], list[str]]
) -> None:
    p = project(tmp_path)
    args = plant(p)
    done, seconds = run_llmkit(p, *args)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "nodes once its aliases are expanded (an alias bomb?)" in output
    assert len(output) < 2000, f"{len(output)} characters of output"
    assert "Traceback" not in output
    assert seconds < 20, f"{seconds:.1f} s"  # the interpreter's start on a busy machine; refusing is ms


def test_the_bounded_loader_refuses_a_bomb_in_milliseconds_and_loads_stacks_as_pyyaml_does() -> None:
    started = time.monotonic()
    with pytest.raises(YamlLimitError, match="an alias bomb"):
        parse_yaml(alias_bomb(levels=10, width=10, indent="", prefix=""))
    assert time.monotonic() - started < 0.5
    for stack in ("dev", "staging", "prod"):
        path = ROOT / "stacks" / f"Pulumi.{stack}.yaml"
        assert read_yaml(path) == yaml.safe_load(path.read_text())
    shared = "a: &a {x: 1}\nb: *a\nc: [*a, *a]\n"  # aliases within the limits are YAML as usual
    assert parse_yaml(shared) == {"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 1}]}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &a [1, *a]\n", "an alias inside the node it names (a cycle)"),
        ("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n", "nested more than 64 deep"),
        ("a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_YAML_ALIASES + 1)) + "]\n", "more than 100 aliases"),
    ],
    ids=["cycle", "depth", "aliases"],
)
def test_a_stack_file_over_a_limit_names_the_limit_and_where(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "stacks" / "Pulumi.dev.yaml"
    path.parent.mkdir()
    path.write_text(text)
    (error,) = refused(path)
    assert (error.key, error.value) == ("file", "Pulumi.dev.yaml")
    assert error.problem.startswith(f"refused: {problem}") and " at line " in error.problem
    assert error.accepted.startswith("a stack file within the limits: at most 1048576 bytes")


def test_a_stack_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    p = project(tmp_path)
    text = (p / "stacks" / "Pulumi.dev.yaml").read_text()
    padding = "#" + "x" * 1000 + "\n"
    path = p / "stacks" / "Pulumi.big.yaml"
    path.write_text(text + padding * (MAX_YAML_BYTES // len(padding) + 1))
    (error,) = refused(path)
    assert error.problem == f"refused: more than {MAX_YAML_BYTES} bytes: over the limit for a YAML file"


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    path = tmp_path / "stacks" / "Pulumi.dev.yaml"
    path.parent.mkdir()
    os.mkfifo(path)  # a real FIFO: opening it would block until a writer comes
    (error,) = refused(path)
    assert error.problem == "refused: not a regular file"


def test_a_long_bad_value_is_quoted_short(tmp_path: Path) -> None:
    p = project(tmp_path)
    write_stack(p, "long", with_keys("dev", runtime="x" * 500_000))
    result = plan("long", "--project-dir", str(p))
    assert result.exit_code == 2, result.output[-2000:]
    assert "llmkit:runtime: unknown runtime (got 'xxxx" in result.output
    assert f"... [cut at {MAX_QUOTED} characters]" in result.output
    assert len(result.output) < 1500


def test_quoting_is_bounded_for_any_value() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    cycle: list[Any] = []
    cycle.append(cycle)
    wide: list[Any] = []
    for _ in range(9):
        wide = [wide] * 9
    for value in (deep, cycle, wide, "x" * 10**7, {"k" * 10**6: 1}, 10**10000):
        assert len(quoted(value)) <= MAX_QUOTED + 40
    assert quoted(10**10000) == "<an integer of 33220 bits>"
    written: list[Any] = [
        "arn:aws:iam::123456789012:server-certificate/llm",
        [1, "a"],
        {"prefix": 24},
        (1,),
        None,
    ]
    for plain in written:
        assert quoted(plain) == repr(plain)


# --- stack names ----------------------------------------------------------------------------------

LONGEST_IN_EU_CENTRAL_1 = 63 - len("llmkit--models-123456789012-eu-central-1")  # the bucket: 23


@pytest.mark.parametrize(
    "name", ["Dev", "dev_1", "dev.eu", "dev--x", "dev-", "x" * (LONGEST_IN_EU_CENTRAL_1 + 1)]
)
def test_a_stack_name_a_resource_refuses_exits_2_naming_the_stack(tmp_path: Path, name: str) -> None:
    p = project(tmp_path)
    write_stack(p, name, stack_doc("dev")["config"])
    result = plan(name, "--project-dir", str(p))
    assert result.exit_code == 2, result.output[-2000:]
    assert not isinstance(result.exception, ValueError | AssertionError), result.exception
    assert "  - stack: " in result.output and f"(got {name!r}; accepted: lowercase letters" in result.output
    assert "Traceback" not in result.output


def test_the_longest_name_the_region_allows_plans(tmp_path: Path) -> None:
    name = "dev-" + "x" * (LONGEST_IN_EU_CENTRAL_1 - 4)
    p = project(tmp_path)
    write_stack(p, name, stack_doc("dev")["config"])
    result = plan(name, "--policy-only", "--project-dir", str(p))
    assert result.exit_code == 0, result.output[-3000:]


def test_a_stack_name_is_bounded_by_its_region() -> None:
    config = stack_doc("dev")["config"]
    config["aws:region"] = "ap-southeast-1"  # 14 characters: the bucket leaves 21 for the stack
    config["llmkit:allowed_regions"] = ["ap-southeast-1"]
    endpoint = config["llmkit:endpoint"]
    endpoint["tls_certificate_arn"] = endpoint["tls_certificate_arn"].replace(
        "eu-central-1", "ap-southeast-1"
    )
    assert from_mapping(config, source="test", stack="x" * 21).stack == "x" * 21
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(config, source="test", stack="x" * 22)
    (error,) = caught.value.errors
    assert (error.key, error.value) == ("stack", "x" * 22)
    assert error.problem == (
        "22 characters: the model store's S3 bucket would be "
        f"llmkit-{'x' * 22}-models-<account>-ap-southeast-1, 64 characters, over 63"
    )
    assert error.accepted.endswith("at most 21 characters in ap-southeast-1")


def test_every_use_of_the_stack_name_is_within_its_limit_at_the_longest_name() -> None:
    """The rule is the tightest of all uses: at the longest accepted name, each use fits."""
    region = "eu-central-1"
    stack = "x" * LONGEST_IN_EU_CENTRAL_1
    lengths = [
        (what, len(name.format(stack=stack, account="1" * 12, region=region)), most)
        for what, name, most in STACK_NAME_USES
    ]
    assert all(length <= most for _, length, most in lengths), lengths
    assert any(length == most for _, length, most in lengths)  # and one is exactly at its limit


# --- mtls_ca_bundle: a CA of the project's ---------------------------------------------------------


def certificate(ca: bool | None, name: str = "test CA") -> bytes:
    """A self-signed certificate; ``ca`` None: without basicConstraints at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def bundle_stack(p: Path, bundle: str) -> Path:
    config = stack_doc("dev")["config"]
    config["llmkit:endpoint"]["mtls_ca_bundle"] = bundle
    return write_stack(p, "mtls", config)


def bundle_error(p: Path, bundle: str) -> ConfigError:
    (error,) = refused(bundle_stack(p, bundle))
    assert (error.key, error.value) == ("llmkit:endpoint.mtls_ca_bundle", bundle)
    return error


def test_a_ca_bundle_inside_the_project_is_accepted_also_through_an_inner_symlink(tmp_path: Path) -> None:
    p = project(tmp_path)
    (p / "stacks" / "certs" / "two.pem").write_bytes(certificate(True, "root") + certificate(True, "issuing"))
    (p / "certs").mkdir()
    (p / "certs" / "clients.pem").symlink_to(p / "stacks" / "certs" / "two.pem")
    for bundle in ("stacks/certs/prod-clients-ca.pem", "stacks/certs/two.pem", "certs/clients.pem"):
        assert load_stack_file(bundle_stack(p, bundle)).endpoint.mtls_ca_bundle == bundle


def test_a_ca_bundle_outside_the_project_is_refused_by_dotdot_and_by_symlink(tmp_path: Path) -> None:
    p = project(tmp_path)
    outside = tmp_path / "outside.pem"
    outside.write_bytes(certificate(True))  # a good CA: only where it lies is wrong
    (p / "stacks" / "certs" / "planted.pem").symlink_to(outside)
    (p / "linked").symlink_to(tmp_path)  # a directory on the way out
    for bundle in ("../outside.pem", "stacks/certs/planted.pem", "linked/outside.pem"):
        error = bundle_error(p, bundle)
        assert error.problem == f"{p / bundle} leads outside the project {p} (to {outside})"
        assert error.accepted.startswith("a path relative to the project root, to a file inside the project")
    result = plan("mtls", "--project-dir", str(p))  # the real CLI, with the last one planted
    assert result.exit_code == 2 and "llmkit:endpoint.mtls_ca_bundle" in result.output, result.output


@pytest.mark.needs("/etc/ssl/certs/ca-certificates.crt")
def test_the_system_trust_store_is_not_a_client_ca(tmp_path: Path) -> None:
    p = project(tmp_path)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", p / "stacks" / "certs" / "system.pem")
    count = (p / "stacks" / "certs" / "system.pem").read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    error = bundle_error(p, "stacks/certs/system.pem")
    assert error.problem.startswith(
        f"{p / 'stacks/certs/system.pem'} holds {count} certificates, more than {MAX_CA_CERTIFICATES}: "
        "a trust store of many CAs (such as the system's) would admit any client certificate"
    )


def test_eleven_cas_are_a_trust_store_ten_are_a_bundle(tmp_path: Path) -> None:
    p = project(tmp_path)
    certs = [certificate(True, f"CA {n}") for n in range(MAX_CA_CERTIFICATES + 1)]
    (p / "ten.pem").write_bytes(b"".join(certs[:-1]))
    (p / "eleven.pem").write_bytes(b"".join(certs))
    assert load_stack_file(bundle_stack(p, "ten.pem")).endpoint.mtls_ca_bundle == "ten.pem"
    assert "holds 11 certificates, more than 10" in bundle_error(p, "eleven.pem").problem


def test_a_bundle_must_hold_parseable_ca_certificates_and_no_key(tmp_path: Path) -> None:
    p = project(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {
        "leaf.pem": certificate(False, "a client"),
        "plain.pem": certificate(None, "no constraints"),
        "garbage.pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "with-key.pem": certificate(True) + key,
    }
    for name, data in files.items():
        (p / name).write_bytes(data)
    leaf = bundle_error(p, "leaf.pem")
    assert leaf.problem == (
        f"{p / 'leaf.pem'}: certificate 1 ('CN=a client') is not a CA certificate (basicConstraints CA:TRUE)"
    )
    assert "not a client's or a server's own certificate" in leaf.accepted
    assert (
        "certificate 1 ('CN=no constraints') is not a CA certificate" in bundle_error(p, "plain.pem").problem
    )
    assert "holds a certificate that does not parse as X.509" in bundle_error(p, "garbage.pem").problem
    assert bundle_error(p, "with-key.pem").problem == (
        f"{p / 'with-key.pem'} holds a private key; a CA bundle holds public certificates only"
    )


# --- CIDR lists open to the world -----------------------------------------------------------------

WORLD = ["0.0.0.0/0"]
HALVES = ["0.0.0.0/1", "128.0.0.0/1"]


def errors_of(config: dict[str, Any]) -> list[tuple[str, Any, str]]:
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(config, source="test", project_dir=ROOT)
    return [(e.key, e.value, e.problem) for e in caught.value.errors]


def gateway(**changes: Any) -> dict[str, Any]:
    return {**stack_doc("prod")["config"]["llmkit:gateway"], **changes}


def test_world_open_admin_cidrs_are_refused_without_the_override() -> None:
    assert errors_of(with_keys("prod", gateway=gateway(admin_cidrs=["10.0.0.0/8", *WORLD]))) == [
        (
            "llmkit:gateway.admin_cidrs[1]",
            "0.0.0.0/0",
            "0.0.0.0/0 opens llmkit:gateway.admin_cidrs to every address",
        )
    ]
    halves = errors_of(with_keys("prod", gateway=gateway(admin_cidrs=HALVES)))
    assert [key for key, _, _ in halves] == ["llmkit:gateway.admin_cidrs[0]", "llmkit:gateway.admin_cidrs[1]"]
    assert halves[0][2] == (
        "0.0.0.0/1 opens llmkit:gateway.admin_cidrs to every address "
        "(with the list's other entries it makes 0.0.0.0/0)"
    )
    wide = errors_of(with_keys("prod", gateway=gateway(admin_cidrs=["64.0.0.0/3"])))
    assert wide == [
        (
            "llmkit:gateway.admin_cidrs[0]",
            "64.0.0.0/3",
            "64.0.0.0/3 opens llmkit:gateway.admin_cidrs to 536,870,912 addresses, more than a /8",
        )
    ]
    ipv6 = errors_of(with_keys("prod", gateway=gateway(admin_cidrs=["::/0"])))
    assert ipv6 == [
        ("llmkit:gateway.admin_cidrs[0]", "::/0", "an IPv6 CIDR; these lists take IPv4 CIDRs only")
    ]
    # the RFC 1918 ranges together, and a /8, are networks of one's own
    assert from_mapping(
        with_keys("prod", gateway=gateway(admin_cidrs=["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])),
        source="test",
        project_dir=ROOT,
    ).gateway


def test_the_override_opens_exactly_the_lists_it_names() -> None:
    both = with_keys("prod", gateway=gateway(admin_cidrs=WORLD), allow_world_open=["gateway.admin_cidrs"])
    cfg = from_mapping(both, source="test", project_dir=ROOT)
    assert cfg.provider_tags == {**cfg.tags, WORLD_OPEN_TAG: "gateway.admin_cidrs"}
    both["llmkit:endpoint"]["allowed_client_cidrs"] = ["16.0.0.0/4"]  # not named: still refused
    assert errors_of(both) == [
        (
            "llmkit:endpoint.allowed_client_cidrs[0]",
            "16.0.0.0/4",
            "16.0.0.0/4 opens llmkit:endpoint.allowed_client_cidrs to 268,435,456 addresses, more than a /8",
        )
    ]


def test_a_public_endpoint_open_to_the_world_needs_the_override() -> None:
    endpoint = {
        **stack_doc("dev")["config"]["llmkit:endpoint"],
        "public": True,
        "allowed_client_cidrs": WORLD,
    }
    assert errors_of(with_keys("dev", endpoint=endpoint)) == [
        (
            "llmkit:endpoint.allowed_client_cidrs[0]",
            "0.0.0.0/0",
            "0.0.0.0/0 opens llmkit:endpoint.allowed_client_cidrs to every address",
        )
    ]
    allowed = with_keys("dev", endpoint=endpoint, allow_world_open=["endpoint.allowed_client_cidrs"])
    assert from_mapping(allowed, source="test").endpoint.public is True
    # internal: 0.0.0.0/0, written whole or in halves, is refused with or without the override
    internal = {**endpoint, "public": False, "allowed_client_cidrs": HALVES}
    found = errors_of(with_keys("dev", endpoint=internal, allow_world_open=["endpoint.allowed_client_cidrs"]))
    assert found[0] == (
        "llmkit:endpoint.allowed_client_cidrs[0]",
        "0.0.0.0/1",
        "0.0.0.0/1 opens an internal endpoint to every address (with the list's other entries it makes "
        "0.0.0.0/0)",
    )


def test_extra_ingress_in_halves_is_every_address_on_any_tier() -> None:
    rule = {"tier": "app", "port": 9090, "cidrs": HALVES, "description": "metrics"}
    found = errors_of(
        with_keys("dev", firewall={"extra_ingress": [rule]}, allow_world_open=["firewall.extra_ingress"])
    )
    assert [(key, problem.split(" (")[0]) for key, _, problem in found] == [
        ("llmkit:firewall.extra_ingress[0].cidrs[0]", "0.0.0.0/1 opens tier app port 9090 to every address"),
        (
            "llmkit:firewall.extra_ingress[0].cidrs[1]",
            "128.0.0.0/1 opens tier app port 9090 to every address",
        ),
    ]
    wide = {**rule, "cidrs": ["10.0.0.0/8", "11.0.0.0/8"]}  # adjacent /8s merge into a /7
    assert [key for key, _, _ in errors_of(with_keys("dev", firewall={"extra_ingress": [wide]}))] == [
        "llmkit:firewall.extra_ingress[0].cidrs[0]",
        "llmkit:firewall.extra_ingress[0].cidrs[1]",
    ]


def test_the_override_itself_is_checked() -> None:
    assert errors_of(with_keys("dev", allow_world_open=["admin_cidrs", "endpoint.allowed_client_cidrs"])) == [
        (
            "llmkit:allow_world_open[0]",
            "admin_cidrs",
            "not a list that may be opened to the world",
        ),
    ]
    assert errors_of(with_keys("dev", allow_world_open=["endpoint.allowed_client_cidrs"])) == [
        (
            "llmkit:allow_world_open[0]",
            "endpoint.allowed_client_cidrs",
            "nothing to allow: llmkit:endpoint.allowed_client_cidrs holds no block wider than a /8",
        )
    ]
    tags = {**stack_doc("dev")["config"]["llmkit:tags"], WORLD_OPEN_TAG: "gateway.admin_cidrs"}
    assert errors_of(with_keys("dev", tags=tags)) == [
        (
            f"llmkit:tags.{WORLD_OPEN_TAG}",
            "gateway.admin_cidrs",
            "a tag that llmkit sets from llmkit:allow_world_open",
        )
    ]


def test_plan_refuses_a_world_open_admin_list_naming_the_key(tmp_path: Path) -> None:
    p = project(tmp_path)
    write_stack(p, "open", with_keys("prod", gateway=gateway(admin_cidrs=WORLD)))
    result = plan("open", "--project-dir", str(p))
    assert result.exit_code == 2, result.output[-2000:]
    assert "llmkit:gateway.admin_cidrs[0]: 0.0.0.0/0 opens llmkit:gateway.admin_cidrs to every address" in (
        result.output
    )


def test_plan_reports_the_override_through_the_policy_pack(tmp_path: Path) -> None:
    p = project(tmp_path)
    endpoint = {
        **stack_doc("dev")["config"]["llmkit:endpoint"],
        "public": True,
        "allowed_client_cidrs": WORLD,
    }
    write_stack(
        p, "public", with_keys("dev", endpoint=endpoint, allow_world_open=["endpoint.allowed_client_cidrs"])
    )
    graph = tmp_path / "graph.json"
    result = plan("public", "--policy-only", "--json", str(graph), "--project-dir", str(p))
    assert result.exit_code == 0, result.output[-3000:]  # advisory: reported, not failed
    assert RULE in result.output
    (provider,) = [
        r for r in json.loads(graph.read_text())["resources"] if r["type"] == "pulumi:providers:aws"
    ]
    tags = json.loads(provider["inputs"]["defaultTags"])["tags"]
    assert tags[WORLD_OPEN_TAG] == "endpoint.allowed_client_cidrs"
