"""The containment commands (isolate, block, release) as the sensor runs
them, on its main loop: container references resolved through the
ContainerRegistry, entries applied in the kernel (Containment), every change
reported as a document, saved entries re-applied at start, entries that
follow their container into the cgroup of its next run (restart,
re-creation: done in the kernel at cgroup creation, confirmed here), and the
entries of containers that are gone released (registry subscriptions). Gone
means the runtime no longer has the container: a stopped or restarting one
keeps its containment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sensor.attribution.docker_api import DockerError, NotFound
from sensor.attribution.netmap import NetnsIndex, cgroup_tasks, netns_shared
from sensor.attribution.registry import ContainerLife, ContainerRegistry
from sensor.kernel.source import EventSource
from sensor.outputs import documents
from sensor.response import linkdrop, packetsockets, unixpeers
from sensor.response.containment import Containment, ContainmentError, Entry
from sensor.response.freeze import frozen, thaw_leftovers

# a link cut that failed is tried again after this long (recheck)
LINK_RETRY_S = 60.0
# A contained container that has not run for this long is released when the
# runtime cannot say whether it still exists (engine unreachable, runtimes
# other than docker).
GRACE_S = 300.0


def _container_ref(ref: str) -> str:
    """A container reference as given (id, id prefix or name), stripped."""
    ref = ref.strip()
    if not ref:
        raise ContainmentError("say which container (id, id prefix or name)")
    return ref


def _fits(ref: str, cid: str, name: str | None) -> bool:
    """Does `ref` name this container: its id, a prefix of it (4 or more
    characters), or its name?"""
    return cid == ref or (bool(name) and name == ref) or (len(ref) >= 4 and cid.startswith(ref))


def _ambiguous(ref: str, which: list[str]) -> ContainmentError:
    return ContainmentError(f"{ref!r} matches {len(which)} containers: " + ", ".join(which) + "; give more of the id")


_T = TypeVar("_T")


# runc's start and exec processes live for milliseconds; a process older
# than this named like them is not one (review: a name is the task's to pick)
RUNC_YOUNG_S = 5.0


def _runc_task(t: int) -> bool:
    """One of runc's own processes in a container's cgroup (its start, or a
    `docker exec`'s setup: "runc:[0:PARENT]", "runc:[1:CHILD]",
    "runc:[2:INIT]", running runc's binary or its copy: runc 1.1 runs
    "/memfd:runc_cloned:/proc/self/exe (deleted)"), started less than
    RUNC_YOUNG_S ago, whose socketpair to runc outside is how the exec is
    set up. A process can name itself so (prctl) and run a memfd named like
    runc's, and must then do it again every few seconds: the per-window
    sweep that leaves these out is not the isolation's, which cuts all."""
    try:
        with open(f"/proc/{t}/comm") as f:
            if not f.read().startswith("runc:["):
                return False
        if "runc" not in os.readlink(f"/proc/{t}/exe"):
            return False
        start = _task_start(t)
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return start is not None and up - start / os.sysconf("SC_CLK_TCK") < RUNC_YOUNG_S


