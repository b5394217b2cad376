"""Run every benchmark, each in its own process, then write bench/results/results.md and
bench/results/chart.png from their JSON results.

    .venv/bin/python bench/run_all.py             # all benchmarks, then the report
    .venv/bin/python bench/run_all.py --report    # only rebuild the report from results/*.json
    .venv/bin/python bench/run_all.py --quick     # short settings, to check the scripts work

``--quick`` (what .ci/run runs) also runs bench/deletion/run.py with 10 tags, and keeps no
figures: results go to a scratch folder (``BENCH_RESULTS_DIR``), removed afterwards; the
report is built from them there, so that step is checked too.

Not part of the test suite: figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ORDER = ["throughput", "auth_cost", "program_eval", "concurrency", "auth_token", "registry_gc"]
QUICK = {
    "throughput": ["--size-mib", "32", "--rounds", "1"],
    "auth_cost": ["--seconds", "2", "--rounds", "1", "--costs", "4,5,12"],
    "program_eval": ["--rounds", "1"],
    "concurrency": ["--rounds", "1", "--clients", "4"],
    "auth_token": ["--quick"],
    "registry_gc": ["--rounds", "1", "--seconds", "2"],
}


# The deletion benchmark (bench/deletion/README.md) in --quick: a few tags, one round, no JSON.
DELETION_QUICK = ["--tags", "10", "--rounds", "1"]


def _run(name: str, argv: list[str], env: dict) -> None:
    print(f"=== {name} ===", flush=True)
    start = time.monotonic()
    subprocess.run([sys.executable, *argv], check=True, env=env)
    print(f"=== {name}: {time.monotonic() - start:.0f} s ===", flush=True)


def run_benchmarks(quick: bool, results: Path) -> None:
    env = {**os.environ, "BENCH_RESULTS_DIR": str(results)}
    for name in ORDER:
        _run(name, [str(BENCH / f"{name}.py"), *(QUICK[name] if quick else [])], env)
    if quick:
        _run("deletion", [str(BENCH / "deletion" / "run.py"), *DELETION_QUICK], env)


def load(results: Path = RESULTS) -> dict:
    return {name: json.loads((results / f"{name}.json").read_text())
            for name in ORDER if (results / f"{name}.json").exists()}


def verdict(result: dict) -> str:
    return "**holds**" if result.get("goal holds") else "**does not hold**"


def markdown(results: dict) -> str:
    any_result = next(iter(results.values()))
    lines = ["# Benchmark results", "",
             "Written by `bench/run_all.py` from `bench/results/*.json`; see `bench/README.md` for method "
             "and settings. Ratios are measured side by side in one run (median of per-round ratios). "
             "\"CPU-bound\" ratios compare the CPU seconds spent by everything on the path (client, "
             "docker-proxy, nginx, registry) per unit of work: the ratio a machine doing nothing else "
             "would show, and much less sensitive to other load than wall-clock time.", "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in any_result["machine"].items()]
    versions: dict = {}
    for result in results.values():
        versions.update(result.get("versions", {}))
    lines += ["", "## Versions", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in versions.items()]
    settings = next((r["settings"] for r in results.values() if "settings" in r), {})
    lines += ["", "## Settings", "", "| | |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v)}` |" if isinstance(v, dict) else f"| {k} | {v} |" for k, v in settings.items()]

    if "throughput" in results:
        t = results["throughput"]
        lines += ["", f"## 1. Layer throughput ({t['layer MiB']} MiB random layer, {t['rounds']} rounds)", "",
                  f"Client: {t['client']}. Goal: {t['goal']}: {verdict(t)}.", "",
                  "| variant | push MiB/s | push vs direct | push CPU-bound | pull MiB/s | pull vs direct "
                  "| pull CPU-bound | push CPU s (by process) | pull CPU s (by process) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, v in t["variants"].items():
            lines.append(
                f"| {name} | {v['push MiB/s']} | {v['push vs direct']:.2f}x | {v['push CPU vs direct']:.2f}x "
                f"| {v['pull MiB/s']} | {v['pull vs direct']:.2f}x | {v['pull CPU vs direct']:.2f}x "
                f"| {fmt_cpu(v['push CPU seconds'])} | {fmt_cpu(v['pull CPU seconds'])} |")
    if "auth_cost" in results:
        a = results["auth_cost"]
        lines += ["", "## 2. Authentication cost", "", f"Load: {a['load']}. Default bcrypt cost: "
                  f"{a['default cost']}. Goal: {a['goal']}: {verdict(a)}.", "",
                  "| auth | req/s with auth | req/s auth off | ratio | CPU-bound ratio | CPU ms/request (on / off) |",
                  "|---|---|---|---|---|---|"]
        for name, v in a["head"].items():
            lines.append(f"| {name} | {v['req/s with auth']} | {v['req/s auth off']} | {v['ratio']:.2f}x "
                         f"| {v['CPU-bound ratio']:.2f}x | {v['CPU ms/request with auth']} / "
                         f"{v['CPU ms/request auth off']} |")
        p = a["pull"]
        lines += ["", f"{p['layers']}-layer image ({p['layer MiB']} MiB layers), {p['client']}: "
                  f"{p['seconds with auth']} s with auth vs {p['seconds auth off']} s auth off, "
                  f"ratio {p['ratio (auth off time / auth time)']:.2f}x ({p['repetitions']} repetitions).", "",
                  "Hash rates measured here (one core):", "",
                  "| cost | hashes/s per core (bcrypt package) | ms per check (libxcrypt, as nginx) "
                  "| years per core, 16 alnum chars | years per core, 32 alnum chars |", "|---|---|---|---|---|"]
        for name, v in a["hash rates"].items():
            lines.append(f"| {name} | {v['hashes/s per core']} | {v['ms per check (nginx, libxcrypt)']} "
                         f"| {v['years per core, 16 alnum chars']} | {v['years per core, 32 alnum chars']} |")
    if "program_eval" in results:
        e = results["program_eval"]
        lines += ["", f"## 3. Program evaluation ({e['rounds']} rounds, fresh process each)", "",
                  f"Config: {e['config']}. Deletion rules as resources: {e['deletion rules registered as resources']}."
                  f" Goal: {e['goal']}: {verdict(e)}.", "",
                  "| config | process s | run_program s | resources |", "|---|---|---|---|"]
        for name, v in e["runs"].items():
            lines.append(f"| {name} | {v['process seconds']} | {v['run_program seconds']} | {v['resources']} |")
        lines += ["", f"Extra time: {e['extra seconds (process)']} s per process "
                  f"({e['extra seconds (run_program)']} s inside run_program); ratio {e['ratio big/empty (process)']:.2f}x."]
    if "concurrency" in results:
        c = results["concurrency"]
        lines += ["", f"## 4. Concurrency ({c['clients']} clients, {c['image']}, {c['rounds']} rounds)", "",
                  f"Goal: {c['goal']}: {verdict(c)}.", "", "| | |", "|---|---|",
                  f"| {c['clients']} at once, total s | {c['concurrent total seconds']} |",
                  f"| one client x{c['clients']}, total s | {c['sequential total seconds']} |",
                  f"| ratio at once / one after another | {c['ratio concurrent/sequential']:.2f}x |",
                  f"| one pull alone, s (median) | {c['single pull seconds, alone (median)']} |",
                  f"| one pull among {c['clients']}, s (median / max) | "
                  f"{c['single pull seconds, among 16 (median / max)']} |",
                  f"| failed pulls | {c['failed pulls']} |",
                  f"| proxy log | {c['proxy log']} |"]
    if "auth_token" in results:
        lines += auth_token_markdown(results["auth_token"])
    if "registry_gc" in results:
        g = results["registry_gc"]
        lines += ["", "## 6. The registry's garbage collector per request (why the auth-off baseline moves)", "",
                  f"{g['settings']['load']}, {g['settings']['rounds']} rounds of {g['settings']['seconds']} s.", "",
                  "| registry, conditions | req/s [spread] | registry CPU ms/request [spread] | GC processor ms/request (gctrace) "
                  "| collections per 1000 requests | heap goal MB |", "|---|---|---|---|---|---|"]
        for name, v in g["results"].items():
            lines.append(f"| {name} | {v['req/s']} [{v['req/s spread'][0]}-{v['req/s spread'][1]}] "
                         f"| {v['registry CPU ms/request']} [{v['registry CPU ms/request spread'][0]}-"
                         f"{v['registry CPU ms/request spread'][1]}] | {v['GC CPU ms/request']} "
                         f"| {v['collections per 1000 requests']} | {v['heap goal MB']} |")
    return "\n".join(lines) + "\n"


def auth_token_markdown(t: dict) -> list[str]:
    """Section 5: token vs basic vs auth off, every ratio with its spread and CPU per unit."""
    lines = ["", "## 5. Token authentication vs basic auth vs auth off", "",
             f"Settings: `{json.dumps(t['settings'])}`." + (f" Token variant: {t['token']}." if "token" in t else ""),
             "", "| benchmark | variant | ratio (median) | spread | CPU ms per unit (variant / partner) "
             "| CPU-bound ratio | rates (variant / partner) |", "|---|---|---|---|---|---|---|"]
    for part, partner, unit in (("head", "auth off", "req/s"), ("pull", "auth off", "pulls/s"),
                                ("flood", "alone", "pulls/s")):
        for name, v in t.get(part, {}).items():
            with_ = "under flood" if part == "flood" else "with auth"
            lines.append(f"| {part} | {name} | {v['ratio']:.2f}x | {v['spread'][0]:.2f}-{v['spread'][1]:.2f}x "
                         f"| {v['CPU ms']['total']} / {v[f'CPU ms {partner}']['total']} | {v['CPU-bound ratio']:.2f}x "
                         f"| {v[f'{unit} {with_}']} / {v[f'{unit} {partner}']} |")
    for part in ("head across versions", "pull across versions"):
        if not t.get(part):
            continue
        lines += ["", f"{part.split()[0]}, each variant on one registry version against the same on the other "
                  "(same rounds):", "", "| variant, versions | ratio (median) | spread | CPU ms per unit (first / other) "
                  "| CPU-bound ratio |", "|---|---|---|---|---|"]
        for name, v in t[part].items():
            first, other = [k for k in v if k.startswith("CPU ms") and not k.endswith("per round")][:2]
            lines.append(f"| {name} | {v['ratio']:.2f}x | {v['spread'][0]:.2f}-{v['spread'][1]:.2f}x "
                         f"| {v[first]['total']} / {v[other]['total']} | {v['CPU-bound ratio']:.2f}x |")
    lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in t.get("goals", {}).items())]
    return lines


def fmt_cpu(by_role: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_role.items() if k != "total") + f" (total {by_role['total']})"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    if "throughput" in results:
        ax = axes[0][0]
        variants = list(results["throughput"]["variants"])
        data = results["throughput"]["variants"]
        width = 0.2
        for i, (key, label) in enumerate((("push vs direct", "push"), ("push CPU vs direct", "push, CPU-bound"),
                                          ("pull vs direct", "pull"), ("pull CPU vs direct", "pull, CPU-bound"))):
            ax.bar([x + (i - 1.5) * width for x in range(len(variants))], [data[v][key] for v in variants],
                   width, label=label)
        ax.axhline(0.9, color="red", linestyle="--", linewidth=1, label="goal 0.9x")
        ax.set_xticks(range(len(variants)), variants)
        ax.set_ylabel("throughput / direct")
        ax.set_ylim(0, 1.3)
        ax.set_title(f"1. {results['throughput']['layer MiB']} MiB layer: throughput vs direct")
        ax.legend(fontsize=8, loc="upper center", ncol=3)
    if "auth_cost" in results:
        ax = axes[0][1]
        head = results["auth_cost"]["head"]
        costs = [k for k in head if k.startswith("bcrypt ")]
        xs = [int(k.split()[1]) for k in costs]
        ax.plot(xs, [head[k]["ratio"] for k in costs], "o-", label="req/s ratio (wall clock)")
        ax.plot(xs, [head[k]["CPU-bound ratio"] for k in costs], "s--", label="CPU-bound ratio")
        ax.axhline(0.5, color="red", linestyle="--", linewidth=1, label="goal 0.5x")
        ax.axvline(results["auth_cost"]["default cost"], color="grey", linestyle=":", label="default cost")
        ax.set_yscale("log")
        ax.set_xlabel("bcrypt cost")
        ax.set_ylabel("authenticated / auth off (HEAD req/s)")
        ax.set_title("2. Basic auth cost, concurrency 8, keep-alive")
        ax.legend(fontsize=8)
    if "program_eval" in results:
        ax = axes[1][0]
        runs = results["program_eval"]["runs"]
        names = list(runs)
        ax.bar([x - 0.2 for x in range(len(names))], [runs[n]["process seconds"] for n in names], 0.4,
               label="whole process")
        ax.bar([x + 0.2 for x in range(len(names))], [runs[n]["run_program seconds"] for n in names], 0.4,
               label="run_program")
        ax.set_xticks(range(len(names)), [f"{n}\n({runs[n]['resources']} resources)" for n in names])
        ax.set_ylabel("seconds")
        ax.set_title("3. Program evaluation under mocks")
        ax.legend(fontsize=8)
    if "concurrency" in results:
        ax = axes[1][1]
        c = results["concurrency"]
        ax.bar([f"{c['clients']} at once", f"one client x{c['clients']}"],
               [c["concurrent total seconds"], c["sequential total seconds"]], color=["tab:green", "tab:blue"])
        ax.set_ylabel("seconds, total")
        ax.set_title(f"4. {c['clients']} pulls of a {c['image']} image "
                     f"({c['ratio concurrent/sequential']:.2f}x)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only rebuild results.md and chart.png")
    parser.add_argument("--quick", action="store_true", help="short settings, to check the scripts work")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="bench-quick-") if args.quick else None
    folder = Path(scratch.name) if scratch else RESULTS
    try:
        if not args.report:
            run_benchmarks(args.quick, folder)
        results = load(folder)
        if not results:
            sys.exit(f"no results in {folder}: run the benchmarks first")
        (folder / "results.md").write_text(markdown(results))
        chart(results, folder / "chart.png")
        print(f"wrote {folder / 'results.md'} and {folder / 'chart.png'}"
              + (" (scratch: --quick keeps no figures)" if scratch else ""))
        if scratch and len(results) != len(ORDER):
            sys.exit(f"--quick: only {sorted(results)} of {ORDER} wrote a result")
    finally:
        if scratch:
            scratch.cleanup()


if __name__ == "__main__":
    main()
