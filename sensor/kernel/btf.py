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

The file is read by libbpf (btf__new, btf__find_by_name_kind), through
ctypes: libbcc itself links libbpf.so.1 (Debian's libbpfcc depends on
libbpf1), so every node that runs bcc has it. It replaced a hand-written
reader whose one Python pass over vmlinux's ~130k records cost 0.06-0.28 s
of every start; libbpf parses and indexes the same 5 MB in ~12 ms
(bench/RESULTS.md, eighth session).
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
from dataclasses import dataclass, field
from functools import cache

BTF_PATH = "/sys/kernel/btf/vmlinux"

# kinds (include/uapi/linux/btf.h)
KIND_STRUCT = 4
KIND_TYPEDEF = 8
KIND_FUNC = 12

_MAGIC = 0xEB9F


class BtfUnavailable(Exception):
    """No usable kernel BTF, or a type asked for is not in it (the message says which)."""


@dataclass(frozen=True)
class BtfType:
    type_id: int
    # struct members: name -> (byte offset, bitfield size in bits; 0 when not a bitfield)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)


# The last search of each file: what was asked, what was found. Three
# callers (the LSM probe, the send report, connect_unix) each want a few
# types at start: the loader asks for all of them at once (prefetch), and
# each caller's own find() is then answered from here, without parsing
# the file again. Only the answers are
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


class _BtfType(ct.Structure):
    """struct btf_type (include/uapi/linux/btf.h); a struct's members follow it."""

    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


KIND_UNION = 5
# modifiers and typedefs between a member and its struct or union
_THROUGH = frozenset({8, 9, 10, 11, 18})  # typedef, volatile, const, restrict, type_tag


