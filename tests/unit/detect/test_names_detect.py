"""Baselines and rules by name: registered domains are what a workload
learns; a learned name on a new address is not new, a new name on a known
address is; beacons group by registered domain; [[allow]] takes domain
globs; upload/download ratio; version 1 baselines migrate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from sensor.detect import baseline as B
from sensor.detect.view import FlowView
from tests.support.ecs_schema import explain, validate
from tests.support.views import (
    KIB,
    MIB,
    RESOLVER,
    T0,
    WINDOW,
    config,
    connect,
    container,
    detector,
    flow,
    learn,
    only,
    resolver_flow,
    window,
)

DET = T0 + 600.0
API = container("api-named", image="acme/api:1.0")


def named(f: FlowView, domain: str, source: str = "dns", rx: int | None = None) -> FlowView:
    f.summary.domain, f.summary.domain_source = domain, source
    if source == "dns":
        f.summary.name_resolver = RESOLVER  # the container's own resolver answered
    if source == "sni":
        f.summary.sni = domain
    if rx is not None:
        f.summary.rx_payload_bytes, f.summary.rx_packets = rx, max(1, rx // 1400)
    return f


def api_call(ip: str, domain: str | None, payload: int = 20 * KIB, port: int = 443) -> FlowView:
    f = flow(API, ip, port, payload, proto="tls")
    return named(f, domain) if domain else f


def learned_by_name(n: int = 5) -> B.Baseline:
    return learn(
        window(T0 + i * WINDOW, flows=[api_call("198.18.10.5", "api.partner.example"), resolver_flow(API)])
        for i in range(n)
    )


def assert_ecs(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        problems = validate(d)
        assert not problems, explain(d, problems)


def test_baseline_learns_registered_domain_with_its_address() -> None:
    b = learned_by_name()
    wb = b.workloads["acme/api"]
    assert set(wb.destinations) == {"partner.example|443|tcp", f"{RESOLVER}|53|udp"}
    assert wb.destinations["partner.example|443|tcp"].addresses == {"198.18.10.5"}
    assert wb.named_destinations() == 1
    assert wb.knows_destination("203.0.113.9", 443, "tcp", 24, 64, domain="other.partner.example")
    assert not wb.knows_destination("198.18.10.5", 443, "tcp", 24, 64, domain="evil.example")  # new name, known address
    assert not wb.knows_destination("203.0.113.9", 8443, "tcp", 24, 64, domain="api.partner.example")  # port matters
    # an unnamed flow to the address the name used (its DNS answer was missed) is known
    assert wb.knows_destination("198.18.10.5", 443, "tcp", 32, 128)
    assert wb.knows_destination("198.18.10.77", 443, "tcp", 24, 64)
    assert not wb.knows_destination("198.18.11.77", 443, "tcp", 24, 64)


def test_learned_name_on_a_new_address_block_is_silent(tmp_path: Path) -> None:
    h = detector(config(tmp_path), learned_by_name())
    # the service moved to another /24 (and another /16): same name, big encrypted transfer
    alerts = h.run(window(DET, flows=[api_call("203.0.113.200", "api.partner.example", 4 * MIB)]))
    assert [a for a in alerts if a["rule"]["id"] in ("SL-EXF-004", "SL-EXF-002")] == []
    # the same transfer unnamed to that address would have been new
    h2 = detector(config(tmp_path), learned_by_name())
    alerts = h2.run(window(DET, flows=[api_call("203.0.113.200", None, 4 * MIB)]))
    assert len(only(alerts, "SL-EXF-004")) == 1


def test_new_name_on_a_known_address_is_new_and_named_in_the_alert(tmp_path: Path) -> None:
    h = detector(config(tmp_path), learned_by_name())
    f = named(api_call("198.18.10.5", None, 4 * MIB), "upload.share-files.example", "sni", rx=8 * KIB)
    alerts = only(h.run(window(DET, flows=[f])), "SL-EXF-004")
    assert len(alerts) == 1
    a = alerts[0]
    assert a["destination"]["domain"] == "upload.share-files.example"
    assert a["destination"]["registered_domain"] == "share-files.example"
    assert a["destination"]["ip"] == "198.18.10.5"
    assert a["tls"]["client"]["server_name"] == "upload.share-files.example"
    # the message names the domain first, then the address
    assert "upload.share-files.example (198.18.10.5:443)" in a["message"]
    assert a["message"].index("upload.share-files.example") < a["message"].index("198.18.10.5")
    ev = a["sluice"]["evidence"]
    assert ev["received_bytes"] == 8 * KIB and ev["upload_download_ratio"] == 512.0
    assert "receiving only 8.0 KiB" in a["message"]
    assert_ecs(alerts)


def test_upload_download_ratio_moves_the_severity(tmp_path: Path) -> None:
    sev = {}
    for label, rx in (("lopsided", 16 * KIB), ("balanced", 4 * MIB), ("unknown", None)):
        h = detector(config(tmp_path))
        f = named(flow(container(f"ratio-{label}"), "198.18.20.1", 443, 4 * MIB, proto="tls"), "x.example.org", rx=rx)
        (a,) = only(h.run(window(DET, flows=[f])), "SL-EXF-004")
        sev[label] = a["event"]["severity"]
        if rx is None:
            assert "upload_download_ratio" not in a["sluice"]["evidence"]
    assert sev["lopsided"] == sev["unknown"] + 10
    assert sev["balanced"] == sev["unknown"] - 20


def test_allow_by_domain_glob(tmp_path: Path) -> None:
    """A workload with no baseline knows no resolver: a domain entry covers
    its names from Docker's resolver (loopback) or a trusted network, not
    from any resolver it reaches (an attacker's answers the learned name
    with its own address)."""
    extra = '[[allow]]\ndomain = "*.backups.example"\nrules = ["SL-EXF-004"]\n'

    def backup(resolver: str, name: str = "Vault.Backups.example") -> FlowView:
        f = named(flow(container("bk"), "198.18.30.1", 443, 4 * MIB, proto="tls"), name)
        f.summary.name_resolver = resolver
        return f

    h = detector(config(tmp_path, extra=extra))
    assert only(h.run(window(DET, flows=[backup("127.0.0.11")])), "SL-EXF-004") == []
    assert h.counts["allowed"] >= 1
    other = named(flow(container("bk2"), "198.18.30.1", 443, 4 * MIB, proto="tls"), "backups.example.evil.test")
    other.summary.name_resolver = "127.0.0.11"
    assert len(only(h.run(window(DET + 10, flows=[other])), "SL-EXF-004")) == 1
    rogue = detector(config(tmp_path, extra=extra))
    assert len(only(rogue.run(window(DET, flows=[backup("203.0.113.53")])), "SL-EXF-004")) == 1
    assert rogue.counts["allowed"] == 0
    trusted = detector(config(tmp_path, extra=extra, detection=f'trusted_networks = ["{RESOLVER}/32"]\n'))
    assert only(trusted.run(window(DET, flows=[backup(RESOLVER)])), "SL-EXF-004") == []


def test_beaconing_groups_by_registered_domain(tmp_path: Path) -> None:
    beacon = container("beacon-named", image="evil/b:1")
    times = [DET + 5.0 * i for i in range(6)]
    conns = []
    for i, t in enumerate(times):
        c = connect(beacon, t, f"198.18.{40 + i}.7", 443)  # a new address every time
        c.domain, c.name_resolver = f"n{i}.c2.example.net", "127.0.0.11"  # Docker's resolver
        conns.append(c)
    h = detector(config(tmp_path))
    alerts = only(h.run(window(max(times) + 1, seconds=40, connects=conns)), "SL-C2-002")
    assert len(alerts) == 1
    a = alerts[0]
    assert a["sluice"]["evidence"]["grouped_by"] == "registered_domain"
    assert a["destination"]["registered_domain"] == "example.net"
    assert a["message"].split(" connects to ")[1].startswith("n5.c2.example.net (198.18.45.7:443)")
    assert_ecs(alerts)
    # unnamed, the rotating addresses are six different one-off destinations
    h2 = detector(config(tmp_path))
    for c in conns:
        c.domain = None
    assert only(h2.run(window(max(times) + 1, seconds=40, connects=conns)), "SL-C2-002") == []
    # named by a resolver it does not know: by address too
    h3 = detector(config(tmp_path))
    for i, c in enumerate(conns):
        c.domain, c.name_resolver = f"n{i}.c2.example.net", "203.0.113.53"
    assert only(h3.run(window(max(times) + 1, seconds=40, connects=conns)), "SL-C2-002") == []


def test_a_rogue_named_beacon_hidden_among_a_learned_services_connects_fires(tmp_path: Path) -> None:
    """The attacker's beacon, given the learned name by its own resolver,
    interleaved with the workload's real calls to that name: grouped by
    address, it is judged on its own."""
    times = [DET + 5.0 * i for i in range(12)]
    conns = []
    for i, t in enumerate(times):
        real = i % 2 == 1
        c = connect(API, t, "198.18.10.5" if real else "203.0.113.9", 443)
        c.domain, c.name_resolver = "api.partner.example", RESOLVER if real else "203.0.113.53"
        conns.append(c)
    h = detector(config(tmp_path), learned_by_name())
    (a,) = only(h.run(window(max(times) + 1, seconds=70, connects=conns)), "SL-C2-002")
    assert a["destination"]["ip"] == "203.0.113.9" and a["sluice"]["evidence"]["grouped_by"] == "address"


def test_a_beacon_named_by_a_resolver_the_workload_never_asked_is_not_known(tmp_path: Path) -> None:
    """Connects are judged like flows: the learned name, given to the
    attacker's address by the attacker's resolver, does not make a beacon
    to that address known; from the workload's own resolver it does."""
    times = [DET + 5.0 * i for i in range(6)]

    def beacon(resolver: str) -> list[Any]:
        out = []
        for t in times:
            c = connect(API, t, "203.0.113.9", 443)
            c.domain, c.name_resolver = "api.partner.example", resolver
            out.append(c)
        return out

    h = detector(config(tmp_path), learned_by_name())
    (a,) = only(h.run(window(max(times) + 1, seconds=40, connects=beacon("203.0.113.53"))), "SL-C2-002")
    assert a["destination"]["domain"] == "api.partner.example"
    assert a["sluice"]["name_vouched"] is False and a["sluice"]["name_resolver"] == "203.0.113.53"
    assert_ecs([a])
    quiet = detector(config(tmp_path), learned_by_name())
    assert only(quiet.run(window(max(times) + 1, seconds=40, connects=beacon(RESOLVER))), "SL-C2-002") == []
    # a resolver next to the learned one is another server
    near = detector(config(tmp_path), learned_by_name())
    assert len(only(near.run(window(max(times) + 1, seconds=40, connects=beacon("198.18.0.54"))), "SL-C2-002")) == 1


