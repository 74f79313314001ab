"""bpf/sluice_events.h compiled with the host C compiler vs the ctypes mirrors.

Every size and offset of every struct in sensor.events.C_MIRRORS, and every
constant the Python side duplicates, must match what the C compiler sees.
"""

from __future__ import annotations

import ctypes as ct
import shutil
import subprocess
from pathlib import Path
from typing import TypedDict

import pytest

from sensor.kernel import events as E


class CLayout(TypedDict):
    """What the compiled probe program reports about the header."""

    sizes: dict[str, int]  # struct name -> sizeof
    fields: dict[tuple[str, str], tuple[int, int]]  # (struct, field) -> (offset, size)
    consts: dict[str, int]  # constant name -> value


ROOT = Path(__file__).resolve().parents[3]
HEADER_DIR = ROOT / "bpf"

# C name -> Python constant, for every #define / enumerator mirrored in events.py
CONSTANTS: dict[str, int] = {
    "SL_COMM_LEN": E.COMM_LEN,
    "SL_PATH_LEN": E.PATH_LEN,
    "SL_EXEC_ARGV_LEN": E.EXEC_ARGV_LEN,
    "SL_ARGS_LEN": E.ARGS_LEN,
    "SL_SAMPLE_MAX": E.SAMPLE_MAX,
    "SL_FIRST_MAX": E.FIRST_MAX,
    "SL_DNS_MAX": E.DNS_MAX,
    "SL_EV_DNS": E.EV_DNS,
    "SL_SAMPLE_F_FIRST": E.SAMPLE_F_FIRST,
    "SL_DNS_F_TRUNCATED": E.DNS_F_TRUNCATED,
    "SL_STAT_DNS_TRUNCATED": E.STAT_DNS_TRUNCATED,
    "SL_STAT_DNS_CAPPED": E.STAT_DNS_CAPPED,
    "SL_EV_EXEC": E.EV_EXEC,
    "SL_EV_EXIT": E.EV_EXIT,
    "SL_EV_CONNECT": E.EV_CONNECT,
    "SL_EV_SAMPLE": E.EV_SAMPLE,
    "SL_EV_CGROUP": E.EV_CGROUP,
    "SL_EV_EXEC_ARGS": E.EV_EXEC_ARGS,
    "SL_EV_LISTEN": E.EV_LISTEN,
    "SL_EV_ACCEPT": E.EV_ACCEPT,
    "SL_EV_UNIX_CONNECT": E.EV_UNIX_CONNECT,
    "SL_UNIX_PATH_LEN": E.UNIX_PATH_LEN,
    "SL_LISTEN_BIND": E.LISTEN_OP_BIND,
    "SL_LISTEN_LISTEN": E.LISTEN_OP_LISTEN,
    "SL_EV_SOCKET": E.EV_SOCKET,
    "SL_EV_QUOTA": E.EV_QUOTA,
    "SL_EV_TYPE_MAX": E.EV_TYPE_MAX,
    "SL_SOCKET_HOOK_LSM": E.SOCKET_HOOK_LSM,
    "SL_SOCKET_HOOK_CGROUP": E.SOCKET_HOOK_CGROUP,
    "SL_SOCKET_HOOK_SYSCALL": E.SOCKET_HOOK_SYSCALL,
    "SL_SOCKET_HOOK_SEND": E.SOCKET_HOOK_SEND,
    "SL_QUOTA_FLOWS": E.QUOTA_FLOWS,
    "SL_QUOTA_EVENTS": E.QUOTA_EVENTS,
    "SL_FLOW_F_OVER_QUOTA": E.FLOW_F_OVER_QUOTA,
    "SL_CONNECT": E.CONNECT_OP_CONNECT,
    "SL_SENDMSG": E.CONNECT_OP_SENDMSG,
    "SL_CGROUP_MKDIR": E.CGROUP_MKDIR,
    "SL_CGROUP_RMDIR": E.CGROUP_RMDIR,
    "SL_SAMPLE_F_SOCK_START": E.SAMPLE_F_SOCK_START,
    "SL_SAMPLE_F_NO_SOCK": E.SAMPLE_F_NO_SOCK,
    "SL_STAT_SUBMITTED": E.STAT_SUBMITTED,
    "SL_STAT_DROPPED": E.STAT_DROPPED,
    "SL_STAT_FLOW_MAP_FULL": E.STAT_FLOW_MAP_FULL,
    "SL_STAT_FLOW_BYTES_UNTRACKED": E.STAT_FLOW_BYTES_UNTRACKED,
    "SL_STAT_PARENT_MAP_FULL": E.STAT_PARENT_MAP_FULL,
    "SL_STAT_UDP_SEND_DEDUPED": E.STAT_UDP_SEND_DEDUPED,
    "SL_STAT_EGRESS_PACKETS": E.STAT_EGRESS_PACKETS,
    "SL_STAT_EXECD_MAP_FULL": E.STAT_EXECD_MAP_FULL,
    "SL_STAT_IPV4_FRAGMENTS": E.STAT_IPV4_FRAGMENTS,
    "SL_STAT_CONTAIN_FOLLOWED": E.STAT_CONTAIN_FOLLOWED,
    "SL_STAT_CONTAIN_MAP_FULL": E.STAT_CONTAIN_MAP_FULL,
    "SL_STAT_SOCKETS_DENIED": E.STAT_SOCKETS_DENIED,
    "SL_STAT_SOCKET_DEDUPED": E.STAT_SOCKET_DEDUPED,
    "SL_STAT_FLOW_QUOTA_REFUSED": E.STAT_FLOW_QUOTA_REFUSED,
    "SL_STAT_EVENT_QUOTA_REFUSED": E.STAT_EVENT_QUOTA_REFUSED,
    "SL_STAT_ACCEPT_DEDUPED": E.STAT_ACCEPT_DEDUPED,
    "SL_STAT_ACCEPT_NO_LISTENER": E.STAT_ACCEPT_NO_LISTENER,
    "SL_STAT_PACKET_KILLED": E.STAT_PACKET_KILLED,
    "SL_STAT_SOCK_STATE_REFUSED": E.STAT_SOCK_STATE_REFUSED,
    "SL_STAT_UNIX_DENIED": E.STAT_UNIX_DENIED,
    "SL_STAT_UNIX_INTO_DENIED": E.STAT_UNIX_INTO_DENIED,
    "SL_EV_UNIX_INTO": E.EV_UNIX_INTO,
    "SL_EXEC_GPPID_MASK": E.EXEC_GPPID_MASK,
    "SL_EXEC_PARENT_EXECD": E.EXEC_PARENT_EXECD,
    "SL_UNIX_INTO_CONNECT": E.UNIX_INTO_CONNECT,
    "SL_UNIX_INTO_SEND": E.UNIX_INTO_SEND,
    "SL_UNIX_OUT_SEND": E.UNIX_OUT_SEND,
    "SL_STAT_MAX": E.STAT_MAX,
}


