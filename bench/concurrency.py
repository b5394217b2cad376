"""Concurrency: 16 clients pulling the same 10-layer image through our proxy at once, versus one
client pulling it 16 times in a row.

    .venv/bin/python bench/concurrency.py [--clients 16] [--rounds 3] [--layer-mib 2]

Each pull is ``skopeo copy docker://... dir:`` into its own fresh folder. A round runs both the
concurrent and the sequential batch (order alternating per round). Any failed pull fails the
benchmark; the proxy's log is scanned for 5xx responses and ``[error]`` lines afterwards.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import docker
from common import MiB, BenchStack, fmt_ratio, log, machine, median, versions, write_result

from tests.support.oci import write_image

REPOSITORY = "bench/concurrent"


def batch(stack: BenchStack, clients: int, concurrent: bool) -> tuple[float, list[float]]:
    """Wall seconds for ``clients`` pulls, and each pull's own seconds."""
    variant = stack.variants["ours"]
    start = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            each = list(pool.map(lambda _: stack.pull(variant, REPOSITORY, "v1"), range(clients)))
    else:
        each = [stack.pull(variant, REPOSITORY, "v1") for _ in range(clients)]
    return time.perf_counter() - start, each


def proxy_problems(stack: BenchStack, since: datetime) -> dict:
    logs = docker.from_env().api.logs(stack.proxy_name, since=since, stdout=True, stderr=True).decode(errors="replace")
    statuses = re.findall(r'" (\d{3}) ', logs)
    return {
        "requests logged": len(statuses),
        "5xx responses": sum(1 for s in statuses if s.startswith("5")),
        "error log lines": sum(1 for line in logs.splitlines() if "[error]" in line or "[crit]" in line),
    }


def measure(clients: int, rounds: int, layers: int, layer_mib: int) -> dict:
    with BenchStack(variants_wanted=("ours", "direct")) as stack:
        layout = Path(tempfile.mkdtemp(prefix="image-", dir=stack.workdir))
        write_image(layout, "v1", [layer_mib * MiB] * layers, seed=f"{stack.tag}-concurrent")
        stack.push(layout, "v1", stack.variants["ours"], REPOSITORY)
        since = datetime.now(timezone.utc)
        concurrent_totals, sequential_totals, concurrent_each, sequential_each = [], [], [], []
        for r in range(rounds):
            for together in ([True, False] if r % 2 == 0 else [False, True]):
                total, each = batch(stack, clients, together)
                (concurrent_totals if together else sequential_totals).append(total)
                (concurrent_each if together else sequential_each).extend(each)
                log(f"round {r + 1}/{rounds} {'concurrent' if together else 'sequential'}: {total:.2f} s "
                    f"for {clients} pulls (slowest pull {max(each):.2f} s)")
        problems = proxy_problems(stack, since)
        settings = stack.settings()
    ratio = median(c / s for c, s in zip(concurrent_totals, sequential_totals))
    return {
        "benchmark": "concurrency",
        "clients": clients,
        "image": f"{layers} layers x {layer_mib} MiB (random)",
        "rounds": rounds,
        "concurrent total seconds": round(median(concurrent_totals), 3),
        "sequential total seconds": round(median(sequential_totals), 3),
        "ratio concurrent/sequential": round(ratio, 3),
        "single pull seconds, alone (median)": round(median(sequential_each), 3),
        "single pull seconds, among 16 (median / max)": [round(median(concurrent_each), 3),
                                                           round(max(concurrent_each), 3)],
        "failed pulls": 0,  # a failed pull raises and stops the benchmark
        "proxy log": problems,
        "goal": "no errors; report the ratio",
        "goal holds": problems["5xx responses"] == 0 and problems["error log lines"] == 0,
        "settings": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--layer-mib", type=int, default=2)
    args = parser.parse_args()
    result = {"machine": machine(), "versions": versions()}
    result.update(measure(args.clients, args.rounds, args.layers, args.layer_mib))
    log(f"{args.clients} at once: {result['concurrent total seconds']:.2f} s; one client x{args.clients}: "
        f"{result['sequential total seconds']:.2f} s; "
        f"ratio {fmt_ratio(result['ratio concurrent/sequential'])}; proxy log: {result['proxy log']}")
    log(f"goal ({result['goal']}): {'holds' if result['goal holds'] else 'does NOT hold'}")
    write_result("concurrency", result)


if __name__ == "__main__":
    main()
