"""`sluice`: run the sensor, ask it for its status, watch it."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

import typer

from sensor import __version__
from sensor.config import Config, default_config, load_config
from sensor.detect.baseline import DEFAULT_PATH as DEFAULT_BASELINE
from sensor.detect.baseline import Baseline
from sensor.errors import SluiceError

from .client import request

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Sluice: an eBPF sensor for data leaving containers."
)


def _fail(e: SluiceError) -> NoReturn:
    typer.echo(f"sluice: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _socket(config: str | None) -> str:
    try:
        return (load_config(config) if config else default_config()).sensor.control_socket
    except SluiceError as e:
        _fail(e)
        raise  # unreachable


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (defaults are embedded).")


OutputOpt = typer.Option(
    None, "--output", "-o", help="Append JSON lines to this file (reopened on SIGHUP); default stdout."
)
EventsOpt = typer.Option(
    False,
    "--events",
    help="Emit telemetry (exec, connect, flow and container summaries, container start/stop), not only alerts and health.",
)


FormatOpt = typer.Option(None, "--format", help="ecs (default) or ocsf.")
MetricsOpt = typer.Option(None, "--metrics", help="Serve Prometheus metrics on host:port, e.g. 0.0.0.0:9464.")


def _run_config(
    config: str | None,
    output: str | None,
    events: bool,
    fmt: str | None = None,
    metrics: str | None = None,
) -> Config:
    cfg = load_config(config)
    if output is not None:
        cfg = cfg.replace("output", path=output)
    if events:
        cfg = cfg.replace("output", events=True)
    if fmt is not None:
        if fmt not in ("ecs", "ocsf"):
            raise SluiceError(f"--format {fmt!r}: must be ecs or ocsf")
        cfg = cfg.replace("output", format=fmt)
    if metrics is not None:
        host, sep, port = metrics.rpartition(":")
        if not sep or not port.isdigit():
            raise SluiceError(f"--metrics {metrics!r}: must be host:port, e.g. 0.0.0.0:9464")
        cfg = cfg.replace("output", metrics=metrics)
    return cfg


@app.command()
def run(
    config: str | None = ConfigOpt,
    output: str | None = OutputOpt,
    events: bool = EventsOpt,
    fmt: str | None = FormatOpt,
    metrics: str | None = MetricsOpt,
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        "-b",
        help=f"Detect against this baseline (default: {DEFAULT_BASELINE} when it exists; without one every workload is new).",
    ),
) -> None:
    """Run the sensor in the foreground until SIGINT or SIGTERM."""
    from sensor.daemon.runner import Sensor

    try:
        cfg = _run_config(config, output, events, fmt, metrics)
        if baseline is None and os.path.exists(DEFAULT_BASELINE):
            baseline = DEFAULT_BASELINE
        code = Sensor(cfg, baseline_path=baseline).run()
    except SluiceError as e:
        _fail(e)
        return
    raise typer.Exit(code)


baseline_app = typer.Typer(no_args_is_help=True, help="Learn, inspect, merge and reset per-workload baselines.")
app.add_typer(baseline_app, name="baseline")
BaselineOpt = typer.Option(DEFAULT_BASELINE, "--baseline", "-b", help="Baseline file.")


@baseline_app.command("learn")
def baseline_learn(
    duration: float = typer.Option(..., "--duration", "-d", min=1, help="Seconds to learn for."),
    baseline: str = BaselineOpt,
    config: str | None = ConfigOpt,
    output: str | None = OutputOpt,
    events: bool = EventsOpt,
    replace: bool = typer.Option(
        False, "--replace", help="Start from an empty baseline instead of adding to the file."
    ),
) -> None:
    """Run the sensor in learning mode for DURATION seconds, then write the baseline.

    Learning adds to an existing baseline file unless --replace. `sluice
    status` shows the sensor as ready while it learns, as for `run`.
    """
    from sensor.daemon.runner import Sensor

    try:
        cfg = _run_config(config, output, events)
        s = Sensor(cfg, baseline_path=baseline, learn_seconds=duration, replace_baseline=replace)
        code = s.run()
    except SluiceError as e:
        _fail(e)
        return
    assert s.baseline is not None
    typer.echo(
        f"sluice: learned {s.learner.windows if s.learner else 0} windows; baseline {baseline} "
        f"has {len(s.baseline.workloads)} workloads",
        err=True,
    )
    raise typer.Exit(code)


def _load(path: str, key: bytes | None = None) -> Baseline:
    from sensor.detect.baseline import load

    try:
        return load(path, key)
    except SluiceError as e:
        _fail(e)


def _key(path: str | None) -> bytes | None:
    from sensor.detect.baseline import read_key

    try:
        return read_key(path) if path else None
    except SluiceError as e:
        _fail(e)


@baseline_app.command("show")
def baseline_show(
    baseline: str = BaselineOpt,
    workload: str = typer.Option("*", "--workload", "-w", help="Only workloads matching this glob."),
) -> None:
    """One row per workload: windows, egress per window, destinations, executables."""
    import fnmatch

    from sensor.detect.baseline import LogHist

    b = _load(baseline)
    typer.echo(
        f"{baseline}: {len(b.workloads)} workloads, window {b.window_seconds:g}s, nodes: "
        f"{', '.join(sorted(b.nodes)) or '-'}"
    )
    head = (
        f"{'WORKLOAD':<32} {'WINDOWS':>7} {'EGRESS p50':>11} {'p99':>11} {'ENCRYPTED p99':>13} "
        f"{'DESTS':>5} {'EXECS':>5} {'PEERS':>5} {'LIFETIME p50':>12}  HOURS"
    )
    typer.echo(head)

    def q(h: LogHist, x: float) -> str:
        v = h.quantile(x)
        for unit in ("B", "K", "M", "G"):
            if v < 1024:
                return f"{v:.0f}{unit}"
            v /= 1024
        return f"{v:.0f}T"

    for name in sorted(b.workloads):
        if not fnmatch.fnmatchcase(name, workload):
            continue
        w = b.workloads[name]
        hours = "".join("#" if n else "." for n in w.hours)
        life = f"{w.lifetimes.quantile(0.5):.1f}s" if w.lifetimes.n else "-"
        typer.echo(
            f"{name[:32]:<32} {w.windows:>7} {q(w.egress_bytes, 0.5):>11} {q(w.egress_bytes, 0.99):>11} "
            f"{q(w.encrypted_bytes, 0.99):>13} {len(w.destinations):>5} {len(w.executables):>5} "
            f"{len(w.peers):>5} {life:>12}  {hours}"
        )


@baseline_app.command("export")
def baseline_export(baseline: str = BaselineOpt) -> None:
    """The whole baseline as JSON on stdout."""
    typer.echo(json.dumps(_load(baseline).to_wire(), indent=2, sort_keys=True, default=str))


@baseline_app.command("merge")
def baseline_merge(
    out: str = typer.Argument(..., help="Merged baseline to write (atomically)."),
    inputs: list[str] = typer.Argument(..., help="Baselines to merge, e.g. one per node."),
    key_file: str | None = typer.Option(
        None, "--key", help="HMAC key file: every input must be signed with it; the output is signed."
    ),
) -> None:
    """Merge several nodes' baselines into one (fleet learning)."""
    from sensor.detect.baseline import merge_all, save

    key = _key(key_file)
    merged = merge_all(_load(p, key) for p in inputs)
    if os.path.exists(out) and out not in inputs:
        _load(out)  # refuse to overwrite a file that is not a readable baseline
    try:
        save(merged, out, key)
    except OSError as e:
        _fail(SluiceError(f"cannot write {out}: {e.strerror}"))
    typer.echo(
        f"sluice: merged {len(inputs)} baselines into {out}: {len(merged.workloads)} workloads, "
        f"nodes {', '.join(sorted(merged.nodes)) or '-'}"
    )


