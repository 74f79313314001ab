"""The sock_diag reply parser of sensor/attribution/unixdiag.py (pure bytes;
the sweep itself runs against the real kernel in
tests/adversarial/test_containment_unix.py)."""

from __future__ import annotations

import struct

import pytest

from sensor.attribution import unixdiag as U


def _rta(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _msg(ino: int, stype: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBBBI2I", 1, stype, 1, 0, ino, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), U.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def _done() -> bytes:
    return struct.pack("=IHHII", 20, U.NLMSG_DONE, 2, 1, 0) + b"\0" * 4


def test_records_with_peer_and_names() -> None:
    data = (
        _msg(10, 1, _rta(U.UNIX_DIAG_PEER, struct.pack("=I", 11)) + _rta(U.UNIX_DIAG_SHUTDOWN, b"\x03"))
        + _msg(11, 1, _rta(U.UNIX_DIAG_NAME, b"/run/docker.sock\0") + _rta(U.UNIX_DIAG_PEER, struct.pack("=I", 10)))
        + _msg(12, 2, _rta(U.UNIX_DIAG_NAME, b"\0abs\0name"))
        + _done()
    )
    socks, done = U.parse(data)
    assert done
    assert socks == [
        U.UnixSocket(10, 1, 11, "", U.SHUTDOWN_MASK),  # shut both ways
        U.UnixSocket(11, 1, 10, "/run/docker.sock"),
        U.UnixSocket(12, 2, 0, "@abs\0name"),
    ]


def test_a_partial_reply_is_not_done_and_a_truncated_record_is_not_read_past() -> None:
    one = _msg(10, 1, _rta(U.UNIX_DIAG_PEER, struct.pack("=I", 11)))
    socks, done = U.parse(one + one[:20])
    assert not done and [u.inode for u in socks] == [10]
    # an attribute claiming more than its record: the record ends there
    bad = _msg(13, 1, struct.pack("=HH", 400, U.UNIX_DIAG_PEER) + b"\1\0\0\0")
    socks, _ = U.parse(bad)
    assert socks == [U.UnixSocket(13, 1, 0, "")]


def test_an_error_reply_raises() -> None:
    err = struct.pack("=IHHII", 20, U.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1)
    with pytest.raises(OSError):
        U.parse(err)


def test_connected_peers_names_the_daemon_socket_a_process_holds(tmp_path) -> None:
    """A client's connection, read from the kernel (this process's own
    sockets, its own namespace): the peer's name is the listener's path as
    the daemon bound it, whatever the client called it (a symlink here)."""
    import os
    import socket

    real = tmp_path / "docker.sock"
    alias = tmp_path / "x"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(real))
    srv.listen(1)
    alias.symlink_to(real)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        cli.connect(str(alias))
        acc, _ = srv.accept()
        got = U.connected_peers([os.getpid()])
        assert (os.getpid(), str(real)) in got
        # the daemon's side: its accepted end's peer (the client) has no name
        assert all(name == str(real) for _t, name in got if name.startswith(str(tmp_path)))
        acc.close()
    finally:
        cli.close()
        srv.close()
