"""`llmkit pki`: the CA and leaf certificates, end to end in temporary directories.

Chains are checked with cryptography's X.509 verification API (the Web PKI profile: it also
enforces the CA's basicConstraints and keyUsage and the leaf's EKU and SAN), key files' modes on
disk, the status table and exit codes through click's CliRunner, and every refusal.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from llmkit import pki as lib
from llmkit.commands.pki import pki
from llmkit.errors import ConfigError, LlmkitError

NOW = datetime.datetime.now(datetime.UTC)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(pki, [str(a) for a in args])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "pki"
    result = run("init", directory)
    assert result.exit_code == 0, result.output
    yield directory


# --- init -----------------------------------------------------------------------------------------


def test_init_writes_a_p256_ca_with_ca_constraints(ca_dir: Path) -> None:
    cert = load(ca_dir / "ca.crt")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)  # self-signed
    assert (cert.not_valid_after_utc - NOW).days in (lib.DEFAULT_CA_DAYS - 1, lib.DEFAULT_CA_DAYS)


def test_init_modes_and_gitignore(ca_dir: Path) -> None:
    assert mode(ca_dir / "ca.key") == 0o600
    assert mode(ca_dir) == 0o700
    assert (ca_dir / ".gitignore").read_text() == "*\n"
    # no temporary files left behind
    assert sorted(p.name for p in ca_dir.iterdir()) == [".gitignore", "ca.crt", "ca.key"]


def test_keys_are_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        lib.init_ca(tmp_path / "p")
        lib.issue(tmp_path / "p", "gpu-1", server=True, client=False)
    finally:
        os.umask(old)
    assert mode(tmp_path / "p" / "ca.key") == 0o600
    assert mode(tmp_path / "p" / "gpu-1.key") == 0o600
    assert mode(tmp_path / "p" / "gpu-1.crt") == 0o644


def test_write_file_never_exposes_a_wider_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key's file is opened with 0600 from the start: no chmod afterwards."""
    calls: list[tuple[str, int]] = []
    real_open = os.open

    def spy_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777, *a: object, **k: object) -> int:
        calls.append((str(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod called"))
    lib.write_file(tmp_path / "x.key", b"secret", 0o600)
    assert calls and all(m == 0o600 for _, m in calls)
    assert (tmp_path / "x.key").read_bytes() == b"secret"


def test_init_ed25519_and_days(tmp_path: Path) -> None:
    assert run("init", tmp_path / "e", "--key-type", "ed25519", "--days", "30").exit_code == 0
    cert = load(tmp_path / "e" / "ca.crt")
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert (cert.not_valid_after_utc - NOW).days in (29, 30)


def test_init_refuses_an_existing_ca(ca_dir: Path) -> None:
    before = (ca_dir / "ca.key").read_bytes()
    result = run("init", ca_dir)
    assert result.exit_code == 2
    assert "already holds a CA" in result.output
    assert (ca_dir / "ca.key").read_bytes() == before


@pytest.mark.parametrize("loose", [0o755, 0o777, 0o750], ids=lambda m: f"{m:04o}")
def test_init_into_an_existing_open_directory_tightens_it_to_0700(tmp_path: Path, loose: int) -> None:
    directory = tmp_path / "pki"
    directory.mkdir()
    directory.chmod(loose)
    result = run("init", directory)
    assert result.exit_code == 0, result.output
    assert mode(directory) == 0o700
    assert f"was mode {loose:04o}: tightened to 0700" in result.output
    assert mode(directory / "ca.key") == 0o600


def test_init_into_an_existing_0700_directory_says_nothing_about_modes(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o700)
    result = run("init", directory)
    assert result.exit_code == 0 and "tightened" not in result.output
    assert lib.private_directory(directory) is None


def test_init_through_a_link_tightens_the_directory_it_names(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    (tmp_path / "link").symlink_to(real)
    assert run("init", tmp_path / "link").exit_code == 0
    assert mode(real) == 0o700 and (real / "ca.key").is_file()


OTHER_UID = 65534  # nobody


@pytest.mark.needs("root")
def test_init_refuses_a_directory_another_user_owns(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o755)
    os.chown(directory, OTHER_UID, OTHER_UID)
    result = run("init", directory)
    assert result.exit_code == 2
    assert f"owned by uid {OTHER_UID}" in result.output and "not by you" in result.output
    assert list(directory.iterdir()) == [] and mode(directory) == 0o755  # untouched


@pytest.mark.needs("root")
def test_init_refuses_a_directory_holding_another_users_files(tmp_path: Path) -> None:
    """An open directory may already hold a planted file or link: it is refused, not reused."""
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o777)
    planted = directory / ".gitignore"
    planted.symlink_to("/etc/passwd")
    os.chown(planted, OTHER_UID, OTHER_UID, follow_symlinks=False)
    result = run("init", directory)
    assert result.exit_code == 2
    assert ".gitignore, owned by another user" in result.output
    assert not (directory / "ca.key").exists()


@pytest.mark.parametrize(("args", "message"), [(["--days", "0"], "--days"), (["--key-type", "rsa"], "rsa")])
def test_init_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("init", tmp_path / "p", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "p" / "ca.key").exists()


# --- issue ----------------------------------------------------------------------------------------


def test_server_certificate_verifies_for_its_sans_with_the_right_eku(ca_dir: Path) -> None:
    result = run(
        "issue", ca_dir, "gpu-1", "--server", "--san", "model.llmkit.internal", "--san", "IP:10.20.1.11"
    )
    assert result.exit_code == 0, result.output
    ca, leaf = load(ca_dir / "ca.crt"), load(ca_dir / "gpu-1.crt")
    store = Store([ca])
    for name in (
        DNSName("gpu-1"),
        DNSName("model.llmkit.internal"),
        IPAddress(ipaddress.ip_address("10.20.1.11")),
    ):
        chain = PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
        assert chain[-1] == ca
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("other.example")).verify(leaf, [])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(VerificationError):  # a server-only certificate is no client certificate
        PolicyBuilder().store(store).build_client_verifier().verify(leaf, [])
    assert mode(ca_dir / "gpu-1.key") == 0o600


def test_client_certificate_is_client_only(ca_dir: Path) -> None:
    assert run("issue", ca_dir, "alice", "--client").exit_code == 0
    ca, leaf = load(ca_dir / "ca.crt"), load(ca_dir / "alice.crt")
    verified = PolicyBuilder().store(Store([ca])).build_client_verifier().verify(leaf, [])
    assert verified.subjects == [x509.DNSName("alice")]
    with pytest.raises(VerificationError, match="required EKU not found"):
        PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName("alice")).verify(leaf, [])


def test_server_and_client_both_usages(ca_dir: Path) -> None:
    assert run("issue", ca_dir, "proxy-1", "--server", "--client").exit_code == 0
    ca, leaf = load(ca_dir / "ca.crt"), load(ca_dir / "proxy-1.crt")
    PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName("proxy-1")).verify(leaf, [])
    PolicyBuilder().store(Store([ca])).build_client_verifier().verify(leaf, [])


