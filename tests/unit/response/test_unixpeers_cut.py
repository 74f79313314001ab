"""Which connections the unix sweep picks (sensor/response/unixpeers.py
cut), its kernel reads replaced: the sweep itself runs against the real
kernel in tests/adversarial/test_containment_unix.py."""

from __future__ import annotations

import pytest

from sensor.attribution.unixdiag import UnixSocket
from sensor.response import unixpeers as U

DGRAM, STREAM = 2, 1


@pytest.mark.parametrize("inside_end,outside_end", [(10, 11), (11, 10)])
def test_a_datagram_socketpair_end_is_cut_whichever_inode_is_lower(
    monkeypatch: pytest.MonkeyPatch, inside_end: int, outside_end: int
) -> None:
    """Review: keyed by the pair, the container's end of a connected
    datagram pair was skipped when the outside end had the lower inode."""
    socks = {
        inside_end: UnixSocket(inside_end, DGRAM, outside_end, ""),
        outside_end: UnixSocket(outside_end, DGRAM, inside_end, ""),
    }
    monkeypatch.setattr(U, "dump", lambda netns: dict(socks))
    monkeypatch.setattr(U, "same_netns", lambda netns: True)
    monkeypatch.setattr(U, "_fd_holders", lambda tasks, inodes, proc, budget_s=None: ({inside_end: [(5, 3)]}, True))
    cut: list[int] = []

    def fake_cut(u, end, holders, names, done, failed, container_end, proc="/proc"):
        cut.append(end)
        return True

    monkeypatch.setattr(U, "_try_cut", fake_cut)
    U.cut([5], "/proc/5/ns/net", shared=False)
    assert cut == [inside_end]


@pytest.mark.parametrize("shut,again", [(0, True), (1, True), (3, False)])
def test_a_connection_cut_already_is_not_cut_every_window(
    monkeypatch: pytest.MonkeyPatch, shut: int, again: bool
) -> None:
    """Review: shutdown(SHUT_RDWR) leaves both ends connected in sock_diag
    while their descriptors stay open; the per-window sweep froze the
    container and cut it again every window. Shut both ways: skipped
    (pending says nothing to do); one way only: still cut."""
    socks = {10: UnixSocket(10, STREAM, 11, "", shut), 11: UnixSocket(11, STREAM, 10, "/shared/l.sock", shut)}
    monkeypatch.setattr(U, "dump", lambda netns: dict(socks))
    monkeypatch.setattr(U, "same_netns", lambda netns: True)
    monkeypatch.setattr(U, "_fd_holders", lambda tasks, inodes, proc, budget_s=None: ({10: [(5, 3)]}, True))
    assert U.pending([5], "/proc/5/ns/net", shared=False) is again
