"""`sluice run` on a real terminal (a pty): compact, coloured lines by
default, and a container's hostile command line shown escaped, never
acted on."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

from emulation.lab import wait_until

from .harness import SLUICE, Docker, SensorProc, run_container

SGR = re.compile(r"\x1b\[[0-9;]*m")


def test_run_on_a_terminal_prints_compact_escaped_lines(base: Path, docker: Docker) -> None:
    s = SensorProc(base, docker.sock, name="tty")  # its config; stdout is the pty
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen(
        [SLUICE, "run", "--events", "-c", str(s.config)],
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**env, "TZ": "UTC"},
    )
    os.close(slave)
    raw = bytearray()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                raw.extend(chunk)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while s.status(check=False).returncode != 0:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "sensor not ready"
            time.sleep(0.2)
        # argv carrying an OSC (set the window title), a screen clear and a C1 CSI
        # (as $0 of a shell that lives 3 s, so its command line is read from
        # /proc even by a sensor that lags behind on a loaded machine)
        hostile = "$(printf '\\033]0;PWNED\\007\\033[2J\\302\\23331m')"
        run_container(docker, None, f"/bin/busybox sh -c 'sleep 3; true' \"{hostile}\"")
        deadline = time.monotonic() + 20
        while b"\\x1b]0;PWNED" not in raw:  # the container's exec, escaped
            assert time.monotonic() < deadline, bytes(raw[-3000:]).decode(errors="replace")
            time.sleep(0.2)
        # the container's stop, after its exit
        assert wait_until(lambda: b"container stopped" in raw, 20), bytes(raw[-3000:]).decode(errors="replace")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        finally:
            done.set()
            t.join(5)
            os.close(master)
    text = raw.decode("utf-8", errors="replace")
    assert proc.returncode == 0
    # no hostile sequence reached the terminal; our colours did
    assert "\x1b]" not in text and "\x07" not in text and "\x9b" not in text and "\x1b[2J" not in text
    assert "\x1b[" in text
    lines = [SGR.sub("", ln) for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    assert not [ln for ln in lines if ln.lstrip().startswith("{")], "JSON on a terminal"
    started = next(ln for ln in lines if " started " in ln)
    assert re.match(r"^\d\d:\d\d:\d\d (ok|WARN) +started +- +sluice start: ", started), started
    evil = next(ln for ln in lines if "\\x1b]0;PWNED" in ln)
    assert re.match(r"^\d\d:\d\d:\d\d info exec +\S+ .*ran /bin/busybox sh -c sleep 3; true ", evil), evil
    assert "\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m" in evil
    assert any(" stop " in ln and "container stopped" in ln for ln in lines)
    assert any(" stopped " in ln and "sluice stop" in ln for ln in lines)
