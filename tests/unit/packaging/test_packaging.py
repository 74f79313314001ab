"""Deployment packaging, checked without a cluster, a running systemd or an
image build:

- packaging/kubernetes/*.yaml: every document against the Kubernetes OpenAPI
  schemas (kubernetes-validate, strict: unknown fields are errors), and the
  DaemonSet invariants a reviewer checks; the container's start script is
  run for real (with a stand-in `sluice`) and the config it renders is
  loaded by the sensor's own config loader;
- packaging/sluice.service: `systemd-analyze verify` and its hardening;
- packaging/Dockerfile: static checks (base, packages, entrypoint, valid
  instructions, COPY sources, documented mounts);
- every sluice command line in these files parses with the real CLI.

Nothing here skips: a missing tool or package fails with what to install.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGING = ROOT / "packaging"
K8S_DIR = PACKAGING / "kubernetes"
DOCKERFILE = PACKAGING / "Dockerfile"
UNIT = PACKAGING / "sluice.service"

# Oldest Kubernetes minor the manifests claim, and a current one; both ship
# with kubernetes-validate.
K8S_VERSIONS = ("1.30.0", "1.34.0")

# host path -> path in the container, for every host mount the sensor needs
# (packaging/Dockerfile says why). The node's /run holds the runtime sockets
# (/run/docker.sock = /var/run/docker.sock, /run/containerd/containerd.sock).
REQUIRED_HOST_MOUNTS = {
    "/sys/kernel/tracing": "/sys/kernel/tracing",
    "/sys/fs/bpf": "/sys/fs/bpf",
    "/sys/fs/cgroup": "/sys/fs/cgroup",
    "/lib/modules": "/lib/modules",
    "/usr/src": "/usr/src",
    "/run": "/host/run",
    "/var/lib/sluice": "/var/lib/sluice",
    "/run/sluice": "/run/sluice",
}
METRICS_PORT = 9464
CONFIGMAP_CONFIG_PATH = "/etc/sluice/sluice.toml"


# --- helpers -------------------------------------------------------------------


def _yaml():
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is not installed: run `make venv` (pip install -e '.[test]')")
    return yaml


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: run `make venv` (pip install -e '.[test]'; it is in the test extra)"
        )
    return kubernetes_validate


def _manifest_files() -> list[Path]:
    files = sorted(K8S_DIR.glob("*.yaml"))
    assert files, f"no manifests in {K8S_DIR}"
    return files


def _documents() -> list[tuple[str, dict[str, Any]]]:
    yaml = _yaml()
    out = []
    for f in _manifest_files():
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{f.name} document {i}: not a mapping"
            out.append((f"{f.name}#{i}:{doc.get('kind')}", doc))
    return out


def _one(kind: str) -> dict[str, Any]:
    docs = [d for _, d in _documents() if d.get("kind") == kind]
    assert len(docs) == 1, f"expected one {kind} in {K8S_DIR}, found {len(docs)}"
    return docs[0]


def _sensor_container(ds: dict[str, Any]) -> dict[str, Any]:
    containers = ds["spec"]["template"]["spec"]["containers"]
    named: list[dict[str, Any]] = [c for c in containers if c["name"] == "sluice"]
    assert len(named) == 1, f"DaemonSet has no single container named sluice: {[c['name'] for c in containers]}"
    return named[0]


def _configmap_toml() -> str:
    cm = _one("ConfigMap")
    assert "sluice.toml" in cm.get("data", {}), "ConfigMap has no data key sluice.toml"
    toml: str = cm["data"]["sluice.toml"]
    return toml


def _parse_cli(argv: list[str]) -> None:
    """Parse a sluice command line with the real CLI, without running it:
    unknown commands or options, missing values and bad types fail. (Duck
    typed: typer builds click commands, from click or, in newer typer, its
    own copy of click.)"""
    import typer.main

    from control.cli import app

    cmd = typer.main.get_command(app)
    args = list(argv)
    name = "sluice"
    while hasattr(cmd, "commands"):  # a group: descend to the subcommand
        assert args, f"{argv}: no subcommand after {name!r}"
        name = args.pop(0)
        assert name in cmd.commands, f"{argv}: sluice has no command {name!r} (has {sorted(cmd.commands)})"
        cmd = cmd.commands[name]
    try:
        cmd.make_context(name, args)
    except Exception as e:  # click's UsageError/BadParameter: they have format_message
        if not hasattr(e, "format_message"):
            raise
        pytest.fail(f"`sluice {' '.join(argv)}` is not a valid command line: {e.format_message()}")


# --- Kubernetes: schemas -------------------------------------------------------


def test_manifests_have_the_expected_kinds() -> None:
    kinds = sorted(d["kind"] for _, d in _documents())
    assert kinds == ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"], kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas_strict(version: str) -> None:
    kv = _kubernetes_validate()
    errors = []
    for name, doc in _documents():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{name}: {e}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{name}: no schema: {e}")
    assert not errors, f"Kubernetes {version} schema errors:\n" + "\n".join(errors)


def test_strict_validation_catches_an_unknown_field() -> None:
    """The schema check is only worth something if a typo fails it."""
    kv = _kubernetes_validate()
    ds = copy.deepcopy(_one("DaemonSet"))
    _sensor_container(ds)["securityContex"] = {"privileged": True}
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, K8S_VERSIONS[-1], strict=True)
    ds = copy.deepcopy(_one("DaemonSet"))
    ds["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, K8S_VERSIONS[-1], strict=True)


# --- Kubernetes: what a reviewer checks ---------------------------------------


def test_everything_is_in_the_sluice_namespace_which_allows_privileged_pods() -> None:
    ns = _one("Namespace")
    name = ns["metadata"]["name"]
    for label, doc in _documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == name, f"{label} is not in namespace {name}"
    labels = ns["metadata"].get("labels", {})
    assert labels.get("pod-security.kubernetes.io/enforce") == "privileged", (
        "Pod Security Admission would reject the privileged, hostPID sensor pods"
    )


def test_daemonset_runs_in_the_host_pid_namespace_privileged() -> None:
    ds = _one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod.get("hostPID") is True, "hostPID: the sensor reads /proc/<pid> of host processes"
    c = _sensor_container(ds)
    assert c.get("securityContext", {}).get("privileged") is True
    assert pod.get("serviceAccountName") == _one("ServiceAccount")["metadata"]["name"]
    assert pod.get("automountServiceAccountToken") is False


def test_daemonset_mounts_every_required_host_path() -> None:
    ds = _one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = _sensor_container(ds)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    host_to_container = {}
    for name, v in volumes.items():
        if "hostPath" in v:
            assert name in mounts, f"hostPath volume {name} ({v['hostPath']['path']}) is not mounted"
            host_to_container[v["hostPath"]["path"]] = mounts[name]["mountPath"]
    missing = {h: p for h, p in REQUIRED_HOST_MOUNTS.items() if host_to_container.get(h) != p}
    assert not missing, (
        f"host paths not mounted where the sensor looks (host -> container): {missing}; mounted: {host_to_container}"
    )
    for name in mounts:
        assert name in volumes, f"volumeMount {name} has no volume"
    read_only = {mounts[n]["mountPath"] for n in mounts if mounts[n].get("readOnly")}
    assert {"/lib/modules", "/usr/src", "/host/run"} <= read_only, read_only
    assert "/var/lib/sluice" not in read_only and "/run/sluice" not in read_only


def test_node_name_comes_from_the_downward_api() -> None:
    c = _sensor_container(_one("DaemonSet"))
    env = {e["name"]: e for e in c.get("env", [])}
    assert "NODE_NAME" in env, "no NODE_NAME env"
    assert env["NODE_NAME"].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName"
    script = c["command"][2]
    assert "NODE_NAME" in script, "the start script does not use NODE_NAME"


def test_metrics_port_is_exposed_scraped_and_served() -> None:
    ds = _one("DaemonSet")
    c = _sensor_container(ds)
    ports = [p for p in c.get("ports", []) if p.get("containerPort") == METRICS_PORT]
    assert ports and ports[0].get("protocol", "TCP") == "TCP", f"no containerPort {METRICS_PORT}"
    ann = ds["spec"]["template"]["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(METRICS_PORT)
    args = c["args"]
    assert "--metrics" in args, f"the sensor is not started with --metrics: {args}"
    addr = args[args.index("--metrics") + 1]
    assert addr.rpartition(":")[2] == str(METRICS_PORT), addr


def test_config_volume_references_an_existing_configmap_key() -> None:
    ds = _one("DaemonSet")
    cm = _one("ConfigMap")
    pod = ds["spec"]["template"]["spec"]
    refs = [v for v in pod["volumes"] if "configMap" in v]
    assert refs, "the DaemonSet mounts no ConfigMap"
    for v in refs:
        assert v["configMap"]["name"] == cm["metadata"]["name"], (
            f"volume {v['name']}: no ConfigMap {v['configMap']['name']}"
        )
        keys = set(cm.get("data", {})) | set(cm.get("binaryData", {}))
        for item in v["configMap"].get("items", []):
            assert item["key"] in keys, (
                f"volume {v['name']}: ConfigMap {cm['metadata']['name']} has no key {item['key']}"
            )
    mount = next(m for m in _sensor_container(ds)["volumeMounts"] if m["name"] == refs[0]["name"])
    assert f"{mount['mountPath']}/sluice.toml" == CONFIGMAP_CONFIG_PATH
    assert CONFIGMAP_CONFIG_PATH in _sensor_container(ds)["command"][2]


def test_probes_run_sluice_status() -> None:
    c = _sensor_container(_one("DaemonSet"))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe in c, f"no {probe}"
        cmd = c[probe]["exec"]["command"]
        assert Path(cmd[0]).name == "sluice" and cmd[1] == "status", f"{probe}: {cmd}"
        _parse_cli(cmd[1:])


def test_rollout_resources_and_tolerations() -> None:
    ds = _one("DaemonSet")
    us = ds["spec"]["updateStrategy"]
    assert us["type"] == "RollingUpdate" and us["rollingUpdate"]["maxUnavailable"] == "10%", us
    limits = _sensor_container(ds)["resources"]["limits"]
    assert limits == {"cpu": "500m", "memory": "300Mi"}, limits
    requests = _sensor_container(ds)["resources"]["requests"]
    assert set(requests) == {"cpu", "memory"}
    tolerations = ds["spec"]["template"]["spec"]["tolerations"]
    assert {"operator": "Exists"} in tolerations, f"does not tolerate every taint: {tolerations}"


def test_configmap_config_is_accepted_by_the_sensor(tmp_path: Path) -> None:
    from sensor.config import load_config

    f = tmp_path / "sluice.toml"
    f.write_text(_configmap_toml())
    cfg = load_config(f)  # refuses unknown keys and bad values with file:line
    ds = _one("DaemonSet")
    mounts = {m["mountPath"] for m in _sensor_container(ds)["volumeMounts"]}
    assert os.path.dirname(cfg.sensor.control_socket) in mounts, (
        f"control socket {cfg.sensor.control_socket} is not on a mounted host path"
    )
    assert cfg.runtime.docker_socket == "/host/run/docker.sock", cfg.runtime.docker_socket
    assert re.search(r"(?m)^host_name = ", _configmap_toml()), "the start script needs a `host_name = ` line"


def _run_start_script(
    tmp_path: Path, env_extra: dict[str, str], toml: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    c = _sensor_container(_one("DaemonSet"))
    command, args = c["command"], c["args"]
    assert command[:2] == ["/bin/sh", "-c"], command
    etc, node_dir, bin_dir = tmp_path / "etc-sluice", tmp_path / "etc-sluice-node", tmp_path / "bin"
    for d in (etc, node_dir, bin_dir):
        d.mkdir()
    (etc / "sluice.toml").write_text(toml)
    script = command[2].replace("/etc/sluice/", f"{etc}/").replace("/etc/sluice-node/", f"{node_dir}/")
    argv_file = tmp_path / "argv"
    fake = bin_dir / "sluice"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(argv_file))}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env_extra}
    p = subprocess.run(
        [command[0], "-c", script, *command[3:], *args], env=env, capture_output=True, text=True, timeout=30
    )
    return p, node_dir / "sluice.toml", argv_file


def test_start_script_sets_host_name_to_the_node_name_and_execs_sluice(tmp_path: Path) -> None:
    from sensor.config import load_config

    node = "ip-10-1-2-3.eu-west-1.compute.internal"
    toml = _configmap_toml()
    p, rendered, argv_file = _run_start_script(tmp_path, {"NODE_NAME": node}, toml)
    assert p.returncode == 0, f"start script failed: {p.stderr}"
    cfg = load_config(rendered)
    assert cfg.sensor.host_name == node
    # only the host_name line changed
    before, after = toml.splitlines(), rendered.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    assert len(before) == len(after) and changed == [('host_name = ""', f'host_name = "{node}"')], changed
    c = _sensor_container(_one("DaemonSet"))
    argv = argv_file.read_text().splitlines()
    assert argv == [*c["args"], "--config", str(rendered)], argv
    # what the container really runs, with the rendered config's real path
    _parse_cli([*c["args"], "--config", "/etc/sluice-node/sluice.toml"])
    # the probes ask the sensor that config started
    assert c["livenessProbe"]["exec"]["command"][-2:] == ["--config", "/etc/sluice-node/sluice.toml"]
    node_mount = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}.get("/etc/sluice-node")
    assert node_mount, "nothing is mounted at /etc/sluice-node (the ConfigMap mount is read-only)"


def test_start_script_refuses_without_node_name_or_host_name_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    p, _, argv_file = _run_start_script(tmp_path / "a", {}, _configmap_toml())
    assert p.returncode != 0 and "NODE_NAME" in p.stderr, (p.returncode, p.stderr)
    assert not argv_file.exists(), "sluice was started without a node name"
    no_line = re.sub(r"(?m)^host_name = .*\n", "", _configmap_toml())
    (tmp_path / "b").mkdir()
    p, _, argv_file = _run_start_script(tmp_path / "b", {"NODE_NAME": "n1"}, no_line)
    assert p.returncode == 78 and "host_name" in p.stderr, (p.returncode, p.stderr)
    assert not argv_file.exists()


def test_baseline_is_on_the_default_path_from_a_host_path() -> None:
    from sensor.detect.baseline import DEFAULT_PATH

    ds = _one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _sensor_container(ds)["volumeMounts"]}
    name = mounts.get(os.path.dirname(DEFAULT_PATH))
    assert name, f"nothing mounted at {os.path.dirname(DEFAULT_PATH)} (sluice run reads {DEFAULT_PATH})"
    vol = next(v for v in pod["volumes"] if v["name"] == name)
    assert vol.get("hostPath", {}).get("type") == "DirectoryOrCreate", vol


def test_kubernetes_readme_covers_the_rollout() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    for needle in ("canary", "sluice baseline merge", "maxUnavailable", "binaryData", "hostPath", "500"):
        assert needle in readme, f"packaging/kubernetes/README.md does not mention {needle!r}"
    # the args it patches into the DaemonSet (learn, then run again) are
    # valid sluice command lines, as the start script runs them
    patched = [json.loads(m) for m in re.findall(r'"value":\s*(\[[^\]]*\])', readme)]
    assert [a[:2] for a in patched] == [["baseline", "learn"], ["run", "--metrics"]], patched
    for args in patched:
        _parse_cli([*args, "--config", "/etc/sluice-node/sluice.toml"])
    assert patched[1] == _sensor_container(_one("DaemonSet"))["args"], (
        "the README's run args differ from the DaemonSet's"
    )


# --- systemd -------------------------------------------------------------------


def _unit_entries(text: str) -> dict[tuple[str, str], list[str]]:
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"sluice.service: not key=value: {raw!r}"
        entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if os.path.exists("/usr/bin/systemd-analyze") else None
    )
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd): cannot verify packaging/sluice.service")
    sluice = Path(sys.executable).parent / "sluice"
    assert sluice.exists(), f"{sluice} does not exist: install the project into the venv (make venv)"
    config = tmp_path / "sluice.toml"
    config.write_text("# empty: defaults\n")
    text = UNIT.read_text()
    assert "/opt/sluice/.venv/bin/sluice" in text and "/etc/sluice/sluice.toml" in text
    unit = tmp_path / "sluice.service"
    unit.write_text(
        text.replace("/opt/sluice/.venv/bin/sluice", str(sluice)).replace("/etc/sluice/sluice.toml", str(config))
    )
    p = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"systemd-analyze verify exited {p.returncode}:\n{out}"
    bad = [line for line in out.splitlines() if "sluice.service" in line and ("Unknown" in line or "Failed" in line)]
    assert not bad, "systemd-analyze verify complained:\n" + "\n".join(bad)


def test_systemd_unit_hardening_and_command_line() -> None:
    e = _unit_entries(UNIT.read_text())

    def one(key: str) -> str:
        v = e.get(("Service", key))
        assert v and len(v) == 1, f"[Service] {key}: {v}"
        return v[0]

    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") in ("yes", "full", "strict")
    caps = one("CapabilityBoundingSet").split()
    assert "CAP_BPF" in caps and "CAP_PERFMON" in caps and "CAP_SYS_ADMIN" in caps, caps
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGINT"
    exec_start = shlex.split(one("ExecStart"))
    assert Path(exec_start[0]).name == "sluice" and exec_start[1] == "run", exec_start
    _parse_cli(exec_start[1:])


# --- Dockerfile ----------------------------------------------------------------

VALID_INSTRUCTIONS = {
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}


def _dockerfile() -> tuple[list[tuple[int, str, str]], str]:
    """(line, KEYWORD, arguments) per instruction, with continuations joined
    and comment lines dropped (as the Dockerfile parser does), and the text
    of every comment."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?m)^#\s*escape\s*=", text), "a custom escape character: this parser assumes \\"
    instructions: list[tuple[int, str, str]] = []
    comments = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        if not stripped and not buf:
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.strip().partition(" ")
        instructions.append((start, word, rest.strip()))
        buf = ""
    assert not buf, f"Dockerfile ends inside a continued instruction (line {start})"
    return instructions, "\n".join(comments)


