"""Layer throughput: push and pull of one big random layer through our proxy (to the registry on
its Unix socket, and the same config over TCP), directly to the registry, through the tutorial's
nginx config and to the registry serving TLS itself.

    .venv/bin/python bench/throughput.py [--size-mib 512] [--rounds 3] [--variants ours,ours-tcp,direct] [--name N]

Every push is a new random layer (a layer the registry already holds would not be sent again),
written to an OCI layout before the clock starts; each pull goes to a fresh ``dir:``. Variants
run in a rotated order every round; figures are medians over the rounds, and the ratios are
the medians of per-round ratios (variant throughput / direct throughput in the same round).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import MiB, BenchStack, fmt_ratio, log, machine, median, rotated, versions, write_result

from tests.support.oci import write_image

VARIANTS = ["ours", "ours-tcp", "direct", "tutorial", "native"]


def measure(size_mib: int, rounds: int, variants: list[str] = VARIANTS) -> dict:
    size = size_mib * MiB
    push: dict[str, list[float]] = {v: [] for v in variants}
    pull: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, dict[str, list[dict]]] = {v: {"push": [], "pull": []} for v in variants}
    with BenchStack(variants_wanted=tuple(variants)) as stack:
        layouts = Path(tempfile.mkdtemp(prefix="layouts-", dir=stack.workdir))
        for r in range(rounds):
            for name in rotated(variants, r):
                variant = stack.variants[name]
                layout = layouts / f"{name}-{r}"
                write_image(layout, "v1", [size], seed=f"{stack.tag}-{name}-{r}")
                repository = f"throughput/{name}-{r}"
                with stack.cpu_meter(variant) as meter:
                    push[name].append(stack.push(layout, "v1", variant, repository))
                cpu[name]["push"].append(meter.seconds)
                shutil.rmtree(layout)
                with stack.cpu_meter(variant) as meter:
                    pull[name].append(stack.pull(variant, repository, "v1"))
                cpu[name]["pull"].append(meter.seconds)
                log(f"round {r + 1}/{rounds} {name:9s} push {size_mib / push[name][-1]:7.1f} MiB/s"
                    f"   pull {size_mib / pull[name][-1]:7.1f} MiB/s")
        settings = stack.settings()
    result: dict = {"benchmark": "throughput", "layer MiB": size_mib, "rounds": rounds,
                    "client": "skopeo copy oci: -> docker:// (push), docker:// -> dir: (pull)", "variants": {}}
    for name in variants:
        result["variants"][name] = {
            "push MiB/s": round(size_mib / median(push[name]), 1),
            "pull MiB/s": round(size_mib / median(pull[name]), 1),
            "push seconds": [round(t, 3) for t in push[name]],
            "pull seconds": [round(t, 3) for t in pull[name]],
            # Same-round ratios cancel most of the machine's drift between rounds.
            "push vs direct": round(median(d / t for d, t in zip(push["direct"], push[name])), 3),
            "pull vs direct": round(median(d / t for d, t in zip(pull["direct"], pull[name])), 3),
        }
        for op in ("push", "pull"):
            by_role = {role: round(median(m[role] for m in cpu[name][op]), 2) for role in cpu[name][op][0]}
            result["variants"][name][f"{op} CPU seconds"] = by_role
        for op in ("push", "pull"):
            # What the ratio would be if the machine were CPU-bound on this work alone: CPU spent
            # per layer by everything on the path (client, docker-proxy, nginx, registry).
            direct_cpu = median(m["total"] for m in cpu["direct"][op])
            result["variants"][name][f"{op} CPU vs direct"] = round(
                direct_cpu / median(m["total"] for m in cpu[name][op]), 3)
    ours = result["variants"]["ours"]
    if "ours-tcp" in result["variants"]:
        tcp = result["variants"]["ours-tcp"]
        # Same round, same nginx.conf: what the socket gains over a TCP hop to the registry.
        times = {"push": push, "pull": pull}
        result["socket vs tcp"] = {
            op: round(median(t / u for t, u in zip(times[op]["ours-tcp"], times[op]["ours"])), 3)
            for op in ("push", "pull")
        }
        log(f"socket vs TCP (same config, same rounds): push {fmt_ratio(result['socket vs tcp']['push'])}, "
            f"pull {fmt_ratio(result['socket vs tcp']['pull'])}; tcp push {tcp['push vs direct']}x direct")
    result["goal"] = "ours >= 0.9x direct for push and pull"
    result["goal holds"] = ours["push vs direct"] >= 0.9 and ours["pull vs direct"] >= 0.9
    result["settings"] = settings
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--name", default="throughput", help="result file name in bench/results/ (without .json)")
    args = parser.parse_args()
    result = {"machine": machine(), "versions": versions()}
    result.update(measure(args.size_mib, args.rounds, args.variants.split(",")))
    for name, figures in result["variants"].items():
        log(f"{name:9s} push {figures['push MiB/s']:7.1f} MiB/s ({fmt_ratio(figures['push vs direct'])} direct)"
            f"   pull {figures['pull MiB/s']:7.1f} MiB/s ({fmt_ratio(figures['pull vs direct'])} direct)")
    for name, figures in result["variants"].items():
        log(f"{name:9s} CPU per layer: push {figures['push CPU seconds']}  pull {figures['pull CPU seconds']}")
    log(f"goal ({result['goal']}): {'holds' if result['goal holds'] else 'does NOT hold'}")
    write_result(args.name, result)


if __name__ == "__main__":
    main()
