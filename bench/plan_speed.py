"""How long `llmkit plan prod` takes: the target is well under 10 s on a 2-core machine.

Run from the repo root: `uv run python bench/plan_speed.py [--stack prod] [--runs 5]`.
Each run is a fresh `llmkit plan STACK --json FILE` process, so the figure includes
Python start-up and importing pulumi and pulumi-aws, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target-s", type=float, default=10.0)
    args = parser.parse_args()

    llmkit = shutil.which("llmkit") or str(Path(sys.executable).with_name("llmkit"))
    times: list[float] = []
    resources = 0
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "graph.json"
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(
                [llmkit, "plan", args.stack, "--json", str(graph)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            times.append(time.perf_counter() - started)
            resources = len(json.loads(graph.read_text())["resources"])

    print(f"llmkit plan {args.stack}: {args.runs} runs, {resources} resources in the graph")
    print(f"  min    {min(times):6.2f} s")
    print(f"  median {statistics.median(times):6.2f} s")
    print(f"  max    {max(times):6.2f} s")
    print(f"  target {args.target_s:6.2f} s -> {'met' if max(times) < args.target_s else 'MISSED'}")
    return 0 if max(times) < args.target_s else 1


if __name__ == "__main__":
    sys.exit(main())
