"""What the tests and the lab need on the controller, and the one command that installs it.

``llmkit lab prereqs`` (and ``.ci/run``, which calls it) installs the Debian packages listed in
``llmkit/data/prereqs.yaml``. Decisions, for reviewers:

- **Pins that survive security point releases.** A pin is a glob over the Debian version that fixes
  the upstream version (``1.22.1-*``). The newest version the archive serves that matches is
  installed, by its exact version, so apt never picks a new upstream on its own; a security update
  (``+deb12u12``) still matches the day the archive drops ``+deb12u11``.
- **Nothing silent.** Before installing, the command prints what it asks for and why, and what apt
  will also install or *upgrade* on this machine (systemd-container pulls the archive's systemd).
- **Recorded.** After installing, each package's installed version is checked against its pin and
  written to :data:`RECORD` (and printed).
- **One message.** Every test and lab command that misses a prerequisite says the same thing:
  :func:`missing_message`, which names :data:`FIX_COMMAND`.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from llmkit.errors import LlmkitError
from llmkit.lab import system

#: The command every "missing prerequisite" message names.
FIX_COMMAND = "uv run --frozen llmkit lab prereqs"
#: Where the installed versions are recorded.
RECORD = Path("/var/cache/llmkit/prereqs.txt")
DATA = "prereqs.yaml"

Purpose = Literal["tests", "lab"]


class PrereqError(LlmkitError):
    """The archive or the machine cannot give what the pins ask for."""


@dataclass(frozen=True)
class Package:
    """A Debian package, its version glob, and the files or programs that prove it is there."""

    name: str
    version: str
    purpose: Purpose
    provides: tuple[str, ...]
    why: str

    def matches(self, version: str) -> bool:
        return fnmatch.fnmatchcase(version, self.version)

    def present(self) -> bool:
        return all(_provided(item) for item in self.provides)


@dataclass(frozen=True)
class Tool:
    """A prerequisite the command checks and reports but does not install."""

    name: str
    purpose: Purpose
    why: str
    install: str
    minimum: str | None = None


@dataclass(frozen=True)
class Prereqs:
    codename: str
    version_id: str
    packages: tuple[Package, ...]
    tools: tuple[Tool, ...]

    def package(self, name: str) -> Package:
        for package in self.packages:
            if package.name == name:
                return package
        raise KeyError(name)

    def providing(self, item: str) -> Package | None:
        return next((p for p in self.packages if item in p.provides), None)


def _provided(item: str) -> bool:
    return Path(item).is_file() if item.startswith("/") else system.which(item) is not None


@cache
def load() -> Prereqs:
    raw = yaml.safe_load(resources.files("llmkit.data").joinpath(DATA).read_text(encoding="utf-8"))
    if raw.get("schema_version") != 1:
        raise PrereqError(f"llmkit/data/{DATA}: schema_version {raw.get('schema_version')!r} is not 1")
    packages = tuple(
        Package(
            name=name,
            version=str(spec["version"]),
            purpose=spec["for"],
            provides=tuple(spec["provides"]),
            why=spec["why"],
        )
        for name, spec in raw["packages"].items()
    )
    tools = tuple(
        Tool(
            name=name,
            purpose=spec["for"],
            why=spec["why"],
            install=spec["install"],
            minimum=spec.get("minimum"),
        )
        for name, spec in raw["tools"].items()
    )
    from llmkit.mirror.wheels import DEFAULT_PYTHONS

    tools += tuple(
        Tool(
            name=f"python{version}",
            purpose="tests",
            why="the bundle's wheels are installed and the playbooks run by each host Python",
            install=f"pyenv install {version} (or put a CPython {version} on PATH)",
        )
        for version in DEFAULT_PYTHONS
    )
    debian = raw["debian"]
    return Prereqs(str(debian["codename"]), str(debian["version_id"]), packages, tools)


# --- the one message ------------------------------------------------------------------------------


def describe(item: str) -> str:
    """``nginx`` -> ``nginx (Debian package nginx-light)``; a tool gets its install hint."""
    prereqs = load()
    if item == "root":
        return "root (the lab boots machines and makes network interfaces: run as root)"
    package = prereqs.providing(item)
    if package:
        return f"{item} (Debian package {package.name})"
    tool = next((t for t in prereqs.tools if t.name == item), None)
    return f"{item} ({tool.install})" if tool else item


def missing_message(items: Iterable[str]) -> str:
    """The one message for a missing prerequisite, in every test and lab command."""
    return (
        f"missing prerequisite(s): {', '.join(describe(item) for item in items)}; install the test "
        f"and lab prerequisites with `{FIX_COMMAND}` as root (`llmkit lab prereqs --check` lists "
        "what is missing)"
    )


def missing(items: Iterable[str]) -> list[str]:
    """The items this machine lacks: programs by name, files by absolute path, ``python3.X`` as
    :func:`find_python` finds it, and ``root`` for the effective user."""
    out = []
    for item in items:
        if item == "root":
            present = os.geteuid() == 0
        elif item.startswith("python3."):
            present = find_python(item.removeprefix("python")) is not None
        else:
            present = _provided(item)
        if not present:
            out.append(item)
    return out


def find_python(version: str) -> str | None:
    """A working CPython ``version`` ("3.10"): pyenv's, else ``python3.10`` on PATH."""
    home = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = sorted(glob.glob(str(home / f"{version}.*" / "bin" / f"python{version}")), reverse=True)
    on_path = shutil.which(f"python{version}")
    for candidate in [*candidates, *([on_path] if on_path else [])]:
        try:
            ok = subprocess.run([candidate, "-V"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return candidate
    return None


# --- checking -------------------------------------------------------------------------------------


Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=1800)


@dataclass(frozen=True)
class Finding:
    name: str
    kind: Literal["package", "tool"]
    purpose: Purpose
    ok: bool
    detail: str


def _go_version() -> str | None:
    go = shutil.which("go")
    if not go:
        return None
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"go(\d+(?:\.\d+)*)", out.strip())
    return match.group(1) if match else None