def test_leaf_extensions(ca_dir: Path) -> None:
    issued_at = datetime.datetime.now(datetime.UTC)
    lib.issue(ca_dir, "gpu-1", server=True, client=False, days=90)
    ca, leaf = load(ca_dir / "ca.crt"), load(ca_dir / "gpu-1.crt")
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert (leaf.not_valid_after_utc - issued_at).days in (89, 90)
    assert leaf.not_valid_before_utc < issued_at - datetime.timedelta(minutes=4)  # clock skew allowance


def test_ed25519_chain(tmp_path: Path) -> None:
    """cryptography's Web PKI verifier refuses Ed25519, so the chain is checked signature by signature."""
    directory = tmp_path / "e"
    lib.init_ca(directory, key_type="ed25519")
    issued = lib.issue(directory, "gpu-1", server=True, client=False, key_type="ed25519")
    assert isinstance(issued.cert.public_key(), ed25519.Ed25519PublicKey)
    issued.cert.verify_directly_issued_by(load(directory / "ca.crt"))
    other = lib.init_ca(tmp_path / "other")
    with pytest.raises((ValueError, TypeError)):
        issued.cert.verify_directly_issued_by(other.cert)


def test_issue_refuses_overwrite_without_force_and_renews_with_it(ca_dir: Path) -> None:
    assert run("issue", ca_dir, "gpu-1", "--server").exit_code == 0
    key = (ca_dir / "gpu-1.key").read_bytes()
    result = run("issue", ca_dir, "gpu-1", "--server")
    assert result.exit_code == 2 and "--force" in result.output
    assert (ca_dir / "gpu-1.key").read_bytes() == key
    assert run("issue", ca_dir, "gpu-1", "--server", "--force").exit_code == 0
    assert (ca_dir / "gpu-1.key").read_bytes() != key
    assert mode(ca_dir / "gpu-1.key") == 0o600
    leaf = load(ca_dir / "gpu-1.crt")
    PolicyBuilder().store(Store([load(ca_dir / "ca.crt")])).build_server_verifier(DNSName("gpu-1")).verify(
        leaf, []
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gpu_1", "--server"], "NAME"),
        (["-gpu", "--server"], "NAME"),
        (["ca", "--server"], "NAME"),
        (["../etc", "--server"], "NAME"),
        (["gpu-1"], "--server/--client"),
        (["gpu-1", "--server", "--san", "*.example.com"], "--san"),
        (["gpu-1", "--server", "--san", "IP:10.0.0.300"], "not an IP address"),
        (["gpu-1", "--server", "--san", "bad name"], "--san"),
        (["gpu-1", "--server", "--days", "4000"], "--days"),
        (["gpu-1", "--server", "--days", "2000"], "outlive its CA"),
    ],
)
def test_issue_refusals_exit_2(ca_dir: Path, args: list[str], message: str) -> None:
    result = run("issue", ca_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in ca_dir.iterdir()) == [".gitignore", "ca.crt", "ca.key"]


