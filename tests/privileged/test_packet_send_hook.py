"""The AF_PACKET send report's hook (bpf/packet.bpf.c): a tp_btf program
where the kernel's BTF allows, the classic tracepoint otherwise. The
tp_btf way and the configured fallback are exercised with containers in
tests/adversarial/test_raw_sockets.py; this is the fallback a refusing
verifier forces. The real loader in this process, the real kernel."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from sensor.config import default_config
from sensor.kernel import btf
from sensor.kernel import events as E
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe


def test_send_report_falls_back_to_the_tracepoint_when_tp_btf_is_refused(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel whose verifier refuses the tp_btf program (here: a BTF id
    that names no tracepoint) gets the classic tracepoint program, the
    status quotes the refusal, and a packet socket's send is still
    reported. Loopback only: the frame goes to `lo`."""
    real = btf.sock_send_layout()
    monkeypatch.setattr(btf, "sock_send_layout", lambda: dataclasses.replace(real, btf_id=1))
    src = BccSource(default_config().kernel, probe(True, H.UNITS))
    raw: list[bytes] = []
    src.start(raw.append)
    try:
        status = src.status["sock:sock_send_length"]
        assert status.startswith("attached (tracepoint; not tp_btf: the kernel refused the tp_btf program"), status
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5)) as p:
            p.bind(("lo", 0x88B5))
            p.send(b"\x00" * 12 + b"\x88\xb5" + b"sluice" * 8)
        src.poll(100)
        socks = [e for e in map(E.decode, raw) if isinstance(e, E.SocketEvent) and e.hdr.pid == os.getpid()]
        assert socks and socks[0].family == 17 and socks[0].hook == E.SOCKET_HOOK_SEND, socks
    finally:
        src.close()
