"""Why the auth-off baseline moves: the registry's garbage collector, per request, with and
without competing CPU load, at Go's default ``GOGC=100`` and at ``GOGC=400``.

    .venv/bin/python bench/registry_gc.py [--rounds 4] [--seconds 5] [--gogc 400]

Two registry containers (the stand-in of the registry under test, distribution 3.1.2 unless
TEST_REGISTRY_VERSION=2 (2.8.2), with the program's rendered
``config.yml`` serving TCP instead of its Unix socket, the stack's data volume mounted read-only) run with ``GODEBUG=gctrace=1``, which
makes the Go runtime print one line per collection with its heap sizes and CPU times; one with
the default GOGC, one with ``--gogc``. Each round measures manifest HEAD requests (ab,
keep-alive, concurrency 8, plain HTTP straight to the registry: nothing else on the path) on
both, once alone and once next to two busy loops (one per core, what another job on this
2-core machine does), in rotating order. Per measurement: requests/s, the registry's CPU ms per
request (its cgroup), collections per 1000 requests, heap live and goal, and the collector's
CPU ms per request split as gctrace reports it (assist, background, idle, stop-the-world).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from auth_cost import ACCEPT, CONCURRENCY
from common import (
    LABEL,
    PORT,
    BenchStack,
    CpuMeter,
    free_port,
    log,
    machine,
    median,
    put_files,
    registry_environment,
    versions,
    write_result,
)

from components.render.registry_config import CONFIG_PATH, DATA_DIR, registry_config, serve_command
from tests.support.oci import write_image

GCTRACE = re.compile(
    r"gc \d+ @\S+ \S+: \S+ ms clock, ([\d.]+)\+([\d.]+)/([\d.]+)/([\d.]+)\+([\d.]+) ms cpu, "
    r"(\d+)->(\d+)->(\d+) MB, (\d+) MB goal"
)


def head_load(url: str, seconds: float) -> tuple[float, int]:
    args = ["ab", "-q", "-k", "-i", "-c", str(CONCURRENCY), "-t", str(seconds), "-n", "10000000",
            "-H", f"Accept: {ACCEPT}", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    complete = re.search(r"Complete requests:\s+(\d+)", out.stdout)
    if not complete or re.search(r"(Non-2xx responses|Failed requests):\s+[1-9]", out.stdout):
        raise RuntimeError(f"ab against {url} failed: {out.stdout[-800:]} {out.stderr[-400:]}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out.stdout).group(1)), int(complete.group(1))


def busy_loops(n: int) -> list[subprocess.Popen]:
    """``n`` processes spinning on a core each, until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def start_registry(stack: BenchStack, name: str, env: list[str]) -> tuple[str, int]:
    """A registry with the program's rendered config, serving TCP (like the bench's other
    comparison registries), on the stack's data volume read-only, with ``env`` added."""
    import yaml

    config = registry_config(http_secret=uuid.uuid4().hex, tcp_addr=f":{PORT}")
    config["http"].pop("debug")
    port = free_port()
    container = stack.client.containers.create(
        stack.registry_image, name=f"{stack.prefix}-{name}", labels=LABEL,
        entrypoint=serve_command(CONFIG_PATH),
        # The program's environment for this version (OTEL off on 3) with this case's GOGC.
        environment=registry_environment(stack.registry_version, tuple(env)),
        ports={f"{PORT}/tcp": ("127.0.0.1", port)},
        volumes={f"{stack.prefix}-data": {"bind": DATA_DIR, "mode": "ro"}})
    stack.extra_containers.append(container.name)
    put_files(container.name, {CONFIG_PATH: (yaml.safe_dump(config, sort_keys=False), 0o644)})
    container.start()
    return container.name, port