def _members(lib: ct.CDLL, handle: int, tid: int, base_bits: int, out: dict[str, tuple[int, int]], depth: int) -> None:
    """A struct's or union's members into `out` (name -> (byte offset,
    bitfield bits)); those of unnamed struct and union members too, at
    their offset (mm_struct keeps its fields in one: arg_start)."""
    t = lib.btf__type_by_id(handle, tid).contents
    kflag, vlen = t.info >> 31, t.info & 0xFFFF
    arr = ct.cast(ct.addressof(t) + ct.sizeof(_BtfType), ct.POINTER(_BtfMember * vlen)).contents
    for m in arr:
        m_name = (lib.btf__name_by_offset(handle, m.name_off) or b"").decode(errors="replace")
        bits = base_bits + (m.offset & 0xFFFFFF if kflag else m.offset)
        if m_name:
            out.setdefault(m_name, (bits // 8, m.offset >> 24 if kflag else 0))
            continue
        inner = m.type
        for _ in range(8):
            it = lib.btf__type_by_id(handle, inner).contents
            if (it.info >> 24) & 0x1F not in _THROUGH:
                break
            inner = it.size_or_type
        if (it.info >> 24) & 0x1F in (KIND_STRUCT, KIND_UNION) and depth < 4:
            _members(lib, handle, inner, bits, out, depth + 1)


class _BtfMember(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("type", ct.c_uint32), ("offset", ct.c_uint32)]


@cache
def _libbpf() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise BtfUnavailable(f"libbpf.so.1 cannot be loaded ({e}); bcc needs it too: install libbpf1") from None
    lib.btf__new.argtypes = [ct.c_char_p, ct.c_uint32]
    lib.btf__new.restype = ct.c_void_p
    lib.libbpf_get_error.argtypes = [ct.c_void_p]
    lib.libbpf_get_error.restype = ct.c_long
    lib.btf__free.argtypes = [ct.c_void_p]
    lib.btf__free.restype = None
    lib.btf__find_by_name_kind.argtypes = [ct.c_void_p, ct.c_char_p, ct.c_uint32]
    lib.btf__find_by_name_kind.restype = ct.c_int32
    lib.btf__type_by_id.argtypes = [ct.c_void_p, ct.c_uint32]
    lib.btf__type_by_id.restype = ct.POINTER(_BtfType)
    lib.btf__name_by_offset.argtypes = [ct.c_void_p, ct.c_uint32]
    lib.btf__name_by_offset.restype = ct.c_char_p
    return lib


def _find(wanted: set[tuple[int, str]], path: str, data: bytes | None) -> dict[tuple[int, str], BtfType]:
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BtfUnavailable(f"no kernel BTF at {path} ({e.strerror})") from None
    # The header, checked here for a reason a reader can act on; libbpf
    # validates every record below and refuses what runs out of bounds.
    try:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    except struct.error:
        raise BtfUnavailable(f"{path} is too short to be BTF") from None
    if magic != _MAGIC:
        raise BtfUnavailable(f"{path} has an unexpected magic or byte order")
    if hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
        raise BtfUnavailable(f"{path}: sections run past the end of the file")
    lib = _libbpf()
    handle = lib.btf__new(data, len(data))
    if not handle or lib.libbpf_get_error(handle):
        err = ct.get_errno() or 22
        raise BtfUnavailable(f"{path}: libbpf refused it as BTF ({os.strerror(err)})")
    try:
        found: dict[tuple[int, str], BtfType] = {}
        for kind, name in wanted:
            tid = lib.btf__find_by_name_kind(handle, name.encode(), kind)
            if tid <= 0:
                continue
            members: dict[str, tuple[int, int]] = {}
            if kind == KIND_STRUCT:
                _members(lib, handle, tid, 0, members, 0)
            found[(kind, name)] = BtfType(tid, members)
        return found
    finally:
        lib.btf__free(handle)


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


@dataclass(frozen=True)
class ExecLayout:
    """What the exec event reads of the new program (bpf/exec.bpf.c): its
    argv (mm_struct.arg_start..arg_end) and fd 0's inode mode."""

    task_mm: int
    task_files: int
    mm_arg_start: int
    mm_arg_end: int
    files_fdt: int
    fdt_fd: int
    file_inode: int
    inode_mode: int


EXEC_TYPES = tuple((KIND_STRUCT, n) for n in ("task_struct", "mm_struct", "files_struct", "fdtable", "file", "inode"))
_EXEC_FIELDS = (
    ("task_struct", "mm"),
    ("task_struct", "files"),
    ("mm_struct", "arg_start"),
    ("mm_struct", "arg_end"),
    ("files_struct", "fdt"),
    ("fdtable", "fd"),
    ("file", "f_inode"),
    ("inode", "i_mode"),
)


def exec_layout(path: str = BTF_PATH, data: bytes | None = None) -> ExecLayout:
    """The eight offsets, or BtfUnavailable naming the first one missing."""
    got = find(set(EXEC_TYPES), path, data)
    offsets = []
    for struct_name, member in _EXEC_FIELDS:
        t = got.get((KIND_STRUCT, struct_name))
        m = t.members.get(member) if t is not None else None
        if m is None or m[1]:
            raise BtfUnavailable(f"kernel BTF has no struct {struct_name}.{member}")
        offsets.append(m[0])
    return ExecLayout(*offsets)


@dataclass(frozen=True)
class UnixIntoLayout:
    """What the unix_stream_connect and unix_may_send hooks read of the
    receiving socket (bpf/socket.bpf.c): its cgroup, and that cgroup's id
    and ancestors."""

    socket_sk: int  # struct socket.sk (unix_may_send's argument is a struct socket)
    socket_type: int  # struct socket.type (a short: SOCK_DGRAM...)
    sk_cgroup: int  # struct sock.sk_cgrp_data.cgroup
    cgroup_kn: int  # struct cgroup.kn
    kn_id: int  # struct kernfs_node.id (the cgroup id)
    kn_parent: int  # struct kernfs_node.__parent (.parent before 6.15)


UNIX_INTO_HOOK = "bpf_lsm_unix_stream_connect"
UNIX_SEND_HOOK = "bpf_lsm_unix_may_send"
UNIX_INTO_TYPES = (
    (KIND_FUNC, UNIX_INTO_HOOK),
    (KIND_FUNC, UNIX_SEND_HOOK),
    *((KIND_STRUCT, n) for n in ("socket", "sock", "sock_cgroup_data", "cgroup", "kernfs_node")),
)


def unix_into_layout(path: str = BTF_PATH, data: bytes | None = None) -> UnixIntoLayout:
    """The six offsets, or BtfUnavailable naming what is missing."""
    got = find(set(UNIX_INTO_TYPES), path, data)
    for hook in (UNIX_INTO_HOOK, UNIX_SEND_HOOK):
        if (KIND_FUNC, hook) not in got:
            raise BtfUnavailable(f"kernel BTF has no {hook} (an LSM hook)")

    def member(struct_name: str, *names: str) -> int:
        t = got.get((KIND_STRUCT, struct_name))
        for name in names:
            m = t.members.get(name) if t is not None else None
            if m is not None and not m[1]:
                return m[0]
        raise BtfUnavailable(f"kernel BTF has no struct {struct_name}.{names[0]}")

    return UnixIntoLayout(
        member("socket", "sk"),
        member("socket", "type"),
        member("sock", "sk_cgrp_data") + member("sock_cgroup_data", "cgroup"),
        member("cgroup", "kn"),
        member("kernfs_node", "id"),
        member("kernfs_node", "__parent", "parent"),
    )
