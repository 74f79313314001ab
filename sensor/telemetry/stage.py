"""Where an exec'd program came from, read from /proc at exec time.

Stage two of a multi-stage intrusion rarely needs a new file: `wget -O- URL |
sh` feeds the script to an interpreter on a pipe, `exec 3<>/dev/tcp/...`
or a socket on stdin does the same, and a payload written to a memfd (or an
open, deleted file) runs through /proc/self/fd/N or /dev/fd/N. This module
names those origins so that SL-C2-001 can treat them as a stage: an exec
whose content came from the network.

Read once per exec of an interpreter (or a /proc fd path), from the sensor's
drain loop: a readlink of fd 0, and for a pipe a scan of the fds of the
process's siblings (bounded) to find the writer. A process that already
exited cannot be read: its origin is then unknown (None), never guessed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass

FD_EXEC = "fd_exec"  # exec of /proc/<pid>/fd/N or /dev/fd/N (memfd, deleted file, fexecve)
MEMFD = "memfd"  # the executable is a memfd
STDIN_PIPE = "stdin_pipe"  # an interpreter reading its script from a pipe
STDIN_SOCKET = "stdin_socket"  # an interpreter reading its script from a socket
SCRIPT_FILE = "script_file"  # an interpreter running a script file (Origin.path; the rule judges it)

_SHELLS = frozenset(
    {"sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "busybox", "fish", "tclsh", "pwsh", "osascript"}
)
_MULTICALL = frozenset({"busybox", "toybox"})
_VERSIONED = re.compile(r"^(python|perl|ruby|php|lua|node|nodejs|jshell|Rscript)[\d.]*$")
MAX_WRITER_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Origin:
    kind: str
    writers: tuple[int, ...] = ()  # stdin_pipe: pids holding the pipe's write end
    path: str = ""  # script_file: the script, absolute


def is_interpreter(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in _SHELLS or bool(_VERSIONED.match(base))


# A path that names a descriptor: /dev/stdin, /dev/fd/N, /proc/self/fd/N
# (thread-self's, a task's) or another process's /proc/<n>/fd/N. An exec's
# filename (fexecve, memfd payloads: FD_EXEC) and a script operand
# (script_fd) are read with the same one.
FD_PATH = re.compile(r"^(?:/dev/stdin|/dev/fd/(\d+)|/proc/(?:self|thread-self|(\d+))(?:/task/\d+)?/fd/(\d+))$")

# Per interpreter family: option letters that put the program on the
# command line (or name a module: no script file), letters that take a
# value (the rest of their cluster, or the next argument), and long options
# that take the next argument. A flag's value is no script: `bash -o
# pipefail -c make` named "pipefail" a script (review).
_OPTIONS: dict[str, tuple[str, str, frozenset[str]]] = {
    "sh": ("c", "oO", frozenset({"--rcfile", "--init-file"})),
    "python": ("cm", "WXQ", frozenset({"--check-hash-based-pycs"})),
    "perl": ("eE", "IMmxilC0dD", frozenset()),
    "ruby": ("e", "IrCEWTxK", frozenset()),
    "php": ("rRBEF", "cdzf", frozenset()),
    "lua": ("e", "l", frozenset()),
    "node": ("ep", "rC", frozenset({"--require", "--import", "--loader", "--experimental-loader", "--env-file"})),
}
_LONG_INLINE = frozenset({"--eval", "--print", "--command"})


def _family(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base in _SHELLS:
        return "sh"
    m = _VERSIONED.match(base)
    fam = m.group(1) if m else ""
    return "node" if fam == "nodejs" else fam


def script_source(args: list[str] | None) -> str | None:
    """Where the interpreter's program comes from: "-" for stdin, its
    script operand (a path, maybe /dev/stdin or /dev/fd/N), or None (inline:
    -c, -e, a cluster holding them such as -ec; a module, -m; or no command
    line)."""
    src = _source(args)
    return None if src in (_INLINE, _MODULE) else src


def runs_inline(args: list[str] | None) -> bool:
    """The interpreter's program is its command line's text (-c, -e,
    --eval: `sh -c "$(wget -qO- URL)"` runs what was fetched), not a
    script, stdin or a module (python -m)."""
    return _source(args) == _INLINE


_INLINE, _MODULE = "\0inline", "\0module"  # (no path or operand holds a NUL)


def _source(args: list[str] | None) -> str | None:
    if not args:
        return None
    ops = args[1:]
    name = args[0]
    if name.rsplit("/", 1)[-1] == "busybox":  # busybox sh ...
        if not ops or not is_interpreter(ops[0]):
            return None
        name, ops = ops[0], ops[1:]
    fam = _family(name)
    inline, takes, long_takes = _OPTIONS.get(fam, ("ce", "", frozenset()))
    i = 0
    while i < len(ops):
        o = ops[i]
        if o == "--":
            rest = ops[i + 1 :]
            return rest[0] if rest and rest[0] != "-" else "-"
        if o == "-":
            return "-"
        if o.startswith("--"):
            key = o.split("=", 1)[0]
            if key in _LONG_INLINE:
                return _INLINE
            i += 2 if key in long_takes and "=" not in o else 1
            continue
        if len(o) > 1 and (o[0] == "-" or (fam == "sh" and o[0] == "+")):
            letters = o[1:]
            for j, ch in enumerate(letters):
                if fam == "sh" and ch == "s" and o[0] == "-":
                    return "-"  # read commands from stdin; operands are $1...
                if ch in inline:
                    return _MODULE if fam == "python" and ch == "m" else _INLINE
                if ch in takes:
                    if j == len(letters) - 1:
                        i += 1  # its value is the next argument
                    break  # else the rest of the cluster is the value
            i += 1
            continue
        return o  # the first operand is the script
    return "-"


def script_from_stdin(args: list[str] | None) -> bool:
    """The interpreter's command line names no script: it reads stdin."""
    return script_source(args) == "-"


