"""Destination names: SNI from real ClientHellos, HTTP Host, DNS answers
(CNAME chains, TTLs, truncation), public suffixes, the per-flow namer."""

from __future__ import annotations

import ssl
import struct
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from sensor.telemetry.names import (
    DNS_ANSWER,
    HTTP_HOST,
    SNI,
    FlowNamer,
    NameMap,
    http_host,
    parse_dns_answers,
    public_suffix,
    registered_domain,
    split_domain,
    tls_sni,
)
from sensor.telemetry.protocol import IPPROTO_TCP, IPPROTO_UDP

R = "198.18.0.53"  # the resolver that answered


def client_hello(server_name: str | None, version: ssl.TLSVersion) -> bytes:
    """The bytes Python's ssl module (OpenSSL) sends first, via MemoryBIO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _rebuild(hello: bytes, reorder: bool = False, pad: int = 0) -> bytes:
    """Re-frame a real ClientHello with its extensions reordered (SNI last,
    as browsers that shuffle may send it) and/or a padding extension (type
    21, the ECH-style filler) in front."""
    body = hello[9:]  # record header (5) + handshake header (4)
    p = 2 + 32
    p += 1 + body[p]
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    p += 1 + body[p]
    head, ext_len = body[:p], int.from_bytes(body[p : p + 2], "big")
    exts, q, raw = [], 0, body[p + 2 : p + 2 + ext_len]
    while q < len(raw):
        t, n = struct.unpack("!HH", raw[q : q + 4])
        exts.append((t, raw[q : q + 4 + n]))
        q += 4 + n
    if reorder:
        exts.sort(key=lambda e: e[0] == 0)  # server_name last
    blob = b"".join(e for _t, e in exts)
    if pad:
        blob = struct.pack("!HH", 21, pad) + b"\0" * pad + blob
    hs_body = head + struct.pack("!H", len(blob)) + blob
    hs = b"\x01" + len(hs_body).to_bytes(3, "big") + hs_body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sni_from_real_client_hello(version: ssl.TLSVersion) -> None:
    hello = client_hello("upload.partner-share.example", version)
    assert hello[0] == 0x16 and hello[5] == 0x01
    assert tls_sni(hello) == "upload.partner-share.example"


def test_no_sni_without_server_name() -> None:
    assert tls_sni(client_hello(None, ssl.TLSVersion.TLSv1_3)) is None


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sni_after_padding_and_reordered(version: ssl.TLSVersion) -> None:
    hello = client_hello("api.example.co.uk", version)
    for data in (_rebuild(hello, pad=512), _rebuild(hello, reorder=True), _rebuild(hello, True, 1200)):
        assert tls_sni(data) == "api.example.co.uk"
    big = _rebuild(hello, True, 1200)
    assert len(big) > 1400  # like a post-quantum hello: still within SL_FIRST_MAX (2048)


def test_sni_truncated_record() -> None:
    hello = _rebuild(client_hello("cut.example.com", ssl.TLSVersion.TLSv1_3), reorder=True)
    i = hello.index(b"cut.example.com")
    # cut anywhere before the name is complete: no (partial) name
    for n in (3, 5, 9, 40, 80, i, i + 5):
        assert tls_sni(hello[:n]) is None, n
    assert tls_sni(hello[: i + len("cut.example.com")]) == "cut.example.com"


def test_sni_hello_split_across_records() -> None:
    hello = client_hello("split.example.org", ssl.TLSVersion.TLSv1_2)
    hs = hello[5:]
    a, b = hs[:60], hs[60:]
    two = b"\x16\x03\x01" + struct.pack("!H", len(a)) + a + b"\x16\x03\x01" + struct.pack("!H", len(b)) + b
    assert tls_sni(two) == "split.example.org"


def test_sni_garbage() -> None:
    assert tls_sni(b"") is None
    assert tls_sni(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # not a ClientHello
    assert tls_sni(b"\x17\x03\x03\x00\x10" + b"\x00" * 16) is None
    assert tls_sni(bytes(range(256)) * 4) is None


def test_http_host() -> None:
    assert http_host(b"GET / HTTP/1.1\r\nHost: API.Example.com:8080\r\nAccept: */*\r\n\r\n") == "api.example.com"
    assert (
        http_host(b"POST /up HTTP/1.1\r\nUser-Agent: x\r\nhost: files.example.net\r\n\r\nbody") == "files.example.net"
    )
    assert http_host(b"GET http://proxy.example.org/x HTTP/1.1\r\n\r\n") == "proxy.example.org"
    assert http_host(b"CONNECT tunnel.example.org:443 HTTP/1.1\r\n\r\n") == "tunnel.example.org"
    assert http_host(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n") == "2001:db8::1"
    assert http_host(b"HTTP/1.1 200 OK\r\nHost: x\r\n\r\n") is None  # a response
    assert http_host(b"\x16\x03\x01") is None
    assert http_host(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n") is None


# --- DNS answers ----------------------------------------------------------------------


def response(qname: str, *records: tuple[str, int, str, str], qtype: str = "A") -> bytes:
    q = dns.message.make_query(qname, qtype)
    r = dns.message.make_response(q)
    for name, ttl, rtype, value in records:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, value))
    return r.to_wire()


def test_dns_answer_plain_and_tcp() -> None:
    wire = response("api.example.com", ("api.example.com.", 60, "A", "198.18.0.1"))
    (a,) = parse_dns_answers(wire, IPPROTO_UDP)
    assert (a.name, a.address, a.ttl, a.chain) == ("api.example.com", "198.18.0.1", 60, ())
    (t,) = parse_dns_answers(struct.pack("!H", len(wire)) + wire, IPPROTO_TCP)
    assert t == a


def test_dns_cname_chain_names_the_question() -> None:
    wire = response(
        "upload.partner-share.example",
        ("upload.partner-share.example.", 300, "CNAME", "edge.cdn.example.net."),
        ("edge.cdn.example.net.", 300, "CNAME", "e7.a.cdn.example.net."),
        ("e7.a.cdn.example.net.", 20, "A", "198.18.77.7"),
        ("e7.a.cdn.example.net.", 20, "A", "198.18.77.8"),
        ("unrelated.example.", 20, "A", "198.18.99.9"),  # not on the chain: ignored
    )
    got = parse_dns_answers(wire, IPPROTO_UDP)
    assert {a.address for a in got} == {"198.18.77.7", "198.18.77.8"}
    assert all(a.name == "upload.partner-share.example" for a in got)
    assert got[0].chain == ("edge.cdn.example.net", "e7.a.cdn.example.net")
    assert got[0].ttl == 20


def test_dns_cname_loop_is_bounded() -> None:
    wire = response(
        "a.example.com",
        ("a.example.com.", 5, "CNAME", "b.example.com."),
        ("b.example.com.", 5, "CNAME", "a.example.com."),
    )
    assert parse_dns_answers(wire, IPPROTO_UDP) == []


def test_dns_aaaa_and_nxdomain() -> None:
    wire = response("v6.example.com", ("v6.example.com.", 30, "AAAA", "2001:db8::7"), qtype="AAAA")
    assert [a.address for a in parse_dns_answers(wire, IPPROTO_UDP)] == ["2001:db8::7"]
    q = dns.message.make_query("nope.example.com", "A")
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    assert parse_dns_answers(r.to_wire(), IPPROTO_UDP) == []


def test_dns_truncated_response_keeps_complete_answers() -> None:
    recs = [("many.example.com.", 60, "A", f"198.18.5.{i}") for i in range(1, 40)]
    wire = response("many.example.com", *recs)
    assert len(wire) > 512
    got = parse_dns_answers(wire[:512], IPPROTO_UDP)  # what SL_DNS_MAX keeps
    assert 20 < len(got) < 39
    assert all(a.address.startswith("198.18.5.") for a in got)


def test_a_lying_answer_count_costs_a_handful_of_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANCOUNT is the sender's: 65535 in a 512-byte response made the
    sensor reparse it 65,536 times (seconds of CPU per packet, and a stalled
    reader drops the events that would have distrusted the sender). The
    complete answers are still kept."""
    calls = [0]
    real = dns.message.from_wire

    def counting(*a: Any, **k: Any) -> dns.message.Message:
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(dns.message, "from_wire", counting)
    recs = [("many.example.com.", 60, "A", f"198.18.5.{i}") for i in range(1, 40)]
    wire = bytearray(response("many.example.com", *recs)[:512])
    wire[6:8] = struct.pack("!H", 65535)
    got = parse_dns_answers(bytes(wire), IPPROTO_UDP)
    assert 20 < len(got) < 39 and calls[0] <= 10, calls[0]


