"""Authentication cost: manifest HEAD requests/s through our proxy with basic auth at several
bcrypt costs versus the same proxy with auth off; a 10-layer pull with and without auth; and
the bcrypt figures behind the default cost and password length.

    .venv/bin/python bench/auth_cost.py [--seconds 6] [--rounds 3] [--costs 4,5,6,8,10,12]

Load: ApacheBench (``ab`` from apache2-utils), HEAD (``-i``), keep-alive (``-k``), 8 concurrent
connections. wrk 4.1 cannot do HEAD (it waits for a body after a Content-Length), ab can, and
ab is C with a small CPU footprint next to the proxy on this 2-core machine. ab takes the
Authorization header on its command line: the password is a one-off of the throwaway bench
stack, torn down at the end, and is never printed.

Every measurement with auth is paired with one of the auth-off proxy right before or after it
(order alternating), and ratios are medians of those pairs. The cost is switched by replacing
the proxy's htpasswd file (nginx reads it on every request, so no reload is involved).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # Deprecated since 3.11, but the only binding of libxcrypt, the library nginx itself calls.
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

import bcrypt
from common import (
    MiB,
    BenchStack,
    fmt_ratio,
    log,
    machine,
    median,
    versions,
    write_result,
)

from components.render.htpasswd import bcrypt_salt, render_htpasswd
from components.settings import DEFAULT_BCRYPT_ROUNDS
from tests.support.oci import write_image

ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
)
CONCURRENCY = 8
ALNUM = 62


def ab(url: str, seconds: float, authorization: str | None) -> dict:
    """requests/s of HEAD ``url`` for ``seconds`` with keep-alive; fails on any error."""
    args = ["ab", "-q", "-i", "-k", "-c", str(CONCURRENCY), "-t", str(seconds), "-n", "10000000", "-s", "60",
            "-H", f"Accept: {ACCEPT}"]
    if authorization:
        args += ["-H", f"Authorization: {authorization}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 120)
    text = out.stdout

    def number(label: str, default: float | None = None) -> float:
        match = re.search(rf"^{label}:\s+([\d.]+)", text, re.MULTILINE)
        if match is None:
            if default is not None:
                return default
            # stderr of ab names the URL and the failure; never the header values.
            raise RuntimeError(f"ab gave no '{label}' for {url}: {out.stderr.strip()[-500:]}")
        return float(match.group(1))

    complete = number("Complete requests")
    failed = number("Failed requests", 0)
    non_2xx = number("Non-2xx responses", 0)
    if failed or non_2xx or complete == 0:
        raise RuntimeError(f"{url}: {int(failed)} failed, {int(non_2xx)} non-2xx of {int(complete)} requests")
    return {"rps": number("Requests per second"), "requests": int(complete)}


def htpasswd_at(stack: BenchStack, rounds: int) -> str:
    salt = bcrypt_salt("YmVuY2gtc2FsdC0xNi1ieXRlcw==")  # 16 fixed bytes: only the cost varies
    return render_htpasswd({stack.user: (stack.password, salt)}, rounds)


def head_benchmark(stack: BenchStack, costs: list[int], seconds: float, rounds: int, path: str) -> dict:
    authorization = stack.basic_auth_header()

    def load(name: str, with_auth: bool) -> tuple[float, float]:
        """(requests/s, CPU ms per request of client + docker-proxy + nginx + registry)."""
        variant = stack.variants[name]
        with stack.cpu_meter(variant) as meter:
            figures = ab(stack.url(variant, path), seconds, authorization if with_auth else None)
        return figures["rps"], 1000 * meter.seconds["total"] / figures["requests"]

    def pair(name: str, first_with_auth: bool) -> tuple[tuple[float, float], tuple[float, float]]:
        # Alternate which of the pair goes first, so drift does not favour one side.
        if first_with_auth:
            on = load(name, True)
            return on, load("authoff", False)
        off = load("authoff", False)
        return load(name, True), off

    labels = {"tutorial": "tutorial (apr1-MD5, 1 worker)",
              "native": f"registry's own htpasswd (bcrypt {DEFAULT_BCRYPT_ROUNDS})"}
    keys = [f"bcrypt {c}" for c in costs] + [labels[n] for n in labels if n in stack.variants]
    series: dict[str, dict[str, list[float]]] = {
        k: {"auth": [], "off": [], "ratio": [], "cpu auth": [], "cpu off": []} for k in keys}

    def record(key: str, on: tuple[float, float], off: tuple[float, float], r: int) -> None:
        figures = series[key]
        figures["auth"].append(on[0])
        figures["off"].append(off[0])
        figures["ratio"].append(on[0] / off[0])
        figures["cpu auth"].append(on[1])
        figures["cpu off"].append(off[1])
        log(f"round {r + 1}/{rounds} {key:38s} {on[0]:8.1f} req/s  auth off {off[0]:8.1f} req/s"
            f"  {fmt_ratio(on[0] / off[0])}   CPU/request {on[1]:.2f} ms vs {off[1]:.2f} ms")

    for r in range(rounds):
        order = costs if r % 2 == 0 else list(reversed(costs))
        for i, cost in enumerate(order):
            stack.set_htpasswd(htpasswd_at(stack, cost))
            time.sleep(0.2)
            on, off = pair("ours", (r + i) % 2 == 0)
            record(f"bcrypt {cost}", on, off, r)
        for j, name in enumerate(n for n in labels if n in stack.variants):
            on, off = pair(name, (r + j) % 2 == 1)
            record(labels[name], on, off, r)
    stack.set_htpasswd(stack.htpasswd)

    def summary(figures: dict) -> dict:
        return {
            "req/s with auth": round(median(figures["auth"]), 1),
            "req/s auth off": round(median(figures["off"]), 1),
            "ratio": round(median(figures["ratio"]), 3),
            "spread": [round(min(figures["ratio"]), 3), round(max(figures["ratio"]), 3)],
            "ratios": [round(x, 3) for x in figures["ratio"]],
            "req/s auth off, per round": [round(x, 1) for x in figures["off"]],
            "CPU ms/request with auth, per round": [round(x, 3) for x in figures["cpu auth"]],
            "CPU ms/request auth off, per round": [round(x, 3) for x in figures["cpu off"]],
            "CPU ms/request with auth": round(median(figures["cpu auth"]), 3),
            "CPU ms/request auth off": round(median(figures["cpu off"]), 3),
            # The ratio a machine busy with nothing else would show: CPU per request, off / on.
            "CPU-bound ratio": round(median(figures["cpu off"]) / median(figures["cpu auth"]), 3),
        }

    return {key: summary(figures) for key, figures in series.items()}


def pull_benchmark(stack: BenchStack, rounds: int, layers: int, layer_mib: int) -> dict:
    """skopeo copy of a ``layers``-layer image through the proxy (default cost) vs auth off."""
    layout = Path(tempfile.mkdtemp(prefix="ten-", dir=stack.workdir))
    write_image(layout, "v1", [layer_mib * MiB] * layers, seed=f"{stack.tag}-ten")
    stack.push(layout, "v1", stack.variants["ours"], "bench/ten")
    times: dict[str, list[float]] = {"ours": [], "authoff": []}
    for r in range(rounds * 2):
        for name in (["ours", "authoff"] if r % 2 == 0 else ["authoff", "ours"]):
            times[name].append(stack.pull(stack.variants[name], "bench/ten", "v1"))
    ratio = median(off / on for on, off in zip(times["ours"], times["authoff"]))
    log(f"{layers}-layer pull: with auth {median(times['ours']):.3f} s, auth off {median(times['authoff']):.3f} s"
        f"  throughput ratio {fmt_ratio(ratio)}")
    return {
        "layers": layers,
        "layer MiB": layer_mib,
        "client": "skopeo copy docker:// -> dir: (new TLS connection per request)",
        "seconds with auth": round(median(times["ours"]), 3),
        "seconds auth off": round(median(times["authoff"]), 3),
        "ratio (auth off time / auth time)": round(ratio, 3),
        "repetitions": rounds * 2,
    }


def hash_rates(costs: list[int], trials: int = 5, trial_seconds: float = 0.3) -> dict:
    """Hashes per second on one core: libxcrypt (what nginx runs per request) and the Python
    bcrypt package (an attacker's CPU implementation). The best of a few short trials: other
    jobs on the machine can only slow a trial down, and an attacker's machine is not shared."""
    password = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    rates = {}
    for cost in costs:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost, prefix=b"2b")).decode()
        rates[cost] = {}
        for name, check in (
            ("bcrypt package", lambda: bcrypt.checkpw(password.encode(), hashed.encode())),
            ("libxcrypt (nginx)", lambda: crypt.crypt(password, hashed)),
        ):
            best = 0.0
            for _ in range(trials):
                n, start = 0, time.perf_counter()
                while True:
                    check()
                    n += 1
                    elapsed = time.perf_counter() - start
                    if elapsed > trial_seconds and n >= 2:
                        break
                best = max(best, n / elapsed)
            rates[cost][name] = best
        log(f"bcrypt cost {cost:2d}: {rates[cost]['bcrypt package']:9.1f} hashes/s/core (bcrypt package), "
            f"{1000 / rates[cost]['libxcrypt (nginx)']:8.2f} ms per check (libxcrypt, as nginx)")
    return rates


