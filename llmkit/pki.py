"""A small internal PKI for the bare-metal hosts: one private CA, server and client certificates.

``llmkit pki init|issue|status`` (llmkit/commands/pki.py) is the command line; the playbooks read
the files through the ``pki_dir`` host data key. Layout of a PKI directory::

    DIR/.gitignore       "*": git ignores everything here, the .gitignore included
    DIR/ca.crt           the CA certificate (public; every host gets a copy)
    DIR/ca.key           the CA private key (0600)
    DIR/<NAME>.crt       a leaf certificate, NAME being the inventory host name (or a client's name)
    DIR/<NAME>.key       its private key (0600)

Decisions, for reviewers:

- **Keys**: ECDSA P-256 by default (every TLS stack speaks it), Ed25519 on request (``--key-type
  ed25519``; nginx and Go accept it, many browsers do not). Keys are PKCS#8 PEM *without* a
  passphrase, because nginx must read them unattended; what protects them is the file mode and
  where the directory lives (below).
- **Files are created with their final mode**: every file is written to a temporary file opened
  ``O_CREAT | O_EXCL`` with mode 0600 (keys) or 0644 (certificates), fsynced, then linked into
  place (``link``: fails if the target exists, so nothing is clobbered) or, for ``--force``,
  renamed over it. A key is never readable by others, not even for an instant, and a crash leaves
  no half-written file under a real name. The directory is created 0700; ``init`` into an existing
  directory tightens it to 0700 when it is the caller's own, and refuses one owned by another user
  or holding entries another user owns (whoever could write there could have planted a file or a
  link where a key is about to go).
- **Never in git**: ``init`` writes ``DIR/.gitignore`` containing ``*`` before any key. Then, and on
  every ``issue``, when DIR is inside a git work tree (any repository, llmkit's included), git is
  asked (``git check-ignore``) whether the key about to be written is ignored; if it is not (the
  .gitignore was removed, a parent rule re-includes it, or the file is already tracked) the
  command refuses. Outside a work tree, or without git installed, the .gitignore is the guard.
- **CA**: self-signed, ``basicConstraints CA:true, pathlen:0`` (critical: it signs leaves only),
  ``keyUsage keyCertSign, cRLSign`` (critical), SKI. ``init`` refuses a directory that already
  holds a CA: re-running it would orphan every issued certificate.
- **Leaves**: ``basicConstraints CA:false``, ``keyUsage digitalSignature`` (critical), EKU
  serverAuth and/or clientAuth (``--server``, ``--client``, or both for a host that is a server to
  its clients and a client to its upstreams, like the reverse proxy), SANs (NAME itself as a DNS
  name, plus every ``--san``), AKI from the CA's SKI, SKI. A leaf may not outlive the CA. NAME must
  be a DNS host name (one or more labels): it is a file name and the inventory host name the
  deploys look up, and ``ca`` is reserved.
- **Validity**: not-before is five minutes in the past (clock skew between hosts); CA 1825 days,
  leaves 365 days by default. ``status`` flags anything expiring within ``--warn-days``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmkit.errors import ConfigError, LlmkitError

KeyType = Literal["p256", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("p256", "ed25519")
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_NAME = "ca"
GITIGNORE = ".gitignore"
DEFAULT_CA_DAYS = 1825
DEFAULT_LEAF_DAYS = 365
DEFAULT_WARN_DAYS = 30
DEFAULT_CA_COMMON_NAME = "llmkit internal CA"
MAX_DAYS = 3650
CLOCK_SKEW = datetime.timedelta(minutes=5)
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_ACCEPTED_NAME = "a DNS host name: labels of letters, digits and inner hyphens, joined by dots (not 'ca')"
_ACCEPTED_SAN = "DNS:<host name>, IP:<address>, or a bare host name or IP address"


# --- small helpers --------------------------------------------------------------------------------


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def check_name(name: str) -> str:
    """NAME as a certificate/file name: a DNS host name, not the CA's reserved name."""
    if name.lower() == CA_NAME or len(name) > 253 or not _HOST_NAME.fullmatch(name):
        raise ConfigError(key="NAME", value=name, accepted=_ACCEPTED_NAME, message="not a usable name")
    return name


def parse_san(value: str) -> x509.GeneralName:
    """One ``--san``: ``DNS:name``, ``IP:address`` or a bare name/address (wildcards are refused)."""
    text = value.strip()
    kind, _, rest = text.partition(":")
    prefix = kind.upper()
    if prefix in ("DNS", "IP") and rest:
        text = rest
    else:
        prefix = ""
    if prefix in ("", "IP"):
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            if prefix == "IP":
                raise ConfigError(
                    key="--san", value=value, accepted=_ACCEPTED_SAN, message="not an IP address"
                ) from None
    if len(text) > 253 or not _HOST_NAME.fullmatch(text):
        raise ConfigError(
            key="--san", value=value, accepted=_ACCEPTED_SAN, message="not a DNS name or IP address"
        )
    return x509.DNSName(text.lower())


