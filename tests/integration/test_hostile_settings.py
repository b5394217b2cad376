"""Hostile settings against the real programs: whatever a setting lets through is inert.

Each accepted configuration runs the whole program under the engine-like mocks; then its
files are used by the software that reads them: the rendered nginx.conf by real nginx
(``nginx -t``, and serving: every htpasswd user logs in, a wrong password does not), the
server certificate by ``openssl verify``, the trust scripts by ``sh`` in a scratch root (they
run nothing of the value's, write where they should, and removal leaves nothing), hosts.toml by
``tomllib``, ``loginCommand`` by ``sh`` with stand-in ``pulumi`` and ``docker`` that record what
they get. The canary file a value's ``$(...)``, backticks or ``|`` would create never appears.
"""

from __future__ import annotations

import base64
import json
import shlex
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, assume, given, settings as hypothesis_settings, strategies as st

from components import grammar
from components.settings import SettingsError, parse_settings
from tests.support import hostile
from tests.support.hostile import CANARY, FRAGMENTS, PASSWORD, corpus, locations, nginx_directives, server_names
from tests.support.program import run_program
from tests.support.waiting import listening, wait_for

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

KINDS = ["docker", "containerd", "podman"]
SECRET_KEYS = ["users", "caPrivateKeyPem", "trust"]
BASELINE_NAMES = ["baseline.example", "10.9.9.9"]


def local_config(**more) -> dict:
    """A local stack (local engine, one local trust target) with ``more`` on top."""
    # Basic mode: nginx itself checks every htpasswd user (token mode: tests/integration/test_token_*.py).
    return {"hosts": [BASELINE_NAMES[0]], "ips": [BASELINE_NAMES[1]], "httpsPort": 5443,
            "trust": [{"name": "here", "kinds": KINDS}], "auth": {"mode": "basic"}, **more}


def _proxy_uploads(run) -> dict[str, str]:
    for resource in run.monitor.by_type("docker:index/container:Container"):
        files = {u["file"]: u["content"] for u in resource.plain_inputs.get("uploads") or []}
        if any(path.endswith("nginx.conf") for path in files):
            return files
    raise AssertionError("no container uploads an nginx.conf")


def _normalized(conf: str) -> list:
    """The directives with server_name's words and the published port (``$host:PORT``, the Host
    the registry sees) left out: what the names must not change."""
    conf = re.sub(r"\$host:\d+", "$host", conf)
    return [(blocks, words[:1] if words[:1] == ("server_name",) else words) for blocks, words in nginx_directives(conf)]


class Baseline:
    """The nginx.conf rendered for plain names: what every hostile run must equal, names aside."""

    def __init__(self):
        run = run_program(local_config(users={"alice": PASSWORD}), secret_keys=SECRET_KEYS)
        self.conf = next(c for p, c in _proxy_uploads(run).items() if p.endswith("nginx.conf"))
        assert BASELINE_NAMES in server_names(self.conf), server_names(self.conf)

    def expected_server_names(self, names: list[str]) -> list[list[str]]:
        return [names if found == BASELINE_NAMES else found for found in server_names(self.conf)]


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return Baseline()


def _clean_canary():
    CANARY.unlink(missing_ok=True)


def _spawn_nginx(root: Path, conf_path: Path, port: int) -> subprocess.Popen:
    log = (root / "nginx.log").open("wb")
    process = subprocess.Popen(["nginx", "-p", str(root), "-c", str(conf_path), "-e", "stderr", "-g", "daemon off;"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), timeout=10, interval=0.05, what="nginx listening", process=process,
                 log=root / "nginx.log")
    except TimeoutError:
        process.kill()
        raise
    return process


def _basic(user: str, password: str) -> dict:
    # As Docker sends it: UTF-8, base64 (requests' own auth would encode Latin-1 only).
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _status(session: requests.Session, url: str, user: str, password: str) -> int:
    """The status of an authenticated GET; a rate limit's 429/503 is waited out, not counted."""
    for _ in range(50):
        response = session.get(url, headers=_basic(user, password), verify=False, timeout=10)
        if response.status_code not in (429, 503):
            return response.status_code
        time.sleep(0.2)
    return response.status_code


