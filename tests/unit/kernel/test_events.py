"""Raw records (ctypes mirrors + encode) -> typed events."""

from __future__ import annotations

import ctypes as ct
from typing import TypeVar

import pytest

from emulation.records import (
    cgroup_rec,
    connect_rec,
    exec_args_rec,
    exec_rec,
    exit_rec,
    put_bytes,
    sample_rec,
)
from sensor.kernel import events as E

_Ev = TypeVar("_Ev", bound=E.Event)


def decode_as(raw: bytes, cls: type[_Ev]) -> _Ev:
    """E.decode(raw), asserting it gave the expected event type."""
    ev = E.decode(raw)
    assert isinstance(ev, cls), f"decoded {type(ev).__name__}, expected {cls.__name__}"
    return ev


def test_encode_is_the_raw_struct_bytes() -> None:
    h = E.EventHeader(type=E.EV_EXIT, pid=7, ktime_ns=0x0102030405060708, cgroup_id=99)
    raw = E.encode(h)
    assert len(raw) == ct.sizeof(E.EventHeader) == 24
    assert raw[:4] == (E.EV_EXIT).to_bytes(4, "little")
    assert raw[4:8] == (7).to_bytes(4, "little")
    assert raw[8:16] == (0x0102030405060708).to_bytes(8, "little")
    assert raw[16:24] == (99).to_bytes(8, "little")


def test_exec_event_fields() -> None:
    ev = E.decode(
        exec_rec(
            pid=4321,
            cgroup_id=77,
            ktime_ns=123_456_789,
            comm=b"python3",
            filename=b"/usr/bin/python3.11",
            ppid=1000,
            old_pid=4325,
        )
    )
    assert isinstance(ev, E.ExecEvent)
    assert ev.hdr == E.Header(E.EV_EXEC, 4321, 123_456_789, 77)
    assert (ev.ppid, ev.old_pid) == (1000, 4325)
    assert ev.comm == "python3"
    assert ev.filename == "/usr/bin/python3.11"


def test_strings_stop_at_the_first_nul() -> None:
    c = E.ExecEventC()
    c.hdr.type = E.EV_EXEC
    put_bytes(c, "comm", b"bash\0stale-junk")
    put_bytes(c, "filename", b"/bin/bash\0/usr/lib/leftover")
    ev = decode_as(E.encode(c), E.ExecEvent)
    assert ev.comm == "bash"
    assert ev.filename == "/bin/bash"


def test_full_length_comm_without_nul() -> None:
    comm = b"0123456789abcdef"  # exactly COMM_LEN, no terminator
    assert len(comm) == E.COMM_LEN
    ev = E.decode(exit_rec(pid=1, cgroup_id=1, comm=comm))
    assert isinstance(ev, E.ExitEvent)
    assert ev.comm == comm.decode()


def test_invalid_utf8_is_shown_escaped_not_fatal() -> None:
    # escaped, not replaced by U+FFFD: the report shows what the name was
    ev = decode_as(exit_rec(pid=1, cgroup_id=1, comm=b"ab\xffcd"), E.ExitEvent)
    assert ev.comm == "ab\\xffcd"
    ev.comm.encode("utf-8")


def test_connect_ipv4_is_formatted_from_the_mapped_address() -> None:
    ev = E.decode(
        connect_rec(
            pid=55,
            cgroup_id=9,
            daddr="93.184.216.34",
            dport=443,
            protocol=6,
            comm=b"curl",
            cookie=0xDEADBEEF,
            op=E.CONNECT_OP_CONNECT,
            family=2,
        )
    )
    assert isinstance(ev, E.ConnectEvent)
    assert ev.daddr == "93.184.216.34"
    assert (ev.dport, ev.protocol, ev.op, ev.family) == (443, 6, E.CONNECT_OP_CONNECT, 2)
    assert ev.sock_cookie == 0xDEADBEEF
    assert ev.comm == "curl"
    assert ev.hdr.pid == 55 and ev.hdr.cgroup_id == 9


