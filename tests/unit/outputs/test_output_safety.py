"""Output never dies and never lies (issue 10, finding 1): strings from
outside are escaped, documents are valid UTF-8 JSON, a failing sink is
counted while the others keep writing, a stopped writer is restarted and
reported, outputs are 0600 and never followed through a symlink."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sensor.errors import SluiceError
from sensor.outputs.sinks import JsonLineWriter, Output, build_output
from sensor.telemetry.pipeline import CMDLINE_TRUNCATED, read_cmdline
from sensor.text import json_line, safe_text

ODD_EXE = os.fsdecode(b"/tmp/d\xff/nc")  # what os.readlink returns for that path


class Memory:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.errors = 0
        self.last_error = ""

    def write_line(self, line: str, doc: dict[str, Any]) -> None:
        self.lines.append(line)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class Raising(Memory):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def write_line(self, line: str, doc: dict[str, Any]) -> None:
        raise self.exc


def _wait(pred: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_safe_text_escapes_invalid_bytes_and_surrogates() -> None:
    assert safe_text(b"/tmp/d\xff/nc") == "/tmp/d\\xff/nc"
    assert safe_text(ODD_EXE) == "/tmp/d\\xff/nc"  # same view whichever way it came in
    assert safe_text("a\ud800b") == "a\\ud800b"  # a lone surrogate from an engine's JSON
    assert safe_text("h\u00e9 \u4e2d") == "h\u00e9 \u4e2d"  # valid text untouched
    for s in (b"\xc3\x28\xa0\xa1", "x\udcff\udc80y"):
        safe_text(s).encode("utf-8")


def test_json_line_is_utf8_with_control_characters_escaped() -> None:
    doc = {"exe": ODD_EXE, "label": "x\x1b]0;pwned\x07\x9b31m\x85\u2028\x7f", "bad": "\ud800"}
    line = json_line(doc)
    raw = line.encode("utf-8")  # never raises
    assert b"\n" not in raw
    for c in ("\x1b", "\x07", "\x9b", "\x85", "\u2028", "\x7f"):
        assert c not in line
    back = json.loads(line)
    assert back["exe"] == "/tmp/d\\xff/nc"
    assert back["label"] == "x\x1b]0;pwned\x07\x9b31m\x85\u2028\x7f"  # escaped, not lost


def test_an_undecodable_executable_does_not_stop_later_documents(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    out = Output([JsonLineWriter(str(p))])
    out.emit({"process": {"executable": ODD_EXE}})
    out.emit({"after": 1})
    out.close()
    docs = [json.loads(line) for line in p.read_bytes().decode("utf-8").splitlines()]
    assert docs == [{"process": {"executable": "/tmp/d\\xff/nc"}}, {"after": 1}]


def test_a_sink_that_raises_is_counted_and_the_others_keep_writing() -> None:
    good, bad = Memory(), Raising(UnicodeEncodeError("utf-8", "x", 0, 1, "boom"))
    out = Output([bad, good])
    for i in range(3):
        out.emit({"n": i})
    out.close()
    assert [json.loads(x)["n"] for x in good.lines] == [0, 1, 2]
    assert bad.errors == 3 and out.sink_exceptions == 3
    assert "UnicodeEncodeError" in out.stats()["last_error"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stopped_writer_is_restarted_and_reported_at_once() -> None:
    good = Memory()
    killer = Raising(SystemExit(3))  # not an Exception: the writer thread ends
    out = Output([killer, good])
    told: list[str] = []
    out.on_writer_restart = lambda: told.append(out.writer_problem)
    out.emit({"n": 0})
    _wait(lambda: not out._thread.is_alive())
    out.sinks.remove(killer)
    out.emit({"n": 1})  # sees the dead writer, says so, starts another
    assert told and "stopped" in told[0]
    assert out.stats()["writer_restarts"] == 1
    out.close()
    assert [json.loads(x)["n"] for x in good.lines] == [1]


def test_a_failed_file_is_retried(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    w = JsonLineWriter(str(p))
    w._f.close()  # the file is broken under the writer
    w.write({"n": 1})
    assert w.errors == 1
    w._retry_at = 0.0
    w.write({"n": 2})
    assert json.loads(p.read_text().splitlines()[-1]) == {"n": 2}


class _OutCfg:
    max_bytes = 0
    backups = 0
    socket = ""
    syslog = ""
    format = "ecs"
    queue_size = 100

    def __init__(self, path: str) -> None:
        self.path = path


def test_outputs_are_created_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        w = JsonLineWriter(str(tmp_path / "o.jsonl"))
    finally:
        os.umask(old)
    w.write({"a": 1})
    w.close()
    assert stat.S_IMODE(os.stat(tmp_path / "o.jsonl").st_mode) == 0o600


def test_outputs_never_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("precious\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    with pytest.raises(SluiceError, match="symlink"):
        build_output(_OutCfg(str(link)), "h")
    assert target.read_text() == "precious\n"


# Under CI=true (which runs as root) it must run: a non-root CI fails here
# rather than skipping the check.
@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="needs root to become another user")
def test_non_root_with_unwritable_output_gets_the_root_message(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    r = subprocess.run(
        [sys.executable, "-m", "control.cli", "run", "-o", "/proc/sluice-cannot-write"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[2]),
        user=65534,
        group=65534,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert "must run as root" in r.stderr + r.stdout


def test_cmdline_is_read_with_a_cap_and_marked(tmp_path: Path) -> None:
    d = tmp_path / "4242"
    d.mkdir()
    (d / "cmdline").write_bytes(b"sh\0-c\0" + b"A" * (1 << 20) + b"\0")
    args, truncated = read_cmdline(4242, str(tmp_path), max_bytes=4096)
    assert truncated and args is not None
    assert args[-1] == CMDLINE_TRUNCATED
    assert sum(len(a) for a in args) < 4096 + 64
    (d / "cmdline").write_bytes(b"nc\0/tmp/d\xff\0")
    assert read_cmdline(4242, str(tmp_path)) == (["nc", "/tmp/d\\xff"], False)