@baseline_app.command("reset")
def baseline_reset(
    workload: str = typer.Argument(..., help="Workload to forget (exact name, see `baseline show`)."),
    baseline: str = BaselineOpt,
) -> None:
    """Forget one workload: it is learned anew."""
    from sensor.detect.baseline import save

    b = _load(baseline)
    if workload not in b.workloads:
        typer.echo(f"sluice: error: no workload {workload!r} in {baseline}", err=True)
        raise typer.Exit(1)
    del b.workloads[workload]
    save(b, baseline)
    typer.echo(f"sluice: reset {workload} in {baseline}")


@app.command()
def rules(config: str | None = ConfigOpt) -> None:
    """The detection rules: id, ATT&CK technique, severity, enabled."""
    from sensor.detect.catalog import RULES

    try:
        cfg = load_config(config)
    except SluiceError as e:
        _fail(e)
        return
    typer.echo(f"{'ID':<11} {'TECHNIQUE':<10} {'SEV':>3} {'ON':<3} NAME")
    for r in RULES:
        st = cfg.rules[r.id]
        tech = (r.attack["subtechnique"] or r.attack["technique"])[0]
        typer.echo(f"{r.id:<11} {tech:<10} {st.severity:>3} {'yes' if st.enabled else 'no':<3} {r.name}")


