"""Per-flow knowledge between windows is bounded per cgroup and in total
(issue 10, finding 2): a cgroup churning destinations evicts its own oldest
entries, never another's; every eviction is counted."""

from __future__ import annotations

import random

import pytest

from emulation.records import tls_client_hello
from sensor.telemetry.classify import CLASSES, ENCRYPTED, PLAIN, StreamState
from sensor.telemetry.counters import FlowCounters, WindowCounters
from sensor.telemetry.flowstate import FlowTable

RNG = random.Random(7)
# 64 random bytes judged encrypted (fixed: a random draw may look encoded)
CIPHER = RNG.randbytes(64)


def _k(cg: int, i: int, port: int = 443) -> tuple[int, str, int, int]:
    return (cg, f"198.51.{i // 256}.{i % 256}", port, 6)


def test_a_churning_cgroup_evicts_only_its_own_oldest_and_counts() -> None:
    t: FlowTable[int] = FlowTable(per_cgroup=3, total=100)
    t.put(_k(2, 0), 20)  # another cgroup's flow, before the churn
    for i in range(10):
        t.put(_k(1, i), i)
    assert t.cgroup_len(1) == 3 and [k[1] for k in t if k[0] == 1] == ["198.51.0.7", "198.51.0.8", "198.51.0.9"]
    assert t.evictions == 7 and len(t) == 4
    assert t.get(_k(2, 0)) == 20 and t[_k(1, 9)] == 9 and _k(1, 0) not in t


def test_put_makes_a_key_the_newest_of_its_cgroup() -> None:
    t: FlowTable[int] = FlowTable(per_cgroup=2, total=10)
    t.put(_k(1, 0), 0)
    t.put(_k(1, 1), 1)
    t.put(_k(1, 0), 5)  # refreshed: 1 is now the oldest
    t.put(_k(1, 2), 2)
    assert _k(1, 1) not in t and t.get(_k(1, 0)) == 5 and t.evictions == 1


def test_total_cap_takes_from_the_least_recently_active_cgroup() -> None:
    t: FlowTable[int] = FlowTable(per_cgroup=4, total=6)
    for cg in (1, 2, 3):
        t.put(_k(cg, 0), cg)
        t.put(_k(cg, 1), cg)
    t.put(_k(2, 2), 0)  # cgroup 2 active again: 1 is the least recently active
    t.put(_k(3, 2), 0)
    assert len(t) == 6 and t.evictions == 2
    assert _k(1, 0) not in t and _k(1, 1) not in t
    assert t.cgroup_len(2) == 3 and t.cgroup_len(3) == 3
    t.put(_k(4, 0), 0)  # a new cgroup when all is full: cgroup 2 (least recent now) gives one up
    assert len(t) == 6 and t.cgroup_len(4) == 1 and t.cgroup_len(2) == 2 and t.evictions == 3


def test_pop_and_forget_keep_the_count() -> None:
    t: FlowTable[str] = FlowTable(per_cgroup=5, total=5)
    for i in range(3):
        t.put(_k(1, i), "x")
        t.put(_k(2, i), "y")
    assert len(t) == 5 and t.evictions == 1
    assert t.pop(_k(2, 0)) == "y" and t.pop(_k(2, 0)) is None and t.pop(_k(9, 0), "d") == "d"
    t.forget_cgroups({1, 7})
    assert len(t) == 2 and t.cgroup_len(1) == 0 and all(k[0] == 2 for k in t)
    t.forget_cgroups({2})
    assert not t and len(t) == 0 and t.get(_k(2, 1)) is None
    with pytest.raises(KeyError):
        t[_k(2, 1)]
    with pytest.raises(ValueError):
        FlowTable(per_cgroup=0)


def test_window_counters_flood_of_one_cgroup_keeps_anothers_owner_and_protocol() -> None:
    wc = WindowCounters(per_cgroup=64)
    victim = (7, "203.0.113.9", 443, 6)
    wc.set_owner(victim, 42, "curl")
    wc.add_sample(victim, tls_client_hello(), True, 200, True)
    for i in range(5000):  # a flood from cgroup 1
        k = _k(1, i, 9)
        wc.set_owner(k, 100, "flood")
        wc.add_sample(k, b"x" * 32, True, 32, True)
        if i % 500 == 0:
            wc.close([])
    assert wc.owners.cgroup_len(1) == 64 and wc.owners.get(victim) == (42, "curl")
    assert wc.sock_protocols.get((*victim, 0)) == "tls" and wc.flow_protocols.get(victim) == ("tls",)
    assert wc.owners.evictions == 5000 - 64 and wc.state_evictions() > wc.owners.evictions + 4000  # + last mixes
    wc.close([])  # the flood's last samples
    (s,), _e, _h = wc.close([FlowCounters(7, "203.0.113.9", 443, 6, 1000, 3, 800, 1, 0, 0, 1)])
    assert (s.pid, s.comm, s.protocol_hint) == (42, "curl", "tls")
    # one owner tuple for all of the flood's flows
    assert len({id(wc.owners[k]) for k in wc.owners if k[0] == 1}) == 1


def test_stream_state_is_kept_only_when_samples_established_some() -> None:
    wc = WindowCounters()
    plain, http = _k(1, 1, 9), _k(1, 2, 80)
    wc.add_sample(plain, b"hello there, nothing to see", True, 27, True)
    wc.add_sample(http, b"POST /u HTTP/1.1\r\nHost: x\r\n\r\n", True, 400, True)
    streams = wc.classifier.streams
    # kept per socket: the flow key and the socket's cookie (0 here: unknown)
    plain_s, http_s = (*plain, 0), (*http, 0)
    assert plain_s not in streams and isinstance(streams.get(http_s), StreamState) and streams[http_s].http
    # the socket's first payload starts over: nothing established
    wc.add_sample(http, b"just text this time, no request line", True, 40, True)
    assert http_s not in streams


def test_last_mixes_are_shared_between_flows_and_carried() -> None:
    wc = WindowCounters()
    keys = [_k(1, i, 9) for i in range(50)]
    for k in keys:
        wc.add_sample(k, CIPHER, False, 1400, False)
    wc.close([FlowCounters(*k, 1500, 1, 1400, 0, 0, 0, 1) for k in keys])
    mixes = [wc.classifier.last_mix[k] for k in keys]
    assert len(mixes[0]) == len(CLASSES) and mixes[0][CLASSES.index(ENCRYPTED)] == 1.0
    assert all(m is mixes[0] for m in mixes)  # one tuple for all of them
    (s,), _e, _h = wc.close([FlowCounters(*keys[0], 3000, 2, 2800, 0, 0, 0, 0)])
    assert s.byte_classes is not None and s.byte_classes.carried and s.byte_classes.as_dict() == {ENCRYPTED: 2800}
    assert PLAIN not in s.byte_classes.bytes


def test_touch_renews_an_entry() -> None:
    t: FlowTable[str] = FlowTable(per_cgroup=3, total=5)
    t.put(_k(1, 0), "a")
    t.put(_k(1, 1), "b")
    t.put(_k(1, 2), "c")
    assert t.get(_k(1, 0), touch=True) == "a" and t.get(_k(1, 9), touch=True) is None
    assert t.get(_k(7, 0), "d", touch=True) == "d"
    t.put(_k(1, 3), "d")  # the oldest untouched entry goes, not the renewed one
    assert _k(1, 0) in t and _k(1, 1) not in t and t.evictions == 1
    t.get(_k(1, 2))  # a plain get renews nothing
    t.put(_k(1, 4), "e")
    assert _k(1, 2) not in t and _k(1, 0) in t
