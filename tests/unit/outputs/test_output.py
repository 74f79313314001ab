"""JSON lines to a file: append, one object per line, reopen for rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sensor.outputs.sinks import JsonLineWriter


def read_lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]


def test_one_json_object_per_line(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    w = JsonLineWriter(str(p))
    docs: list[dict[str, Any]] = [{"a": 1, "nested": {"b": [1, 2]}}, {"msg": "line\nbreak", "u": "h\u00e9"}, {}]
    for d in docs:
        w.write(d)
    # flushed per line: readable before close
    assert read_lines(p) == docs
    raw = p.read_text(encoding="utf-8")
    assert raw.count("\n") == 3 and raw.endswith("\n")
    assert "h\u00e9" in raw  # not ASCII-escaped
    assert w.lines == 3 and w.errors == 0
    w.close()


def test_non_json_values_are_stringified(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    w = JsonLineWriter(str(p))
    w.write({"path": Path("/x")})
    w.close()
    assert read_lines(p) == [{"path": "/x"}]


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    p.write_text('{"old":true}\n')
    w = JsonLineWriter(str(p))
    w.write({"new": True})
    w.close()
    w2 = JsonLineWriter(str(p))
    w2.write({"newer": True})
    w2.close()
    assert read_lines(p) == [{"old": True}, {"new": True}, {"newer": True}]


def test_reopen_after_rename_writes_a_new_file(tmp_path: Path) -> None:
    p = tmp_path / "sluice.json"
    w = JsonLineWriter(str(p))
    w.write({"n": 1})
    os.rename(p, tmp_path / "sluice.json.1")  # what logrotate does
    w.write({"n": 2})  # still goes to the moved file
    w.reopen()  # SIGHUP
    w.write({"n": 3})
    w.close()
    assert read_lines(tmp_path / "sluice.json.1") == [{"n": 1}, {"n": 2}]
    assert read_lines(p) == [{"n": 3}]
    assert w.lines == 3 and w.errors == 0


def test_stdout_for_empty_and_dash(capsys) -> None:
    for path in ("", "-", None):
        w = JsonLineWriter(path)
        assert w.path is None
        w.write({"to": "stdout"})
        w.reopen()  # no-op
        w.close()  # does not close stdout
    out = capsys.readouterr().out
    assert out.splitlines() == ['{"to":"stdout"}'] * 3


def test_write_errors_are_counted(tmp_path: Path) -> None:
    w = JsonLineWriter("/dev/full")  # every write fails with ENOSPC
    w.write({"a": 1})
    w.write({"a": 2})
    assert w.errors == 2 and w.lines == 0
    assert "No space left" in w.last_error


def test_reopen_failure_is_counted_and_keeps_the_old_file(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    p = d / "out.json"
    w = JsonLineWriter(str(p))
    w.write({"n": 1})
    os.rename(d, tmp_path / "logs.old")  # the directory is gone: open() fails
    w.reopen()
    assert w.errors == 1 and "reopen" in w.last_error
    w.write({"n": 2})  # still writing to the old file
    w.close()
    assert read_lines(tmp_path / "logs.old" / "out.json") == [{"n": 1}, {"n": 2}]


def test_reopen_after_failed_writes_does_not_raise() -> None:
    # disk full, then SIGHUP after logrotate: the old file cannot flush what a
    # failed write left buffered; reopen must count that, not raise (it runs
    # in the sensor's main loop)
    w = JsonLineWriter("/dev/full")
    w.write({"a": 1})
    assert w.errors == 1
    w.reopen()
    assert w.errors >= 2
