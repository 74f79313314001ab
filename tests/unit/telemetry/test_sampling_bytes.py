"""Samples by bytes and the second read inside large packets (issue 11, item
1): the kernel says how many payload bytes each sample stands for
(span_bytes) and reads a large packet a second time at a random offset; the
classifier weighs each sample by its bytes and judges the second read in the
framing the packet's start established."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from emulation.records import sample_rec
from sensor.kernel import events as E
from sensor.telemetry.classify import (
    COMPRESSED,
    ENCRYPTED,
    HEADER,
    PLAIN,
    UNKNOWN,
    StreamJudge,
    StreamState,
    Verdict,
    weigh_pair,
)
from sensor.telemetry.counters import FlowCounters, WindowCounters

RNG = random.Random(13)
README = (Path(__file__).resolve().parents[3] / "README.md").read_bytes()
KEY = (7, "198.18.0.1", 9443, 6)
PREFIX = (
    b'{"record": "audit-log", "host": "web-1", "level": "info", "seq": 000123, '
    b'"message": "chunk follows, see body length below"}\n'
)


def rand(n: int) -> bytes:
    return RNG.randbytes(n)


def _flow(payload: int, packets: int, key: tuple[int, str, int, int] = KEY) -> FlowCounters:
    return FlowCounters(*key, payload + 52 * packets, packets, payload, 1, 0, 0, packets)


def _second(packet: bytes, n: int = 64) -> tuple[bytes, int]:
    """What the kernel's second read returns: n bytes at a random offset
    past the first read (bpf/egress.bpf.c)."""
    off = 64 + RNG.randrange(len(packet) - 64 - n + 1)
    return packet[off : off + n], off


def test_prefix_longer_than_the_sample_is_seen_through_by_the_second_read() -> None:
    """The evasion of issue 11: every write starts with 100+ bytes of
    cleartext, so a sample of the packet's first 64 bytes sees text only.
    Read at a second offset, the packet counts as what it mostly is; without
    the second read (main before this change) it counted as plain."""
    assert len(PREFIX) > 100
    packets = [PREFIX + rand(16384 - len(PREFIX)) for _ in range(40)]
    with_second, first_only = WindowCounters(), WindowCounters()
    for i, p in enumerate(packets):
        second, off = _second(p)
        start = i < 8
        with_second.add_sample(KEY, p[:64], i == 0, len(p), start, span_bytes=len(p), second=second, second_off=off)
        first_only.add_sample(KEY, p[:64], i == 0, len(p), start, span_bytes=len(p))
    payload = 16384 * 200
    (s,), _e, _h = with_second.close([_flow(payload, 200)])
    (old,), _e, _h = first_only.close([_flow(payload, 200)])
    assert s.encrypted_bytes >= 0.97 * payload, s.byte_classes
    assert old.encrypted_bytes <= 0.01 * payload, old.byte_classes
    assert s.sampled_bytes == 40 * 128  # both reads are in the flow's histogram
    assert s.entropy is not None and s.entropy > old.entropy  # type: ignore[operator]


def test_text_stream_read_twice_stays_plain() -> None:
    text = (PREFIX * 200)[:16384]
    w = WindowCounters()
    for i in range(20):
        second, off = _second(text)
        w.add_sample(KEY, text[:64], i == 0, len(text), i < 8, span_bytes=131072, second=second, second_off=off)
    (s,), _e, _h = w.close([_flow(16384 * 160, 160)])
    assert s.encrypted_bytes == 0, s.byte_classes


def test_samples_are_weighted_by_the_bytes_they_stand_for() -> None:
    """A sample stands for span_bytes payload bytes: a text sample of a
    1,000-byte packet after 10,000 bytes and a random sample of a 64 KiB
    GSO packet after 90,000 bytes make the flow 90 % encrypted. Weighted by
    packets (64 each, the old rate samples) it would read 98.5 %."""
    w = WindowCounters()
    w.add_sample(KEY, (PREFIX * 10)[:64], False, 1000, False, span_bytes=10_000)
    w.add_sample(KEY, rand(64), False, 65536, False, span_bytes=90_000)
    (s,), _e, _h = w.close([_flow(100_000, 10)])
    assert 0.89 <= s.encrypted_bytes / 100_000 <= 0.91, s.byte_classes
    legacy = WindowCounters(sample_every=64)
    legacy.add_sample(KEY, (PREFIX * 10)[:64], False, 1000, False)
    legacy.add_sample(KEY, rand(64), False, 65536, False)
    (o,), _e, _h = legacy.close([_flow(100_000, 10)])
    assert o.encrypted_bytes / 100_000 > 0.98


def test_a_span_never_weighs_less_than_its_packet() -> None:
    w = WindowCounters()
    w.add_sample(KEY, rand(64), False, 4096, False, span_bytes=10)  # span below the packet: racy counter, clamp
    w.add_sample(KEY, (PREFIX * 10)[:64], False, 4096, False, span_bytes=4096)
    (s,), _e, _h = w.close([_flow(8192, 2)])
    assert s.encrypted_bytes == 4096


# --- the second read in its stream's framing ----------------------------------------------


def _inside(data: bytes, off: int, start: Verdict, state: StreamState | None = None) -> Verdict:
    return StreamJudge().judge_inside(data, off, start, state or StreamState())


def _classes(v: Verdict) -> set[str]:
    return {c for c, _n in v.spans}


def test_second_read_inside_a_tls_handshake_record_is_framing() -> None:
    """A handshake record carries random fields (key shares): read inside
    the record its start announced, it stays framing; past it, ciphertext."""
    j = StreamJudge()
    hello = b"\x16\x03\x01" + struct.pack(">H", 1500) + rand(1500)
    start = j.judge(hello[:64], 1505, StreamState(), True)
    assert start.rest == HEADER and start.extent == 1505
    assert _classes(_inside(hello[700:764], 700, start)) == {HEADER}
    tail = _inside(rand(64), 1600, start)
    assert _classes(tail) == {ENCRYPTED}


def test_second_read_in_a_long_http_head_or_after_it() -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(20))
    start = _inside(b"", 0, Verdict())  # empty: no spans
    assert not start.spans
    j = StreamJudge()
    start = j.judge(head[:64], 4096, StreamState(), True)
    assert start.protocol == "http" and start.rest == HEADER
    assert _classes(_inside(head[300:364], 300, start)) == {HEADER}
    body = rand(3000)
    pkt = head + b"\r\n" + body
    end = len(head) + 2
    v = _inside(pkt[end - 20 : end + 44], end - 20, start)
    assert v.spans[0][0] == HEADER and v.rest == ENCRYPTED
    # past MAX_HEAD, or without a line break, it is judged as body
    assert _classes(_inside(body[:64], 2100, start)) == {ENCRYPTED}


def test_second_read_continues_a_proven_compressed_body() -> None:
    real = gzip.compress(README[:60000])  # text: its deflate stream looks random mid-way
    j = StreamJudge()
    st_ = StreamState()
    start = j.judge(real[:64], len(real), st_, False)
    assert start.compression == "gzip" and st_.compressed == "gzip"
    v = _inside(real[len(real) // 2 : len(real) // 2 + 64], len(real) // 2, start, st_)
    assert _classes(v) == {COMPRESSED}
    # the same random-looking bytes in a stream nothing proved: encrypted
    mid = real[len(real) // 2 : len(real) // 2 + 64]
    assert _classes(_inside(mid, 500, Verdict(rest=PLAIN), StreamState())) == {ENCRYPTED}


def test_second_read_unmasks_websocket_text_mid_frame() -> None:
    key = bytes([0x37, 0xFA, 0x21, 0x3D])
    payload = (PREFIX * 40)[:2000]
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    v = _inside(masked[800:864], 806, Verdict(rest=PLAIN), StreamState(websocket=True))
    assert v.protocol == "websocket" and ENCRYPTED not in _classes(v)


# --- weighing a packet read twice -------------------------------------------------------


def test_weigh_pair_bytes_between_reads() -> None:
    plain, enc = Verdict(rest=PLAIN), Verdict(rest=ENCRYPTED)
    plain.add(PLAIN, 64)
    enc.add(ENCRYPTED, 64)
    # same class at both reads: the bytes between are that class
    assert weigh_pair(enc, 64, enc, 64, 8000, 16384) == {ENCRYPTED: 16384.0}
    # the class changed somewhere unseen: unknown between the reads
    w = weigh_pair(plain, 64, enc, 64, 8000, 16384)
    assert w == {PLAIN: 64.0, UNKNOWN: 8000.0 - 64, ENCRYPTED: 16384.0 - 8000}


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=16, max_size=128),
    st.binary(min_size=16, max_size=128),
    st.integers(min_value=0, max_value=70000),
    st.integers(min_value=0, max_value=70000),
    st.booleans(),
)
def test_weigh_pair_covers_the_packet(first: bytes, second: bytes, off: int, plen: int, start: bool) -> None:
    j = StreamJudge()
    state = StreamState()
    v1 = j.judge(first, plen, state, start)
    v2 = j.judge_inside(second, max(off, len(first)), v1, state)
    w = weigh_pair(v1, len(first), v2, len(second), off, plen)
    assert all(n >= 0 for n in w.values())
    assert abs(sum(w.values()) - max(plen, len(first) + len(second))) < 1e-6


# --- the record -----------------------------------------------------------------------------


def test_sample_record_carries_span_and_second_read() -> None:
    first, second = rand(64), rand(64)
    rec = sample_rec(
        7, "198.18.0.1", 9443, first, payload_len=65483, span_bytes=131_000, second=second, second_off=4321
    )
    ev = E.decode(rec)
    assert isinstance(ev, E.SampleEvent)
    assert ev.data == first and ev.second == second and ev.second_off == 4321
    assert ev.span_bytes == 131_000 and ev.payload_len == 65483
    plain = E.decode(sample_rec(7, "198.18.0.1", 9443, first))
    assert isinstance(plain, E.SampleEvent)
    assert plain.data == first and plain.second == b"" and plain.second_off == 0 and plain.span_bytes == 0