def test_dns_tunnel_groups_by_public_suffix_registered_domain(tmp_path: Path) -> None:
    names = [(f"{i:02x}a1b2c3d4e5f60718293a4b5c6d7e8f9.t.tunnel.co.uk", True) for i in range(40)]
    f = flow(
        container("dns-t", image="evil/t:1"), "198.18.0.53", 53, 4 * KIB, transport="udp", proto="dns", dns_names=names
    )
    h = detector(config(tmp_path))
    (a,) = only(h.run(window(DET, flows=[f])), "SL-EXF-003")
    assert a["sluice"]["evidence"]["domain"] == "tunnel.co.uk"


def _v1_file(b: B.Baseline, path: Path) -> None:
    w = b.to_wire()
    w["version"] = 1
    for wb in w["workloads"].values():
        wb.pop("by_address", None)
        wb["destinations"] = {k: v[:5] for k, v in wb["destinations"].items()}
    path.write_bytes(msgpack.packb(w, use_bin_type=True))


def test_version_1_baseline_migrates(tmp_path: Path) -> None:
    # a version 1 baseline: destinations by address only
    v1 = learn(window(T0 + i * WINDOW, flows=[api_call("198.18.10.5", None)]) for i in range(5))
    p = tmp_path / "v1.msgpack"
    _v1_file(v1, p)
    b = B.load(p)
    wb = b.workloads["acme/api"]
    assert wb.by_address and set(wb.destinations) == {"198.18.10.5|443|tcp"}
    # named flows to the learned addresses are still known after the upgrade
    assert wb.knows_destination("198.18.10.5", 443, "tcp", 24, 64, domain="api.partner.example")
    assert not wb.knows_destination("203.0.113.9", 443, "tcp", 24, 64, domain="api.partner.example")
    h = detector(config(tmp_path), b)
    assert only(h.run(window(DET, flows=[api_call("198.18.10.9", "api.partner.example", 4 * MIB)])), "SL-EXF-004") == []
    # saved again it is version 2, and still marked
    B.save(b, tmp_path / "v2.msgpack")
    again = B.load(tmp_path / "v2.msgpack")
    assert msgpack.unpackb((tmp_path / "v2.msgpack").read_bytes(), strict_map_key=False)["version"] == 2
    assert again.workloads["acme/api"].by_address
    # a fresh version 2 baseline is by name
    assert not learned_by_name().workloads["acme/api"].by_address