def measure(stack: BenchStack, name: str, port: int, seconds: float, path: str) -> dict:
    since = time.time()
    with CpuMeter({"registry": name}, (port,)) as meter:
        rate, requests = head_load(f"http://127.0.0.1:{port}{path}", seconds)
    logs = stack.client.api.logs(name, stdout=False, stderr=True, since=since).decode(errors="replace")
    cycles = GCTRACE.findall(logs)
    per = 1 / requests
    return {
        "req/s": rate,
        "registry CPU ms/request": 1000 * meter.seconds["registry"] * per,
        "collections per 1000 requests": 1000 * len(cycles) * per,
        "heap live MB": median(int(c[7]) for c in cycles) if cycles else None,
        "heap goal MB": median(int(c[8]) for c in cycles) if cycles else None,
        "GC CPU ms/request": {
            "assist": sum(float(c[1]) for c in cycles) * per,
            "background": sum(float(c[2]) for c in cycles) * per,
            "idle": sum(float(c[3]) for c in cycles) * per,
            "stop-the-world": sum(float(c[0]) + float(c[4]) for c in cycles) * per,
        },
        "load average": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--gogc", type=int, default=400)
    args = parser.parse_args()
    result: dict = {"benchmark": "registry_gc", "machine": machine(), "versions": versions(),
                    "settings": {"rounds": args.rounds, "seconds": args.seconds, "gogc": args.gogc,
                                 "load": f"ab -k -i -c {CONCURRENCY}, plain HTTP to the registry"}}
    cases = {"GOGC=100": ["GODEBUG=gctrace=1", "GOGC=100"],
             f"GOGC={args.gogc}": ["GODEBUG=gctrace=1", f"GOGC={args.gogc}"]}
    series: dict = {}
    with BenchStack(variants_wanted=("ours", "direct")) as stack:
        layout = Path(tempfile.mkdtemp(prefix="small-", dir=stack.workdir))
        write_image(layout, "v1", [4096], seed=f"{stack.tag}-small")
        stack.push(layout, "v1", stack.variants["ours"], "bench/small")
        registries = {label: start_registry(stack, f"gc{i}", env) for i, (label, env) in enumerate(cases.items())}
        time.sleep(2)
        path = "/v2/bench/small/manifests/v1"
        keys = [(label, burn) for burn in (False, True) for label in cases]
        for r in range(args.rounds):
            k = r % len(keys)
            order = keys[k:] + keys[:k]
            for label, burn in (order if r % 2 == 0 else list(reversed(order))):
                loops = busy_loops(2) if burn else []
                try:
                    figures = measure(stack, *registries[label], args.seconds, path)
                finally:
                    for loop in loops:
                        loop.kill()
                        loop.wait()
                key = f"{label}, {'2 busy loops' if burn else 'alone'}"
                series.setdefault(key, []).append(figures)
                gc = figures["GC CPU ms/request"]
                log(f"round {r + 1}/{args.rounds} {key:28s} {figures['req/s']:7.0f} req/s  registry "
                    f"{figures['registry CPU ms/request']:.2f} ms/req  {figures['collections per 1000 requests']:5.1f}"
                    f" GCs/1000 req (goal {figures['heap goal MB']} MB)  GC ms/req: assist {gc['assist']:.2f}"
                    f" background {gc['background']:.2f} idle {gc['idle']:.2f} STW {gc['stop-the-world']:.2f}"
                    f"  load {figures['load average']:.1f}")
    summary = {}
    for key, runs in series.items():
        summary[key] = {
            "req/s": round(median(x["req/s"] for x in runs), 1),
            "req/s spread": [round(min(x["req/s"] for x in runs), 1), round(max(x["req/s"] for x in runs), 1)],
            "registry CPU ms/request": round(median(x["registry CPU ms/request"] for x in runs), 3),
            "registry CPU ms/request spread": [round(min(x["registry CPU ms/request"] for x in runs), 3),
                                               round(max(x["registry CPU ms/request"] for x in runs), 3)],
            "collections per 1000 requests": round(median(x["collections per 1000 requests"] for x in runs), 1),
            "heap goal MB": median(x["heap goal MB"] for x in runs if x["heap goal MB"] is not None),
            "GC CPU ms/request": round(median(sum(x["GC CPU ms/request"].values()) for x in runs), 3),
            "runs": runs,
        }
        log(f"{key:28s} {summary[key]['req/s']:7.1f} req/s [{summary[key]['req/s spread'][0]}-"
            f"{summary[key]['req/s spread'][1]}]  registry {summary[key]['registry CPU ms/request']:.2f} ms/req"
            f"  GC {summary[key]['GC CPU ms/request']:.2f} ms/req  {summary[key]['collections per 1000 requests']}"
            f" GCs/1000 req")
    result["results"] = summary
    write_result("registry_gc", result)


if __name__ == "__main__":
    main()