def _at_least(version: str, minimum: str) -> bool:
    def key(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", text))

    return key(version) >= key(minimum)


def check_tool(tool: Tool) -> Finding:
    if tool.name.startswith("python3."):
        found = find_python(tool.name.removeprefix("python"))
        detail = found or f"not found: {tool.install}"
        return Finding(tool.name, "tool", tool.purpose, found is not None, detail)
    if tool.name == "go":
        version = _go_version()
        if version is None:
            return Finding("go", "tool", tool.purpose, False, f"not found: {tool.install}")
        ok = tool.minimum is None or _at_least(version, tool.minimum)
        detail = f"go {version}" if ok else f"go {version} is older than {tool.minimum}: {tool.install}"
        return Finding("go", "tool", tool.purpose, ok, detail)
    path = shutil.which(tool.name)
    return Finding(tool.name, "tool", tool.purpose, path is not None, path or f"not found: {tool.install}")


def installed_version(name: str, run: Run = _run) -> str | None:
    """The version dpkg has installed of ``name``, or None."""
    done = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Version}", name])
    if done.returncode != 0:
        return None
    status, _, version = done.stdout.partition("\t")
    return version.strip() if status.startswith("ii") and version.strip() else None


def check(prereqs: Prereqs | None = None, run: Run = _run) -> list[Finding]:
    """Every package (installed, at a version its pin accepts) and every tool."""
    prereqs = prereqs or load()
    findings = []
    for package in prereqs.packages:
        version = installed_version(package.name, run) if shutil.which("dpkg-query") else None
        if version is None:
            ok = False
            detail = "not installed"
        elif not package.matches(version):
            ok = False
            detail = f"{version} installed, the pin is {package.version}"
        elif not package.present():
            ok = False
            detail = f"{version} installed but {', '.join(package.provides)} not found"
        else:
            ok = True
            detail = version
        findings.append(Finding(package.name, "package", package.purpose, ok, detail))
    findings += [check_tool(tool) for tool in prereqs.tools]
    return findings


# --- resolving pins against the archive -----------------------------------------------------------


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def check_release(prereqs: Prereqs, release: dict[str, str]) -> None:
    codename = release.get("VERSION_CODENAME")
    if codename != prereqs.codename:
        raise PrereqError(
            f"/etc/os-release: VERSION_CODENAME is {codename!r}; the pinned prerequisites are "
            f"Debian {prereqs.version_id} ({prereqs.codename}) packages (llmkit/data/{DATA}). "
            "Install the packages it lists by hand, or run the tests on Debian 12"
        )


def available_versions(name: str, run: Run = _run) -> list[str]:
    """Every version of ``name`` the configured archives serve (``apt-cache madison``)."""
    done = run(["apt-cache", "madison", name])
    versions = []
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 2 and parts[0] == name and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def newest(versions: Sequence[str], run: Run = _run) -> str:
    """The highest of ``versions`` by Debian's ordering (``dpkg --compare-versions``)."""
    best = versions[0]
    for version in versions[1:]:
        if run(["dpkg", "--compare-versions", version, "gt", best]).returncode == 0:
            best = version
    return best