def test_issue_without_a_ca(tmp_path: Path) -> None:
    result = run("issue", tmp_path / "none", "gpu-1", "--server")
    assert result.exit_code == 2
    assert "no CA in" in result.output and "llmkit pki init" in result.output


def test_library_errors_are_typed(ca_dir: Path) -> None:
    with pytest.raises(ConfigError):
        lib.parse_san("DNS:*.x.example")
    with pytest.raises(ConfigError):
        lib.check_name("a.b_c")
    with pytest.raises(LlmkitError):
        lib.init_ca(ca_dir)
    assert lib.parse_san("db.internal") == x509.DNSName("db.internal")
    assert lib.parse_san("2001:db8::1") == x509.IPAddress(ipaddress.ip_address("2001:db8::1"))
    assert lib.check_name("gpu-1.lab.example") == "gpu-1.lab.example"


# --- git guard ------------------------------------------------------------------------------------

needs_git = pytest.mark.needs("git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_inside_a_work_tree_the_gitignore_keeps_keys_out(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    directory = tmp_path / "secrets" / "pki"
    assert run("init", directory).exit_code == 0
    assert run("issue", directory, "gpu-1", "--server").exit_code == 0
    untracked = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "pki" not in untracked


@needs_git
def test_refuses_when_git_would_not_ignore_the_key(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    directory = tmp_path / "pki"
    assert run("init", directory).exit_code == 0
    (directory / ".gitignore").unlink()
    result = run("issue", directory, "gpu-1", "--server")
    assert result.exit_code == 2
    assert "git does not ignore it" in result.output
    assert not (directory / "gpu-1.key").exists()


@needs_git
def test_refuses_a_tracked_key(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    directory = tmp_path / "pki"
    assert run("init", directory).exit_code == 0
    (directory / "gpu-1.key").write_text("placeholder")
    _git(tmp_path, "add", "-f", "pki/gpu-1.key")
    result = run("issue", directory, "gpu-1", "--server", "--force")
    assert result.exit_code == 2
    assert "already tracked" in result.output
    assert (directory / "gpu-1.key").read_text() == "placeholder"


# --- status ---------------------------------------------------------------------------------------


def test_status_ok_table_exit_0(ca_dir: Path) -> None:
    lib.issue(ca_dir, "gpu-1", server=True, client=False, sans=["model.llmkit.internal"])
    lib.issue(ca_dir, "alice", server=False, client=True)
    result = run("status", ca_dir)
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("ca", "gpu-1", "alice", "server", "client", "DNS:model.llmkit.internal", "364", "ok"):
        assert text in out
    assert out.index("ca ") < out.index("alice")  # the CA row first


def test_status_exit_1_when_a_certificate_expires_soon(ca_dir: Path) -> None:
    lib.issue(ca_dir, "gpu-1", server=True, client=False, days=10)
    result = run("status", ca_dir)
    assert result.exit_code == 1
    assert "expires within 30 days" in result.output
    assert run("status", ca_dir, "--warn-days", "5").exit_code == 0


def test_status_exit_1_when_expired(ca_dir: Path) -> None:
    lib.issue(ca_dir, "old", server=True, client=False, days=1, now=NOW - datetime.timedelta(days=3))
    rows = {r.name: r for r in lib.inspect(ca_dir)}
    assert (
        rows["old"].problems == ["expired"]
        and rows["old"].days_left is not None
        and rows["old"].days_left < 0
    )
    result = run("status", ca_dir)
    assert result.exit_code == 1
    assert "expired" in result.output


def test_status_flags_foreign_certificates_and_open_keys(ca_dir: Path, tmp_path: Path) -> None:
    foreign = lib.init_ca(tmp_path / "other")
    lib.issue(tmp_path / "other", "stray", server=True, client=False)
    shutil.copy(tmp_path / "other" / "stray.crt", ca_dir / "stray.crt")
    lib.issue(ca_dir, "gpu-1", server=True, client=False)
    (ca_dir / "gpu-1.key").chmod(0o644)
    rows = {r.name: r for r in lib.inspect(ca_dir)}
    assert rows["stray"].problems == ["not signed by ca.crt"]
    assert rows["gpu-1"].problems == ["gpu-1.key is readable by group/others (mode 644)"]
    assert rows["ca"].ok and foreign.cert != load(ca_dir / "ca.crt")
    assert run("status", ca_dir).exit_code == 1


def test_status_without_a_ca_exit_2(tmp_path: Path) -> None:
    result = run("status", tmp_path)
    assert result.exit_code == 2
    assert "no CA in" in result.output