def test_merge_keeps_addresses_and_migration_mark() -> None:
    a, b = learned_by_name(), learned_by_name()
    b.workloads["acme/api"].destinations["partner.example|443|tcp"].addresses = {"203.0.113.1"}
    b.workloads["acme/api"].by_address = True
    a.merge(b)
    wb = a.workloads["acme/api"]
    assert wb.destinations["partner.example|443|tcp"].addresses == {"198.18.10.5", "203.0.113.1"}
    assert wb.by_address


def test_receive_only_flows_are_not_learned_as_destinations() -> None:
    f = flow(API, "198.18.50.1", 5353, 0, transport="udp")
    f.summary.bytes, f.summary.connects = 0, 0
    f.summary.rx_bytes, f.summary.rx_packets = 9000, 10
    b = learn([window(T0, flows=[f, api_call("198.18.10.5", "api.partner.example")])])
    assert set(b.workloads["acme/api"].destinations) == {"partner.example|443|tcp"}


def test_a_claimed_name_does_not_make_a_new_address_known(tmp_path: Path) -> None:
    """An SNI is whatever the client writes: a container that learned
    api.partner.example cannot make its exfiltration to a new address count
    as known by putting that name in a ClientHello. A name a DNS answer the
    container received vouched for still moves with the service."""
    moved = "203.0.113.200"
    claimed = named(api_call(moved, None, 4 * MIB), "api.partner.example", "sni")
    alerts = detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[claimed]))
    (a,) = only(alerts, "SL-EXF-004")
    assert a["destination"]["ip"] == moved and a["destination"]["domain"] == "api.partner.example"
    assert a["sluice"]["name_vouched"] is False
    assert_ecs(alerts)
    vouched = named(api_call(moved, None, 4 * MIB), "api.partner.example", "sni")
    vouched.summary.name_resolver = RESOLVER  # the container resolved the name to that address
    assert only(detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[vouched])), "SL-EXF-004") == []
    # a claimed name on the learned address is as known as the address
    home = named(api_call("198.18.10.5", None, 4 * MIB), "api.partner.example", "sni")
    assert only(detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[home])), "SL-EXF-004") == []