def script_fd(source: str) -> tuple[str, int] | None:
    """The descriptor a path names (a script source here; the socket path
    of a unix connect in sensor/attribution/runtimesock.py), as (pid, fd): pid "" for the
    interpreter's own ("-", /dev/stdin, /dev/fd/N, /proc/self/fd/N: bash's
    <(curl ...) is /dev/fd/63), or the pid another process has in the
    caller's pid namespace (/proc/<n>/fd/N: `bash /proc/$$/fd/0` runs its
    parent's stdin); None for a file. `sh /dev/stdin` and `sh
    /proc/self/fd/0` read the pipe `curl | sh` does (review: both ran
    unnoticed); spelled non-canonically (`/dev/./stdin`) too."""
    if source == "-":
        return "", 0
    canonical = "/" + os.path.normpath(source).lstrip("/") if source.startswith("/") else source
    m = FD_PATH.match(canonical)
    if m is None:
        return None
    return m.group(2) or "", int(m.group(1) or m.group(3) or 0)


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _writes(proc: str, pid: int, fd: str) -> bool:
    """fdinfo says the fd is open for writing (O_WRONLY or O_RDWR)."""
    try:
        with open(f"{proc}/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & 0o3 in (1, 2)
    except (OSError, ValueError, IndexError):
        return False
    return False


def pipe_writers(pipe: str, candidates: list[int], proc: str = "/proc") -> tuple[int, ...]:
    """Pids among `candidates` holding `pipe` ("pipe:[inode]") for writing."""
    out = []
    for pid in candidates[:MAX_WRITER_CANDIDATES]:
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            if _link(f"{proc}/{pid}/fd/{fd}") == pipe and _writes(proc, pid, fd):
                out.append(pid)
                break
    return tuple(out)


def runs_interpreter(executable: str, args: list[str] | None) -> bool:
    """The exec runs an interpreter: by its argv[0], or by its executable
    unless that is a multi-call binary (busybox: sh, gzip and base64 are
    all /bin/busybox, the program is the one its argv names, never its
    executable; `busybox gzip -c` is no `sh -c`). A busybox applet that
    re-runs itself execs /proc/self/exe with argv[0] "sh"."""
    name = args[0] if args else executable
    multicall = executable.rsplit("/", 1)[-1] in _MULTICALL
    return is_interpreter(name) or (not multicall and is_interpreter(executable))


def runs_inline_interpreter(executable: str, args: list[str] | None) -> bool:
    """An interpreter whose program is its command line (SL-C2-001's
    inline stage; the pipeline gives it its own share of exec views)."""
    return runs_interpreter(executable, args) and runs_inline(args)


def stage_origin(
    pid: int,
    filename: str,
    executable: str,
    args: list[str] | None,
    siblings: Callable[[], list[int]],
    proc: str = "/proc",
    stdin_mode: int = 0,
) -> Origin | None:
    """How the program that `pid` just exec'd got its content, when that is
    a stage-two pattern; None otherwise (or when it cannot be read).
    `siblings` lists the pids that may hold a pipe's other end (called only
    for a pipe); `stdin_mode`, fd 0's inode mode at the exec (0: unknown),
    answers for a process already gone."""
    if FD_PATH.match(filename):
        return Origin(MEMFD if executable.startswith("/memfd:") else FD_EXEC)
    if executable.startswith("/memfd:"):
        return Origin(MEMFD)
    source = script_source(args) if runs_interpreter(executable, args) else None
    if source is None:
        return None
    where = script_fd(source)
    if where is None:
        # a script file: where it is decides (the rule's writable paths);
        # relative to the process's working directory
        if source.startswith("/"):
            return Origin(SCRIPT_FILE, path=source)
        cwd = _link(f"{proc}/{pid}/cwd")
        return Origin(SCRIPT_FILE, path=os.path.normpath(os.path.join(cwd, source))) if cwd else None
    other, fd = where
    # another process's fd, by its pid in the caller's pid namespace: read
    # through the caller's root, whose /proc is that namespace's
    stdin = _link(f"{proc}/{pid}/root/proc/{other}/fd/{fd}" if other else f"{proc}/{pid}/fd/{fd}")
    if stdin is None:
        # gone before it was read: fd 0's type as the kernel saw it at the
        # exec (bpf/exec.bpf.c), the pipe's writer unknown
        if (other, fd) == ("", 0) and stat.S_ISFIFO(stdin_mode):
            return Origin(STDIN_PIPE)
        if (other, fd) == ("", 0) and stat.S_ISSOCK(stdin_mode):
            return Origin(STDIN_SOCKET)
        return None
    if stdin.startswith("socket:"):
        return Origin(STDIN_SOCKET)
    if stdin.startswith("pipe:"):
        return Origin(STDIN_PIPE, pipe_writers(stdin, siblings(), proc))
    return None
