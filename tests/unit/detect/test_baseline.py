"""Baselines: histograms, destination statistics, bounded tables, merge,
and the versioned msgpack file (atomic writes, refusals with reasons)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgpack
import pytest

from sensor.detect import baseline as B
from sensor.detect.baseline import (
    Baseline,
    BaselineError,
    DestStats,
    LogHist,
    WorkloadBaseline,
    dest_key,
    load,
    merge_all,
    save,
)


def get_wb(b: Baseline, key: str) -> WorkloadBaseline:
    """b.get(key), asserting the workload is in the baseline."""
    wb = b.get(key)
    assert wb is not None, f"no baseline for {key!r}"
    return wb


# --- LogHist ----------------------------------------------------------------------------


def test_loghist_bins() -> None:
    assert LogHist.bin_of(0) == 0 and LogHist.bin_of(-5) == 0
    assert LogHist.upper(0) == 0.0
    assert LogHist.bin_of(1) == 5  # 4 * log2(2) + 1
    # every value lies in (upper(b-1), upper(b)]
    for v in (0.5, 1, 3, 10, 1000, 12345.6, 1 << 30):
        b = LogHist.bin_of(v)
        assert LogHist.upper(b - 1) <= v < LogHist.upper(b) or v == LogHist.upper(b)
        assert LogHist.upper(b) <= (v + 1) * 2**0.25


def test_loghist_quantiles() -> None:
    h = LogHist()
    assert h.quantile(0.5) == 0.0 and h.n == 0
    for v in range(1, 101):
        h.add(v)
    assert h.n == 100
    q50, q99 = h.quantile(0.5), h.quantile(0.99)
    assert 50 <= q50 <= 51 * 2**0.25
    assert 99 <= q99 <= 101 * 2**0.25
    assert h.quantile(1.0) == LogHist.upper(LogHist.bin_of(100))
    assert h.quantile(0.0) == LogHist.upper(LogHist.bin_of(1))
    assert h.quantile(0.1) <= q50 <= q99


def test_loghist_zeros_and_counts() -> None:
    h = LogHist()
    h.add(0, count=99)
    h.add(1_000_000)
    assert h.n == 100
    assert h.quantile(0.99) == 0.0
    assert h.quantile(1.0) >= 1_000_000


def test_loghist_merge_is_exact() -> None:
    a, b, both = LogHist(), LogHist(), LogHist()
    for v in (1, 5, 5, 300):
        a.add(v)
        both.add(v)
    for v in (5, 7000, 0):
        b.add(v)
        both.add(v)
    a.merge(b)
    assert a.bins == both.bins and a.n == both.n == 7
    assert a.quantile(0.5) == both.quantile(0.5)
    assert LogHist(a.to_wire()).n == 7


# --- DestStats -----------------------------------------------------------------------------


def test_deststats_merge_and_wire() -> None:
    a = DestStats(2, 100, 60, 7.2, {"tls"})
    a.merge(DestStats(3, 50, 0, 4.0, {"http"}))
    assert (a.windows, a.bytes, a.encrypted_bytes, a.max_entropy, a.protocols) == (5, 150, 60, 7.2, {"tls", "http"})
    w = a.to_wire()
    assert w == [5, 150, 60, 7.2, ["http", "tls"], []]
    assert DestStats.from_wire(w) == a


def test_add_destination_accumulates() -> None:
    wb = WorkloadBaseline()
    k = dest_key("203.0.113.5", 443, "tcp")
    assert k == "203.0.113.5|443|tcp"
    wb.add_destination(k, 1000, 1000, 7.9, "tls")
    wb.add_destination(k, 500, 0, None, None)
    d = wb.destinations[k]
    assert (d.windows, d.bytes, d.encrypted_bytes, d.max_entropy, d.protocols) == (2, 1500, 1000, 7.9, {"tls"})


# --- knows_destination ------------------------------------------------------------------


def test_knows_destination_exact_and_generalised_v4() -> None:
    wb = WorkloadBaseline()
    wb.add_destination(dest_key("203.0.113.5", 443, "tcp"), 1, 0, None, None)
    assert wb.knows_destination("203.0.113.5", 443, "tcp")
    assert not wb.knows_destination("203.0.113.6", 443, "tcp")  # exact by default
    assert wb.knows_destination("203.0.113.200", 443, "tcp", 24, 64)
    assert not wb.knows_destination("203.0.114.5", 443, "tcp", 24, 64)
    assert not wb.knows_destination("203.0.113.200", 8443, "tcp", 24, 64)  # port must match
    assert not wb.knows_destination("203.0.113.200", 443, "udp", 24, 64)  # transport too
    assert wb.knows_destination("203.0.112.9", 443, "tcp", 16, 64)
    assert not wb.knows_destination("2001:db8::5", 443, "tcp", 24, 64)  # other family


def test_knows_destination_generalised_v6() -> None:
    wb = WorkloadBaseline()
    wb.add_destination(dest_key("2001:db8:1:2::10", 443, "tcp"), 1, 0, None, None)
    assert wb.knows_destination("2001:db8:1:2::10", 443, "tcp")
    assert not wb.knows_destination("2001:db8:1:2::11", 443, "tcp")
    assert wb.knows_destination("2001:db8:1:2:ffff::1", 443, "tcp", 24, 64)
    assert not wb.knows_destination("2001:db8:1:3::10", 443, "tcp", 24, 64)
    assert not wb.knows_destination("203.0.113.5", 443, "tcp", 24, 64)


def test_active_hour() -> None:
    wb = WorkloadBaseline()
    wb.hours[3] = 2
    assert wb.active_hour(3) and not wb.active_hour(4)


# --- bounded tables ----------------------------------------------------------------------


def test_destinations_are_bounded_and_drops_counted() -> None:
    wb = WorkloadBaseline()
    for i in range(B.MAX_DESTINATIONS + 5):
        wb.add_destination(dest_key(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 443, "tcp"), 1, 0, None, None)
    assert len(wb.destinations) == B.MAX_DESTINATIONS
    assert wb.dropped == 5
    # a destination already known still accumulates when the table is full
    first = dest_key("10.0.0.0", 443, "tcp")
    wb.add_destination(first, 10, 0, None, None)
    assert wb.destinations[first].windows == 2 and wb.dropped == 5


def test_executables_and_peers_are_bounded() -> None:
    wb = WorkloadBaseline()
    for i in range(B.MAX_EXECUTABLES + 2):
        wb.add_executable(f"/usr/bin/t{i}")
    for i in range(B.MAX_PEERS + 3):
        wb.add_peer(f"peer/{i}")
    assert len(wb.executables) == B.MAX_EXECUTABLES and len(wb.peers) == B.MAX_PEERS
    assert wb.dropped == 5
    wb.add_executable("/usr/bin/t0")
    wb.add_peer("peer/0")
    assert wb.executables["/usr/bin/t0"] == 2 and wb.peers["peer/0"] == 2 and wb.dropped == 5


def test_merge_respects_bounds() -> None:
    a, b = WorkloadBaseline(), WorkloadBaseline()
    for i in range(B.MAX_DESTINATIONS):
        a.add_destination(dest_key("10.0.0.1", 1000 + i, "tcp"), 1, 0, None, None)
    b.add_destination(dest_key("10.0.0.2", 1, "tcp"), 1, 0, None, None)
    b.add_destination(dest_key("10.0.0.1", 1000, "tcp"), 1, 0, None, None)
    b.dropped = 4
    a.merge(b)
    assert len(a.destinations) == B.MAX_DESTINATIONS
    assert a.destinations[dest_key("10.0.0.1", 1000, "tcp")].windows == 2
    assert a.dropped == 1 + 4


# --- files --------------------------------------------------------------------------------


def sample_baseline() -> Baseline:
    b = Baseline(window_seconds=5.0, nodes={"node-a"}, created=1000.0, updated=1000.0)
    wb = b.workload("acme/api")
    wb.windows = 7
    wb.egress_bytes.add(12345)
    wb.encrypted_bytes.add(4000, count=3)
    wb.add_destination(dest_key("203.0.113.5", 443, "tcp"), 100, 90, 7.9, "tls")
    wb.add_destination(dest_key("2001:db8::1", 53, "udp"), 10, 0, 3.1, "dns")
    wb.add_executable("/usr/bin/curl")
    wb.add_peer("acme/db")
    wb.lifetimes.add(12.5)
    wb.starts_per_window.add(2)
    wb.hours[14] = 7
    wb.seen(1_700_000_000.0)
    wb.seen(1_700_000_100.0)
    wb.dropped = 1
    b.workload("host").windows = 3
    return b


def test_save_load_roundtrip_is_atomic(tmp_path: Path) -> None:
    b = sample_baseline()
    path = tmp_path / "state" / "baseline.msgpack"  # parent created
    save(b, path)
    assert os.listdir(path.parent) == ["baseline.msgpack"]  # no temporary file left
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b.updated > 1000.0
    got = load(path)
    assert got.to_wire() == b.to_wire()
    wb = get_wb(got, "acme/api")
    assert wb.destinations[dest_key("203.0.113.5", 443, "tcp")].protocols == {"tls"}
    assert wb.knows_destination("203.0.113.5", 443, "tcp")
    assert wb.encrypted_bytes.n == 3 and wb.hours[14] == 7
    assert got.nodes == {"node-a"} and got.window_seconds == 5.0
    # saving again replaces the file, still without leftovers
    got.workload("new/one").windows = 1
    save(got, path)
    assert os.listdir(path.parent) == ["baseline.msgpack"]
    assert get_wb(load(path), "new/one").windows == 1


def test_save_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "baseline.msgpack"
    target.mkdir()  # os.replace onto a directory fails
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        save(sample_baseline(), target)
    assert sorted(os.listdir(tmp_path)) == ["baseline.msgpack"]
    assert (target / "keep").read_text() == "x"


def _write(tmp_path: Path, obj) -> Path:
    p = tmp_path / "b.msgpack"
    p.write_bytes(msgpack.packb(obj, use_bin_type=True))
    return p


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BaselineError) as ei:
        load(tmp_path / "nope.msgpack")
    assert "no baseline file" in str(ei.value) and "nope.msgpack" in str(ei.value)
    assert "sluice baseline learn" in ei.value.hint


def test_load_garbage_bytes(tmp_path: Path) -> None:
    p = tmp_path / "b.msgpack"
    p.write_bytes(b"\xc1\xc1 this is not msgpack \x00\xff")
    with pytest.raises(BaselineError) as ei:
        load(p)
    assert "corrupt" in str(ei.value) and str(p) in str(ei.value)


@pytest.mark.parametrize("obj", [{"format": "something-else", "version": 1}, [1, 2, 3], 42, {"version": 1}])
def test_load_wrong_format_marker(tmp_path: Path, obj) -> None:
    with pytest.raises(BaselineError) as ei:
        load(_write(tmp_path, obj))
    assert "not a Sluice baseline file" in str(ei.value)


def test_load_newer_version(tmp_path: Path) -> None:
    w = sample_baseline().to_wire()
    w["version"] = B.VERSION + 1
    p = _write(tmp_path, w)
    before = p.read_bytes()
    with pytest.raises(BaselineError) as ei:
        load(p)
    assert "newer" in str(ei.value) and str(B.VERSION + 1) in str(ei.value)
    assert p.read_bytes() == before


def _corrupt_missing_workloads(w):
    del w["workloads"]


def _corrupt_hours(w):
    w["workloads"]["acme/api"]["hours"] = [0] * 23


def _corrupt_windows(w):
    w["workloads"]["acme/api"]["windows"] = "many"


def _corrupt_histogram(w):
    w["workloads"]["acme/api"]["egress_bytes"] = [1, 2]


def _corrupt_destination(w):
    w["workloads"]["acme/api"]["destinations"]["203.0.113.5|443|tcp"] = [1, 2]


def _corrupt_workloads_type(w):
    w["workloads"] = None


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_missing_workloads,
        _corrupt_hours,
        _corrupt_windows,
        _corrupt_histogram,
        _corrupt_destination,
        _corrupt_workloads_type,
    ],
)
def test_load_structurally_corrupt(tmp_path: Path, corrupt) -> None:
    w = sample_baseline().to_wire()
    corrupt(w)
    with pytest.raises(BaselineError) as ei:
        load(_write(tmp_path, w))
    assert "corrupt" in str(ei.value)
    assert "will not overwrite" in ei.value.hint


# --- merge ----------------------------------------------------------------------------------


def test_merge_all() -> None:
    a = sample_baseline()
    b = Baseline(window_seconds=10.0, nodes={"node-b"}, created=500.0, updated=2000.0)
    wb = b.workload("acme/api")
    wb.windows = 3
    wb.encrypted_bytes.add(4000)
    wb.add_destination(dest_key("203.0.113.5", 443, "tcp"), 50, 50, 7.95, "tls")
    wb.add_destination(dest_key("198.51.100.1", 22, "tcp"), 5, 5, 7.5, "ssh")
    wb.add_executable("/usr/bin/curl")
    wb.add_executable("/usr/bin/ssh")
    wb.hours[14] = 1
    wb.hours[2] = 2
    wb.seen(1_699_999_000.0)
    b.workload("acme/db").windows = 4

    m = merge_all([a, b])
    assert m.window_seconds == 5.0  # the first file's
    assert m.nodes == {"node-a", "node-b"}
    assert m.created == 500.0 and m.updated >= 2000.0
    assert set(m.workloads) == {"acme/api", "host", "acme/db"}
    api = get_wb(m, "acme/api")
    assert api.windows == 10
    assert api.encrypted_bytes.n == 4
    assert set(api.destinations) == {"203.0.113.5|443|tcp", "2001:db8::1|53|udp", "198.51.100.1|22|tcp"}
    d = api.destinations["203.0.113.5|443|tcp"]
    assert (d.windows, d.bytes, d.encrypted_bytes, d.max_entropy) == (2, 150, 140, 7.95)
    assert api.executables == {"/usr/bin/curl": 2, "/usr/bin/ssh": 1}
    assert api.hours[14] == 8 and api.hours[2] == 2
    assert api.first_seen == 1_699_999_000.0 and api.last_seen == 1_700_000_100.0
    assert get_wb(m, "acme/db").windows == 4 and get_wb(m, "host").windows == 3
    # the inputs are untouched
    assert get_wb(a, "acme/api").windows == 7 and get_wb(b, "acme/api").windows == 3
    assert "acme/db" not in a.workloads


def test_merge_all_of_nothing_is_empty() -> None:
    m = merge_all([])
    assert m.workloads == {} and m.nodes == set()