def _exec_form(args: str, where: str) -> list[str]:
    assert args.startswith("["), f"{where}: use the exec (JSON) form, not the shell form: {args}"
    try:
        v = json.loads(args)
    except json.JSONDecodeError as e:
        pytest.fail(f"{where}: not a JSON array: {args} ({e})")
    assert isinstance(v, list) and all(isinstance(x, str) for x in v), f"{where}: {args}"
    return v


def _last(instructions: list[tuple[int, str, str]], word: str) -> str:
    found = [a for _, w, a in instructions if w.upper() == word]
    assert found, f"the Dockerfile has no {word}"
    return found[-1]


def test_dockerfile_instructions_are_valid() -> None:
    instructions, _ = _dockerfile()
    assert instructions, "empty Dockerfile"
    bad = [(n, w) for n, w, _ in instructions if w.upper() not in VALID_INSTRUCTIONS or w != w.upper()]
    assert not bad, f"not (upper-case) Dockerfile instructions: {bad}"
    first = next(w for _, w, _ in instructions if w != "ARG")
    assert first == "FROM", f"the first instruction (after ARG) must be FROM, not {first}"
    for n, w, a in instructions:
        if w in ("ENTRYPOINT", "CMD", "SHELL") or (w == "RUN" and a.startswith("[")):
            _exec_form(a, f"line {n} {w}")