def test_dns_not_a_response() -> None:
    q = dns.message.make_query("x.example.com", "A").to_wire()
    with pytest.raises(ValueError):
        parse_dns_answers(q, IPPROTO_UDP)
    with pytest.raises(ValueError):
        parse_dns_answers(b"\x00\x01", IPPROTO_UDP)
    with pytest.raises(ValueError):
        parse_dns_answers(bytes(range(200)), IPPROTO_UDP)


def test_name_map_ttl_expiry() -> None:
    m = NameMap(min_hold_s=0)
    wire = response("short.example.com", ("short.example.com.", 30, "A", "198.18.1.1"))
    m.add(7, parse_dns_answers(wire, IPPROTO_UDP), 1000.0, R)
    assert m.lookup(7, "198.18.1.1", 1029.0) == ("short.example.com", R, 1000.0)  # with when it came
    assert m.lookup(8, "198.18.1.1", 1029.0) is None  # per container
    assert m.lookup(7, "198.18.1.1", 1031.0) is None  # expired
    assert len(m) == 0
    held = NameMap(min_hold_s=300)
    held.add(7, parse_dns_answers(wire, IPPROTO_UDP), 1000.0, R)
    assert held.lookup(7, "198.18.1.1", 1200.0) == ("short.example.com", R, 1000.0)  # held past a short TTL
    assert held.lookup(7, "198.18.1.1", 1301.0) is None