def _fmt_status(s: dict[str, Any]) -> str:
    lines = [
        f"sluice {'ready' if s.get('ready') else 'starting'}  pid {s.get('pid')}  host {s.get('host')}  "
        f"uptime {s.get('uptime_seconds', 0):.0f}s  startup {s.get('startup_seconds')}s",
        f"status: {s.get('status', '?')}   output: {s.get('output')}   events: {s.get('events')}   "
        f"window: {s.get('window_seconds')}s",
        "hooks:",
    ]
    for k, v in sorted(s.get("hooks", {}).items()):
        lines.append(f"  {k:<28} {v}")
    c = s.get("counters", {})
    lines.append(
        "counters: "
        + ", ".join(
            f"{k}={c[k]}"
            for k in ("events", "exec", "connect", "sample", "cgroup", "windows", "output_lines")
            if k in c
        )
    )
    d = s.get("drops", {})
    lines.append(
        f"drops: total={d.get('total', 0)} " + ", ".join(f"{k}={v}" for k, v in d.items() if v and k != "total")
    )
    rt = s.get("runtime", {})
    line = f"runtime: docker {rt.get('status')} ({rt.get('docker_socket')}); containers tracked: {s.get('containers_tracked')}"
    if rt.get("lookup_failures") or rt.get("containers_without_metadata"):
        line += (
            f"; metadata lookups failed: {rt.get('lookup_failures', 0)} of {rt.get('lookups', 0)}, "
            f"containers known by id only: {rt.get('containers_without_metadata', 0)}"
        )
    lines.append(line)
    cont = s.get("containment", {})
    if cont.get("entries") or cont.get("problem"):
        n = len(cont.get("entries", []))
        lines.append(
            f"containment: {n} entr{'y' if n == 1 else 'ies'}, "
            f"{sum(e.get('dropped', 0) for e in cont.get('entries', []))} packets dropped (`sluice containment`)"
            + (f"; {cont['problem']}" if cont.get("problem") else "")
        )
    if s.get("bpf_programs"):
        from sensor.kernel.progstats import format_lines

        lines.extend(format_lines(s["bpf_programs"]))
    return "\n".join(lines)


@app.command()
def status(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status object."),
) -> None:
    """Ask the running sensor for its state; exit 0 only if it is ready."""
    try:
        s = request(_socket(config), "status")
    except SluiceError as e:
        _fail(e)
        return
    typer.echo(json.dumps(s, indent=2, default=str) if as_json else _fmt_status(s))
    if not s.get("ready"):
        raise typer.Exit(1)


def _ask(config: str | None, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return request(_socket(config), cmd, timeout=10.0, **args)
    except SluiceError as e:
        _fail(e)
        raise  # unreachable


@app.command()
def isolate(
    container: str = typer.Argument(..., help="Container id, id prefix or name."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the entry and in the event)."),
    config: str | None = ConfigOpt,
) -> None:
    """Contain a container: drop all its egress but loopback, in the kernel,
    until `sluice release`. Works for any runtime; kept across sensor restarts."""
    typer.echo(_ask(config, "isolate", container=container, reason=reason)["message"])


@app.command()
def block(
    destination: str = typer.Argument(..., help="IP address to block (IPv4 or IPv6)."),
    container: str | None = typer.Option(
        None, "--container", help="Only for this container (default: every container and host process)."
    ),
    reason: str = typer.Option("", "--reason", help="Why (kept with the entry and in the event)."),
    config: str | None = ConfigOpt,
) -> None:
    """Drop egress to a destination, for one container or node-wide, until `sluice release`."""
    typer.echo(_ask(config, "block", destination=destination, container=container, reason=reason)["message"])


@app.command()
def release(
    container: str | None = typer.Argument(None, help="Container whose isolation (and blocks) to lift."),
    destination: str | None = typer.Option(
        None, "--destination", help="Lift the block of this address (node-wide, or for CONTAINER when given)."
    ),
    config: str | None = ConfigOpt,
) -> None:
    """Lift an isolation or a block."""
    if not container and not destination:
        _fail(SluiceError("say which container or --destination to release", hint="`sluice containment` lists them"))
    typer.echo(_ask(config, "release", container=container, destination=destination)["message"])


@app.command()
def containment(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per entry."),
) -> None:
    """What is isolated or blocked now, since when, and the packets dropped."""
    entries = _ask(config, "containment")["entries"]
    if as_json:
        for e in entries:
            typer.echo(json.dumps(e))
        return
    if not entries:
        typer.echo("nothing is contained")
        return
    for e in entries:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["since"]))
        why = f"  reason: {e['reason']}" if e.get("reason") else ""
        typer.echo(f"{e['description']:<48} since {since}  dropped {e['dropped']} packets{why}")


def _fmt_rate(b: float) -> str:
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if b < 1024:
            return f"{b:7.1f} {unit}"
        b /= 1024
    return f"{b:7.1f} TiB/s"


