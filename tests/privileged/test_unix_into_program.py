"""The unix LSM programs (bpf/socket.bpf.c: connects and datagrams into an
isolated container, datagrams out of one, refused), as far as this
machine's kernel lets them be checked. It refuses every program that needs
a BPF trampoline, BPF LSM ones included (bench/RESULTS.md, "AF_PACKET
without BPF LSM"), so here the status must say so, the sensor must run on,
and the compiled code is put through the kernel's verifier as the nearest
program type that loads here: a tp_btf program (BPF_PROG_TYPE_TRACING,
the same helpers and BTF-typed context as LSM). That proxy does not
exercise what the verifier checks for LSM programs only (the return range
of the hook, its arguments' BTF types): those are checked where the
programs load. It caught one real fault: the verifier's log of the 64-step
walk outgrew the loader's log buffer, and the load failed with ENOSPC
(bpfsys.prog_load now asks for the log only after a failure). On a kernel that loads
BPF LSM programs the status must be "attached", and
tests/adversarial/test_containment_unix.py checks the refusals end to end.
The real loader in this process, the real kernel."""

from __future__ import annotations

import os

from sensor.config import default_config
from sensor.kernel import bpfsys, btf
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource, lsm_problem
from sensor.kernel.probe import probe


def test_the_unix_lsm_programs_pass_the_verifier_and_say_whether_they_are_attached() -> None:
    lsm = lsm_problem()
    src = BccSource(default_config().kernel, probe(True, H.UNITS))
    src.start(lambda _r: None)
    try:
        status = src.status[H.UNIX_INTO_HOOK]
        if lsm:
            assert status == f"unavailable: {lsm}; {H.UNIX_INTO_MISSING}", status
        else:
            assert status == "attached", status
        # the same code the loader loads (maps already this process's fds),
        # verified as a tp_btf program: ctx[1] is an argument there too
        tp = (btf.KIND_TYPEDEF, "btf_trace_sock_send_length")
        found = btf.find({tp})
        assert src.b is not None
        for _hook, fn in H.UNIX_INTO_PROGRAMS:
            code = src.b.dump_func(fn.encode())
            assert len(code) > 200, (fn, len(code))  # the whole judgment, not a stub
            fd = bpfsys.prog_load(bpfsys.BPF_PROG_TYPE_TRACING, code, fn, bpfsys.TRACE_RAW_TP, found[tp].type_id)
            os.close(fd)
    finally:
        src.close()