def _task_start(t: int) -> float | None:
    """When task t started, in clock ticks since boot (None: gone): with its
    pid, what says it is still the same task (a pid is reused only after
    its task is gone). The raw field of /proc/<t>/stat, not psutil's
    create_time(), which adds the boot time read from the wall clock: a
    clock step would make a live task look reused (review)."""
    try:
        with open(f"/proc/{t}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return float(int(fields[19]))  # field 22, starttime (fields[0] is field 3)
    except (OSError, IndexError, ValueError):
        return None


def _netns_of(t: int) -> int | None:
    try:
        return os.stat(f"/proc/{t}/ns/net").st_ino
    except OSError:
        return None


# a task and when it started (_task_start)
_Task = tuple[int, float]


def _tasks_per_netns(tasks: list[int], but_not_ours: bool = False) -> dict[int, list[_Task]]:
    """Network namespace inode -> these tasks in it (a container's process
    may have made a namespace of its own). but_not_ours: without the
    sensor's own (the host's) namespace, whose links are never a
    container's own: runc's first two processes of a (re)start,
    "runc:[0:PARENT]" and "runc:[1:CHILD]", are in the new cgroup while
    still in the host's namespace (measured), and the link cut run there
    would look for "the container's" veths among the host's."""
    per_ns: dict[int, list[_Task]] = {}
    # (and init's: a DaemonSet pod without hostNetwork has a namespace of
    # its own, and with hostPID sees the host's init)
    ours = {_netns_of(os.getpid()), _netns_of(1)} if but_not_ours else set()
    for t in tasks:
        start = _task_start(t)  # (before its namespace: the pair is one task's)
        ino = _netns_of(t)
        if start is not None and ino is not None and ino not in ours:
            per_ns.setdefault(ino, []).append((t, start))
    return per_ns


def _in_netns(ino: int, tasks: list[_Task], read: Callable[[int], _T], *, acts: bool = False) -> _T | None:
    """read(task) for the first of namespace ino's tasks still there and
    still in it: the one picked may exit before its /proc/<pid>/ns/net is
    opened (CI: a restarted container's first process, "nsenter: cannot
    open /proc/20416/ns/net"), and its pid may then be another task's, in
    another namespace (an answer read there is not this one's: it is
    dropped, the next task is tried). None when none is left: the
    namespace went with its last task (CI again: runc's short-lived start
    processes were a namespace's only tasks, and the whole link cut failed
    for a minute). acts: read acts (it cuts what it finds): its answer says
    what was done, and is kept whatever became of the task."""
    for t, start in tasks:
        try:
            got = read(t)
        except OSError:
            if _task_start(t) == start:
                raise  # the task is still there: a real failure
            continue
        # the same task throughout (same start before and after), in the
        # namespace at both ends
        if acts or (_task_start(t) == start and _netns_of(t) == ino):
            return got
    return None


class ContainmentService:
    def __init__(
        self,
        source: EventSource,
        state_path: str,
        registry: ContainerRegistry,
        emit: Callable[[dict[str, Any]], None],
        host_name: str,
    ) -> None:
        resolver = registry.attributor.resolver

        def level_of(cgroup_id: int) -> int:
            """The cgroup's depth under the cgroup2 root (its level)."""
            path = resolver.path(cgroup_id)
            return len(path.strip("/").split("/")) if path and path != "/" else 0

        self.containment = Containment(source, state_path, level_of)
        self._not_running_since: dict[str, float] = {}
        self.state_path = state_path
        # a cgroup frozen by a sweep is named here until it is thawed (freeze.py)
        self._freeze_markers = f"{state_path}.frozen.d"
        self.registry = registry
        self.emit = emit
        self.host_name = host_name
        self.problem = ""  # why saved entries were not re-applied, for status
        # isolated containers' host-side veths whose ingress drops everything
        self.links = linkdrop.LinkDropper()
        self._cut: dict[str, list[tuple[str | None, str]]] = {}  # container id -> (netns, link) cut
        self._cut_failed: dict[str, float] = {}  # container id -> when cutting failed (monotonic)
        # at shutdown, the final window's removals are left for the next start
        self.final_window = False
        # the connect_unix and sendmsg_unix hooks' statuses
        # (sensor/kernel/unixconnect.py refuses an isolated container's unix
        # connects and addressed datagrams where they are attached)
        self.unix_hook = "not attached"
        # isolated containers whose unix connections are swept once more at
        # the next window: a connect(2) blocked on a full backlog when the
        # isolation started passed the hook before it and completes later
        self._unix_resweep: set[str] = set()
        self._unix_warned: dict[str, str] = {}  # container id -> its sweep's last failure, warned
        self.unix_sendmsg_hook = "not attached"
        # the unix_stream_connect LSM hook's (bpf/socket.bpf.c: connects INTO
        # an isolated container from outside it refused)
        self.unix_into_hook = "not attached"
        registry.subscribe(on_added=self._container_added, on_removed=self._containers_removed)

    def entries(self) -> list[dict[str, Any]]:
        return self.containment.snapshot()

    def lingering(self) -> list[dict[str, Any]]:
        """Entries of containers that are gone, still applied in the kernel."""
        return self.containment.snapshot(lingering=True)

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        """Both, from one read of the kernel's counters (status, `sluice containment`)."""
        return self.containment.listing()

    def _release_target(self, ref: str) -> str:
        """The container a release means: by id, id prefix or name, among
        the running containers and those the entries name (a stopped
        container's, a gone container's lingering ones). A full id is
        exact; a prefix or name that fits two containers is refused (a
        re-created "web" beside the gone one)."""
        ref = _container_ref(ref)
        found: dict[str, str] = {}  # container id -> how it is known
        for cid, life in self.registry.running.items():
            if _fits(ref, cid, life.info.name):
                found[cid] = f"running as {life.info.name}" if life.info.name else "running"
        c = self.containment
        for table, how in ((c.entries, "contained"), (c.lingering, "gone, still contained")):
            for e in table:
                if e.container_id is not None and _fits(ref, e.container_id, e.container_name):
                    found.setdefault(e.container_id, f"{how} ({e.who()})")
        if ref in found:
            return ref
        if not found:
            raise ContainmentError(
                f"no running or contained container matches {ref!r} (`sluice containment` lists them)"
            )
        if len(found) > 1:
            raise _ambiguous(ref, [f"{cid[:12]} ({how})" for cid, how in sorted(found.items())])
        return next(iter(found))

    def _container(self, ref: str) -> ContainerLife:
        """A running container by id, id prefix or name."""
        ref = _container_ref(ref)
        hits = [c for cid, c in self.registry.running.items() if _fits(ref, cid, c.info.name)]
        if not hits:
            raise ContainmentError(f"no running container matches {ref!r} (`sluice top` lists them)")
        if len(hits) > 1:
            raise _ambiguous(ref, [c.info.id[:12] for c in hits])
        return hits[0]

    def _dropped_by_entry(self) -> dict[int, int]:
        """Packets dropped so far, by id() of the entry: read before a
        release removes the kernel's counters."""
        c = self.containment
        entries = c.entries + c.lingering
        return {id(e): n for e, n in zip(entries, c.dropped(entries), strict=False)}

    def _doc(self, e: Entry, action: str, message: str, life: ContainerLife | None = None, dropped: int = 0) -> None:
        if life is None and e.container_id is not None:
            life = self.registry.get(e.container_id)
        attr = life.attribution() if life is not None else None  # None: the container is gone
        self.emit(documents.containment(self.host_name, time.time(), e, action, message, attr, dropped))

    # --- AF_PACKET sockets (sensor/response/packetsockets.py) ----------------

    def _cgroup_dirs(self, cgroup_ids: list[int]) -> list[str]:
        resolver = self.registry.attributor.resolver
        paths = [resolver.path(cg) for cg in cgroup_ids]
        return [resolver.mount.rstrip("/") + p for p in paths if p and p != "/"]

    def sweep_packet_sockets(self, life: ContainerLife, cgroup_ids: list[int]) -> int:
        """Kill the container's processes that hold a packet socket when
        containment starts: the kernel would stop them only after their
        next frame left. Returns how many were killed."""
        killed = packetsockets.sweep(self._cgroup_dirs(cgroup_ids))
        who = life.info.name or life.info.id[:12]
        for h in killed:
            msg = f"process killed at containment: {h.comm or h.pid} held a packet socket (AF_PACKET) in {who}"
            proc = {"pid": h.pid, "name": h.comm}
            self.emit(
                documents.raw_socket(
                    self.host_name,
                    time.time(),
                    life.attribution(),
                    proc,
                    "AF_PACKET",
                    "unknown",
                    0,
                    True,
                    "containment_sweep",
                    msg,
                )
            )
        return len(killed)

    def cut_unix(self, life: ContainerLife, shared: bool, per_window: bool = False) -> str:
        """End the isolated container's unix connections to peers outside it
        (unixpeers: a docker.sock connection opened before the isolation),
        in each network namespace its processes are in. Returns what was
        done, for the entry's document. per_window: the sweep of every
        window (recheck), which reads first, unfrozen, and freezes and cuts
        only when there is a connection to cut through the container's own
        end; it leaves out runc's own start and exec processes (their
        socketpair to runc outside is how `docker exec` works) and the walk
        of the node's descriptors for parked sockets (the isolation's sweep
        does that); and it warns only when what failed changed."""
        if self.unix_hook != "attached":
            return ""  # (its new connects are not refused either: _unix_refusal says so)
        dirs = self._cgroup_dirs([life.cgroup_id])
        if per_window:
            tasks = [t for t in (cgroup_tasks(dirs[0]) if dirs else None) or [] if not _runc_task(t)]
            try:
                if not any(
                    _in_netns(ino, in_ns, lambda t: unixpeers.pending(tasks, f"/proc/{t}/ns/net", shared))
                    for ino, in_ns in _tasks_per_netns(tasks).items()
                ):
                    return ""
            except OSError:
                pass  # (read again, frozen, below: its failure is said there)
        cut: list[unixpeers.Cut] = []
        failed: list[str] = []
        budget = 0.0 if per_window else unixpeers.NODE_WALK_BUDGET_S
        # held still: a holder that moves its descriptor between the read
        # and the cut (or forks, or passes it on) cannot while frozen
        with frozen(dirs[0] if dirs else None, marker_dir=self._freeze_markers) as not_frozen:
            tasks = (cgroup_tasks(dirs[0]) if dirs else None) or []
            if per_window:
                tasks = [t for t in tasks if not _runc_task(t)]
            for ino, in_ns in _tasks_per_netns(tasks).items():
                try:
                    # (frozen: its tasks stay, their pids too)
                    got = _in_netns(
                        ino,
                        in_ns,
                        lambda t: unixpeers.cut(tasks, f"/proc/{t}/ns/net", shared, budget_s=budget),
                        acts=True,
                    )
                except OSError as err:
                    got = [], [f"the unix sockets of its namespace could not be read: {err.strerror or err}"]
                c, f = got or ([], [])  # (None: the namespace went with its tasks)
                cut += c
                failed += f
        if failed:
            problem = f"unix connections of {life.info.name or life.info.id[:12]} not cut: " + "; ".join(failed[:3])
            # (the per-window pass: once per container and change of what failed)
            if not per_window or problem != self._unix_warned.get(life.info.id):
                print(f"sluice: warning: {problem}", file=sys.stderr)
            self._unix_warned[life.info.id] = problem
            self.problem = problem
        else:
            self._unix_warned.pop(life.info.id, None)
        if not cut and (not failed or per_window):
            return ""
        peers = sorted({c.peer_name or f"socket {c.peer}" for c in cut})
        text = f"{len(cut)} unix connection{'s' if len(cut) != 1 else ''} it had to peers outside it cut"
        text += f" ({', '.join(peers[:5])}{', ...' if len(peers) > 5 else ''})" if cut else ""
        text += ", the container held frozen meanwhile" if not not_frozen else f" ({not_frozen})"
        if failed:
            text += f"; {len(failed)} NOT cut ({failed[0]})"
        return text

    def cut_links(self, life: ContainerLife) -> str:
        """Drop every frame at the host side of an isolated container's
        veths (linkdrop: what leaves below its sockets, a packet socket's
        ring of frames, the kernel's own replies). For a container whose
        network namespace is its own: a shared one's link is its
        neighbours' too. Returns what was done, for the entry's document."""
        dirs = self._cgroup_dirs([life.cgroup_id])
        tasks = cgroup_tasks(dirs[0]) if dirs else None
        if not tasks:
            # (a new run's cgroup before its first process: recheck tries again)
            return "its host-side link was not cut yet: none of its processes could be read"
        per_ns = _tasks_per_netns(tasks, but_not_ours=True)
        try:
            links = sorted(
                {x for ino, in_ns in per_ns.items() for x in _in_netns(ino, in_ns, linkdrop.host_links) or []}, key=str
            )
            for where, link in links:
                self.links.drop(where, link)
        except Exception as err:  # tc, nsenter, or the program's compile (bcc raises Exception)
            self.problem = f"the link of {life.info.name or life.info.id[:12]} was not cut: {err}"
            print(f"sluice: warning: {self.problem}", file=sys.stderr)
            # tried again after LINK_RETRY_S (recheck), not every window
            self._cut_failed[life.info.id] = time.monotonic()
            return f"its host-side link was not cut ({err}): frames of packet sockets can leave"
        self._cut_failed.pop(life.info.id, None)
        if not links:
            # (--network none, or a new run's veth not there yet: recheck
            # tries again each window)
            return "it has no host-side veth to cut (yet)"
        self._cut[life.info.id] = links
        return (
            "frames below its sockets (packet sockets, the kernel's own replies) are dropped at its host-side "
            + ("links " if len(links) > 1 else "link ")
            + ", ".join(link + (f" (in {where})" if where else "") for where, link in links)
        )

    def _unix_refusal(self, shared: bool) -> str:
        """What isolation does to its unix connects (the kernel's part is
        sensor/kernel/unixconnect.py)."""
        if self.unix_into_hook == "attached":
            into = (
                "connects and datagrams into its unix sockets from outside it, and its datagrams out over sockets "
                "connected before, are refused"
            )
        elif self.unix_hook == "attached":
            into = (
                "connects into its unix listeners from outside it are not refused but cut at each window, datagrams "
                f"into its unix sockets are NOT refused ({self.unix_into_hook})"
            )
        else:
            into = (
                f"connects and datagrams into its unix sockets from outside it are NOT refused ({self.unix_into_hook})"
            )
        if self.unix_hook != "attached":
            return f"its connects to unix sockets are NOT refused (the connect_unix hook is {self.unix_hook}); {into}"
        what = "by path and to abstract names" if shared else "by path (abstract names stay: its namespace's own)"
        sends = (
            "and datagrams sent to an address"
            if self.unix_sendmsg_hook == "attached"
            else f"(datagrams sent to an address are NOT: the sendmsg_unix hook is {self.unix_sendmsg_hook})"
        )
        return (
            f"its connects to unix sockets {what} {sends} are refused, its own sockets' too (a path cannot tell "
            f"them from a daemon's mounted into it, such as docker.sock); {into}"
        )

    @staticmethod
    def _link_cut(e: Entry) -> bool:
        """Does the entry cut its container's link (linkdrop)? An isolation
        of a container whose network namespace is its own."""
        return e.kind == "isolate" and not e.loopback_dropped

    def close(self) -> None:
        """At shutdown: while the sensor is stopped nothing is contained,
        the link cuts included (the next start cuts them again)."""
        for cid in list(self._cut):
            self._uncut(cid)
        try:
            self.links.close()
        except Exception as err:  # bcc's cleanup: nothing may stop the shutdown here
            print(f"sluice: warning: closing the link drop program: {err}", file=sys.stderr)

    def _uncut(self, container_id: str | None) -> None:
        for where, link in self._cut.pop(container_id or "", []):
            self.links.undrop(where, link)

    def isolate(self, ref: str, reason: str) -> dict[str, Any]:
        life = self._container(ref)
        shared = self._shared(life)
        e = self.containment.isolate(life.info.id, life.info.name, [life.cgroup_id], reason, shared is not None)
        self._pod_identity(e, life)
        # the sweep first: the link cut compiles its program at its first
        # use (~1 s), in which a held packet socket could send again (the
        # kernel then kills its holder after that frame, not before)
        self.sweep_packet_sockets(life, [life.cgroup_id])
        msg = f"isolated container {e.who()}: " + (
            f"all its egress is dropped, loopback too ({shared}: a process there could relay for it)"
            if shared
            else "all its egress but its own loopback (127.0.0.1, ::1) is dropped; " + self.cut_links(life)
        )
        msg += "; " + self._unix_refusal(bool(shared))
        unix_cut = self.cut_unix(life, bool(shared))
        msg += f"; {unix_cut}" if unix_cut else ""
        self._unix_resweep.add(life.info.id)
        self._doc(e, "container_isolated", msg, life)
        return {"ok": True, "message": msg}

    def block(self, destination: str, ref: Any, reason: str) -> dict[str, Any]:
        if ref:
            life = self._container(str(ref))
            e = self.containment.block(destination, life.info.id, life.info.name, [life.cgroup_id], reason)
            self._pod_identity(e, life)
            self.sweep_packet_sockets(life, [life.cgroup_id])
        else:
            life = None
            e = self.containment.block(destination, reason=reason)
        msg = f"blocked egress to {e.destination} for {e.who()}"
        self._doc(e, "destination_blocked", msg, life)
        return {"ok": True, "message": msg}

    def release(self, ref: Any, destination: Any) -> dict[str, Any]:
        cid = self._release_target(str(ref)) if ref else None
        dropped = self._dropped_by_entry()
        gone = self.containment.release(
            cid, str(destination) if destination else None, everything_for_container=not destination
        )
        for e in gone:
            if e.kind == "isolate":
                self._uncut(e.container_id)
            self._doc(e, "containment_released", f"released: {e.label()}", dropped=dropped.get(id(e), 0))
        return {"ok": True, "message": "; ".join(f"released: {e.label()}" for e in gone)}

    def restore(self) -> None:
        """Re-apply the saved entries of containers still running. A state
        file that cannot be read is kept aside (renamed), reported, and
        containment starts empty: the sensor runs either way."""
        thawed = thaw_leftovers(self._freeze_markers)
        if thawed:
            # a sensor killed mid-sweep left them frozen
            print(
                f"sluice: thawed {len(thawed)} cgroup(s) a sweep had frozen: {', '.join(thawed[:3])}", file=sys.stderr
            )
        try:
            saved = self.containment.load()
        except ContainmentError as err:
            aside = f"{self.state_path}.unreadable-{int(time.time())}"
            try:
                os.replace(self.state_path, aside)
                note = f"; moved aside to {aside}"
            except OSError:
                note = ""
            self.problem = f"{err}{note}; nothing was re-applied"
            print(f"sluice: warning: {self.problem}", file=sys.stderr)
            return
        live = {cid: [c.cgroup_id] for cid, c in self.registry.running.items()}
        applied, dropped = self.containment.restore(saved, live, lambda cid: not self._gone(cid))
        # packet sockets opened while the sensor was not running: swept
        # before the links are cut (see isolate)
        for cid in sorted({e.container_id for e in applied if e.container_id in self.registry.running}):
            running = self.registry.running[cid]
            self.sweep_packet_sockets(running, [running.cgroup_id])
        for e in applied:
            cut = ""
            life = self.registry.running.get(e.container_id or "")
            if self._link_cut(e) and life is not None:
                cut = "; " + self.cut_links(life)
            if e.kind == "isolate" and life is not None:
                # unix connections made while the sensor was not running
                unix_cut = self.cut_unix(life, e.loopback_dropped)
                cut += f"; {unix_cut}" if unix_cut else ""
            self._doc(
                e,
                "container_isolated" if e.kind == "isolate" else "destination_blocked",
                f"re-applied at start: {e.label()}{cut}",
            )
        for e in dropped:
            self._doc(
                e,
                "containment_released",
                f"released at start, the container is gone: {e.label()} (its cgroups stay contained in the kernel: its sockets can outlive it)",
            )
        # a namespace shared since, or a state file from before the flag
        self.refresh_loopback()

    def _gone(self, container_id: str) -> bool:
        """Does the runtime say this container no longer exists? Docker is
        asked (a stopped or restarting container still exists); with no
        answer, a container is gone once it has not run for GRACE_S."""
        docker = self.registry.attributor.docker
        if docker is not None:
            try:
                docker.container_summary(container_id)
                return False
            except NotFound:
                return True
            except DockerError:
                pass
        since = self._not_running_since.setdefault(container_id, time.monotonic())
        return time.monotonic() - since > GRACE_S

    def _shared(self, life: ContainerLife, index: NetnsIndex | None = None) -> str | None:
        """Why the container's network namespace is not its own (its
        loopback could reach a relay), or None (netmap.netns_shared)."""
        dirs = self._cgroup_dirs([life.cgroup_id])
        tasks = cgroup_tasks(dirs[0]) if dirs else None
        return netns_shared(tasks, index=index) if tasks is not None else "its processes cannot be listed"

    def refresh_loopback(self) -> None:
        """Isolated containers whose network namespace became shared since
        (a container started with --network container:, a pod's sidecar
        that was restarting, a state file from before the flag): their
        loopback is dropped from now on. A namespace is not found private
        again while the entry lasts."""
        changed = False
        index: NetnsIndex | None = None  # one /proc pass for all entries, read when one needs it
        for e in self.containment.entries:
            if e.kind != "isolate" or e.loopback_dropped or e.container_id not in self.registry.running:
                continue
            life = self.registry.running[e.container_id]
            index = index if index is not None else NetnsIndex()
            why = self._shared(life, index)
            if why is None:
                continue
            e.loopback_dropped = True
            self.containment.source.set_isolated(e.handle, True, True)
            changed = True
            msg = f"isolated container {e.who()}: its loopback is dropped too from now on ({why})"
            self._doc(e, "container_isolated", msg, life)
        if changed:
            self.containment.save()

    def _pod_identity(self, e: Entry, life: ContainerLife) -> None:
        """A Kubernetes container's pod uid and name in the pod, on its
        entry: the kubelet re-creates it under a new id (recreated)."""
        uid, name = life.info.pod_uid, life.info.identity_label("io.kubernetes.container.name")
        if uid and name and (e.pod_uid, e.pod_container) != (uid, name):
            e.pod_uid, e.pod_container = uid, name
            self.containment.save()

    def _follow_recreated(self, life: ContainerLife) -> None:
        """The kubelet's new container for an isolated (or blocked) pod
        container: the entries move to it (Containment.recreated); follow
        then contains its cgroup."""
        name = life.info.identity_label("io.kubernetes.container.name")
        for e in self.containment.recreated(life.info.id, life.info.pod_uid, name):
            e.container_name = life.info.name or e.container_name
            self._doc(
                e,
                "containment_followed",
                f"{e.label()}: the pod's container {name} was re-created as {life.info.id[:12]} "
                f"(pod {life.info.pod_uid}); the entry follows it (the old one's cgroups stay contained)",
                life,
            )

    def _container_added(self, life: ContainerLife) -> None:
        """ContainerRegistry subscription: a contained container runs again
        in a new cgroup (restart, re-creation). The kernel put the cgroup
        under containment when it was created (cgroup_mkdir); this confirms
        it, or does it where that hook is missing, and records the cgroup."""
        self._not_running_since.pop(life.info.id, None)
        self._follow_recreated(life)
        for e in self.containment.returned(life.info.id):
            self._doc(
                e,
                "container_isolated" if e.kind == "isolate" else "destination_blocked",
                f"the container runs again: {e.label()} is an entry again (the kernel kept applying it)",
                life,
            )
        if not self.containment.entries:
            return
        try:
            followed = self.containment.follow({life.info.id: life.cgroup_id})
        except Exception as err:  # the kernel's map refused (bcc raises Exception)
            # Full (its SL_CONTAIN_ENTRIES taken: a contained container that
            # can write cgroupfs makes sub-cgroups named like containers) or
            # refused: said, and the sensor goes on; the review's map fill
            # crashed the sensor here (registry callback), which left every
            # container uncontained until a restart.
            self.problem = f"containment could not follow {life.info.name or life.info.id[:12]}: {err}"
            print(f"sluice: warning: {self.problem}", file=sys.stderr)
            for e in self.containment.entries:
                if e.container_id == life.info.id:
                    self._doc(
                        e,
                        "containment_follow_failed",
                        f"{e.label()} could not follow the container to cgroup {life.cgroup_id}: {err}"
                        " (the kernel's containment map refused it; `sluice containment` lists what applies)",
                        life,
                    )
            return
        for e, cg, in_kernel in followed:
            how = (
                "in the kernel when the cgroup was created, before any process ran in it"
                if in_kernel
                else "by user space when the sensor saw the cgroup (the cgroup_mkdir hook did not)"
            )
            cut = ""
            if self._link_cut(e):
                # a new run, a new network namespace and veth
                cut = "; " + self.cut_links(life)
            self._doc(e, "containment_followed", f"{e.label()} follows the container to cgroup {cg}, {how}{cut}", life)

    def recheck(self) -> None:
        """Once a window: entries of containers not running are released
        when the runtime no longer has them (a stopped container can be
        removed later, without any cgroup event)."""
        # every window, every isolated container: a connect INTO it (a host
        # process, another container, at its listener on a shared volume) is
        # cut at the next window where the unix LSM programs do not load;
        # where they do, they judge a socket by its creator, not its holder
        # (a listener the container made and handed out: review). Read
        # unfrozen first (0.5-3.4 ms for 1-64 processes, bench/RESULTS.md)
        self._unix_resweep.update(
            e.container_id for e in self.containment.entries if e.kind == "isolate" and e.container_id
        )
        for cid in sorted(self._unix_resweep):
            self._unix_resweep.discard(cid)
            life = self.registry.running.get(cid)
            e = next((x for x in self.containment.entries if x.container_id == cid and x.kind == "isolate"), None)
            if life is not None and e is not None:
                again = self.cut_unix(life, e.loopback_dropped, per_window=True)
                if again:
                    self._doc(e, "containment_followed", f"{e.label()}: swept again: {again}", life)
        # a pod's container re-created while its name was not known yet (the
        # runtime's metadata comes after the cgroup)
        pods = {(e.pod_uid, e.pod_container) for e in self.containment.entries + self.containment.lingering}
        pods.discard((None, None))
        if pods:
            for running in list(self.registry.running.values()):
                key = (running.info.pod_uid, running.info.identity_label("io.kubernetes.container.name"))
                if key in pods and not any(e.container_id == running.info.id for e in self.containment.entries):
                    self._container_added(running)  # (follows it, as at its start)
        if self.containment.entries and self.containment.gone(set(self.registry.running)):
            self._containers_removed([])
        # isolated containers whose link is not cut (yet: a restart's cgroup
        # comes before its veth; or no more: a link moved to another
        # namespace loses its filters)
        for e in self.containment.entries:
            life = self.registry.running.get(e.container_id or "")
            if not self._link_cut(e) or life is None:
                continue
            failed = self._cut_failed.get(life.info.id)
            if failed is not None and time.monotonic() - failed < LINK_RETRY_S:
                continue
            cut = self._cut.get(life.info.id)  # never empty: only links cut are recorded
            if cut is None or not all(linkdrop.is_cut(where, link) for where, link in cut):
                self._cut.pop(life.info.id, None)
                msg = self.cut_links(life)
                if self._cut.get(life.info.id):
                    self._doc(e, "containment_followed", f"{e.label()}: {msg}", life)
        # a process that joined an isolated container's network namespace
        # after the isolation (a new container's processes join it only
        # after its cgroup, which is when _container_added runs)
        self.refresh_loopback()

    def _containers_removed(self, _lives: list[ContainerLife]) -> None:
        """ContainerRegistry subscription: release the entries of containers
        that are gone (not running, and the runtime no longer has them). Not
        in the final window at shutdown: those entries stay saved and the
        next start releases them (and says so)."""
        if not self.containment.entries or self.final_window:
            return
        live = set(self.registry.running)
        candidates = {e.container_id for e in self.containment.gone(live) if e.container_id is not None}
        if not candidates:
            return
        gone = {cid for cid in candidates if self._gone(cid)}
        if not gone:
            return
        dropped = self._dropped_by_entry()
        for e in self.containment.containers_gone(live | (candidates - gone)):
            self._cut.pop(e.container_id or "", None)  # its veth went with it
            self._doc(
                e,
                "containment_released",
                f"released, the container is gone: {e.label()} (its cgroups stay contained in the kernel:"
                " its sockets can outlive it)",
                dropped=dropped.get(id(e), 0),
            )