def _lay_out(root: Path, files: dict[str, str]) -> None:
    """The proxy's uploaded files under ``root`` (readable by nginx's workers), and the folders
    nginx writes to."""
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(0o644)
    for folder in ("tmp", "run", "var"):
        (root / folder).mkdir(exist_ok=True)


def check_nginx(run, settings, baseline: Baseline, root: Path) -> None:
    """nginx -t passes; server_name holds exactly the configured names; everything else as the
    baseline; the certificate verifies; every user logs in through real nginx, a wrong password not."""
    files = _proxy_uploads(run)
    conf_text = next(c for p, c in files.items() if p.endswith("nginx.conf"))
    # nginx compares $host, which keeps an IPv6 literal's brackets: so does server_name.
    assert server_names(conf_text) == baseline.expected_server_names(
        [grammar.url_host(name) for name in settings.hosts + settings.ips])
    assert locations(conf_text) == locations(baseline.conf)
    assert _normalized(conf_text) == _normalized(baseline.conf)
    _lay_out(root, files)
    closed = hostile.free_port()  # nothing listens: an authenticated request ends in 502, not 401
    conf, ports = hostile.localize_nginx_conf(conf_text, root, f"127.0.0.1:{closed}")
    conf_path = root / "nginx-local.conf"
    conf_path.write_text(conf)
    result = subprocess.run(["nginx", "-t", "-p", str(root), "-c", str(conf_path), "-e", "stderr"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    ca = root / "ca.pem"
    ca.write_text(run.exports["caCertificatePem"])
    server_cert = next(root / p.lstrip("/") for p in files if p.endswith(".crt"))
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(server_cert)], capture_output=True,
                              text=True, timeout=30)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    https_port = next(port for address, port in ports.items() if address.split(":")[-1] == "443")
    process = _spawn_nginx(root, conf_path, https_port)
    try:
        url = f"https://127.0.0.1:{https_port}/v2/"
        with requests.Session() as session:  # one TLS connection for all the requests
            for user, password in run.exports["passwords"].items():
                assert _status(session, url, user, password) == 502, user
                # Differ in the first byte: bcrypt reads only the first 72, so an appended
                # character would not make a 72-byte password wrong.
                wrong = ("y" if password[:1] != "y" else "z") + password[1:]
                assert _status(session, url, user, wrong) == 401, user
    finally:
        process.terminate()
        process.wait(timeout=10)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def check_trust_scripts(run, settings, root: Path) -> None:
    """The local trust target's scripts under sh: files where clients read them, hosts.toml as a
    table, nothing executed; removal leaves the scratch root as it was."""
    (command,) = run.monitor.by_type("command:local:Command")
    address, ca_pem = settings.address, run.exports["caCertificatePem"]
    env = {"TRUST_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    before = _tree(root)
    install = subprocess.run(["sh", "-c", command.plain_inputs["create"]], env=env, capture_output=True,
                             text=True, timeout=30)
    assert install.returncode == 0, install.stderr
    assert install.stdout.splitlines()[-1] == f"trusted {address} for: {', '.join(KINDS)}"
    for folder in ("docker", "containers", "containerd"):
        assert (root / "etc" / folder / "certs.d" / address / "ca.crt").read_text().strip() == ca_pem.strip()
    toml = tomllib.loads((root / "etc/containerd/certs.d" / address / "hosts.toml").read_text())
    assert toml == {"server": f"https://{address}", "capabilities": ["pull", "resolve", "push"],
                    "ca": f"/etc/containerd/certs.d/{address}/ca.crt", "host": {}}
    remove = subprocess.run(["sh", "-c", command.plain_inputs["delete"]], env=env, capture_output=True,
                            text=True, timeout=30)
    assert remove.returncode == 0, remove.stderr
    assert _tree(root) == before
    assert not CANARY.exists()


def check_login_command(run, settings, root: Path) -> None:
    """loginCommand under sh runs exactly `docker login ADDRESS --username USER --password-stdin`
    with the first user's password on stdin."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (root / "passwords.json").write_text(json.dumps(run.exports["passwords"]))
    (bin_dir / "pulumi").write_text(f'#!/bin/sh\ncat {root}/passwords.json\n')
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > {root}/argv\ncat > {root}/stdin\n")
    for tool in ("pulumi", "docker"):
        (bin_dir / tool).chmod(0o755)
    result = subprocess.run(["sh", "-c", run.exports["loginCommand"]], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    user = settings.user_names[0]
    argv = (root / "argv").read_bytes().decode().split("\0")[:-1]
    assert argv == ["login", settings.address, "--username", user, "--password-stdin"]
    assert (root / "stdin").read_bytes().decode() == run.exports["passwords"][user] + "\n"
    assert not CANARY.exists()


def check_everything(config: dict, baseline: Baseline) -> None:
    settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS))
    _clean_canary()
    run = run_program(config, secret_keys=SECRET_KEYS)
    root = Path(tempfile.mkdtemp(prefix="hostile-settings-", dir="/tmp"))
    root.chmod(0o755)
    try:
        for name, check in (("nginx", check_nginx), ("trust", check_trust_scripts), ("login", check_login_command)):
            scratch = root / name
            scratch.mkdir()
            scratch.chmod(0o755)
            if check is check_nginx:
                check(run, settings, baseline, scratch)
            else:
                check(run, settings, scratch)
        assert not CANARY.exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _clean_canary()


# --- the corpus values the settings accept, through every sink ----------------------------------

ACCEPTED: dict[str, list[str]] = {}
for _case in corpus():
    try:
        parse_settings(_case.config(), stack="dev", secret_keys=set(SECRET_KEYS))
    except SettingsError:
        continue
    ACCEPTED.setdefault(_case.target.path, []).append(_case.value)


def test_accepted_hostile_passwords_and_user_names_are_inert(baseline):
    """Every hostile password and user name the settings accept, in one stack: each user logs in
    through real nginx with exactly that password; scripts and loginCommand run nothing of them."""
    users = {f"u{i}": password for i, password in enumerate(ACCEPTED["users.alice"])}
    users.update({name: PASSWORD for name in ACCEPTED["users"]})
    assert len(users) == len(ACCEPTED["users.alice"]) + len(ACCEPTED["users"]) > 40
    check_everything(local_config(users=users), baseline)


@pytest.mark.parametrize("default_user", ACCEPTED["defaultUser"])
def test_accepted_default_user_names_are_inert(baseline, default_user):
    """A hostile default user name the settings accept gets a generated password that logs in."""
    check_everything(local_config(defaultUser=default_user), baseline)


def test_accepted_free_text_reaches_its_sink_unchanged():
    """sshOpts (docker provider argv), keepPatterns and repository globs (retention inputs) and
    organization (certificate subject) arrive exactly as configured: data, never code."""
    ssh_opts = ACCEPTED["docker.sshOpts[0]"]
    patterns = ACCEPTED["maintenance.retention[0].keepPatterns[0]"]
    globs = ACCEPTED["maintenance.retention[0].repositories"]
    organization = next(o for o in ACCEPTED["certificate.organization"] if "location" in o)
    config = local_config(
        docker={"host": "ssh://deploy@docker.example.com", "sshOpts": ssh_opts},
        maintenance={"retention": [{"repositories": "team/*", "keepPatterns": patterns}]
                     + [{"repositories": glob, "keepLast": 1} for glob in globs],
                     "gc": {"enabled": False}},
        certificate={"organization": organization},
    )
    parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS))
    run = run_program(config, secret_keys=SECRET_KEYS)
    provider = run.monitor.one("pulumi:providers:docker")
    assert json.loads(provider.plain_inputs["sshOpts"]) == ssh_opts
    rules = sorted((r.plain_inputs for r in run.monitor.registered if r.type.endswith("RetentionPolicy")),
                   key=lambda p: p["repositories"])
    assert [r["keepPatterns"] for r in rules if r["repositories"] == "team/*"] == [patterns]
    assert sorted(r["repositories"] for r in rules) == sorted(["team/*", *globs])
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate(run.exports["caCertificatePem"].encode())
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == organization


def test_brought_ca_with_white_space_around_is_inert(baseline):
    """A brought CA with white space around its PEM is taken as the certificate alone."""
    (pem, *_) = ACCEPTED["caCertificatePem"]
    check_everything(local_config(users={"alice": PASSWORD}, caCertificatePem=pem, caPrivateKeyPem=hostile.CA_KEY),
                     baseline)


# --- random hostile configurations (Hypothesis) --------------------------------------------------

_fragment = st.sampled_from(list(FRAGMENTS.values()))
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_host = st.lists(_label, min_size=1, max_size=3).map(".".join).filter(grammar.is_dns_name)
_ip = st.ip_addresses().map(str)
_user = st.from_regex(grammar.USER_NAME_RE, fullmatch=True)


def _spoiled(valid):
    return st.builds(lambda v, f, at_end: v + f if at_end else f + v, valid, _fragment, st.booleans())


# Printable Unicode of at most 72 UTF-8 bytes: quotes, '$', '`', '#', ';', look-alikes, emoji.
_password = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=16, max_size=18)
_clean = {
    "hosts": st.lists(_host, max_size=3, unique=True),
    "ips": st.lists(_ip, min_size=1, max_size=2, unique=True),
    "users": st.dictionaries(_user, _password, min_size=1, max_size=3),
    "httpsPort": st.integers(1, 65535),
}


@hypothesis_settings(max_examples=8, derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=st.fixed_dictionaries(_clean))
def test_random_valid_stacks_are_inert_in_every_sink(baseline, raw):
    """Random valid names, IPv4 and IPv6 addresses, user names of the grammar and printable
    Unicode passwords (quotes, '$', '`', '#', look-alikes): accepted, and every sink inert."""
    check_everything(local_config(**raw), baseline)


@hypothesis_settings(max_examples=40, derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["hosts", "ips", "users"]), raw=st.fixed_dictionaries(_clean), data=st.data())
def test_random_spoiled_stacks_are_refused_naming_the_setting(baseline, key, raw, data):
    """The same stacks with one name, address or user name spoiled by a hostile fragment: a
    settings error naming that setting; never a traceback."""
    if key == "users":
        name = data.draw(_spoiled(_user))
        assume(not grammar.is_user_name(name))  # '@' after a name is still a name
        raw["users"] = {name: PASSWORD}
    else:
        raw[key] = [data.draw(_spoiled(_host if key == "hosts" else _ip))]
    with pytest.raises(SettingsError) as caught:
        parse_settings(local_config(**raw), stack="dev", secret_keys=set(SECRET_KEYS))
    assert f"private-registry:{key}" in str(caught.value), str(caught.value)


# --- controls: the checks see an injection, and the sinks that escape do so on their own ---------


def test_the_nginx_check_sees_a_name_that_injects_a_location(baseline):
    """Control for the nginx checks: a server_name line carrying '; location ... #' (what a
    name would do if it slipped past validation) changes the tokens and the locations seen."""
    (names,) = [n for n in server_names(baseline.conf) if n == BASELINE_NAMES]
    injected = baseline.conf.replace(
        "server_name " + " ".join(names) + ";",
        "server_name a.example; location ~ /v2/_catalog { return 200; } #;",
    )
    assert injected != baseline.conf
    assert server_names(injected) != baseline.expected_server_names(["a.example"]) or \
        locations(injected) != locations(baseline.conf)
    assert "~ /v2/_catalog" in locations(injected)


def test_login_command_quotes_even_an_address_that_skipped_validation(monkeypatch, tmp_path):
    """With host-name validation switched off (in settings and in the nginx renderer's own check),
    a name holding `$(...)` and ';' still reaches `docker login` as one argument and runs
    nothing: loginCommand quotes it itself."""
    import components.render.nginx as nginx_module
    import components.settings as settings_module

    monkeypatch.setattr(settings_module, "_check_dns_name", lambda name: name)
    monkeypatch.setattr(nginx_module, "is_dns_name", lambda name: True)
    host = f"e;$(touch {CANARY})"
    config = {"hosts": [host], "ips": ["10.0.0.5"], "users": {"alice": PASSWORD}}
    settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS))
    assert settings.address == host
    _clean_canary()
    run = run_program(config, secret_keys=SECRET_KEYS)
    check_login_command(run, settings, tmp_path)
    assert not CANARY.exists()


# --- IPv6 literals: real clients reach the registry by [::1] (issue 21) -------------------------


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)


def test_the_deployed_stack_is_reached_by_its_ipv6_literal_by_real_clients(tmp_path):
    """A stack whose only address is ::1 (no DNS name), published by the Docker engine on [::1]
    in token mode, with the program's trust script for Docker run on this host: curl gets the
    Bearer challenge for the realm https://[::1]:PORT/token (not 421) and a token from it,
    verifying the certificate's IP subjectAltName ::1; crane pushes an image to
    [::1]:PORT/team/v6:1, regctl and oras pull it back (content checked), containerd's ctr
    fetches it through a hosts dir [::1]:PORT/hosts.toml as the trust script writes it; the
    Docker engine, trusting the CA only through /etc/docker/certs.d/[::1]:PORT/ca.crt, logs in
    at loginCommand's address; the trust script's removal takes that folder away again."""
    from cryptography import x509

    from tests.support.clients import CraneClient, CtrClient, DockerClient, Identity, OrasClient, RegctlClient
    from tests.support.deploy import docker_cli, live_stack

    alice = Identity("alice", "alice", PASSWORD)
    with live_stack(tmp_path, "v6", {"alice": PASSWORD}, hosts=[], ips=["::1"], bindAddress="::1",
                    trust=[{"name": "here", "kinds": ["docker"]}]) as live:
        address = f"[::1]:{live.port}"
        assert live.address == address
        cert = x509.load_pem_x509_certificate(
            next(u["content"] for u in live.deployment.container("proxy-container").plain_inputs["uploads"]
                 if u["file"].endswith(".crt")).encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["::1"]

        challenge = _curl("--cacert", str(live.ca_file), "-o", "/dev/null", "-D", "-", f"https://{address}/v2/")
        assert challenge.returncode == 0, challenge.stderr
        assert challenge.stdout.splitlines()[0].split()[1] == "401", challenge.stdout
        headers = dict(line.split(": ", 1) for line in challenge.stdout.replace("\r", "").splitlines()[1:] if ": " in line)
        assert {k.lower(): v for k, v in headers.items()}["www-authenticate"] == \
            f'Bearer realm="https://{address}/token",service="{address}"', challenge.stdout
        token = _curl("--cacert", str(live.ca_file), "-u", f"alice:{PASSWORD}", "-G", "--data-urlencode",
                      f"service={address}", f"https://{address}/token")
        assert token.returncode == 0 and json.loads(token.stdout)["token"], token.stderr

        home = tmp_path / "clients"
        crane = CraneClient(home, address, live.cert_dir)
        ref = crane.ref("team/v6", "1")
        assert ref == f"{address}/team/v6:1"
        assert crane.login(alice).ok and crane.build(ref, f"v6-{live.port}").ok
        digest = json.loads((crane._layout(ref) / "index.json").read_text())["manifests"][0]["digest"]
        pushed = crane.push(ref)
        assert pushed.ok, pushed.output
        for puller in (RegctlClient(home, address, live.cert_dir), OrasClient(home, address, live.cert_dir)):
            puller.markers[ref] = crane.markers[ref]
            logged_in = puller.login(alice)
            assert logged_in.ok, logged_in.output
            pulled = puller.pull(ref)
            assert pulled.ok, (puller.name, pulled.output)
            # The pulled manifest hashes to the pushed digest, and its layer holds the pushed marker.
            assert puller.content_digest(ref) == digest, puller.name
        # containerd's client, through a hosts dir laid out as the trust script lays it out.
        ctr = CtrClient(home, address, live.cert_dir)
        try:
            assert (ctr.hosts_dir / address / "hosts.toml").is_file()
            ctr.login(alice)
            fetched = ctr.pull(ref)
            assert fetched.ok, fetched.output
        finally:
            ctr.cleanup()

        install, remove = (live.run.monitor.one("command:local:Command").plain_inputs[k] for k in ("create", "delete"))
        trust_folder = Path("/etc/docker/certs.d") / address
        docker = DockerClient(home, address, live.cert_dir)
        try:
            subprocess.run(["sh", "-c", install], check=True, capture_output=True, timeout=60)
            assert (trust_folder / "ca.crt").read_text().strip() == live.ca_file.read_text().strip()
            assert shlex.split(live.run.exports["loginCommand"].rsplit("|", 1)[1])[2] == address
            logged_in = docker.login(alice)
            assert logged_in.ok, logged_in.output
        finally:
            docker.cleanup()
            subprocess.run(["sh", "-c", remove], capture_output=True, timeout=60)
            docker_cli("logout", address, check=False)
        assert not trust_folder.exists()


def test_the_rendered_nginx_conf_answers_ipv6_hosts_and_the_bare_name_would_not():
    """The program's nginx.conf for ips [::1] (basic mode), served by real nginx listening on
    [::1]: curl by https://[::1]:PORT/ gets 401 without credentials and 502 (the closed stand-in
    upstream) with them, never 421. Control: the same config with the unbracketed name
    ``server_name ::1`` (what the renderer wrote before) answers 421 to every such request."""
    run = run_program(local_config(hosts=[], ips=["::1"], users={"alice": PASSWORD}), secret_keys=SECRET_KEYS)
    files = _proxy_uploads(run)
    conf_text = next(c for p, c in files.items() if p.endswith("nginx.conf"))
    assert server_names(conf_text) == [[""], ["[::1]"]]
    # A short root: the registry socket's path under it must fit a Unix socket address (108 bytes).
    scratch = Path(tempfile.mkdtemp(prefix="hostile-v6-", dir="/tmp"))
    scratch.chmod(0o755)  # nginx's workers (nobody) read the htpasswd file under it
    for variant, text, expected in (("bracketed", conf_text, (401, 502)),
                                    ("bare", conf_text.replace("server_name [::1];", "server_name ::1;"), (421, 421))):
        root = scratch / variant
        _lay_out(root, files)
        conf, _ = hostile.localize_nginx_conf(text, root, f"127.0.0.1:{hostile.free_port()}")
        # Both TLS servers (the default one answering 421 and the named one) on one [::1] port,
        # as in the container: localize_nginx_conf gives each listen a port of its own.
        https_port = hostile.free_port()
        conf, moved = re.subn(r"listen 127\.0\.0\.1:\d+ ssl", f"listen [::1]:{https_port} ssl", conf)
        assert moved == 2, conf
        (root / "nginx-local.conf").write_text(conf)
        log = (root / "nginx.log").open("wb")
        process = subprocess.Popen(["nginx", "-p", str(root), "-c", str(root / "nginx-local.conf"), "-e", "stderr",
                                    "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _curl("-k", "-o", "/dev/null", f"https://[::1]:{https_port}/healthz").returncode == 0,
                     timeout=10, interval=0.1, what="nginx on [::1]", process=process, log=root / "nginx.log")
            url = f"https://[::1]:{https_port}/v2/"
            statuses = tuple(
                int(_curl("-k", "-o", "/dev/null", "-w", "%{http_code}", *extra, url).stdout)
                for extra in ((), ("-u", f"alice:{PASSWORD}")))
            assert statuses == expected, (variant, statuses, (root / "nginx.log").read_text())
        finally:
            process.terminate()
            process.wait(timeout=10)
    shutil.rmtree(scratch, ignore_errors=True)