def resolve(package: Package, run: Run = _run) -> str:
    """The newest version the archive serves that the pin accepts; PrereqError otherwise."""
    versions = available_versions(package.name, run)
    accepted = [v for v in versions if package.matches(v)]
    if not accepted:
        served = ", ".join(versions) or "none (run `apt-get update`, or check /etc/apt/sources.list)"
        raise PrereqError(
            f"llmkit/data/{DATA}: packages.{package.name}.version: the pin {package.version!r} matches "
            f"no version the archive serves (served: {served}); a new upstream version needs a "
            "reviewed change of the pin"
        )
    return newest(accepted, run)


@dataclass
class AptPlan:
    """What ``apt-get install`` of the pinned versions would do (from its simulation)."""

    asked: dict[str, str]
    installs: dict[str, str] = field(default_factory=dict)
    upgrades: dict[str, tuple[str, str]] = field(default_factory=dict)


_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) ")


def simulate(asked: dict[str, str], run: Run = _run) -> AptPlan:
    done = run(["apt-get", "install", "-s", "--no-install-recommends", *_specs(asked)])
    if done.returncode != 0:
        raise PrereqError(f"apt-get cannot install the pinned versions:\n{done.stdout}{done.stderr}".strip())
    plan = AptPlan(asked)
    for line in done.stdout.splitlines():
        match = _INST.match(line)
        if not match:
            continue
        name, old, new = match.group(1).split(":")[0], match.group(2), match.group(3)
        if old:
            plan.upgrades[name] = (old, new)
        elif name not in asked:
            plan.installs[name] = new
    return plan


def _specs(asked: dict[str, str]) -> list[str]:
    return [f"{name}={version}" for name, version in asked.items()]


# --- installing -----------------------------------------------------------------------------------


Say = Callable[[str], None]


def install(
    say: Say, *, dry_run: bool = False, run: Run = _run, record: Path = RECORD, update: bool = True
) -> dict[str, str]:
    """Install every pinned package that is missing or off its pin; return name -> installed
    version of every pinned package. Says what it will do before it does it."""
    prereqs = load()
    if os.geteuid() != 0 and not dry_run:
        raise PrereqError(f"installing Debian packages needs root: run `{FIX_COMMAND}` as root (sudo)")
    for program in ("apt-get", "apt-cache", "dpkg", "dpkg-query"):
        if shutil.which(program) is None:
            raise PrereqError(f"`{program}` not found: `llmkit lab prereqs` installs with Debian's apt")
    check_release(prereqs, os_release())
    if update and os.geteuid() == 0:
        say("apt-get update")
        done = run(["apt-get", "update", "-qq"])
        if done.returncode != 0:
            raise PrereqError(f"apt-get update failed:\n{done.stdout}{done.stderr}".strip())
    asked: dict[str, str] = {}
    for package in prereqs.packages:
        have = installed_version(package.name, run)
        if have is not None and package.matches(have) and package.present():
            say(f"  have     {package.name} {have} (pin {package.version})")
            continue
        asked[package.name] = resolve(package, run)
    if asked:
        plan = simulate(asked, run)
        say(
            f"Installing Debian {prereqs.version_id} ({prereqs.codename}) packages, "
            "pinned by upstream version:"
        )
        for name, version in asked.items():
            package = prereqs.package(name)
            say(f"  install  {name} {version} (pin {package.version}; {package.purpose}): {package.why}")
        if plan.installs:
            say(
                f"  and their dependencies: {', '.join(f'{n} {v}' for n, v in sorted(plan.installs.items()))}"
            )
        for name, (old, new) in sorted(plan.upgrades.items()):
            say(f"  UPGRADE  {name} {old} -> {new}: this machine's own package, needed by the ones above")
        if dry_run:
            say("dry run: nothing installed")
            return {}
        done = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *_specs(asked)])
        if done.returncode != 0:
            raise PrereqError(f"apt-get install failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}".strip())
    return _record(prereqs, say, run, record)


def _record(prereqs: Prereqs, say: Say, run: Run, record: Path) -> dict[str, str]:
    installed: dict[str, str] = {}
    problems = []
    for package in prereqs.packages:
        version = installed_version(package.name, run)
        if version is None or not package.matches(version):
            problems.append(f"{package.name}: {version or 'not installed'} (pin {package.version})")
        else:
            installed[package.name] = version
    if problems:
        raise PrereqError("after apt-get install, off their pins: " + "; ".join(problems))
    lines = [f"{name}\t{version}\t{prereqs.package(name).version}" for name, version in installed.items()]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("# package\tinstalled\tpin\n" + "\n".join(lines) + "\n", encoding="utf-8")
        say(f"installed versions recorded in {record}:")
    except OSError as exc:
        say(f"installed versions (not recorded: {exc}):")
    for name, version in installed.items():
        say(f"  {name} {version}")
    return installed