def test_an_answer_from_a_resolver_the_workload_never_asked_vouches_for_nothing(tmp_path: Path) -> None:
    """The attacker asks a resolver it runs (or any resolver it reaches on
    port 53) for the learned name and gets its own address back. That
    answer is real, and it is not the workload's: the name is judged as a
    claim, by address. The same answer from the workload's own resolver, or
    from a trusted network, moves the service silently."""
    moved = "203.0.113.200"
    rogue = "203.0.113.53"

    def upload(resolver: str, source: str) -> FlowView:
        f = named(api_call(moved, None, 4 * MIB), "api.partner.example", source)
        f.summary.name_resolver = resolver
        return f

    for source in ("sni", "dns"):
        (a,) = only(
            detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[upload(rogue, source)])), "SL-EXF-004"
        )
        assert a["sluice"]["name_vouched"] is False and a["sluice"]["name_resolver"] == rogue
        assert a["destination"]["domain"] == "api.partner.example"
        assert_ecs([a])
        quiet = detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[upload(RESOLVER, source)]))
        assert only(quiet, "SL-EXF-004") == [], source
    # Docker's embedded resolver and systemd-resolved's stub answer on
    # loopback: never learned (DNAT'ed queries), inside the container
    for loopback in ("127.0.0.11", "127.0.0.53", "::1"):
        h = detector(config(tmp_path), learned_by_name())
        assert only(h.run(window(DET, flows=[upload(loopback, "sni")])), "SL-EXF-004") == [], loopback
    trusted = config(tmp_path, detection='trusted_networks = ["203.0.113.0/26"]\n')
    assert only(detector(trusted, learned_by_name()).run(window(DET, flows=[upload(rogue, "sni")])), "SL-EXF-004") == []
    # an [[allow]] domain glob needs the workload's own resolver too
    allow = '[[allow]]\ndomain = "*.partner.example"\nrules = ["SL-EXF-004"]\n'
    h = detector(config(tmp_path, allow), learned_by_name())
    assert len(only(h.run(window(DET, flows=[upload(rogue, "sni")])), "SL-EXF-004")) == 1 and h.counts["allowed"] == 0


