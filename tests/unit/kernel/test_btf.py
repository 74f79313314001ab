"""The kernel BTF reader (sensor/kernel/btf.py, libbpf through ctypes) on synthetic BTF: what the
tp_btf AF_PACKET send report and connect_unix take from it, and hostile or
truncated files refused with a reason instead of read out of bounds."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sensor.kernel import btf


def _blob(
    types: list[tuple[str, int, int, int, list[tuple[str, int, int]] | int | None]], magic: int = 0xEB9F
) -> bytes:
    """types: (name, kind, vlen/kflag info bits, size_or_type, members | int extra | None)."""
    strings = bytearray(b"\0")

    def s(name: str) -> int:
        off = len(strings)
        strings.extend(name.encode() + b"\0")
        return off

    body = bytearray()
    for name, kind, flags, size_or_type, extra in types:
        members = extra if isinstance(extra, list) else []
        info = (kind << 24) | flags | len(members)
        body += struct.pack("<III", s(name), info, size_or_type)
        if isinstance(extra, int):
            body += struct.pack("<I", extra)
        for m_name, m_type, m_off in members:
            body += struct.pack("<III", s(m_name), m_type, m_off)
    hdr = struct.pack("<HBBIIIII", magic, 1, 0, 24, 0, len(body), len(body), len(strings))
    return hdr + bytes(body) + bytes(strings)


INT = ("int", 1, 0, 4, 32)


def _kernel(protocol_member: tuple[str, int, int] = ("sk_protocol", 1, 532 * 8), kflag: int = 0) -> bytes:
    return _blob(
        [
            INT,
            ("sock_common", btf.KIND_STRUCT, 0, 24, [("skc_family", 1, 16 * 8)]),
            ("sock", btf.KIND_STRUCT, kflag, 600, [("__sk_common", 2, 0), protocol_member]),
            ("btf_trace_sock_send_length", btf.KIND_TYPEDEF, 0, 1, None),
        ]
    )


def test_sock_send_layout_from_btf() -> None:
    lay = btf.sock_send_layout(data=_kernel())
    assert lay == btf.SockSendLayout(btf_id=4, family_offset=16, protocol_offset=532)


def test_bitfield_protocol_is_not_read() -> None:
    # before 5.6 sk_protocol is an 8-bit bitfield (kind_flag: size in the top byte)
    lay = btf.sock_send_layout(data=_kernel(("sk_protocol", 1, (8 << 24) | (530 * 8 + 8)), kflag=1 << 31))
    assert lay.protocol_offset == -1 and lay.family_offset == 16


def test_missing_tracepoint_typedef_is_named() -> None:
    data = _blob([INT, ("sock_common", btf.KIND_STRUCT, 0, 24, [("skc_family", 1, 128)])])
    with pytest.raises(btf.BtfUnavailable, match=r"sock_send_length tracepoint \(Linux 6.3\+\)"):
        btf.sock_send_layout(data=data)


def test_first_match_by_kind_and_name() -> None:
    # a FUNC and a STRUCT of one name are different types; the first of each counts
    data = _blob(
        [
            INT,
            ("x", btf.KIND_STRUCT, 0, 8, [("a", 1, 32)]),
            ("x", btf.KIND_FUNC, 0, 0, None),
            ("x", btf.KIND_STRUCT, 0, 8, [("b", 1, 0)]),
        ]
    )
    got = btf.find({(btf.KIND_STRUCT, "x"), (btf.KIND_FUNC, "x"), (btf.KIND_STRUCT, "absent")}, data=data)
    assert got[(btf.KIND_STRUCT, "x")] == btf.BtfType(2, {"a": (4, 0)})
    assert got[(btf.KIND_FUNC, "x")].type_id == 3
    assert (btf.KIND_STRUCT, "absent") not in got


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"\xeb\x9f" + b[2:], "magic"),
        (lambda b: b[:-20], "past the end"),
    ],
)
def test_hostile_or_truncated_btf_is_refused(mutate: object, why: str) -> None:
    data = mutate(_kernel())  # type: ignore[operator]
    with pytest.raises(btf.BtfUnavailable, match=why):
        btf.find({(btf.KIND_TYPEDEF, "btf_trace_sock_send_length")}, data=data)


def test_member_count_past_the_section_is_refused() -> None:
    good = _kernel()
    # rewrite the second type's info word: vlen 0xffff
    pos = 24 + 16  # header, then INT (12 + 4 bytes)
    name_off, info, size = struct.unpack_from("<III", good, pos)
    bad = good[:pos] + struct.pack("<III", name_off, (info & ~0xFFFF) | 0xFFFF, size) + good[pos + 12 :]
    with pytest.raises(btf.BtfUnavailable, match="libbpf refused it as BTF"):
        btf.find({(btf.KIND_TYPEDEF, "btf_trace_sock_send_length")}, data=bad)


def test_no_file(tmp_path: Path) -> None:
    with pytest.raises(btf.BtfUnavailable, match="no kernel BTF"):
        btf.find({(btf.KIND_FUNC, "f")}, path=str(tmp_path / "vmlinux"))


def test_running_kernel_when_it_has_btf() -> None:
    """On a kernel with BTF (CI's), the real file parses and gives struct sock's family at 16."""
    if not Path(btf.BTF_PATH).exists() and os.environ.get("CI") != "true":
        pytest.skip("this kernel has no BTF")
    assert btf.sock_send_layout().family_offset == 16


def test_a_prefetched_search_answers_later_finds_without_reading_again(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_kernel())
    tp, common, sock = btf.SOCK_SEND_TYPES
    btf.prefetch({tp, common, sock, (btf.KIND_FUNC, "absent")}, str(path))
    path.write_bytes(b"")  # a second read would now fail
    assert btf.sock_send_layout(str(path)).family_offset == btf.sock_send_layout(data=_kernel()).family_offset
    assert btf.find({(btf.KIND_FUNC, "absent")}, str(path)) == {}
    with pytest.raises(btf.BtfUnavailable):  # a type outside the search reads the file again
        btf.find({(btf.KIND_STRUCT, "other")}, str(path))
