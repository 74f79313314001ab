"""Names through the pipeline: DNS answer, SNI and Host records from the
kernel name flows and connects; ECS (and OCSF) documents carry them with
the bytes received."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest

from emulation.records import (
    NS,
    cgroup_rec,
    connect_rec,
    dns_rec,
    listen_rec,
    quota_rec,
    sample_first_rec,
    socket_rec,
    to_wall,
)
from sensor.kernel import events as E
from sensor.outputs.ocsf import to_ocsf
from sensor.telemetry.counters import FlowCounters
from tests.support.ecs_schema import explain, validate
from tests.unit.telemetry.test_names import client_hello
from tests.unit.telemetry.test_pipeline import World, make_world, replay

A = "a0" * 32
PID = 5_000_123


@pytest.fixture
def world(tmp_path: Path, fake_docker: Any) -> World:
    fake_docker.add(A, "exfil-test", "alpine:3.20", "sha256:" + "a" * 64, {})
    return make_world(tmp_path, fake_docker.socket_path)


def answer(qname: str, *records: tuple[str, int, str, str]) -> bytes:
    r = dns.message.make_response(dns.message.make_query(qname, "A"))
    for name, ttl, rtype, value in records:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, value))
    return r.to_wire()


def fc(cg: int, ip: str, port: int, sent: int, received: int) -> FlowCounters:
    return FlowCounters(cg, ip, port, 6, sent + 400, 10, sent, 1, 1, 2, 1, received + 300, 8, received)


def test_flows_and_connects_are_named(world: World) -> None:
    cg = world.cg
    hello = client_hello("upload.share-files.example", ssl.TLSVersion.TLSv1_3)
    recs = [
        dns_rec(
            cg,
            "198.18.0.53",
            answer(
                "api.partner.co.uk",
                ("api.partner.co.uk.", 60, "CNAME", "edge.cdn.example.net."),
                ("edge.cdn.example.net.", 60, "A", "198.18.77.7"),
            ),
            ktime_ns=1 * NS,
        ),
        connect_rec(PID, cg, "198.18.77.7", 443, ktime_ns=2 * NS, comm=b"curl", cookie=1),
        sample_first_rec(cg, "198.18.77.8", 443, hello, ktime_ns=3 * NS, cookie=2),
        sample_first_rec(
            cg, "198.18.77.9", 80, b"POST /up HTTP/1.1\r\nHost: files.example.org\r\n\r\n" + b"x" * 300, cookie=3
        ),
    ]
    replay(world, recs)
    summaries, _ = world.pipe.close_window(
        [
            fc(cg, "198.18.77.7", 443, 50_000, 2_000_000),
            fc(cg, "198.18.77.8", 443, 4_000_000, 9_000),
            fc(cg, "198.18.77.9", 80, 1_000, 1_000),
            fc(cg, "198.18.99.1", 443, 1_000, 0),
        ],
        to_wall(0),
        to_wall(10 * NS),
    )
    flows = {d["destination"]["ip"]: d for d in world.by_action("flow_summary")}
    dns_flow, sni_flow, http_flow, bare = (
        flows[ip] for ip in ("198.18.77.7", "198.18.77.8", "198.18.77.9", "198.18.99.1")
    )
    assert dns_flow["destination"]["domain"] == "api.partner.co.uk"  # the asked name, not the CDN edge
    assert dns_flow["destination"]["registered_domain"] == "partner.co.uk"
    assert dns_flow["destination"]["top_level_domain"] == "co.uk"
    assert dns_flow["destination"]["subdomain"] == "api"
    assert dns_flow["sluice"]["flow"]["name_source"] == "dns"
    assert dns_flow["destination"]["bytes"] == 2_000_300 and dns_flow["source"]["bytes"] == 50_400
    assert dns_flow["sluice"]["payload"]["received_bytes"] == 2_000_000
    assert sni_flow["destination"]["domain"] == "upload.share-files.example"
    assert sni_flow["tls"]["client"]["server_name"] == "upload.share-files.example"
    assert sni_flow["sluice"]["flow"]["upload_download_ratio"] == round(4_000_000 / 9_000, 3)
    assert http_flow["url"]["domain"] == "files.example.org"
    assert http_flow["destination"]["domain"] == "files.example.org"
    assert "domain" not in bare["destination"]
    # the DNS name vouches for itself; the SNI and the Host are claims no
    # answer the container received agrees with
    assert dns_flow["sluice"]["flow"]["name_vouched"] is True
    assert sni_flow["sluice"]["flow"]["name_vouched"] is False
    assert http_flow["sluice"]["flow"]["name_vouched"] is False
    (conn,) = world.by_action("connection_attempted")
    assert conn["destination"]["domain"] == "api.partner.co.uk"
    assert conn["sluice"]["name_resolver"] == "198.18.0.53" and conn["sluice"]["name_vouched"] is True
    # the long first sample feeds entropy only with the usual sample length
    s = next(x for x in summaries if x.key[1] == "198.18.77.9")
    assert s.sampled_bytes == 64
    assert world.pipe.names.counts["dns_answers"] == 1 and world.pipe.counts["dns"] == 1
    docs = world.docs
    for d in docs:
        problems = validate(d)
        assert not problems, explain(d, problems)
    o = to_ocsf(sni_flow)
    assert o["dst_endpoint"]["hostname"] == "upload.share-files.example"
    assert o["dst_endpoint"]["domain"] == "share-files.example"
    assert o["unmapped"]["tls"]["client"]["server_name"] == "upload.share-files.example"
    assert o["traffic"]["bytes_in"] == 9_300


def test_bad_dns_record_is_counted_not_fatal(world: World) -> None:
    replay(world, [dns_rec(world.cg, "198.18.0.53", b"\x12\x34garbage")])
    assert world.pipe.names.counts["dns_unparsed"] == 1
    assert world.pipe.counts["decode_errors"] == 0


def test_sample_first_record_decodes_whole() -> None:
    data = bytes(range(256)) * 8
    ev = E.decode(sample_first_rec(7, "198.18.1.1", 443, data))
    assert isinstance(ev, E.SampleEvent) and ev.data == data[: E.FIRST_MAX] and ev.flags & E.SAMPLE_F_FIRST
    # an ordinary sample record is unchanged
    d = E.decode(dns_rec(7, "198.18.0.53", b"\x00" * 600))
    assert isinstance(d, E.DnsEvent) and len(d.data) == E.DNS_MAX and d.flags & E.DNS_F_TRUNCATED


def test_named_documents_are_ocsf(world: World) -> None:
    from tests.unit.outputs.test_ocsf import validate as ocsf_validate

    hello = client_hello("upload.share-files.example", ssl.TLSVersion.TLSv1_2)
    replay(
        world,
        [
            sample_first_rec(world.cg, "198.18.77.8", 443, hello, cookie=2),
            sample_first_rec(
                world.cg, "198.18.77.9", 80, b"GET / HTTP/1.1\r\nHost: files.example.org\r\n\r\n", cookie=3
            ),
        ],
    )
    world.pipe.close_window(
        [fc(world.cg, "198.18.77.8", 443, 4_000, 9_000), fc(world.cg, "198.18.77.9", 80, 100, 100)],
        to_wall(0),
        to_wall(10 * NS),
    )
    for d in world.by_action("flow_summary"):
        ocsf_validate(to_ocsf(d))


def test_a_claimed_name_is_vouched_when_the_containers_answer_agrees(world: World) -> None:
    """The SNI of a connection to an address the container resolved that
    name to is vouched for (the summary the rules read), and stays so for
    the flow while its name is unchanged, past the answer's hold time."""
    cg = world.cg
    hello = client_hello("api.partner.co.uk", ssl.TLSVersion.TLSv1_3)
    recs = [
        dns_rec(cg, "198.18.0.53", answer("www.partner.co.uk", ("www.partner.co.uk.", 60, "A", "198.18.77.20"))),
        sample_first_rec(cg, "198.18.77.20", 443, hello, ktime_ns=2 * NS, cookie=5),
        sample_first_rec(cg, "198.18.77.21", 443, hello, ktime_ns=2 * NS, cookie=6),
    ]
    replay(world, recs)
    t0 = to_wall(0)
    flows = [fc(cg, "198.18.77.20", 443, 9_000, 1_000), fc(cg, "198.18.77.21", 443, 9_000, 1_000)]
    summaries, _ = world.pipe.close_window(flows, t0, t0 + 10)
    vouched = {x.key[1]: x.name_resolver for x in summaries}
    assert vouched == {"198.18.77.20": "198.18.0.53", "198.18.77.21": ""}
    later, _ = world.pipe.close_window(flows, t0 + 3600, t0 + 3610)  # the answer long expired
    assert {x.key[1]: x.name_resolver for x in later} == vouched
    docs = {d["destination"]["ip"]: d["sluice"]["flow"] for d in world.by_action("flow_summary")}
    assert docs["198.18.77.20"]["name_resolver"] == "198.18.0.53" and docs["198.18.77.20"]["name_vouched"] is True
    assert "name_resolver" not in docs["198.18.77.21"] and docs["198.18.77.21"]["name_vouched"] is False