def test_dockerfile_base_is_debian_bookworm() -> None:
    instructions, _ = _dockerfile()
    froms = [a for _, w, a in instructions if w == "FROM"]
    assert len(froms) == 1, f"one stage expected: {froms}"
    image = froms[0].split()[0]
    assert re.fullmatch(r"debian:bookworm(-[a-z0-9.]+)*(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_installs_bcc_venv_and_tools() -> None:
    instructions, _ = _dockerfile()
    runs = [a for _, w, a in instructions if w == "RUN"]
    installs = [r for r in runs if "apt-get install" in r]
    assert installs, "no apt-get install"
    words = set(" ".join(installs).split())
    for pkg in ("python3-bpfcc", "python3-venv", "iproute2", "bpftool"):
        assert pkg in words, f"{pkg} is not installed"
    for r in installs:
        assert "apt-get update" in r, "apt-get update must be in the same RUN as apt-get install (stale layer cache)"
        assert "-y" in r.split(), "apt-get install without -y stops at the prompt"
    venvs = [r for r in runs if "-m venv" in r]
    assert venvs and all("--system-site-packages" in r for r in venvs), (
        "the venv must see Debian's bcc: python3 -m venv --system-site-packages"
    )


def test_dockerfile_entrypoint_is_sluice_run_with_the_configmap_config() -> None:
    instructions, _ = _dockerfile()
    entrypoint = _exec_form(_last(instructions, "ENTRYPOINT"), "ENTRYPOINT")
    cmd = _exec_form(_last(instructions, "CMD"), "CMD")
    argv = entrypoint + cmd
    assert Path(argv[0]).name == "sluice" and argv[1] == "run", argv
    assert argv[argv.index("--config") + 1] == CONFIGMAP_CONFIG_PATH, argv
    _parse_cli(argv[1:])
    # the venv the ENTRYPOINT names is the one the Dockerfile creates, and
    # its bin is on PATH (the DaemonSet's command and probes call `sluice`)
    venv_bin = str(Path(argv[0]).parent)
    runs = " ".join(a for _, w, a in instructions if w == "RUN")
    assert f"-m venv --system-site-packages {Path(venv_bin).parent}" in runs, venv_bin
    env = " ".join(a for _, w, a in instructions if w == "ENV")
    m = re.search(r"\bPATH=(\S+)", env)
    assert m and venv_bin in m.group(1).split(":"), f"{venv_bin} is not on the image's PATH: {env}"
    health = _last(instructions, "HEALTHCHECK")
    hc = _exec_form(health[health.index("CMD") + 3 :].strip(), "HEALTHCHECK")
    assert Path(hc[0]).name == "sluice" and hc[1] == "status", hc
    _parse_cli(hc[1:])


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    instructions, _ = _dockerfile()
    ignore_file = PACKAGING / "Dockerfile.dockerignore"
    patterns = [p.strip() for p in ignore_file.read_text().splitlines() if p.strip() and not p.strip().startswith("#")]
    copies = [a for _, w, a in instructions if w in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing of the project"
    copied = set()
    for a in copies:
        parts = [p for p in a.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the build context (the repository root)"
            for pat in patterns:
                assert not fnmatch.fnmatch(src, pat.lstrip("/")), f"COPY {src} is excluded by {ignore_file.name}: {pat}"
            copied.add(src)
    # what the installed package needs: the pyproject, the packages, the BPF sources
    assert {"pyproject.toml", "sensor", "control", "bpf"} <= copied, copied


def test_dockerfile_documents_mounts_and_privileges() -> None:
    _, comments = _dockerfile()
    for path in (
        "/sys/kernel/tracing",
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
        "/lib/modules",
        "/usr/src",
        "/proc",
        "/var/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/var/lib/sluice",
        "/run/sluice",
        "/etc/sluice",
    ):
        assert path in comments, f"the Dockerfile's comments do not document the {path} mount"
    for cap in (
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_PTRACE",
        "CAP_DAC_READ_SEARCH",
        "CAP_NET_ADMIN",
    ):
        assert cap in comments, f"the Dockerfile's comments do not name {cap}"
    for word in ("--privileged", "hostPID", "hostNetwork"):
        assert word in comments, f"the Dockerfile's comments do not discuss {word}"
    # the unit and the image ask for the same capabilities
    unit_caps = set(_unit_entries(UNIT.read_text())[("Service", "CapabilityBoundingSet")][0].split())
    assert unit_caps == set(re.findall(r"CAP_[A-Z_]+", comments)), (
        "Dockerfile and sluice.service capability lists differ"
    )
