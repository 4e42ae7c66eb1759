"""`llmkit mirror pull|bundle|push|ls|verify`: bring model files in once, verify, publish them.

The formats and the protocol are explained in :mod:`llmkit.mirror`. Exit codes: 0 ok, 1 a
verification finding, 2 usage error (one line, no traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from llmkit.commands import UserErrorGroup, make_console
from llmkit.errors import EXIT_FINDINGS, EXIT_OK
from llmkit.mirror import bundle as bundle_lib
from llmkit.mirror import download, remote, wheels
from llmkit.mirror import pull as pull_lib
from llmkit.mirror import push as push_lib
from llmkit.mirror.auth import PASSWORD_ENV, RegistryAuth
from llmkit.mirror.manifest import Finding, Manifest, MirrorError
from llmkit.mirror.sources import DEFAULT_REGISTRY
from llmkit.untrusted import printable

_DIR = click.Path(file_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _text(value: object, style: str = "") -> Text:
    """Text from a manifest, a server or the user, as text: no markup, no terminal escapes."""
    return Text(printable(value), style=style)


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region)


_S3_OPTIONS = [
    click.option(
        "--endpoint-url", envvar="AWS_ENDPOINT_URL_S3", help="An S3-compatible endpoint (tests, on-prem S3)."
    ),
    click.option("--region", envvar="AWS_REGION", help="The bucket's region (else the AWS configuration's)."),
]


def _s3_options(fn: Any) -> Any:
    for option in reversed(_S3_OPTIONS):
        fn = option(fn)
    return fn


_DOWNLOAD_OPTIONS = [
    click.option(
        "--workers",
        type=click.IntRange(1, 64),
        default=download.DEFAULT_WORKERS,
        show_default=True,
        help="Ranged requests in flight at once, over all the files.",
    ),
    click.option(
        "--chunk-size",
        type=click.IntRange(1 << 20),
        default=download.DEFAULT_CHUNK,
        show_default=True,
        help="Bytes per ranged request.",
    ),
    click.option(
        "--retries",
        type=click.IntRange(0),
        default=download.DEFAULT_RETRIES,
        show_default=True,
        help="Attempts after the first for a request that fails transiently (network error, timeout, "
        f"HTTP 408, 429 or 5xx), with jittered exponential backoff capped at {download.MAX_BACKOFF_S:g} s; "
        "0: none.",
    ),
    click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal)."),
]


def _download_options(fn: Any) -> Any:
    for option in reversed(_DOWNLOAD_OPTIONS):
        fn = option(fn)
    return fn


def _fetch_options(workers: int, chunk_size: int, retries: int, progress: bool | None) -> download.Options:
    console = make_console()
    return download.Options(
        workers=workers,
        chunk_size=chunk_size,
        retries=retries,
        progress=console.is_terminal if progress is None else progress,
        console=console,
    )


@click.group(cls=UserErrorGroup)
def mirror() -> None:
    """The model mirror: pull a model once, verify it, publish it to S3 or an on-prem mirror.

    A pulled directory holds the files and manifest.json (model, tag, files, sizes, sha256,
    source, time), written last. Exit codes: 0 ok, 1 a file does not match, 2 usage error.
    """


@mirror.command()
@click.argument("model")
@click.option("--to", "to", type=_DIR, required=True, help="The staging directory (one model).")
@click.option(
    "--registry", "registry", help=f"An Ollama registry (default {DEFAULT_REGISTRY} when no other source)."
)
@click.option(
    "--registry-user",
    help=f"A user name for the registry's token service (password or access token: ${PASSWORD_ENV}).",
)
@click.option(
    "--url", "urls", multiple=True, metavar="URL", help="A file URL (URL#sha256=<hex>); repeatable."
)
@click.option(
    "--urls", "url_list", type=_FILE, help="A file of lines 'URL [SHA256] [SIZE]' (Hugging Face style)."
)
@click.option("--gguf", "ggufs", multiple=True, type=_FILE, help="A local GGUF file (repeatable).")
@click.option("--modelfile", type=_FILE, help="A local Modelfile to go with --gguf.")
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Take a URL listed without a sha256 as it comes; the manifest lists it as unverified.",
)
@_download_options
def pull(
    model: str,
    to: Path,
    registry: str | None,
    registry_user: str | None,
    urls: tuple[str, ...],
    url_list: Path | None,
    ggufs: tuple[Path, ...],
    modelfile: Path | None,
    allow_unverified: bool,
    workers: int,
    chunk_size: int,
    retries: int,
    progress: bool | None,
) -> None:
    """Fetch MODEL[:TAG] into --to DIR from one source: an Ollama registry, URLs, or local files.

    Downloads run in parallel ranged requests, resume after an interruption (DIR/*.part), retry
    with backoff, and check every file's sha256; the manifest is written last.
    """
    console = make_console()
    opts = _fetch_options(workers, chunk_size, retries, progress)
    chosen = [
        n
        for n, given in (("--registry", registry), ("--url/--urls", urls or url_list), ("--gguf", ggufs))
        if given
    ]
    if registry_user and (urls or url_list or ggufs):
        raise MirrorError("--registry-user goes with a registry source")
    if len(chosen) > 1:
        raise MirrorError(f"give one source, not {' and '.join(chosen)}")
    if modelfile and not ggufs:
        raise MirrorError("--modelfile goes with --gguf")
    if allow_unverified and not (urls or url_list):
        raise MirrorError("--allow-unverified goes with --url/--urls")
    if urls or url_list:
        result = pull_lib.pull_urls(model, to, urls, url_list, opts, allow_unverified)
    elif ggufs:
        result = pull_lib.pull_local(model, to, ggufs, modelfile)
    else:
        where = registry or DEFAULT_REGISTRY
        password = os.environ.get(PASSWORD_ENV)
        if registry_user and not password:
            raise MirrorError(
                f"--registry-user {registry_user!r}: set {PASSWORD_ENV} to its password or token"
            )
        if password and not registry_user:
            raise MirrorError(f"{PASSWORD_ENV} is set: give --registry-user too")
        auth = RegistryAuth(where, registry_user, password)
        result = pull_lib.pull_registry(model, to, where, opts, auth)
    m, stats = result.manifest, result.stats
    console.print(
        _text(
            f"pulled {m.name}: {len(m.files)} file(s), {_size(m.total_size)} into {to} "
            f"({_size(stats.fetched_bytes)} fetched, {_size(stats.resumed_bytes)} resumed, "
            f"{stats.skipped_files} already there, {stats.retries} retries); manifest {to / 'manifest.json'}"
        )
    )
    unverified = m.source.get("unverified") or []
    if unverified:
        console.print(
            _text(
                f"warning: {len(unverified)} file(s) taken without a known sha256 (--allow-unverified; "
                f"the manifest says so): {', '.join(map(str, unverified))}",
                "yellow",
            )
        )


@mirror.command()
@click.option("--to", "to", type=_DIR, required=True, help="The bundle directory (new, empty, or a bundle).")
@click.option(
    "--python",
    "pythons",
    multiple=True,
    default=wheels.DEFAULT_PYTHONS,
    show_default=True,
    help="The hosts' CPython X.Y (repeatable): wheels for each.",
)
@click.option(
    "--arch",
    "arches",
    multiple=True,
    type=click.Choice(sorted(wheels.MACHINES)),
    default=("amd64",),
    show_default=True,
    help="The hosts' CPU architecture (repeatable): releases and wheels for each.",
)
@click.option("--glibc", default=wheels.DEFAULT_GLIBC, show_default=True, help="The hosts' oldest glibc.")
@click.option(
    "--index-url",
    envvar="PIP_INDEX_URL",
    default=wheels.DEFAULT_INDEX,
    show_default=True,
    help="A simple repository (PyPI, devpi, Artifactory, Nexus) to take the wheels from.",
)
@click.option("--find-links", type=_DIR, help="A directory of wheel files to take them from instead.")
@click.option(
    "--artifacts-from",
    metavar="URL|DIR",
    help="A mirror laid out <name>/v<version>/<file> (default: the official release URLs).",
)
@click.option(
    "--artifact-sha256",
    "artifact_sha256",
    multiple=True,
    metavar="NAME[:ARCH]=SHA256",
    help="The checksum of a mirror's own build, instead of the pinned one (repeatable).",
)
@click.option(
    "--requirements",
    type=_FILE,
    default=bundle_lib.HOST_REQUIREMENTS,
    show_default=True,
    help="The hosts' hash-locked requirements.",
)
@_download_options
def bundle(
    to: Path,
    pythons: tuple[str, ...],
    arches: tuple[str, ...],
    glibc: str,
    index_url: str,
    find_links: Path | None,
    artifacts_from: str | None,
    artifact_sha256: tuple[str, ...],
    requirements: Path,
    workers: int,
    chunk_size: int,
    retries: int,
    progress: bool | None,
) -> None:
    """The host bootstrap bundle in --to DIR, for hosts with no internet.

    The pinned releases (Ollama, the exporters) checked against their pinned sha256, the wheels
    pyinfra and the playbooks need for the hosts' Python (checked against the lock's hashes,
    exactly one pip wheel), the playbooks and the llmkit package they import, requirements.txt,
    and manifest.json, written last. Publish it with `llmkit mirror push DIR` (to bootstrap/).
    """
    options = bundle_lib.BundleOptions(
        pythons=pythons,
        arches=arches,
        glibc=glibc,
        index_url=index_url,
        find_links=find_links,
        artifacts_from=artifacts_from,
        artifact_sha256=bundle_lib.parse_sha256_overrides(artifact_sha256),
        requirements=requirements,
    )
    result = bundle_lib.build_bundle(to, options, _fetch_options(workers, chunk_size, retries, progress))
    m, stats = result.manifest, result.stats
    make_console().print(
        _text(
            f"bundle {m.name}: {len(m.files)} file(s), {_size(m.total_size)} in {to}: {result.wheels} "
            f"wheel(s) for {', '.join(m.source['targets'])}, {result.artifacts} release(s), the playbooks "
            f"({_size(stats.fetched_bytes)} fetched, {stats.skipped_files} already there, "
            f"{len(result.removed)} stale removed); manifest {to / 'manifest.json'}"
        )
    )


@mirror.command()
@click.argument("directory", type=_DIR)
@click.option("--bucket", help="The model store bucket.")
@click.option("--prefix", help="Key prefix (default models/<slug>/, or bootstrap/ for the bundle).")
@click.option("--kms-key-id", help="The data key's ARN (default: the bucket's default SSE-KMS key).")
@click.option("--to-dir", type=_DIR, help="Publish into this on-prem mirror directory instead.")
@click.option("--to-http", help="Publish by HTTP PUT under this on-prem mirror URL instead.")
@click.option(
    "--part-size", type=int, default=push_lib.DEFAULT_PART, show_default=True, help="Multipart part size."
)
@click.option(
    "--abort-incomplete",
    is_flag=True,
    help="Abort incomplete multipart uploads under the prefix, don't resume.",
)
@_s3_options
def push(
    directory: Path,
    bucket: str | None,
    prefix: str | None,
    kms_key_id: str | None,
    to_dir: Path | None,
    to_http: str | None,
    part_size: int,
    abort_incomplete: bool,
    endpoint_url: str | None,
    region: str | None,
) -> None:
    """Publish DIRECTORY (a pulled model or the bundle): files first, manifest.json last.

    S3: SSE-KMS on every object, unchanged objects skipped, interrupted multipart uploads resumed.
    """
    targets = [t for t in (bucket, to_dir, to_http) if t]
    if len(targets) != 1:
        raise MirrorError("give exactly one of --bucket, --to-dir, --to-http")
    if to_dir:
        result = push_lib.push_dir(directory, to_dir, prefix)
    elif to_http:
        result = push_lib.push_http(directory, to_http, prefix)
    else:
        assert bucket is not None
        target = push_lib.S3Target(
            _s3_client(endpoint_url, region), bucket, kms_key_id, part_size, abort_incomplete=abort_incomplete
        )
        result = push_lib.push_s3(directory, target, prefix)
    make_console().print(
        _text(
            f"published {directory} to {result.target}: {len(result.uploaded)} uploaded, "
            f"{len(result.skipped)} unchanged, {len(result.deleted)} stale deleted, "
            f"{result.resumed_parts} part(s) resumed, {result.aborted_uploads} upload(s) aborted; "
            "manifest last"
        )
    )


@mirror.command(name="ls")
@click.argument("location")
@_s3_options
def ls_command(location: str, endpoint_url: str | None, region: str | None) -> None:
    """What a mirror holds: LOCATION is a directory or s3://BUCKET[/PREFIX]."""
    if location.startswith("s3://"):
        bucket, prefix = remote.parse_s3(location)
        found = remote.ls_s3(_s3_client(endpoint_url, region), bucket, prefix)
    else:
        found = remote.ls_dir(Path(location))
    table = Table(title=_text(f"mirror {location}"))
    for col in ("model", "kind", "files", "size", "source", "created", "where"):
        table.add_column(col, overflow="fold")
    for item in found:
        m = item.manifest
        cells = (
            m.name,
            m.kind,
            len(m.files),
            _size(m.total_size),
            m.source.get("type", "-"),
            m.created,
            item.where,
        )
        table.add_row(*map(_text, cells))
    console = make_console()
    console.print(table)
    console.print(f"{len(found)} manifest(s)")


def _report(where: str, manifest: Manifest, findings: list[Finding]) -> None:
    console = make_console()
    for f in findings:
        console.print(Text.assemble(("MISMATCH", "red"), " ", _text(f"{f.path}: {f.problem}")))
    if findings:
        count = f"{len(findings)} of {len(manifest.files)} file(s)"
        console.print(_text(f"{where}: {count} do not match the manifest"))
        sys.exit(EXIT_FINDINGS)
    console.print(
        _text(f"{where}: {manifest.name}, {len(manifest.files)} file(s) verified against the manifest")
    )
    sys.exit(EXIT_OK)


@mirror.command()
@click.argument("location")
@_s3_options
def verify(location: str, endpoint_url: str | None, region: str | None) -> None:
    """Re-hash every file LOCATION's manifest lists (a directory or s3://BUCKET/PREFIX).

    Exit 1 on any mismatch, naming the file.
    """
    if location.startswith("s3://"):
        bucket, prefix = remote.parse_s3(location)
        manifest, findings = remote.verify_s3(_s3_client(endpoint_url, region), bucket, prefix)
    else:
        manifest, findings = remote.verify_local(Path(location))
    _report(location, manifest, findings)