def test_a_claimed_name_allows_nothing_and_hides_no_raw_stream(tmp_path: Path) -> None:
    """[[allow]] by domain covers a vouched name only; SL-EXF-002 judges a
    raw stream to a new address under a learned name the client claimed."""
    allow = '[[allow]]\ndomain = "*.uploads.example"\nrules = ["SL-EXF-004"]\n'
    vouched = named(api_call("203.0.113.200", None, 4 * MIB), "vault.uploads.example", "sni")
    vouched.summary.name_resolver = RESOLVER
    h = detector(config(tmp_path, allow), learned_by_name())
    assert only(h.run(window(DET, flows=[vouched])), "SL-EXF-004") == [] and h.counts["allowed"] >= 1
    claimed = named(api_call("203.0.113.201", None, 4 * MIB), "vault.uploads.example", "sni")
    h2 = detector(config(tmp_path, allow), learned_by_name())
    (a,) = only(h2.run(window(DET, flows=[claimed])), "SL-EXF-004")
    assert a["sluice"]["name_vouched"] is False and h2.counts["allowed"] == 0
    raw = flow(API, "203.0.113.202", 443, 400 * KIB, proto=None)  # no TLS handshake: raw
    raw = named(raw, "api.partner.example", "sni")
    alerts = detector(config(tmp_path), learned_by_name()).run(window(DET, flows=[raw]))
    assert [a["sluice"]["evidence"]["kind"] for a in only(alerts, "SL-EXF-002")] == ["raw_encrypted_stream"]


def test_another_tenant_of_a_learned_multi_tenant_domain_is_new(tmp_path: Path) -> None:
    """A workload that learned its own Azure VM by name does not know every
    other VM under cloudapp.azure.com (the bundled public suffix list would
    have made both azure.com)."""
    mine = "api-vm.eastus.cloudapp.azure.com"
    b = learn(window(T0 + i * WINDOW, flows=[api_call("198.18.10.5", mine), resolver_flow(API)]) for i in range(5))
    assert set(b.workloads["acme/api"].destinations) == {f"{mine}|443|tcp", f"{RESOLVER}|53|udp"}
    theirs = api_call("203.0.113.77", "exfil-box.westus.cloudapp.azure.com", 4 * MIB)
    assert len(only(detector(config(tmp_path), b).run(window(DET, flows=[theirs])), "SL-EXF-004")) == 1
    moved = api_call("203.0.113.78", mine, 4 * MIB)
    assert only(detector(config(tmp_path), b).run(window(DET, flows=[moved])), "SL-EXF-004") == []
