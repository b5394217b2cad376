"""Program evaluation: the time to run the Pulumi program under the engine-like mocks for a big
stack (1 registry, 20 client trust targets, 100 deletion rules) versus an empty config.

    .venv/bin/python bench/program_eval.py [--rounds 5]

Each run is a fresh Python process (imports, Pulumi runtime and mocks start cold every time),
alternating empty and big. Two figures per run: the whole process's wall time, and the time
spent inside ``run_program`` alone. The mocks make real keys, certificates and bcrypt hashes,
as the providers would.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter

from common import ROOT, log, machine, median, write_result

CHILD = "--child"


def big_config() -> dict:
    trust = []
    for i in range(20):
        kinds = [["docker"], ["docker", "containerd"], ["podman", "system"], ["docker", "podman", "system"]][i % 4]
        # One local target: a second one would share its manifest, which settings refuse.
        if i == 0:
            trust.append({"name": f"local-{i}", "kinds": kinds})
        else:
            trust.append({"name": f"remote-{i}", "host": f"10.0.0.{i}", "user": "deploy", "kinds": kinds})
    deletions = [{"repository": f"team{i % 10}/app{i}", "tags": [f"v{i}.0", f"v{i}.1"]} for i in range(100)]
    return {"trust": trust, "maintenance": {"deletions": deletions}}


def child(config: dict) -> None:
    """Run the program once in this process and print timing and what got registered."""
    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from tests.support.program import run_program

    imported = time.perf_counter()
    run = run_program(config)
    done = time.perf_counter()
    types = Counter(r.type for r in run.monitor.registered)
    print(json.dumps({
        "import seconds": imported - start,
        "run_program seconds": done - imported,
        "resources": sum(types.values()),
        "types": dict(types),
    }))


def run_child(config: dict) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, CHILD, json.dumps(config)], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"program run failed: {out.stderr.strip()[-3000:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["process seconds"] = wall
    return figures


def measure(rounds: int) -> dict:
    configs = {"empty": {}, "big": big_config()}
    runs: dict[str, list[dict]] = {"empty": [], "big": []}
    for r in range(rounds):
        for name in (["empty", "big"] if r % 2 == 0 else ["big", "empty"]):
            runs[name].append(run_child(configs[name]))
            last = runs[name][-1]
            log(f"round {r + 1}/{rounds} {name:5s}: process {last['process seconds']:.2f} s, "
                f"run_program {last['run_program seconds']:.2f} s, {last['resources']} resources")
    result: dict = {"benchmark": "program_eval", "rounds": rounds, "runs": {}}
    for name, figures in runs.items():
        result["runs"][name] = {
            "process seconds": round(median(f["process seconds"] for f in figures), 3),
            "run_program seconds": round(median(f["run_program seconds"] for f in figures), 3),
            "resources": figures[0]["resources"],
            "resource types": figures[0]["types"],
        }
    big, empty = result["runs"]["big"], result["runs"]["empty"]
    result["extra seconds (process)"] = round(big["process seconds"] - empty["process seconds"], 3)
    result["extra seconds (run_program)"] = round(big["run_program seconds"] - empty["run_program seconds"], 3)
    result["ratio big/empty (process)"] = round(big["process seconds"] / empty["process seconds"], 3)
    deletion_types = [t for t in big["resource types"] if "deletion" in t.lower()]
    result["deletion rules registered as resources"] = (
        "yes: " + ", ".join(f"{big['resource types'][t]} x {t}" for t in deletion_types) if deletion_types
        else "no: the program registered no deletion resources when this was measured"
    )
    result["config"] = "big: 20 trust targets (10 local, 10 remote over SSH), 100 deletion rules of 2 tags; empty: {}"
    result["goal"] = "big stack evaluates in under 2 s more than the empty one"
    result["goal holds"] = result["extra seconds (process)"] < 2
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == CHILD:
        child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = {"machine": machine(), "versions": {"python": platform.python_version()}}
    result.update(measure(args.rounds))
    log(f"empty {result['runs']['empty']['process seconds']:.2f} s, big {result['runs']['big']['process seconds']:.2f} s:"
        f" +{result['extra seconds (process)']:.2f} s ({result['ratio big/empty (process)']:.2f}x);"
        f" deletions as resources: {result['deletion rules registered as resources']}")
    log(f"goal ({result['goal']}): {'holds' if result['goal holds'] else 'does NOT hold'}")
    write_result("program_eval", result)


if __name__ == "__main__":
    main()