@pytest.mark.parametrize(
    "first",
    [
        # a socket on port 53: it answers the container's own queries
        lambda cg: listen_rec(40, cg, "127.0.0.11", 53, op=E.LISTEN_OP_BIND, protocol=17),
        lambda cg: listen_rec(40, cg, "0.0.0.0", 53, op=E.LISTEN_OP_LISTEN, protocol=6),
        # a raw socket writes any UDP header, source port 53 included
        lambda cg: socket_rec(40, cg, family=2, sock_type=3, protocol=17),
        # events lost to the container's quota: the bind may be among them
        lambda cg: quota_rec(cg, kind=E.QUOTA_EVENTS),
    ],
    ids=["bind-udp-53", "listen-tcp-53", "raw-socket", "event-quota"],
)
def test_a_container_that_could_forge_answers_gets_no_vouch_from_them(world: World, first: Any) -> None:
    """Bind :53 on 127.0.0.11 (Docker's resolver address) or open a raw
    socket, then answer your own query with the learned name for your own
    address: the answer names the flow, and vouches for nothing."""
    cg = world.cg
    hello = client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3)
    forged = answer("api.partner.example", ("api.partner.example.", 60, "A", "203.0.113.66"))
    replay(world, [first(cg), dns_rec(cg, "127.0.0.11", forged), sample_first_rec(cg, "203.0.113.66", 443, hello)])
    t0 = to_wall(0)
    (s,), _ = world.pipe.close_window([fc(cg, "203.0.113.66", 443, 9_000, 1_000)], t0, t0 + 10)
    assert (s.domain, s.domain_source, s.name_resolver, s.name_vouched) == ("api.partner.example", "sni", "", False)
    assert world.pipe.names.counts["dns_answers_unvouched"] == 1
    replay(world, [connect_rec(41, cg, "203.0.113.66", 443)])
    conn = world.by_action("connection_attempted")[-1]
    assert conn["destination"]["domain"] == "api.partner.example" and conn["sluice"]["name_vouched"] is False
    assert "name_resolver" not in conn["sluice"]