@pytest.mark.parametrize(
    "addr, text",
    [
        ("2001:db8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("fe80::1:2:3:4", "fe80::1:2:3:4"),
        ("10.0.0.1", "10.0.0.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("0.0.0.0", "0.0.0.0"),
    ],
)
def test_address_formatting(addr: str, text: str) -> None:
    ev = decode_as(
        connect_rec(pid=1, cgroup_id=1, daddr=addr, dport=53, protocol=17, op=E.CONNECT_OP_SENDMSG), E.ConnectEvent
    )
    assert ev.daddr == text
    assert ev.op == E.CONNECT_OP_SENDMSG


def test_format_addr_raw() -> None:
    assert E.format_addr(b"\0" * 10 + b"\xff\xff" + bytes([192, 168, 1, 20])) == "192.168.1.20"
    assert E.format_addr(b"\0" * 16) == "::"
    # not IPv4-mapped: ::ffff:0:a00:1 style must stay IPv6
    assert E.format_addr(b"\0" * 8 + b"\xff\xff\0\0" + bytes([10, 0, 0, 1])) == "::ffff:0:a00:1"


def test_exec_args_split_on_nul() -> None:
    ev = E.decode(exec_args_rec(pid=12, cgroup_id=3, args=[b"ls", b"-la", b"/tmp"]))
    assert isinstance(ev, E.ExecArgsEvent)
    assert ev.args == ("ls", "-la", "/tmp")
    assert ev.hdr.pid == 12


def test_exec_args_keeps_empty_arguments() -> None:
    ev = decode_as(exec_args_rec(pid=12, cgroup_id=3, args=[b"printf", b"", b"x"]), E.ExecArgsEvent)
    assert ev.args == ("printf", "", "x")


def test_exec_args_limited_by_argc_and_args_len() -> None:
    raw = exec_args_rec(pid=1, cgroup_id=1, args=[b"a", b"bb", b"ccc"], argc=2)
    assert decode_as(raw, E.ExecArgsEvent).args == ("a", "bb")
    # bytes past args_len (stale buffer contents) are ignored
    c = E.ExecArgsEventC.from_buffer_copy(exec_args_rec(pid=1, cgroup_id=1, args=[]))
    put_bytes(c, "args", b"a\0bbSTALE\0")
    c.argc, c.args_len = 2, 4
    assert decode_as(E.encode(c), E.ExecArgsEvent).args == ("a", "bb")


def test_exec_args_len_beyond_buffer_is_clamped() -> None:
    long_arg = b"x" * (E.ARGS_LEN - 1)
    raw = exec_args_rec(pid=1, cgroup_id=1, args=[long_arg], args_len=10_000)
    assert decode_as(raw, E.ExecArgsEvent).args == (long_arg.decode(),)


def test_sample_data_truncated_to_sample_len() -> None:
    data = bytes(range(100))
    ev = E.decode(
        sample_rec(
            cgroup_id=5,
            daddr="2001:db8::7",
            dport=8443,
            data=data,
            protocol=6,
            flags=E.SAMPLE_F_SOCK_START,
            sock_pkt_index=0,
            payload_len=1400,
            sample_len=10,
            cookie=42,
        )
    )
    assert isinstance(ev, E.SampleEvent)
    assert ev.data == data[:10]
    assert ev.payload_len == 1400
    assert ev.daddr == "2001:db8::7" and ev.dport == 8443
    assert ev.flags == E.SAMPLE_F_SOCK_START and ev.sock_pkt_index == 0
    assert ev.sock_cookie == 42
    assert ev.hdr.pid == 0


def test_sample_len_beyond_buffer_is_clamped() -> None:
    data = bytes(range(E.SAMPLE_MAX))
    ev = decode_as(sample_rec(cgroup_id=5, daddr="10.1.2.3", dport=1, data=data, sample_len=4096), E.SampleEvent)
    assert ev.data == data


def test_cgroup_event() -> None:
    path = b"/system.slice/docker-" + b"a" * 64 + b".scope"
    ev = E.decode(cgroup_rec(E.CGROUP_RMDIR, cgroup_id=4242, path=path, level=3))
    assert isinstance(ev, E.CgroupEvent)
    assert (ev.op, ev.level, ev.path) == (E.CGROUP_RMDIR, 3, path.decode())
    assert ev.hdr.cgroup_id == 4242


def test_padded_record_decodes() -> None:
    # ring/perf buffer records may carry trailing padding
    raw = exit_rec(pid=9, cgroup_id=1, comm=b"sleep") + b"\0" * 8
    ev = decode_as(raw, E.ExitEvent)
    assert ev.comm == "sleep" and ev.hdr.pid == 9


@pytest.mark.parametrize("n", [0, 1, 4, 23])
def test_shorter_than_header_is_a_decode_error(n: int) -> None:
    with pytest.raises(E.DecodeError, match="shorter than the header"):
        E.decode(b"\x01" + b"\0" * (n - 1) if n else b"")


@pytest.mark.parametrize(
    "maker",
    [
        lambda: exec_rec(pid=1, cgroup_id=1),
        lambda: exit_rec(pid=1, cgroup_id=1),
        lambda: connect_rec(pid=1, cgroup_id=1, daddr="1.2.3.4", dport=1),
        lambda: sample_rec(cgroup_id=1, daddr="1.2.3.4", dport=1, data=b"x"),
        lambda: cgroup_rec(E.CGROUP_MKDIR, 1, b"/x"),
        lambda: exec_args_rec(pid=1, cgroup_id=1, args=[b"x"]),
    ],
)
def test_truncated_record_is_a_decode_error(maker) -> None:
    raw = maker()
    E.decode(raw)  # the full record is fine
    with pytest.raises(E.DecodeError, match=r"expected \d+"):
        E.decode(raw[:-1])
    with pytest.raises(E.DecodeError):
        E.decode(raw[: ct.sizeof(E.EventHeader)])


@pytest.mark.parametrize("etype", [0, E.EV_TYPE_MAX, 99, 0xFFFFFFFF])
def test_unknown_type_is_a_decode_error(etype: int) -> None:
    h = E.EventHeader(type=etype)
    raw = E.encode(h) + b"\0" * 1024
    with pytest.raises(E.DecodeError, match=f"unknown event type {etype}"):
        E.decode(raw)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(E.DecodeError, ValueError)