def _c_program() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "sluice_events.h"',
        "int main(void) {",
    ]
    for cname, mirror in E.C_MIRRORS.items():
        lines.append(f'  printf("size {cname} %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in mirror._fields_:
            lines.append(
                f'  printf("field {cname} {fname} %zu %zu\\n", '
                f"offsetof(struct {cname}, {fname}), sizeof(((struct {cname} *)0)->{fname}));"
            )
    for name in CONSTANTS:
        lines.append(f'  printf("const {name} %lld\\n", (long long)({name}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> CLayout:
    gcc = shutil.which("gcc") or "/usr/bin/gcc"
    d = tmp_path_factory.mktemp("layout")
    src, exe = d / "layout.c", d / "layout"
    src.write_text(_c_program())
    cc = subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Werror", f"-I{HEADER_DIR}", "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, f"the header does not compile:\n{cc.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    fields: dict[tuple[str, str], tuple[int, int]] = {}
    consts: dict[str, int] = {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "size":
            sizes[rest[0]] = int(rest[1])
        elif kind == "field":
            fields[(rest[0], rest[1])] = (int(rest[2]), int(rest[3]))
        elif kind == "const":
            consts[rest[0]] = int(rest[1])
    return CLayout(sizes=sizes, fields=fields, consts=consts)


def test_new_event_decoders_round_trip() -> None:
    lc = E.ListenEventC()
    lc.hdr.type, lc.hdr.pid, lc.hdr.cgroup_id = E.EV_LISTEN, 42, 7
    ct.memmove(ct.addressof(lc.laddr), E.parse_addr("198.18.0.5"), 16)
    lc.lport, lc.protocol, lc.op, lc.comm = 4444, 6, E.LISTEN_OP_LISTEN, b"nc"
    ev = E.decode(E.encode(lc))
    assert isinstance(ev, E.ListenEvent)
    assert (ev.laddr, ev.lport, ev.op, ev.comm, ev.hdr.cgroup_id) == ("198.18.0.5", 4444, 2, "nc", 7)
    ac = E.AcceptEventC()
    ac.hdr.type, ac.hdr.cgroup_id = E.EV_ACCEPT, 9
    ct.memmove(ct.addressof(ac.raddr), E.parse_addr("2001:db8::1"), 16)
    ac.rport, ac.lport, ac.suppressed, ac.peer_cgroup_id = 50000, 80, 3, 1 << 40
    ev2 = E.decode(E.encode(ac))
    assert isinstance(ev2, E.AcceptEvent)
    assert (ev2.raddr, ev2.rport, ev2.lport, ev2.suppressed, ev2.peer_cgroup_id) == (
        "2001:db8::1",
        50000,
        80,
        3,
        1 << 40,
    )
    uc = E.UnixConnectEventC()
    uc.hdr.type = E.EV_UNIX_CONNECT
    path = b"/var/run/docker.sock"
    ct.memmove(ct.addressof(uc.path), path, len(path))
    uc.path_len = len(path) + 1
    ev3 = E.decode(E.encode(uc))
    assert isinstance(ev3, E.UnixConnectEvent) and ev3.path == "/var/run/docker.sock"
    assert E.unix_path(b"\0abstract\0\0", 9) == "@abstract"


def test_every_mirrored_struct_is_in_the_header(c_layout: CLayout) -> None:
    assert set(c_layout["sizes"]) == set(E.C_MIRRORS)
    assert len(E.C_MIRRORS) >= 9


@pytest.mark.parametrize("cname", sorted(E.C_MIRRORS))
def test_struct_size_matches(c_layout: CLayout, cname: str) -> None:
    assert ct.sizeof(E.C_MIRRORS[cname]) == c_layout["sizes"][cname]


@pytest.mark.parametrize("cname", sorted(E.C_MIRRORS))
def test_field_offsets_and_sizes_match(c_layout: CLayout, cname: str) -> None:
    mirror = E.C_MIRRORS[cname]
    for fname, *_ in mirror._fields_:
        desc = getattr(mirror, fname)
        c_off, c_size = c_layout["fields"][(cname, fname)]
        assert (desc.offset, desc.size) == (c_off, c_size), f"{cname}.{fname}"


@pytest.mark.parametrize("cname", sorted(E.C_MIRRORS))
def test_mirror_has_no_hidden_tail(c_layout: CLayout, cname: str) -> None:
    # the last field ends where the C struct ends, modulo alignment padding
    mirror = E.C_MIRRORS[cname]
    last = getattr(mirror, mirror._fields_[-1][0])
    end = last.offset + last.size
    assert 0 <= c_layout["sizes"][cname] - end < ct.alignment(mirror)


def test_decoders_cover_every_event_type() -> None:
    types = {
        E.EV_EXEC,
        E.EV_EXIT,
        E.EV_CONNECT,
        E.EV_SAMPLE,
        E.EV_CGROUP,
        E.EV_EXEC_ARGS,
        E.EV_DNS,
        E.EV_LISTEN,
        E.EV_ACCEPT,
        E.EV_UNIX_CONNECT,
        E.EV_SOCKET,
        E.EV_QUOTA,
        E.EV_UNIX_INTO,
    }
    assert set(E.DECODERS) == types
    assert max(types) < E.EV_TYPE_MAX
    for t, (struct, _fn) in E.DECODERS.items():
        assert struct in E.C_MIRRORS.values()
        assert t in E.EVENT_NAMES


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_matches(c_layout: CLayout, name: str) -> None:
    assert c_layout["consts"][name] == CONSTANTS[name]
