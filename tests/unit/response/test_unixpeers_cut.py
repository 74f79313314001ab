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