def years(guesses: float, rate: float) -> float:
    return guesses / rate / (365.25 * 24 * 3600)


def attacker_table(rates: dict, lengths=(16, 32)) -> dict:
    """Time to try the whole keyspace of random alphanumeric passwords, one core, at each cost."""
    table = {}
    for cost, figures in rates.items():
        rate = figures["bcrypt package"]
        table[f"bcrypt {cost}"] = {
            "hashes/s per core": round(rate, 1),
            "ms per check (nginx, libxcrypt)": round(1000 / figures["libxcrypt (nginx)"], 3),
            **{f"years per core, {n} alnum chars": f"{years(float(ALNUM) ** n, rate):.2e}" for n in lengths},
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--costs", default="4,5,6,8,10,12")
    parser.add_argument("--pull-layers", type=int, default=10)
    parser.add_argument("--pull-layer-mib", type=int, default=1)
    args = parser.parse_args()
    costs = [int(c) for c in args.costs.split(",")]
    if DEFAULT_BCRYPT_ROUNDS not in costs:
        costs.append(DEFAULT_BCRYPT_ROUNDS)
    result: dict = {"benchmark": "auth_cost", "machine": machine(), "versions": versions()}
    with BenchStack(variants_wanted=("ours", "direct", "authoff", "tutorial", "native")) as stack:
        layout = Path(tempfile.mkdtemp(prefix="small-", dir=stack.workdir))
        write_image(layout, "v1", [4096], seed=f"{stack.tag}-small")
        for name in ("ours", "native"):
            stack.push(layout, "v1", stack.variants[name], "bench/small")
        path = "/v2/bench/small/manifests/v1"
        result["load"] = (f"ab -i (HEAD) -k (keep-alive) -c {CONCURRENCY}, {args.seconds:g} s per measurement, "
                          f"{args.rounds} rounds, paired with auth off")
        result["head"] = head_benchmark(stack, sorted(costs), args.seconds, args.rounds, path)
        result["pull"] = pull_benchmark(stack, args.rounds, args.pull_layers, args.pull_layer_mib)
        result["settings"] = stack.settings()
    result["hash rates"] = attacker_table(hash_rates(sorted(costs)))
    default = result["head"][f"bcrypt {DEFAULT_BCRYPT_ROUNDS}"]["ratio"]
    result["default cost"] = DEFAULT_BCRYPT_ROUNDS
    result["goal"] = "authenticated HEAD req/s >= 0.5x auth off at the default bcrypt cost"
    result["goal holds"] = default >= 0.5
    for name, figures in result["head"].items():
        log(f"{name:40s} {figures['req/s with auth']:8.1f} req/s vs {figures['req/s auth off']:8.1f}"
            f"  {fmt_ratio(figures['ratio'])} [{fmt_ratio(figures['spread'][0])}-{fmt_ratio(figures['spread'][1])}]"
            f"  CPU/request {figures['CPU ms/request with auth']:.2f} vs {figures['CPU ms/request auth off']:.2f} ms"
            f"  (CPU-bound {fmt_ratio(figures['CPU-bound ratio'])})")
    log(f"goal ({result['goal']}): {'holds' if result['goal holds'] else 'does NOT hold'} ({fmt_ratio(default)})")
    write_result("auth_cost", result)


if __name__ == "__main__":
    main()
