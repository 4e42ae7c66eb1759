"""``llmkit lab prereqs``: pins that survive Debian's point releases, said before installed, recorded.

The archive's answers (``apt-cache madison``, ``apt-get -s``) are scripted where a test needs an
archive that is not today's (a point release that replaced the pinned one, a new upstream); Debian's
version ordering is always the real ``dpkg --compare-versions``, and the pins are also checked
against the real archive and the real installed packages of this machine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.lab import prereqs

BOOKWORM = {"VERSION_CODENAME": "bookworm", "VERSION_ID": "12"}


class Archive:
    """Scripted apt answers; ``dpkg --compare-versions`` and anything unscripted run for real."""

    def __init__(
        self,
        served: dict[str, list[str]],
        installed: dict[str, str] | None = None,
        simulation: str = "",
    ) -> None:
        self.served = served
        self.installed = installed or {}
        self.simulation = simulation
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        self.calls.append(argv)

        def done(out: str = "", rc: int = 0) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(argv, rc, out, "")

        if argv[:2] == ["apt-cache", "madison"]:
            name = argv[2]
            rows = [
                f"{name:>12} | {v} | http://deb.example/debian bookworm/main amd64 Packages"
                for v in self.served.get(name, [])
            ]
            return done("\n".join(rows) + "\n")
        if argv[0] == "dpkg-query":
            version = self.installed.get(argv[-1])
            return done(f"ii \t{version}") if version else done(rc=1)
        if argv[:2] == ["apt-get", "update"]:
            return done()
        if argv[:3] == ["apt-get", "install", "-s"]:
            return done(self.simulation)
        if argv[:2] == ["apt-get", "install"]:
            for spec in argv[2:]:
                if "=" in spec:
                    name, version = spec.split("=", 1)
                    self.installed[name] = version
            return done()
        return subprocess.run(argv, capture_output=True, text=True, check=False)


def nginx(version: str = "1.22.1-*") -> prereqs.Package:
    return prereqs.Package("nginx-light", version, "tests", ("nginx",), "checks sites")


def test_the_pin_survives_a_security_point_release() -> None:
    # The day +deb12u12 lands the archive no longer serves +deb12u11: the pin still resolves.
    archive = Archive({"nginx-light": ["1.22.1-9+deb12u12"]})
    assert prereqs.resolve(nginx(), archive) == "1.22.1-9+deb12u12"


def test_the_newest_matching_version_wins_by_debian_ordering_not_by_string() -> None:
    # As strings "+deb12u9" sorts after "+deb12u12"; dpkg knows better. A newer upstream is ignored.
    archive = Archive({"nginx-light": ["1.22.1-9+deb12u9", "1.24.0-1", "1.22.1-9+deb12u12", "1.22.1-9"]})
    assert prereqs.resolve(nginx(), archive) == "1.22.1-9+deb12u12"


def test_a_new_upstream_alone_is_refused_naming_the_key_the_pin_and_what_is_served() -> None:
    archive = Archive({"nginx-light": ["1.24.0-1"]})
    with pytest.raises(prereqs.PrereqError) as caught:
        prereqs.resolve(nginx(), archive)
    message = str(caught.value)
    assert "packages.nginx-light.version" in message and "'1.22.1-*'" in message
    assert "served: 1.24.0-1" in message and "llmkit/data/prereqs.yaml" in message


def test_a_package_the_archive_does_not_serve_says_so() -> None:
    with pytest.raises(prereqs.PrereqError, match=r"served: none \(run `apt-get update`"):
        prereqs.resolve(nginx(), Archive({}))


def test_every_pin_fixes_an_upstream_version() -> None:
    for package in prereqs.load().packages:
        fixed = package.version.split("*", 1)[0]
        assert fixed and fixed[0].isdigit(), package  # never a bare "*"
        assert package.version.count("*") == 1 and package.version.endswith("*"), package


def test_every_pin_matches_what_this_machine_installed_and_the_archive_serves() -> None:
    # The real archive (lists fetched by `llmkit lab prereqs`, which CI runs first) and dpkg.
    for package in prereqs.load().packages:
        installed = prereqs.installed_version(package.name)
        assert installed is not None and package.matches(installed), (package, installed)
        assert package.matches(prereqs.resolve(package)), package


def test_the_check_reports_every_package_and_tool_ok_here() -> None:
    findings = prereqs.check()
    assert [f.name for f in findings if not f.ok] == []
    names = {f.name for f in findings}
    assert {"nginx-light", "systemd-container", "debootstrap", "go", "python3.10"} <= names


SIMULATION = """\
NOTE: This is only a simulation!
Inst libsystemd0 [252.38-1~deb12u1] (252.39-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst systemd [252.38-1~deb12u1] (252.39-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst systemd-container (252.39-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst libnftnl11:amd64 (1.2.4-2 Debian:12.12/stable [amd64])
Conf systemd (252.39-1~deb12u2 Debian-Security:12/stable-security [amd64])
"""


def test_the_simulation_separates_new_dependencies_from_upgrades_of_this_machine() -> None:
    plan = prereqs.simulate({"systemd-container": "252.39-1~deb12u2"}, Archive({}, simulation=SIMULATION))
    assert plan.upgrades == {
        "libsystemd0": ("252.38-1~deb12u1", "252.39-1~deb12u2"),
        "systemd": ("252.38-1~deb12u1", "252.39-1~deb12u2"),
    }
    assert plan.installs == {"libnftnl11": "1.2.4-2"}  # the asked package itself is not a dependency


def small_set(monkeypatch: pytest.MonkeyPatch) -> prereqs.Prereqs:
    real = prereqs.load()
    mine = replace(real, packages=(real.package("systemd-container"),), tools=())
    monkeypatch.setattr(prereqs, "load", lambda: mine)
    monkeypatch.setattr(prereqs, "os_release", lambda *a: BOOKWORM)
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 0)
    return mine


def test_install_says_what_it_installs_and_upgrades_before_it_does_and_records_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    small_set(monkeypatch)
    monkeypatch.setattr(prereqs.Package, "present", lambda self: True)
    archive = Archive({"systemd-container": ["252.39-1~deb12u2"]}, simulation=SIMULATION)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        said.append(
            f"(apt calls so far: {sum(c[:3] == ['apt-get', 'install', '-y'] for c in archive.calls)})"
        )

    record = tmp_path / "prereqs.txt"
    installed = prereqs.install(say, run=archive, record=record)
    assert installed == {"systemd-container": "252.39-1~deb12u2"}
    upgrade = next(i for i, line in enumerate(said) if line.startswith("  UPGRADE  systemd 252.38-1~deb12u1"))
    assert said[upgrade + 1] == "(apt calls so far: 0)"  # said before apt-get install ran
    ask = next(c for c in archive.calls if c[:3] == ["apt-get", "install", "-y"])
    assert ask[-1] == "systemd-container=252.39-1~deb12u2"  # the exact resolved version
    assert "systemd-container\t252.39-1~deb12u2\t252.*" in record.read_text()


def test_dry_run_installs_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    small_set(monkeypatch)
    archive = Archive({"systemd-container": ["252.39-1~deb12u2"]}, simulation=SIMULATION)
    said: list[str] = []
    assert prereqs.install(said.append, dry_run=True, run=archive, record=tmp_path / "r") == {}
    assert "dry run: nothing installed" in said
    assert not [c for c in archive.calls if c[:3] == ["apt-get", "install", "-y"]]
    assert not (tmp_path / "r").exists()


def test_a_package_already_on_its_pin_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    small_set(monkeypatch)
    monkeypatch.setattr(prereqs.Package, "present", lambda self: True)
    archive = Archive({}, installed={"systemd-container": "252.38-1~deb12u1"})
    said: list[str] = []
    assert prereqs.install(said.append, run=archive, record=tmp_path / "r") == {
        "systemd-container": "252.38-1~deb12u1"
    }
    assert not [c for c in archive.calls if c[:2] == ["apt-get", "install"]]


def test_another_release_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    small_set(monkeypatch)
    monkeypatch.setattr(prereqs, "os_release", lambda *a: {"VERSION_CODENAME": "trixie"})
    archive = Archive({})
    with pytest.raises(prereqs.PrereqError, match=r"VERSION_CODENAME is 'trixie'.*Debian 12 \(bookworm\)"):
        prereqs.install(lambda _: None, run=archive)
    assert archive.calls == []


def test_installing_without_root_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 1000)
    with pytest.raises(
        prereqs.PrereqError, match=r"needs root: run `uv run --frozen llmkit lab prereqs` as root"
    ):
        prereqs.install(lambda _: None, run=Archive({}))


def test_one_message_for_every_missing_prerequisite() -> None:
    message = prereqs.missing_message(["nginx", "/usr/include/stb/stb_image.h", "go", "root"])
    assert message.startswith("missing prerequisite(s): nginx (Debian package nginx-light), ")
    assert "/usr/include/stb/stb_image.h (Debian package libstb-dev)" in message
    assert "go (install Go >= 1.24" in message and "root (" in message
    assert message.endswith(
        "install the test and lab prerequisites with `uv run --frozen llmkit lab prereqs` as root "
        "(`llmkit lab prereqs --check` lists what is missing)"
    )
    assert prereqs.missing(["sh", "/bin/sh", "no-such-program-llmkit", "/no/such/file"]) == [
        "no-such-program-llmkit",
        "/no/such/file",
    ]


def test_cli_check_exits_0_here_and_1_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = CliRunner().invoke(main, ["lab", "prereqs", "--check"])
    assert ok.exit_code == 0, ok.output
    assert "every prerequisite is here" in ok.output and "nginx-light" in ok.output
    real = prereqs.load()
    absent = prereqs.Package("llmkit-no-such-package", "1.0-*", "tests", ("llmkit-no-such-program",), "none")
    monkeypatch.setattr(prereqs, "load", lambda: replace(real, packages=(*real.packages, absent)))
    missing = CliRunner().invoke(main, ["lab", "prereqs", "--check"])
    assert missing.exit_code == 1, missing.output
    assert "llmkit-no-such-package" in missing.output and "not installed" in missing.output
    assert "Traceback" not in missing.output