def render_top(s: dict[str, Any]) -> str:
    rows = s.get("top", [])
    head = f"{'CONTAINER':<13} {'NAME':<20} {'IMAGE':<22} {'EGRESS':>13} {'ENTROPY':>7} {'CONN':>5} {'EXEC':>5}  DESTINATIONS"
    out = [f"sluice top  host {s.get('host')}  window {s.get('window_seconds')}s  (last completed window)", head]
    for r in rows:
        ent = f"{r['entropy']:.2f}" if r.get("entropy") is not None else "-"
        dests = ", ".join(r.get("destinations", []))
        if r.get("n_destinations", 0) > len(r.get("destinations", [])):
            dests += f" (+{r['n_destinations'] - len(r['destinations'])})"
        out.append(
            f"{r['container']:<13} {r['name'][:20]:<20} {r['image'][:22]:<22} {_fmt_rate(r['bytes_per_s']):>13} "
            f"{ent:>7} {r['connects']:>5} {r['execs']:>5}  {dests}"
        )
    if not rows:
        out.append("(no egress, connects or execs in the last window)")
    return "\n".join(out)


@app.command()
def top(
    config: str | None = ConfigOpt,
    interval: float = typer.Option(2.0, "--interval", "-n", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one table and exit."),
) -> None:
    """Live per-container table: egress bytes/s, entropy, destinations."""
    path = _socket(config)
    try:
        while True:
            table = render_top(request(path, "top"))
            if once:
                typer.echo(table)
                return
            sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    except SluiceError as e:
        _fail(e)
    except KeyboardInterrupt:
        return


emulate_app = typer.Typer(no_args_is_help=True, help="Adversary emulation: prove the detections on this node.")
app.add_typer(emulate_app, name="emulate")


@emulate_app.command("list")
def emulate_list() -> None:
    """The scenarios, what they emulate and which rules must fire."""
    from emulation.scenarios import SCENARIOS

    typer.echo(f"{'SCENARIO':<26} {'ATT&CK':<10} {'MUST RAISE':<23} WHAT")
    for s in SCENARIOS:
        exp = ",".join(s.expect) or ("(blind spot)" if s.blind_spot else "(nothing)")
        typer.echo(f"{s.name:<26} {s.attack:<10} {exp:<23} {s.description}")


@emulate_app.command("run")
def emulate_run(
    scenario: str = typer.Argument(..., help="A scenario name (see `emulate list`), or all."),
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per scenario on stdout."),
    attach: bool = typer.Option(False, "--attach", help="Score against the running sensor instead of a lab sensor."),
    learn_seconds: float = typer.Option(
        20.0, "--learn-seconds", min=5, help="How long the lab sensor learns benign workloads."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the lab's work directory (sensor outputs, sink log)."),
    events: bool = typer.Option(
        False, "--events", help="The lab sensor also writes telemetry (with --keep, for debugging)."
    ),
) -> None:
    """Run scenarios in containers and network namespaces made (and removed)
    here, and print a scorecard. Nothing leaves the machine: the lab's
    "internet" is 198.18.0.0/16 inside a network namespace. Without --attach
    a lab sensor learns the benign workloads first, then detects. Exits
    non-zero if an expected detection is missing or a benign scenario alerts.
    """
    from emulation.run import Emulation, as_json_lines, scorecard
    from emulation.scenarios import BY_NAME, SCENARIOS
    from sensor.kernel.probe import require_root

    try:
        require_root()
        cfg = load_config(config)
        if scenario == "all":
            chosen = list(SCENARIOS)
        elif scenario in BY_NAME:
            chosen = [BY_NAME[scenario]]
        else:
            raise SluiceError(f"no scenario {scenario!r}", hint="see `sluice emulate list`")
        emu = Emulation(
            cfg.runtime.docker_socket,
            chosen,
            learn_seconds=learn_seconds,
            attach_socket=cfg.sensor.control_socket if attach else None,
            keep=keep,
            events=events,
        )
        scores = emu.run()
    except SluiceError as e:
        _fail(e)
        return
    except KeyboardInterrupt:
        typer.echo("sluice: interrupted; the lab was cleaned up", err=True)
        raise typer.Exit(130) from None
    typer.echo(as_json_lines(scores) if as_json else scorecard(scores))
    raise typer.Exit(0 if all(s.passed for s in scores) else 1)


@app.command()
def doctor(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per check."),
    no_load: bool = typer.Option(False, "--no-load", help="Do not load the BPF programs (faster, less certain)."),
) -> None:
    """Preflight: kernel, BTF, build tree, tracefs, cgroups, every hook, runtime
    sockets. Exits non-zero when the sensor cannot run here."""
    from sensor.ops.doctor import FAIL, as_dicts, render, run_checks, verdict

    try:
        checks = run_checks(load_config(config), load_programs=not no_load)
    except SluiceError as e:
        _fail(e)
        return
    typer.echo("\n".join(json.dumps(c) for c in as_dicts(checks)) if as_json else render(checks))
    raise typer.Exit(1 if verdict(checks) == FAIL else 0)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"sluice {__version__}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