def test_name_map_most_recent_answer_wins() -> None:
    m = NameMap()
    m.add(1, parse_dns_answers(response("a.example.com", ("a.example.com.", 60, "A", "198.18.2.2")), 17), 0.0, R)
    m.add(1, parse_dns_answers(response("b.example.org", ("b.example.org.", 60, "A", "198.18.2.2")), 17), 1.0, R)
    assert m.lookup(1, "198.18.2.2", 2.0) == ("b.example.org", R, 1.0)


def test_answers_vouch_for_registered_domains_of_the_address() -> None:
    """What the container resolved vouches for a name it later claims in an
    SNI or Host: the name asked, or a CNAME on the way, by registered domain,
    for that address only, until the answer expires; per container."""
    m = NameMap(min_hold_s=0)
    wire = response(
        "api.partner.example",
        ("api.partner.example.", 60, "CNAME", "edge.cdn-host.example."),
        ("edge.cdn-host.example.", 60, "A", "198.18.3.3"),
    )
    m.add(7, parse_dns_answers(wire, IPPROTO_UDP), 1000.0, R)
    assert m.vouches(7, "198.18.3.3", "www.partner.example", 1010.0) == (R, 1000.0)  # same registered domain, by R
    assert m.vouches(7, "198.18.3.3", "img.cdn-host.example", 1010.0)  # the CNAME's
    assert not m.vouches(7, "198.18.3.3", "api.github.com", 1010.0)  # a name nobody answered
    assert not m.vouches(7, "198.18.3.4", "api.partner.example", 1010.0)  # another address
    assert not m.vouches(8, "198.18.3.3", "api.partner.example", 1010.0)  # another container
    assert not m.vouches(7, "198.18.3.3", "api.partner.example", 1061.0)  # expired
    # a CDN address answers for many names: each vouches, the oldest goes past the cap
    for i in range(12):
        w = response(f"s{i}.site{i}.example", (f"s{i}.site{i}.example.", 60, "A", "198.18.3.3"))
        m.add(7, parse_dns_answers(w, IPPROTO_UDP), 1020.0 + i, R)
    assert m.vouches(7, "198.18.3.3", "x.site11.example", 1040.0)
    assert not m.vouches(7, "198.18.3.3", "x.site0.example", 1040.0)
    m.forget({7})
    assert not m.vouches(7, "198.18.3.3", "x.site11.example", 1040.0)


def test_flow_namer_vouches_dns_names_and_agreeing_claims_only() -> None:
    n = FlowNamer(min_hold_s=0)
    n.on_dns(7, response("api.partner.example", ("api.partner.example.", 60, "A", "198.18.4.4")), IPPROTO_UDP, 100.0, R)
    hello = client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3)
    liar = client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3)
    n.on_first_payload((7, "198.18.4.4", 443, 6), hello)
    n.on_first_payload((7, "203.0.113.66", 443, 6), liar)  # the same SNI to an address nobody resolved
    for ip, vouched in (("198.18.4.4", True), ("203.0.113.66", False)):
        named = n.name((7, ip, 443, 6), 110.0)
        assert named == ("api.partner.example", "sni")
        assert (n.vouched((7, ip, 443, 6), *named, 110.0) == R) is vouched, ip
    # a DNS name is vouched for by the answer that gave it
    dns_key = (7, "198.18.4.4", 8080, 6)
    assert n.name(dns_key, 110.0) == ("api.partner.example", "dns")
    assert n.vouched(dns_key, "api.partner.example", "dns", 110.0) == R
    assert n.vouched((7, "203.0.113.66", 8080, 6), "anything.example", "dns", 110.0) == ""