def _check_days(days: int, option: str = "--days") -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ConfigError(
            key=option, value=days, accepted=f"an integer 1..{MAX_DAYS}", message="out of range"
        )
    return days


def _check_key_type(key_type: str) -> KeyType:
    for known in KEY_TYPES:
        if key_type == known:
            return known
    raise ConfigError(
        key="--key-type", value=key_type, accepted=", ".join(KEY_TYPES), message="unknown key type"
    )


def generate_key(key_type: str) -> PrivateKey:
    if _check_key_type(key_type) == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    """Ed25519 signs without a separate digest; ECDSA with SHA-256."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


# --- files ----------------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int, *, replace: bool = False) -> None:
    """Write ``data`` to ``path``, the file created with ``mode`` from its first byte.

    A temporary file in the same directory is opened ``O_CREAT | O_EXCL`` with ``mode`` (the umask
    can only take bits away), written and fsynced, then hard-linked to ``path`` (refused if it
    exists) or, with ``replace``, renamed over it.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)  # mkstemp only picks a free name; reopen it with our mode below
    tmp = Path(tmp_name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise LlmkitError(f"{path} already exists: not overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    git = shutil.which("git")
    if git is None:
        return None
    return subprocess.run(
        [git, "-C", str(directory), *args], capture_output=True, text=True, check=False, timeout=30
    )


def git_work_tree(directory: Path) -> Path | None:
    """The git work tree DIR is inside, or None (not in one, or git not installed)."""
    result = _git(directory, "rev-parse", "--show-toplevel")
    if result is None or result.returncode != 0 or not result.stdout.strip():
        return None
    return Path(result.stdout.strip())


def ensure_not_tracked(directory: Path, files: Sequence[str]) -> None:
    """Refuse when DIR is in a git work tree and git would not ignore one of ``files``."""
    top = git_work_tree(directory)
    if top is None:
        return
    for name in files:
        result = _git(directory, "check-ignore", "-q", "--", name)
        if result is not None and result.returncode != 0:
            raise LlmkitError(
                f"{directory / name} is inside the git work tree {top} and git does not ignore it "
                f"(or it is already tracked): keys must never be committed. Keep the PKI directory "
                f"outside the repository, or restore {directory / GITIGNORE} (a single line: *) and "
                "untrack its files with `git rm --cached`."
            )


def private_directory(directory: Path) -> int | None:
    """Make DIR the caller's own and 0700; the mode it had when it was wider, else None.

    Refused (LlmkitError) when DIR (a link is followed) is owned by another user, or holds an
    entry another user owns: the CA key must not go where someone else could already have put a
    file, or could open the directory again. The checks and the ``chmod`` go through one open
    descriptor of the directory, so they apply to the same directory.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        info = os.fstat(fd)
        me = os.geteuid()
        if info.st_uid != me:
            raise LlmkitError(
                f"{directory} is owned by uid {info.st_uid}, not by you (uid {me}): a CA key does not go "
                "into a directory another user controls. Use a new directory (init creates it 0700), "
                "or chown it to yourself first."
            )
        foreign = sorted(
            entry.name for entry in os.scandir(fd) if entry.stat(follow_symlinks=False).st_uid != me
        )
        if foreign:
            raise LlmkitError(
                f"{directory} holds {', '.join(foreign)}, owned by another user: refusing to create a CA "
                "there. Use a new directory (init creates it 0700)."
            )
        old = stat.S_IMODE(info.st_mode)
        if old != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
        return old if old & 0o077 else None
    finally:
        os.close(fd)


# --- CA -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: PrivateKey


def load_ca(directory: Path) -> Ca:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    missing = [str(p) for p in (cert_path, key_path) if not p.is_file()]
    if missing:
        raise LlmkitError(
            f"no CA in {directory}: missing {', '.join(missing)} (run `llmkit pki init {directory}`)"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise LlmkitError(f"{directory}: cannot read the CA ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise LlmkitError(f"{key_path}: unsupported key type {type(key).__name__}")
    return Ca(cert=cert, key=key)


def init_ca(
    directory: Path,
    *,
    key_type: str = "p256",
    days: int = DEFAULT_CA_DAYS,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    now: datetime.datetime | None = None,
) -> Ca:
    """Create DIR (0700) with its .gitignore, a CA key (0600) and a self-signed CA certificate."""
    _check_days(days)
    _check_key_type(key_type)
    if not common_name.strip():
        raise ConfigError(
            key="--common-name", value=common_name, accepted="a non-empty name", message="empty"
        )
    if directory.exists() and not directory.is_dir():
        raise LlmkitError(f"{directory} exists and is not a directory")
    existing = [str(directory / n) for n in (CA_CERT, CA_KEY) if (directory / n).exists()]
    if existing:
        raise LlmkitError(
            f"{directory} already holds a CA ({', '.join(existing)}): not replaced, since every certificate "
            "it issued would stop verifying. Use another directory for a new CA."
        )
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    private_directory(directory)
    ignore = directory / GITIGNORE
    if not ignore.exists():
        write_file(ignore, b"*\n", CERT_MODE)
    ensure_not_tracked(directory, [CA_KEY, CA_CERT])

    start = _now(now)
    key = generate_key(key_type)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(common_name))
        .issuer_name(_cn(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, _hash_for(key))
    )
    write_file(directory / CA_KEY, _key_pem(key), KEY_MODE)
    write_file(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return Ca(cert=cert, key=key)


# --- leaves ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    name: str
    cert: x509.Certificate
    cert_path: Path
    key_path: Path


def issue(
    directory: Path,
    name: str,
    *,
    server: bool,
    client: bool,
    sans: Sequence[str] = (),
    days: int = DEFAULT_LEAF_DAYS,
    key_type: str = "p256",
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Issued:
    """Issue ``DIR/NAME.crt`` and ``DIR/NAME.key`` signed by the CA in DIR."""
    check_name(name)
    _check_days(days)
    _check_key_type(key_type)
    if not server and not client:
        raise ConfigError(
            key="--server/--client",
            value=None,
            accepted="--server, --client or both",
            message="no usage given",
        )
    names: list[x509.GeneralName] = [x509.DNSName(name.lower())]
    for value in sans:
        general = parse_san(value)
        if general not in names:
            names.append(general)
    ca = load_ca(directory)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if not force:
        existing = [str(p) for p in (cert_path, key_path) if p.exists()]
        if existing:
            raise LlmkitError(
                f"{', '.join(existing)} already exist(s): pass --force to issue a new key and certificate"
            )
    ensure_not_tracked(directory, [key_path.name, cert_path.name])

    start = _now(now)
    not_after = start + datetime.timedelta(days=days)
    if not_after > ca.cert.not_valid_after_utc:
        raise ConfigError(
            key="--days",
            value=days,
            accepted=f"at most {(ca.cert.not_valid_after_utc - start).days} (the CA expires "
            f"{ca.cert.not_valid_after_utc:%Y-%m-%d})",
            message="the certificate would outlive its CA",
        )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    key = generate_key(key_type)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, _hash_for(ca.key))
    )
    # The key first: a certificate never sits next to a key it does not match.
    write_file(key_path, _key_pem(key), KEY_MODE, replace=force)
    write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE, replace=force)
    return Issued(name=name, cert=cert, cert_path=cert_path, key_path=key_path)


# --- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertStatus:
    """One certificate of the directory, and what is wrong with it (``problems`` empty: fine)."""

    name: str
    kind: str
    sans: list[str]
    not_after: datetime.datetime | None
    days_left: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def kind_of(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "leaf (no EKU)"
    usages = ((ExtendedKeyUsageOID.SERVER_AUTH, "server"), (ExtendedKeyUsageOID.CLIENT_AUTH, "client"))
    kinds = [k for oid, k in usages if oid in eku]
    return "+".join(kinds) or "other"


def sans_of(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)] + [
        f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)
    ]


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # another issuer name, key type or signature
        return False
    return True


def inspect(
    directory: Path, *, warn_days: int = DEFAULT_WARN_DAYS, now: datetime.datetime | None = None
) -> list[CertStatus]:
    """Every ``*.crt`` of DIR (the CA first): kind, SANs, expiry and problems.

    Problems: expired, expiring within ``warn_days``, not signed by ``ca.crt``, unreadable, or a
    key file that group or others may read.
    """
    if not (directory / CA_CERT).is_file():
        raise LlmkitError(
            f"no CA in {directory}: missing {directory / CA_CERT} (run `llmkit pki init {directory}`)"
        )
    moment = _now(now)
    try:
        ca_cert: x509.Certificate | None = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except ValueError:
        ca_cert = None
    paths = sorted(directory.glob("*.crt"), key=lambda p: (p.name != CA_CERT, p.name))
    out: list[CertStatus] = []
    for path in paths:
        name = path.stem
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError as exc:
            out.append(CertStatus(name, "?", [], None, None, [f"unreadable: {exc}"]))
            continue
        not_after = cert.not_valid_after_utc
        remaining = not_after - moment
        days_left = int(remaining.total_seconds() // 86400)
        problems = []
        if remaining.total_seconds() <= 0:
            problems.append("expired")
        elif remaining <= datetime.timedelta(days=warn_days):
            problems.append(f"expires within {warn_days} days")
        if ca_cert is None or not _signed_by(cert, ca_cert):
            problems.append("not signed by ca.crt")
        key_path = path.with_suffix(".key")
        if key_path.exists() and key_path.stat().st_mode & 0o077:
            key_mode = key_path.stat().st_mode & 0o777
            problems.append(f"{key_path.name} is readable by group/others (mode {key_mode:o})")
        out.append(CertStatus(name, kind_of(cert), sans_of(cert), not_after, days_left, problems))
    return out