def test_a_forger_in_one_cgroup_of_a_container_distrusts_the_whole_container(world: World) -> None:
    """Bind :53 from a sub-cgroup of the container, answer a socket in its
    main cgroup: the container is one forger. A host cgroup is another."""
    cg = world.cg
    assert world.attributor.attribute(world.cg_sub).container is not None
    forged = answer("api.partner.example", ("api.partner.example.", 60, "A", "203.0.113.66"))
    replay(world, [listen_rec(40, world.cg_sub, "127.0.0.11", 53, op=E.LISTEN_OP_BIND, protocol=17)])
    replay(world, [dns_rec(cg, "127.0.0.11", forged), dns_rec(world.host_cg, "198.18.0.53", forged)])
    assert world.pipe.names.distrusted(cg) == "binds port 53 (udp)"
    assert world.pipe.names.distrusted(world.host_cg) is None
    assert world.pipe.names.counts["dns_answers_unvouched"] == 1


def test_a_packet_socket_reported_after_its_forged_answer_still_unvouches_it(world: World) -> None:
    """AF_PACKET without the LSM hook is reported after its first send
    returns, and a frame sent on loopback is delivered during the send: the
    forged answer reaches the sensor first. The window's flows and connects
    are judged at its close, after the report."""
    cg = world.cg
    seen: list[Any] = []

    class Keep:
        def on_window(self, view: Any) -> None:
            seen.append(view)

    world.pipe.observers.append(Keep())
    hello = client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3)
    forged = answer("api.partner.example", ("api.partner.example.", 2**31 - 1, "A", "203.0.113.66"))
    replay(
        world,
        [
            dns_rec(cg, "198.18.0.53", forged),
            connect_rec(41, cg, "203.0.113.66", 443),
            sample_first_rec(cg, "203.0.113.66", 443, hello),
            socket_rec(40, cg, family=17, sock_type=3, hook=E.SOCKET_HOOK_SEND),
        ],
    )
    t0 = to_wall(0)
    (s,), _ = world.pipe.close_window([fc(cg, "203.0.113.66", 443, 9_000, 1_000)], t0, t0 + 10)
    assert (s.domain, s.name_resolver) == ("api.partner.example", "")
    (c,) = seen[-1].connects
    assert (c.domain, c.name_resolver, c.name_vouched) == ("api.partner.example", "", False)