def test_a_distrusted_cgroups_answers_name_addresses_but_vouch_for_nothing() -> None:
    """A container that binds port 53 or opens a raw socket can answer its
    own queries from any address: its answers name addresses (what was
    contacted) and vouch for nothing, those it received before the distrust
    too (an AF_PACKET socket is reported after its first send, which
    delivers a loopback frame during the call); other containers are
    unaffected."""
    n = FlowNamer(min_hold_s=0)
    before = response("db.partner.example", ("db.partner.example.", 60, "A", "198.18.4.5"))
    n.on_dns(7, before, IPPROTO_UDP, 100.0, R)
    assert n.distrust(7, "binds port 53 (udp)") and not n.distrust(7, "raw or packet socket")
    assert n.distrusted(7) == "binds port 53 (udp)" and n.distrusted(8) is None
    forged = response("api.partner.example", ("api.partner.example.", 60, "A", "203.0.113.66"))
    n.on_dns(7, forged, IPPROTO_UDP, 101.0, "127.0.0.11")
    n.on_dns(8, forged, IPPROTO_UDP, 101.0, R)
    k = (7, "203.0.113.66", 443, 6)
    n.on_first_payload(k, client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3))
    assert n.vouched(k, "api.partner.example", "sni", 110.0) == ""
    plain = (7, "203.0.113.66", 8080, 6)
    assert n.name(plain, 110.0) == ("api.partner.example", "dns")  # still named
    assert n.vouched(plain, "api.partner.example", "dns", 110.0) == ""
    old = (7, "198.18.4.5", 5432, 6)
    assert n.name(old, 110.0) == ("db.partner.example", "dns")
    assert n.vouched(old, "db.partner.example", "dns", 110.0) == ""
    assert n.dns_answer(7, "198.18.4.5", 110.0) == ("db.partner.example", "")
    assert n.vouched((8, "203.0.113.66", 443, 6), "api.partner.example", "sni", 110.0) == R
    assert n.counts["dns_answers_unvouched"] == 1 and n.counts["dns_distrusted_cgroups"] == 1
    n.forget_cgroups({7})
    assert n.distrusted(7) is None


