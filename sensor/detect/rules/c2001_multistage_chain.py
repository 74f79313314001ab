"""SL-C2-001: fetched content executed (new executable, memfd or /proc fd
exec, an interpreter fed by a pipe or socket), then a channel to a new
destination."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import STATE_TTL_S, _Base, _dest, _pname, _secs, _who
from sensor.detect.view import FORKED, ConnectView, ExecView, ProcessRef, WindowView
from sensor.telemetry.stage import FD_EXEC, MEMFD, SCRIPT_FILE, STDIN_PIPE, STDIN_SOCKET, runs_inline_interpreter

_STAGE_TEXT = {
    "writable_path": "new executable",
    "new_executable": "an executable outside its baseline,",
    MEMFD: "a memfd payload",
    FD_EXEC: "a payload through a file descriptor,",
    STDIN_PIPE: "a script piped into",
    STDIN_SOCKET: "a script from a socket into",
    "inline_script": "a fetched script on the command line of",
}


@dataclass(frozen=True)
class Settings(RuleSettings):
    within_seconds: float = 300.0
    writable_paths: tuple[str, ...] = (
        "/tmp/",
        "/var/tmp/",
        "/dev/shm/",
        "/run/",
        "/memfd:",
        "/proc/self/fd/",
        "/dev/fd/",
        "/home/",
        "/root/",
    )
    # where a script run by an interpreter is a stage: where droppers
    # write, not where applications live (node's images keep theirs under
    # /home/node; review: `node /home/node/app/x.js` would be a stage)
    script_paths: tuple[str, ...] = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/", "/var/run/")


INFO = RuleInfo(
    "SL-C2-001",
    "multi_stage_chain",
    "Multi-stage chain: fetch, execute, new channel",
    "In one container: content fetched over the network is executed (a new executable from a "
    "writable path, an executable outside a learned workload's baseline, an exec from a memfd or "
    "/proc/*/fd, an interpreter whose script arrives on a pipe written by a process that connected "
    "or on a socket, or on its command line right after a sibling process connected), then a "
    "connection to a destination not seen before.",
    T1104,
    85,
    Settings,
)

# A connect within this many seconds of an interpreter's exec, by another
# process, is the fetch feeding it when the pipe's writer could not be read.
PIPE_FETCH_SECONDS = 10.0
_STDIN = (STDIN_PIPE, STDIN_SOCKET)
# an interpreter whose program is its command line's text, right after a
# sibling (or its own pid, before the exec) connected: `sh -c "$(wget -qO-
# URL)"` (the shell runs wget in a child, reads its output, then runs sh
# with it); judged like a pipe whose writer is gone, and only by a fetch
# before the exec
INLINE = "inline_script"
# programs that run another as their child and wait for it: an interpreter
# started through one (`timeout 9 sh -c "$(curl ...)"`) has the wrapper as
# its parent, and the fetch is the wrapper's sibling
WRAPPERS = frozenset(
    {"timeout", "nice", "nohup", "setsid", "stdbuf", "ionice", "chrt", "taskset", "flock", "xargs", "time", "env"}
    | {"su", "sudo", "runuser", "setpriv", "chroot", "unshare", "nsenter", "script", "watch"}
)


@dataclass
class _Stage:
    exec: ExecView
    kind: str  # writable_path, new_executable, memfd, fd_exec, stdin_pipe, stdin_socket
    first: ConnectView | None  # the fetch; None until seen (a pipe's writer may connect after the exec)


def _exe(e: ExecView) -> str:
    """The executable, with argv[0] when they differ (busybox applets)."""
    exe = e.process.executable or e.process.name
    name = _pname(e.process)
    return exe if exe.rsplit("/", 1)[-1] == name else f"{exe} ({name})"


class MultiStageChain(_Base):
    """SL-C2-001: content fetched over the network is executed, then a
    channel opens to a new destination, in one container, within the window
    of time. A stage is: a new executable from a writable path; any
    executable outside a learned workload's baseline executables; an exec
    from a memfd or /proc/*/fd; an interpreter whose script arrives on a
    pipe written by a process that connected, or on a socket."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._connects: dict[str, deque[ConnectView]] = defaultdict(lambda: deque(maxlen=256))
        self._stages: dict[str, list[_Stage]] = defaultdict(list)

    def forget_containers(self, ids: set[str]) -> None:
        for cid in ids:
            self._connects.pop(cid, None)
            self._stages.pop(cid, None)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        horizon = cfg.within_seconds
        events: list[tuple[float, int, Any]] = [(c.ts, 0, c) for c in view.connects if c.attr.container]
        events += [(e.ts, 1, e) for e in view.execs if e.attr.container]
        out = []
        for _ts, kind, ev in sorted(events, key=lambda t: (t[0], t[1])):
            cid = ev.attr.container.id
            if kind == 0:
                for st in list(self._stages.get(cid, [])):
                    if ev.ts - st.exec.ts > horizon:
                        continue
                    if st.first is None:
                        if self._is_fetch(st, ev):
                            st.first = ev
                        continue
                    same = (ev.ip, ev.port) == (st.first.ip, st.first.port)
                    if same or ctx.known_destination(
                        ev.workload, ev.ip, ev.port, ev.transport, ev.domain, ev.name_vouched
                    ):
                        continue
                    out.append(self._finding(st.first, st.exec, ev, st.kind))
                    self._stages[cid].remove(st)
                self._connects[cid].append(ev)
            else:
                stage = self._stage_kind(ev, ctx, cfg)
                if stage is None:
                    continue
                recent = [c for c in self._connects.get(cid, ()) if 0 <= ev.ts - c.ts <= horizon]
                if stage in _STDIN or stage == INLINE:
                    st = _Stage(ev, stage, None)
                    prior = [c for c in recent if self._is_fetch(st, c)]
                    st.first = prior[-1] if prior else None
                    if st.first is not None or stage != INLINE:
                        self._stages[cid].append(st)
                elif recent:
                    self._stages[cid].append(_Stage(ev, stage, recent[-1]))
        for cid in list(self._stages):
            self._stages[cid] = [s for s in self._stages[cid] if view.end - s.exec.ts <= horizon]
            if not self._stages[cid]:
                del self._stages[cid]
        for cid in [c for c, d in self._connects.items() if d and view.end - d[-1].ts > STATE_TTL_S]:
            del self._connects[cid]
        return [f for f in out if ctx.baseline_gate(f.workload)]

    @staticmethod
    def _is_fetch(st: _Stage, c: ConnectView) -> bool:
        """Is `c` the download feeding a stdin stage? A connect by the pipe's
        writer; when the writer is unknown (it exited before /proc was read,
        or the script came on a socket), a connect by another process close
        in time."""
        if st.exec.writers:
            return c.process.pid in st.exec.writers
        if st.kind == INLINE:
            # the fetch ran in a child of the shell that substituted its
            # output: the interpreter's sibling, or, when that shell exec'd
            # the interpreter itself (a script's last command), the
            # interpreter's own pid's child; or that shell fetched itself
            # (bash's /dev/tcp) before its exec. Not the parent's own
            # connects: an application that talks to its database and runs
            # `sh -c` is no stage.
            e = st.exec.process
            return bool(e.ppid) and _inline_related(c.process, e) and 0 <= st.exec.ts - c.ts <= PIPE_FETCH_SECONDS
        if st.kind == STDIN_PIPE and c.process.ppid and st.exec.process.ppid and c.process.ppid != st.exec.process.ppid:
            # writer unknown (gone, or judged from the kernel's view of fd 0):
            # the pipe's writer is the interpreter's sibling in the shell
            # pipeline (`curl | sh`), not any process that connected nearby
            return False
        if st.kind == STDIN_SOCKET and c.process.pid in (st.exec.process.pid, st.exec.process.ppid):
            # the socket on its stdin, connected by the process itself before
            # its exec (perl: connect, dup to STDIN, exec "sh"; nc -e) or by
            # its parent: any time within the chain's window (review: the own
            # pid was never the fetch, and a connect 10 s before was too old)
            return c.ts <= st.exec.ts
        return c.process.pid != st.exec.process.pid and abs(c.ts - st.exec.ts) <= PIPE_FETCH_SECONDS

    @classmethod
    def _stage_kind(cls, e: ExecView, ctx: Context, cfg: Settings) -> str | None:
        kind = cls._file_stage_kind(e, ctx, cfg)
        if kind is None and runs_inline_interpreter(e.process.executable or e.process.name, e.process.args):
            return INLINE  # (a stage only when a related fetch came just before: _is_fetch)
        return kind

    @staticmethod
    def _file_stage_kind(e: ExecView, ctx: Context, cfg: Settings) -> str | None:
        if e.origin is not None and e.origin != SCRIPT_FILE:
            return e.origin
        path = e.process.executable or ""
        wb = ctx.workload(e.workload)
        # a script run by an interpreter: where the script is, as for an
        # executable (`wget -O /tmp/s.sh URL; sh /tmp/s.sh` ran unnoticed:
        # the interpreter is no new executable; review)
        if e.script.startswith(cfg.script_paths) and not (wb is not None and e.script in wb.executables):
            return "writable_script"
        if path and wb is not None and path in wb.executables:
            return None
        if path.startswith(cfg.writable_paths):
            return "writable_path"
        # Outside writable paths, "new" needs a baseline that has seen the
        # workload long enough to know its executables.
        if path and wb is not None and wb.windows >= ctx.config.detection.min_baseline_windows:
            return "new_executable"
        return None

    def _finding(self, a: ConnectView, stage: ExecView, b: ConnectView, kind: str) -> Finding:
        steps = [
            {
                "step": "connect",
                "time": a.ts,
                "destination": _dest(a.ip, a.port, a.domain),
                "process": _pname(a.process),
                "pid": a.process.pid,
            },
            {
                "step": "exec",
                "time": stage.ts,
                "executable": stage.process.executable,
                "args": stage.process.args,
                "pid": stage.process.pid,
                "stage": kind,
                **({"script_writers": list(stage.writers)} if stage.writers else {}),
                **({"script": stage.script} if stage.script else {}),
            },
            {
                "step": "connect",
                "time": b.ts,
                "destination": _dest(b.ip, b.port, b.domain),
                "process": _pname(b.process),
                "pid": b.process.pid,
            },
        ]
        return Finding(
            self.info.id,
            b.attr,
            b.workload,
            b.ts,
            f"{_who(b.attr, b.workload)} connected to {_dest(a.ip, a.port, a.domain)}, then ran "
            + (
                f"the script {stage.script} with"
                if kind == "writable_script"
                else _STAGE_TEXT.get(kind, "new executable")
            )
            + f" {_exe(stage)} and opened a channel to "
            f"{_dest(b.ip, b.port, b.domain)} {_secs(abs(b.ts - a.ts))} later",
            {
                "chain": steps,
                "stage": kind,
                "seconds": round(b.ts - a.ts, 3),
                "executable_in_baseline": False,
                "second_destination_in_baseline": False,
            },
            (b.ip, b.port, b.transport),
            stage.process,
            domain=b.domain,
            name_source="dns" if b.domain else None,
            name_vouched=b.name_vouched if b.domain else None,
            name_resolver=b.name_resolver or None,
        )


def _inline_related(c: ProcessRef, e: ProcessRef) -> bool:
    """Did the connecting process `c` fetch for the inline interpreter `e`?
    The shell that substitutes the fetch's output (`sh -c "$(curl URL)"`)
    is e's parent, or e itself when it exec'd the interpreter (a script's
    last command). The fetch is: that shell (bash's /dev/tcp) or its child
    (the interpreter's sibling). A parent that is only a fork of a shell (a
    subshell, a busybox applet run in a fork: `$(curl URL | cat)`, `echo |
    xargs sh -c "$s"`; FORKED, set by the pipeline only when the
    grandparent is a shell: a prefork server's workers and cron's per-job
    children are forks of no shell, review) or a wrapper that forks and
    waits (`timeout 9 sh -c ...` with coreutils' timeout) stands for its
    parent: one more generation, on either side. Never the parent's own connects (an
    application that talks to its database and runs `sh -c` is no stage),
    nor a wrapper's."""
    if c.pid == e.pid:
        return True
    shells = {e.pid, e.ppid}
    if e.gppid and _transparent(e.parent):
        shells.add(e.gppid)
    shells.discard(None)
    shells.discard(0)
    if c.pid in shells:
        return False
    return c.ppid in shells or (bool(c.gppid) and _transparent(c.parent) and c.gppid in shells)


def _transparent(parent: str) -> bool:
    return parent == FORKED or parent in WRAPPERS