def test_other_ports_and_flow_quotas_leave_answers_vouching(world: World) -> None:
    cg = world.cg
    replay(
        world,
        [
            listen_rec(40, cg, "0.0.0.0", 5353, op=E.LISTEN_OP_BIND, protocol=17),
            quota_rec(cg, kind=E.QUOTA_FLOWS),
            dns_rec(cg, "198.18.0.53", answer("api.partner.example", ("api.partner.example.", 60, "A", "198.18.7.7"))),
        ],
    )
    assert world.pipe.names.distrusted(cg) is None
    t0 = to_wall(0)
    (s,), _ = world.pipe.close_window([fc(cg, "198.18.7.7", 443, 9_000, 1_000)], t0, t0 + 10)
    assert (s.domain, s.name_resolver) == ("api.partner.example", "198.18.0.53")


def test_a_forger_whose_sockets_are_gone_is_cleared_by_the_rescan(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's rescan (Pipeline.recheck_distrust) reads every thread
    of a distrusted container, its sub-cgroups' too (a distrusted
    sub-cgroup is judged by its whole container): while one of its
    namespaces holds a raw socket it stays distrusted, once none does its
    later answers vouch again, and a new report distrusts it again."""
    from tests.unit.attribution.test_netmap import QUIET, RAW_ONE, UDP_HEAD, _fds, proc_tree

    cg, sub = world.cg, world.cg_sub
    replay(world, [cgroup_rec(1, cg, f"/docker/{A}".encode(), 0), socket_rec(40, sub, family=2, sock_type=3)])
    names = world.pipe.names
    assert names.distrusted(cg) is not None and names.uncleared() == [sub, A]
    cdir = tmp_path / "cg" / "docker" / A
    (cdir / "cgroup.threads").write_text("")
    (cdir / "app" / "cgroup.threads").write_text("10\n")  # the socket's holder, in the sub-cgroup
    proc = proc_tree(tmp_path / "proc", 10, QUIET | {"raw": RAW_ONE})
    _fds(proc, 10, [])
    world.pipe.recheck_distrust(proc)
    assert names.uncleared() == [sub, A]  # both read from the container's cgroups: one read
    assert world.pipe.counts["forgers_rechecked"] == 1
    (Path(proc) / "10" / "net" / "raw").write_text(UDP_HEAD)  # closed
    t_read = world.pipe.to_wall(time.monotonic_ns())
    world.pipe.recheck_distrust(proc)
    assert names.uncleared() == [] and names.distrusted(cg) is None
    assert names.distrusted(cg, t_read) is not None  # cleared from after the read, not before
    assert world.pipe.counts["forgers_rechecked"] == 2
    replay(world, [listen_rec(40, cg, "127.0.0.11", 53, op=E.LISTEN_OP_BIND, protocol=17)])
    assert names.distrusted(cg) == "binds port 53 (udp)"
    # owners that never clear take their turns within the per-window cap
    import sensor.telemetry.pipeline as P

    monkeypatch.setattr(P, "MAX_DISTRUST_RECHECKS", 1)
    (Path(proc) / "10" / "net" / "raw").write_text(RAW_ONE)
    replay(world, [socket_rec(41, sub, family=2, sock_type=3)])
    before = world.pipe.counts["forgers_rechecked"]
    for _ in range(4):
        world.pipe.recheck_distrust(proc)
    assert world.pipe.counts["forgers_rechecked"] - before == 4 and len(names.uncleared()) == 3
    # and within the time budget: past it, the rest waits for the next window
    monkeypatch.setattr(P, "MAX_DISTRUST_RECHECKS", 32)
    monkeypatch.setattr(P, "RECHECK_BUDGET_S", -1.0)
    before = world.pipe.counts["forgers_rechecked"]
    world.pipe.recheck_distrust(proc)
    assert world.pipe.counts["forgers_rechecked"] - before == 1
    assert world.pipe.counts["forgers_recheck_deferred"] == 1


def test_the_scan_at_start_reads_every_thread_and_does_not_fail_open(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipeline.scan_existing_forgers: a forging socket held by any thread
    of a running container distrusts it; so does a container with more
    threads than a recheck reads (it must not hide a socket behind
    numbers); a quiet one is not distrusted."""
    import sensor.telemetry.pipeline as P
    from tests.unit.attribution.test_netmap import QUIET, RAW_ONE, _fds, proc_tree

    cg = world.cg
    replay(world, [cgroup_rec(1, cg, f"/docker/{A}".encode(), 0)])
    assert A in world.pipe.registry.running
    cdir = tmp_path / "cg" / "docker" / A
    (cdir / "cgroup.threads").write_text("10\n")
    (cdir / "app" / "cgroup.threads").write_text("")
    quiet = proc_tree(tmp_path / "quiet", 10, QUIET)
    _fds(quiet, 10, [])
    world.pipe.scan_existing_forgers(quiet)
    assert world.pipe.names.distrusted(cg) is None and world.pipe.counts["forgers_at_start"] == 0
    (cdir / "cgroup.threads").write_text("10\n11\n12\n")
    monkeypatch.setattr(P, "MAX_RECHECK_TASKS", 2)
    world.pipe.scan_existing_forgers(quiet)
    assert world.pipe.names.distrusted(cg) == "more than 2 threads to read when the sensor started"
    assert world.pipe.counts["forgers_at_start"] == 1
    # a raw socket held by the second thread of a zombie leader's process
    raw = proc_tree(tmp_path / "raw", 11, QUIET | {"raw": RAW_ONE})
    (Path(raw) / "10").mkdir()
    _fds(raw, 11, [])
    monkeypatch.setattr(P, "MAX_RECHECK_TASKS", 4096)
    (cdir / "cgroup.threads").write_text("10\n11\n")
    world.pipe.scan_existing_forgers(raw)
    assert world.pipe.counts["forgers_at_start"] == 2