def test_gone_containers_do_not_push_a_live_forgers_distrust_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distrust is kept per cgroup and per container; removed ones are
    forgotten (cgroups and containers each by their own removal), so the
    churn of short-lived distrusted containers does not evict a live one."""
    import sensor.telemetry.names as names

    monkeypatch.setattr(names, "MAX_CGROUPS", 4)
    n = FlowNamer(owners=lambda cg: (cg, f"c{cg}"))
    n.distrust(1, "binds port 53 (udp)")
    for cg in range(100, 120):
        n.distrust(cg, "raw or packet socket")
        n.forget_cgroups({cg})
        n.forget_owners({f"c{cg}"})
    assert n.distrusted(1) == "binds port 53 (udp)"
    assert len(n._distrusted) == 2


def test_an_address_in_the_sni_is_not_a_name() -> None:
    n = FlowNamer()
    n.on_first_payload((7, "203.0.113.5", 443, 6), client_hello("203.0.113.5", ssl.TLSVersion.TLSv1_2))
    assert n.name((7, "203.0.113.5", 443, 6), 0.0) is None and n.counts["sni"] == 0


def test_a_flows_vouch_outlives_the_answer_while_its_name_stays() -> None:
    n = FlowNamer(min_hold_s=0)
    n.on_dns(7, response("api.partner.example", ("api.partner.example.", 30, "A", "198.18.4.4")), IPPROTO_UDP, 100.0, R)
    k = (7, "198.18.4.4", 443, 6)
    n.on_first_payload(k, client_hello("api.partner.example", ssl.TLSVersion.TLSv1_3))
    assert n.vouched(k, "api.partner.example", "sni", 110.0)
    assert n.vouched(k, "api.partner.example", "sni", 10_000.0)  # a long-lived connection
    assert not n.vouched(k, "other.example", "sni", 10_000.0)  # another name on the flow is checked afresh


# --- public suffixes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "registered"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("www.example.com", "example.com"),
        ("API.Example.COM.", "example.com"),
        # private suffixes are honoured: each tenant is its own domain
        ("mybucket.s3.amazonaws.com", "mybucket.s3.amazonaws.com"),
        ("x.y.mybucket.s3.amazonaws.com", "mybucket.s3.amazonaws.com"),
        ("someone.github.io", "someone.github.io"),
        ("d111111abcdef8.cloudfront.net", "d111111abcdef8.cloudfront.net"),
        # unknown top-level labels (lab names) follow the default rule
        ("upload.partner-share.example", "partner-share.example"),
        ("api.svc.test", "svc.test"),
        ("co.uk", "co.uk"),  # a public suffix itself
        ("localhost", "localhost"),
        # multi-tenant domains the bundled list does not split (TENANT_SUFFIXES)
        ("myexfil.eastus.cloudapp.azure.com", "myexfil.eastus.cloudapp.azure.com"),
        ("a.b.vm1.westeurope.cloudapp.azure.com", "vm1.westeurope.cloudapp.azure.com"),
        ("management.azure.com", "azure.com"),
        ("1.2.3.4.bc.googleusercontent.com", "4.bc.googleusercontent.com"),
        ("eo1x2y3.m.pipedream.net", "eo1x2y3.m.pipedream.net"),
        ("abc123.oast.fun", "abc123.oast.fun"),
        ("x.y.webhook.site", "y.webhook.site"),
        # names that spell any address: each its own
        ("6-6-6-6.default.pod.cluster.local", "6-6-6-6.default.pod.cluster.local"),
        ("1.2.3.4.nip.io", "1.2.3.4.nip.io"),
        ("app.10-0-0-1.sslip.io", "app.10-0-0-1.sslip.io"),
        ("nip.io", "nip.io"),
        # services stay one domain: splitting them would make every learned
        # pod's API traffic new after an upgrade
        ("kubernetes.default.svc.cluster.local", "cluster.local"),
    ],
)
def test_registered_domain(name: str, registered: str) -> None:
    assert registered_domain(name) == registered


def test_split_and_suffix() -> None:
    assert split_domain("a.b.example.co.uk") == ("example.co.uk", "a.b")
    assert split_domain("example.co.uk") == ("example.co.uk", "")
    assert public_suffix("a.b.example.co.uk") == "co.uk"
    assert public_suffix("b.s3.amazonaws.com") == "s3.amazonaws.com"


# --- the namer --------------------------------------------------------------------------


def test_flow_name_precedence() -> None:
    n = FlowNamer()
    key = (5, "198.18.0.1", 443, 6)
    assert n.name(key, 0.0) is None
    n.on_dns(5, response("api.svc.test", ("api.svc.test.", 60, "A", "198.18.0.1")), IPPROTO_UDP, 0.0, R)
    assert n.name(key, 1.0) == ("api.svc.test", DNS_ANSWER)
    n.on_first_payload((5, "198.18.0.1", 80, 6), b"GET / HTTP/1.1\r\nHost: web.svc.test\r\n\r\n")
    assert n.name((5, "198.18.0.1", 80, 6), 1.0) == ("web.svc.test", HTTP_HOST)
    n.on_first_payload(key, client_hello("sni.svc.test", ssl.TLSVersion.TLSv1_3))
    assert n.name(key, 1.0) == ("sni.svc.test", SNI)
    # another container, same address: only its own answers count
    assert n.name((6, "198.18.0.1", 443, 6), 1.0) is None
    assert n.counts["dns_answers"] == 1 and n.counts["sni"] == 1 and n.counts["http_host"] == 1


def test_flow_keeps_its_dns_name_after_expiry() -> None:
    n = FlowNamer(min_hold_s=0)
    key = (5, "198.18.0.9", 9000, 6)
    n.on_dns(5, response("long.svc.test", ("long.svc.test.", 10, "A", "198.18.0.9")), IPPROTO_UDP, 0.0, R)
    assert n.name(key, 5.0) == ("long.svc.test", DNS_ANSWER)
    assert n.name(key, 100.0) == ("long.svc.test", DNS_ANSWER)  # a long-lived flow stays named
    assert n.name((5, "198.18.0.9", 9001, 6), 100.0) is None  # a new flow after expiry does not
    n.forget_cgroups({5})
    assert n.name(key, 100.0) is None


def test_unparsable_dns_is_counted() -> None:
    n = FlowNamer()
    assert n.on_dns(1, b"\x00" * 7, IPPROTO_UDP, 0.0, R) == []
    assert n.counts["dns_unparsed"] == 1 and n.counts["dns_responses"] == 1


def test_vouched_names_follow_the_cgroup_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import sensor.telemetry.names as names

    monkeypatch.setattr(names, "MAX_CGROUPS", 3)
    m = NameMap(min_hold_s=0)
    wire = response("a.example.com", ("a.example.com.", 60, "A", "198.18.5.5"))
    for cg in range(1, 6):
        m.add(cg, parse_dns_answers(wire, IPPROTO_UDP), 0.0, R)
    assert not m.vouches(1, "198.18.5.5", "a.example.com", 1.0)  # its cgroup was forgotten
    assert m.vouches(5, "198.18.5.5", "a.example.com", 1.0)
    assert len(m._vouched) == 3


def test_a_cleared_distrust_vouches_for_later_answers_only() -> None:
    """Distrust until the rescan finds no forging socket left (`clear`):
    answers received from then on vouch again; those received before the
    clear (during the distrust, or before it was known) never do, cached
    vouches included; a new report distrusts again."""
    n = FlowNamer(min_hold_s=0, owners=lambda cg: (cg, "ctr-a"))
    early = response("db.partner.example", ("db.partner.example.", 600, "A", "198.18.4.5"))
    n.on_dns(7, early, IPPROTO_UDP, 100.0, R)  # forged, say, before the report arrived
    sni_key = (7, "198.18.4.5", 443, 6)
    n.on_first_payload(sni_key, client_hello("db.partner.example", ssl.TLSVersion.TLSv1_3))
    assert n.vouched(sni_key, "db.partner.example", "sni", 100.5) == R  # cached, as before the report
    n.distrust(7, "a raw socket")
    during = response("api.partner.example", ("api.partner.example.", 600, "A", "198.18.4.6"))
    n.on_dns(7, during, IPPROTO_UDP, 105.0, R)
    assert n.uncleared() == [7, "ctr-a"]
    n.clear(7, 110.0)
    assert n.distrusted(7) == "a raw socket"  # the container is still distrusted
    n.clear("ctr-a", 110.0)
    assert n.distrusted(7) is None and n.distrusted(7, 109.9) == "a raw socket" and n.uncleared() == []
    assert n.counts["dns_distrust_cleared"] == 2
    after = response("www.partner.example", ("www.partner.example.", 600, "A", "198.18.4.7"))
    n.on_dns(7, after, IPPROTO_UDP, 120.0, R)
    # received before the clear: no vouch, however asked
    assert n.vouched(sni_key, "db.partner.example", "sni", 130.0) == ""
    assert n.dns_answer(7, "198.18.4.5", 130.0) == ("db.partner.example", "")
    assert n.dns_answer(7, "198.18.4.6", 130.0) == ("api.partner.example", "")
    dns_key = (7, "198.18.4.6", 8443, 6)
    assert n.name(dns_key, 130.0) == ("api.partner.example", "dns")
    assert n.vouched(dns_key, "api.partner.example", "dns", 130.0) == ""
    # received after it: vouches
    assert n.dns_answer(7, "198.18.4.7", 130.0) == ("www.partner.example", R)
    # a fresh answer replaces the flow's cached vouch the distrust covers
    n.on_dns(7, early, IPPROTO_UDP, 125.0, R)
    assert n.vouched(sni_key, "db.partner.example", "sni", 130.0) == R
    later_key = (7, "198.18.4.7", 443, 6)
    n.on_first_payload(later_key, client_hello("www.partner.example", ssl.TLSVersion.TLSv1_3))
    assert n.vouched(later_key, "www.partner.example", "sni", 130.0) == R
    # reported again: everything, the later answer too, vouches for nothing
    assert n.distrust(7, "binds port 53 (udp)")
    assert n.vouched(later_key, "www.partner.example", "sni", 131.0) == ""
    assert n.dns_answer(7, "198.18.4.7", 131.0) == ("www.partner.example", "")
    assert n.uncleared() == [7, "ctr-a"]
    n.clear(7, 200.0)
    n.clear("ctr-a", 200.0)
    assert n.vouched(later_key, "www.partner.example", "sni", 201.0) == ""  # 120 < 200
    n.clear("ctr-b", 200.0)  # not distrusted: nothing to clear
    assert n.counts["dns_distrust_cleared"] == 4
