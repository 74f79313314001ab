"""Isolation below the sockets: the host side of an isolated container's
veth drops every frame the container sends.

The egress program drops an isolated container's packets by their
socket's cgroup, and the packet-socket guard kills a process that sends on
an AF_PACKET socket, after its send. Two things leave anyway (review):
- a packet socket's one send can carry a whole PACKET_TX_RING of frames,
  and a socket hidden from the containment sweep in an SCM_RIGHTS message
  the container sends itself is handed to child after child (320 frames
  out of 5 sends, measured);
- the kernel's own replies (a TCP RST for a closed port) leave on the
  kernel's control socket, whose cgroup is the root's: a port scan from
  outside reads bits the container sets by opening and closing listeners.
Both cross the container's veth. A tc filter on the host side's ingress
(an eBPF program that drops, attached with iproute2's `tc`) drops them, for containers
whose network namespace is their own; a shared one (the host's, a pod's)
has no link of its own to cut, and keeps the socket-level containment.

The filters live in the kernel, not in the sensor: the sensor removes
them when it stops (while it is stopped nothing is contained, as before)
and at `sluice release`; they go with the veth when the container goes.
A crashed sensor leaves them (the isolation holds at the link until the
next start re-applies or releases the entry). By hand: `tc filter del dev
<veth> ingress pref 1 handle 0x51c bpf`.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import tempfile
from typing import Any

PREF = "1"  # first among the link's ingress filters
HANDLE = "0x51c"
TIMEOUT_S = 5.0

# The filter: an eBPF tc program (cls_bpf, direct action), because it is
# what every kernel that runs the sensor has: this machine kind's kernel has
# no tc action modules (`matchall action drop` and `u32 ... action drop`
# fail: "Failed to load TC action module").
PROGRAM = r"""
int sl_linkdrop(struct __sk_buff *skb)
{
	return 2; /* TC_ACT_SHOT */
}
"""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """argv's result; a missing binary or a timeout is a failed result (the
    callers run in the sensor's loop: nothing here may raise past them)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return subprocess.CompletedProcess(argv, 127, "", str(e))


def _links(argv: list[str]) -> list[dict[str, Any]]:
    r = _run(argv)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"{argv[0]} exited {r.returncode}")
    links = json.loads(r.stdout or "[]")
    return [x for x in links if isinstance(x, dict)]


def _in(netns: str | None, argv: list[str]) -> list[str]:
    """argv run in the network namespace at path `netns` (None: ours)."""
    return ["nsenter", f"--net={netns}", *argv] if netns else argv


def host_links(pid: int) -> list[tuple[str | None, str]]:
    """The outer ends of the veths of the network namespace of `pid`:
    (network namespace path, None for the sensor's own, i.e. the host's;
    link name). An end is looked for in the namespace the inner end names
    (its link_netnsid: a named one under /run/netns, where the test
    harness's sink bridge lives, or else the host's) and must name the
    inner end back (indexes repeat across namespaces). Raises OSError when
    a namespace cannot be read."""
    mine = f"/proc/{pid}/ns/net"
    inside = _links(_in(mine, ["ip", "-j", "link", "show"]))
    r = _run(_in(mine, ["ip", "-j", "netns", "list-id"]))
    names = {x.get("nsid"): x.get("name") for x in json.loads(r.stdout or "[]") if isinstance(x, dict)}
    wanted: dict[str | None, dict[int, int]] = {}  # netns -> outer index -> inner index
    for x in inside:
        if "link_index" in x and "link_netnsid" in x and "ifindex" in x:
            name = names.get(x["link_netnsid"])
            where = f"/run/netns/{name}" if name and "/" not in name else None
            wanted.setdefault(where, {})[x["link_index"]] = x["ifindex"]
    out = []
    for where, ends in sorted(wanted.items(), key=lambda kv: kv[0] or ""):
        for x in _links(_in(where, ["ip", "-j", "-d", "link", "show", "type", "veth"])):
            idx, peer = x.get("ifindex"), x.get("link_index")
            if idx in ends and ends[idx] == peer and "link_netnsid" in x:
                out.append((where, str(x["ifname"])))
    return out


def is_cut(netns: str | None, link: str) -> bool:
    """Does `link` have the drop?"""
    r = _run(_in(netns, ["tc", "filter", "show", "dev", link, "ingress", "pref", PREF]))
    return r.returncode == 0 and f"handle {HANDLE}" in r.stdout and "sl_linkdrop" in r.stdout


class LinkDropper:
    """Puts the drop on links and takes it off; loads its program on first use."""

    def __init__(self) -> None:
        self._bpf: Any = None
        self._fd = -1

    def _program_fd(self) -> int:
        if self._bpf is None:
            from bcc import BPF  # Debian python3-bpfcc; not on PyPI

            b = BPF(text=PROGRAM)
            self._fd = b.load_func("sl_linkdrop", BPF.SCHED_CLS).fd
            self._bpf = b
        return self._fd

    def drop(self, netns: str | None, link: str) -> None:
        """Drop every frame arriving at `link` from its peer (this sensor's
        program replaces an earlier one's). Raises OSError with tc's words
        when it cannot."""
        fd = self._program_fd()
        # tc takes a program by a bpffs path: one of our own for the call
        # (/sys/fs/bpf is not mounted everywhere), unmounted after it; the
        # filter keeps the program
        # (under /run, not /tmp: a container sharing the host's /tmp must
        # not see a bpffs left by a failed unmount)
        d = tempfile.mkdtemp(prefix="sluice-linkdrop-", dir="/run" if os.path.isdir("/run") else None)
        try:
            r = _run(["mount", "-t", "bpf", "bpf", d])
            if r.returncode != 0:
                raise OSError(f"cannot mount a bpffs for tc: {r.stderr.strip()}")
            try:
                pin = os.path.join(d, "prog")
                from bcc import libbcc

                if libbcc.lib.bpf_obj_pin(fd, pin.encode()) != 0:
                    raise OSError(f"cannot pin the link drop program: {os.strerror(ctypes.get_errno() or 1)}")
                _run(_in(netns, ["tc", "qdisc", "add", "dev", link, "clsact"]))  # may exist (ours, another's)
                r = _run(
                    _in(netns, ["tc", "filter", "replace", "dev", link, "ingress", "pref", PREF, "handle", HANDLE])
                    + ["bpf", "direct-action", "pinned", pin]
                )
                if r.returncode != 0 and not is_cut(netns, link):
                    raise OSError(f"tc on {link}: {r.stderr.strip() or r.returncode}")
            finally:
                _run(["umount", d])
        finally:
            try:
                os.rmdir(d)
            except OSError:
                pass  # still mounted: the umount's failure is the one to report

    @staticmethod
    def undrop(netns: str | None, link: str) -> None:
        """Remove the drop from `link` (gone links and absent filters are fine)."""
        _run(_in(netns, ["tc", "filter", "del", "dev", link, "ingress", "pref", PREF, "handle", HANDLE, "bpf"]))

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
