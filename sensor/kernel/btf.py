"""The running kernel's own type information (/sys/kernel/btf/vmlinux).

Sluice compiles its BPF C with bcc against whatever kernel build tree is
installed, which need not match the running kernel, so the C never reads a
kernel struct. Two programs need one anyway, and take what they need from
here instead of from headers:

- connect_unix (unixconnect.py): the kfunc bpf_cast_to_kern_ctx's id and
  two fields of struct bpf_sock_addr_kern;
- the AF_PACKET send report as a tp_btf program (bpf/packet.bpf.c): the id
  of the tracepoint's BTF typedef and the offsets of struct sock's family
  and protocol. A tp_btf program's loads from the socket are checked by the
  verifier against this same BTF, so a wrong offset is refused at load,
  never read.

Why a hand-written reader: the format is a flat array of type records
(include/uapi/linux/btf.h) and only names, kinds, ids and member offsets are
needed; the maintained readers are libbpf (C, not a Python dependency we
ship) and bpftool (a binary nodes need not have). One pass over the file
(~5 MB) stops as soon as everything asked for is found.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BTF_PATH = "/sys/kernel/btf/vmlinux"

# kinds (include/uapi/linux/btf.h)
KIND_STRUCT = 4
KIND_TYPEDEF = 8
KIND_FUNC = 12

# bytes after the 12-byte common header: fixed per kind, and per vlen entry
_KIND_EXTRA = {1: 4, 3: 12, 14: 4, 17: 4}
_KIND_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_MAGIC = 0xEB9F


class BtfUnavailable(Exception):
    """No usable kernel BTF, or a type asked for is not in it (the message says which)."""


@dataclass(frozen=True)
class BtfType:
    type_id: int
    # struct members: name -> (byte offset, bitfield size in bits; 0 when not a bitfield)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)


# The last search of each file: what was asked, what was found. A pass over
# vmlinux's ~100k records costs 0.08-0.12 s in Python, and three callers
# (the LSM probe, the send report, connect_unix) each want a few types at
# start: the loader asks for all of them at once (prefetch), and each
# caller's own find() is then answered from here. Only the answers are
# kept, never the 5 MB file; the running kernel's BTF does not change.
_searched: dict[str, tuple[frozenset[tuple[int, str]], dict[tuple[int, str], BtfType]]] = {}


def prefetch(wanted: set[tuple[int, str]], path: str = BTF_PATH) -> None:
    """One pass for what several callers will ask for; errors are left to
    the callers' own find(), which then reads the file again and raises."""
    try:
        find(wanted, path)
    except BtfUnavailable:
        pass


def find(
    wanted: set[tuple[int, str]], path: str = BTF_PATH, data: bytes | None = None
) -> dict[tuple[int, str], BtfType]:
    """The first type of each (kind, name) asked for; missing ones are absent
    from the result. Raises BtfUnavailable when the file is missing or not
    BTF, or its records run past their section (a hostile or truncated file
    is refused, not read out of bounds)."""
    if data is None:
        done = _searched.get(path)
        if done is not None and wanted <= done[0]:
            return {k: v for k, v in done[1].items() if k in wanted}
        found = _find(wanted, path, None)
        _searched[path] = (frozenset(wanted), found)
        return dict(found)
    return _find(wanted, path, data)


def _find(wanted: set[tuple[int, str]], path: str, data: bytes | None) -> dict[tuple[int, str], BtfType]:
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BtfUnavailable(f"no kernel BTF at {path} ({e.strerror})") from None
    try:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    except struct.error:
        raise BtfUnavailable(f"{path} is too short to be BTF") from None
    if magic != _MAGIC:
        raise BtfUnavailable(f"{path} has an unexpected magic or byte order")
    types, strings = hdr_len + type_off, hdr_len + str_off
    end = types + type_len
    if end > len(data) or strings + str_len > len(data):
        raise BtfUnavailable(f"{path}: sections run past the end of the file")
    targets: dict[int, dict[bytes, str]] = {}
    for kind, name in wanted:
        targets.setdefault(kind, {})[name.encode()] = name

    def name_at(off: int) -> bytes:
        start = strings + off
        stop = data.find(b"\0", start, strings + str_len)
        return data[start:stop] if start < strings + str_len and stop >= 0 else b""

    found: dict[tuple[int, str], BtfType] = {}
    pos, tid = types, 1
    while pos < end and len(found) < len(wanted):
        if pos + 12 > end:
            raise BtfUnavailable(f"{path}: a type record runs past the type section")
        name_off, info = struct.unpack_from("<II", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        body = pos + 12
        nxt = body + _KIND_EXTRA.get(kind, 0) + _KIND_VLEN.get(kind, 0) * vlen
        if nxt > end:
            raise BtfUnavailable(f"{path}: a type record runs past the type section")
        names = targets.get(kind)
        if names:
            nm = names.get(name_at(name_off))
            if nm is not None and (kind, nm) not in found:
                members: dict[str, tuple[int, int]] = {}
                if kind == KIND_STRUCT:
                    kflag = info >> 31
                    for i in range(vlen):
                        m_name, _m_type, m_off = struct.unpack_from("<III", data, body + 12 * i)
                        bits = m_off & 0xFFFFFF if kflag else m_off
                        members[name_at(m_name).decode(errors="replace")] = (bits // 8, m_off >> 24 if kflag else 0)
                found[(kind, nm)] = BtfType(tid, members)
        pos, tid = nxt, tid + 1
    return found


@dataclass(frozen=True)
class SockSendLayout:
    """What the tp_btf AF_PACKET send report needs (bpf/packet.bpf.c)."""

    btf_id: int  # typedef btf_trace_sock_send_length
    family_offset: int  # struct sock_common.skc_family (struct sock starts with it)
    protocol_offset: int  # struct sock.sk_protocol; -1 where it is a bitfield (before 5.6)


SOCK_SEND_TYPES = ((KIND_TYPEDEF, "btf_trace_sock_send_length"), (KIND_STRUCT, "sock_common"), (KIND_STRUCT, "sock"))


def sock_send_layout(path: str = BTF_PATH, data: bytes | None = None) -> SockSendLayout:
    """The tracepoint's BTF id and struct sock's two offsets, or BtfUnavailable saying what is missing."""
    tp, common, sock = SOCK_SEND_TYPES
    got = find(set(SOCK_SEND_TYPES), path, data)
    if tp not in got:
        raise BtfUnavailable("kernel BTF has no sock_send_length tracepoint (Linux 6.3+)")
    fam = got[common].members.get("skc_family") if common in got else None
    first = got[sock].members.get("__sk_common") if sock in got else None
    if fam is None or fam[1] or first is None or first[0] != 0:
        raise BtfUnavailable("kernel BTF has no struct sock_common.skc_family at the start of struct sock")
    proto = got[sock].members.get("sk_protocol")
    return SockSendLayout(got[tp].type_id, fam[0], proto[0] if proto and not proto[1] else -1)
