"""How fast the everyday commands are, next to Python's own start-up (issue 16's targets).

Run from the repo root: `uv run python bench/cli_speed.py [--runs 5] [--bytecode]`.

Every figure is a fresh process of the venv's interpreter (the one running this script) or of
its `llmkit` script, as a user would start it; each command runs once untimed, then --runs
times, and the median wall and CPU times are reported. The baseline is `python -c "import
click"` with the same interpreter in the same run, so the ratios hold on a slower machine.
On a busy one (this 2-core machine is shared) a load spike between two commands moves their
wall times apart; their CPU times hardly move, and with nothing else running the two agree.
So each verdict is on CPU time (the CPU ratio, the planning's CPU seconds); walls are shown:

- `llmkit --help`, bare `llmkit`, `llmkit size deepseek-r1:7b`: within 3x the baseline;
- `llmkit policy check graph.json` on a graph this script saves first (`llmkit plan prod
  --json`, in a temporary directory): under 1 s;
- `llmkit plan prod`: under 3 s of planning, the "planned in X s (Y s CPU)" it prints:
  running the Pulumi program on the mock runtime, importing pulumi and pulumi-aws included
  (its wall time was seen to move from 2.6 to 5.7 s with the load while its CPU time stayed
  at 2.6 to 2.8 s, so the verdict is on the CPU time). The script also prints how
  that figure splits: it finds the modules a plan of the stack imports once its clock runs
  (the Pulumi SDK, the pulumi-aws service packages the program uses, what they import; not
  llmkit's own), and times a process that imports only those, after what `llmkit plan`
  imports before it starts the clock, with the garbage collector paused as the plan pauses
  it. The rest is running the program (llmkit's components included).

Python compiles every module it imports from source when it has no bytecode for it: when
PYTHONDONTWRITEBYTECODE is set and the venv was installed without compiling (uv's default),
that is every run, and it is most of the time of a command that imports pulumi-aws. llmkit's
own modules (an editable install) are not compiled by `uv sync --compile-bytecode`: with
PYTHONDONTWRITEBYTECODE they are compiled on every run. The script says which case it
measured. `--bytecode` measures the other case: it lets Python write bytecode into a private
cache in its temporary directory (PYTHONPYCACHEPREFIX; the venv is not touched) and warms it
before timing.

It exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATIO_TARGET = 3.0
POLICY_CHECK_TARGET_S = 1.0
PLAN_TARGET_S = 3.0
PLANNED = re.compile(r"planned in ([0-9.]+) s \(([0-9.]+) s CPU\)")

# The modules that a plan of the stack imports once its clock runs, in the order they were
# loaded, less llmkit's own (llmkit, components, the program): the Pulumi SDK, pulumi-aws and
# what they import. pulumi-aws registers its ~300 service packages lazily; a loaded one is a
# plain module again.
PLAN_IMPORTS = """
import json, sys, types
import llmkit.commands.plan, llmkit.config, llmkit.plan
from llmkit.config import load_stack
from llmkit.plan import find_project_dir, run_plan
load_stack(sys.argv[1], find_project_dir())
before = set(sys.modules)
run_plan(sys.argv[1])
loaded = {
    name: module for name, module in sys.modules.items()
    if name not in before and type(module) is types.ModuleType and not name.startswith("__")
    and name.partition(".")[0] not in ("llmkit", "components")
}
services = [
    name for name, module in loaded.items()
    if name.startswith("pulumi_aws.") and name.count(".") == 1 and hasattr(module, "__path__")
]
print(json.dumps({"modules": list(loaded), "services": sorted(services)}))
"""

# Import those modules, after what `llmkit plan` imports before it starts its clock; print the
# wall and CPU seconds they took.
IMPORTS_ONLY = """
import gc, importlib, sys, time
import llmkit.commands.plan, llmkit.config, llmkit.plan
names = sys.stdin.read().split()
gc.disable()  # as llmkit.plan.record does
wall, cpu = time.perf_counter(), time.process_time()
for name in names:
    getattr(importlib.import_module(name), "__all__", None)  # a lazy module loads on first use
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


@dataclass
class Timing:
    wall: float  # median wall time, s
    cpu: float  # median CPU time (user + system) of the process, s: less moved by a busy machine
    outputs: list[str]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], runs: int) -> Timing:
    """``argv`` run ``runs`` times after one untimed run: median wall and CPU time, each stdout."""
    outputs: list[str] = []
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(runs + 1):
        cpu, started = _cpu(), time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - started, _cpu() - cpu
        if done.returncode not in (0, 1):  # 1 is a finding (a policy violation), not a failure
            sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        if i:
            walls.append(wall)
            cpus.append(cpu)
            outputs.append(done.stdout)
    return Timing(statistics.median(walls), statistics.median(cpus), outputs)


def bytecode_state(env: dict[str, str]) -> str:
    import click  # where the venv keeps it: is there bytecode beside it?

    compiled = any(Path(click.__file__).parent.glob("__pycache__/*.pyc"))
    if env.get("PYTHONPYCACHEPREFIX"):
        return f"private cache {env['PYTHONPYCACHEPREFIX']} (warmed)"
    if env.get("PYTHONDONTWRITEBYTECODE"):
        own = any((ROOT / "llmkit").glob("__pycache__/*.pyc"))
        own_text = "" if own else "; llmkit's own modules compiled from source on every run"
        return (
            "in the venv" if compiled else "off: PYTHONDONTWRITEBYTECODE is set and the venv has none"
        ) + own_text
    return "written on first import (the usual case)"


def import_share(
    python: str, env: dict[str, str], stack: str, runs: int
) -> tuple[Timing, list[str], list[str]]:
    """How long the imports inside a plan of ``stack`` take (medians of ``runs`` processes), the
    modules imported and pulumi-aws's service packages among them."""
    done = subprocess.run(
        [python, "-c", PLAN_IMPORTS, stack], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"finding the modules a plan of {stack} imports failed:\n{done.stderr}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    modules: list[str] = found["modules"]
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(runs + 1):
        done = subprocess.run(
            [python, "-c", IMPORTS_ONLY],
            input="\n".join(modules),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            sys.exit(f"importing pulumi and pulumi-aws failed:\n{done.stderr}")
        if i:
            wall, cpu = (float(x) for x in done.stdout.split())
            walls.append(wall)
            cpus.append(cpu)
    return Timing(statistics.median(walls), statistics.median(cpus), []), modules, found["services"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", "-n", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--model", default="deepseek-r1:7b")
    parser.add_argument(
        "--bytecode", action="store_true", help="let Python cache bytecode in a private temporary directory"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    python = sys.executable
    llmkit = str(Path(python).with_name("llmkit"))
    missed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if args.bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        graph = Path(tmp) / "graph.json"

        print(f"python {sys.version.split()[0]} ({python}), {os.cpu_count()} CPUs, {args.runs} runs each")
        print(f"bytecode: {bytecode_state(env)}")
        load_before = os.getloadavg()[0]
        print(f"\n{'command':<36} {'wall':>8} {'ratio':>7} {'cpu':>8} {'ratio':>7}  target")

        click = timed([python, "-c", "import click"], env, args.runs)

        def row(label: str, t: Timing, target: str = "", met: bool | None = None) -> None:
            verdict = "" if met is None else f"{target}: {'met' if met else 'MISSED'}"
            ratios = f"{t.wall / click.wall:6.2f}x {t.cpu:7.3f}s {t.cpu / click.cpu:6.2f}x"
            print(f"{label:<36} {t.wall:7.3f}s {ratios}  {verdict}")
            if met is False:
                missed.append(label)

        row('python -c "import click"', click)
        for label, argv in (
            ("llmkit --help", [llmkit, "--help"]),
            ("llmkit", [llmkit]),
            (f"llmkit size {args.model}", [llmkit, "size", args.model]),
        ):
            t = timed(argv, env, args.runs)
            row(label, t, f"<= {RATIO_TARGET:g}x CPU", t.cpu / click.cpu <= RATIO_TARGET)

        plan = timed([llmkit, "plan", args.stack, "--json", str(graph)], env, args.runs)
        found = [m for out in plan.outputs if (m := PLANNED.search(out))]
        if len(found) != len(plan.outputs):
            sys.exit(f"llmkit plan {args.stack} printed no 'planned in ... (... s CPU)' figure")
        row(f"llmkit plan {args.stack}", plan)
        planning = statistics.median(float(m.group(1)) for m in found)
        planning_cpu = statistics.median(float(m.group(2)) for m in found)
        met = planning_cpu < PLAN_TARGET_S
        print(f"{'  of which planning':<36} {planning:7.3f}s {'':>7} {planning_cpu:7.3f}s {'':>7}  ", end="")
        print(f"< {PLAN_TARGET_S:g} s CPU: {'met' if met else 'MISSED'}")
        if not met:
            missed.append(f"llmkit plan {args.stack} (planning)")
        imports, modules, services = import_share(python, env, args.stack, args.runs)
        label = "    importing pulumi, pulumi-aws"
        print(f"{label:<36} {imports.wall:7.3f}s {'':>7} {imports.cpu:7.3f}s {'':>7}  ", end="")
        print(f"({len(modules)} modules; pulumi-aws's {', '.join(s.rpartition('.')[2] for s in services)})")
        print(
            f"{'    running the program':<36} {planning - imports.wall:7.3f}s {'':>7} "
            f"{planning_cpu - imports.cpu:7.3f}s {'':>7}  (the rest)"
        )

        check = timed([llmkit, "policy", "check", str(graph)], env, args.runs)
        row(
            "llmkit policy check graph.json",
            check,
            f"< {POLICY_CHECK_TARGET_S:g} s CPU",
            check.cpu < POLICY_CHECK_TARGET_S,
        )

    load_after = os.getloadavg()[0]
    print(f"\nload average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > (os.cpu_count() or 1) / 2:
        print("note: the machine was busy: other processes inflate the wall times (the ratios and CPU less)")
    print("all targets met" if not missed else f"missed: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
