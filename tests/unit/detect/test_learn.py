"""The learner folds windows into per-workload baselines."""

from __future__ import annotations

from sensor.detect.baseline import Baseline, LogHist, WorkloadBaseline
from sensor.detect.learn import Learner, local_hour
from sensor.detect.view import WindowView
from tests.support.views import KIB, T0, WINDOW, connect, container, exec_, flow, host, learn, life, utc, window

API = container("api-1", image="acme/api:1.0")
API2 = container("api-2", image="acme/api:1.1")
DB = container("db", image="acme/db:5")
JOB = container("job", image="acme/job:1")


def get_wb(b: Baseline, key: str) -> WorkloadBaseline:
    """b.get(key), asserting the workload is in the baseline."""
    wb = b.get(key)
    assert wb is not None, f"no baseline for {key!r}"
    return wb


def test_local_hour() -> None:
    assert local_hour(utc(2024, 1, 9, 23, 59, 59), "UTC") == 23
    assert local_hour(utc(2024, 1, 10, 0, 0), "UTC") == 0


def test_windows_counted_per_active_workload() -> None:
    b = Baseline()
    lr = Learner(b, "UTC")
    lr.on_window(window(T0, flows=[flow(API, "203.0.113.5", 443, KIB)]))
    lr.on_window(
        window(T0 + 10, flows=[flow(API2, "203.0.113.5", 443, KIB), flow(DB, "10.0.0.9", 53, 80, transport="udp")])
    )
    lr.on_window(window(T0 + 20))  # an idle window
    lr.on_window(window(T0 + 30, execs=[exec_(JOB, T0 + 25, "/usr/bin/job")]))
    assert lr.windows == 4
    assert get_wb(b, "acme/api").windows == 2  # two containers, one workload
    assert get_wb(b, "acme/db").windows == 1
    assert get_wb(b, "acme/job").windows == 1
    assert set(b.workloads) == {"acme/api", "acme/db", "acme/job"}
    api = get_wb(b, "acme/api")
    assert api.first_seen == T0 and api.last_seen == T0 + 10
    # volume histograms get one value per active window, zeros included
    assert api.egress_bytes.n == 2 and get_wb(b, "acme/job").egress_bytes.n == 1
    assert get_wb(b, "acme/job").egress_bytes.quantile(1.0) == 0.0


def test_destinations_bytes_and_encryption() -> None:
    b = learn(
        [
            window(
                T0 + i * WINDOW,
                flows=[
                    flow(API, "203.0.113.5", 443, 100 * KIB, proto="tls", entropy=7.9),
                    flow(API, "198.51.100.9", 8080, 50 * KIB, entropy=5.0),
                    flow(API, "198.51.100.10", 9000, 70 * KIB, entropy=7.99, compression="gzip"),
                ],
            )
            for i in range(3)
        ]
    )
    api = get_wb(b, "acme/api")
    assert set(api.destinations) == {"203.0.113.5|443|tcp", "198.51.100.9|8080|tcp", "198.51.100.10|9000|tcp"}
    tls = api.destinations["203.0.113.5|443|tcp"]
    assert (tls.windows, tls.bytes, tls.encrypted_bytes, tls.max_entropy, tls.protocols) == (
        3,
        300 * KIB,
        300 * KIB,
        7.9,
        {"tls"},
    )
    assert api.destinations["198.51.100.9|8080|tcp"].encrypted_bytes == 0
    assert api.destinations["198.51.100.10|9000|tcp"].encrypted_bytes == 0  # compressed
    # per-window encrypted volume: only the TLS flow counts
    assert api.encrypted_bytes.n == 3
    assert api.encrypted_bytes.quantile(0.5) == LogHist.upper(LogHist.bin_of(100 * KIB))
    assert api.egress_bytes.quantile(0.5) >= 220 * KIB


def test_executables_peers_lifetimes_hours() -> None:
    b = learn(
        [
            window(
                utc(2024, 1, 9, 9, 0, 10),
                execs=[exec_(API, 1, "/usr/bin/curl"), exec_(API, 2, "/usr/bin/curl"), exec_(API, 3, None)],
                flows=[flow(API, "172.17.0.3", 5432, 500, peer=DB)],
                lifecycle=[life(JOB, 4, "start"), life(JOB, 9, "stop", 5.0), life(JOB, 9.5, "stop", None)],
            ),
            window(utc(2024, 1, 9, 17, 30), connects=[connect(API, 5, "203.0.113.1", 443)]),
        ]
    )
    api = get_wb(b, "acme/api")
    assert api.executables == {"/usr/bin/curl": 2}
    assert api.peers == {"acme/db": 1}
    assert api.hours[9] == 1 and api.hours[17] == 1 and sum(api.hours) == 2
    job = get_wb(b, "acme/job")
    assert job.lifetimes.n == 1 and job.lifetimes.quantile(0.5) == LogHist.upper(LogHist.bin_of(5.0))
    assert job.starts_per_window.n == 1 and job.starts_per_window.quantile(1.0) == LogHist.upper(LogHist.bin_of(1))
    # connect events alone make a workload active, but teach no destination
    assert api.windows == 2 and "203.0.113.1|443|tcp" not in api.destinations


def test_host_is_a_workload() -> None:
    b = learn([window(T0, flows=[flow(host(), "203.0.113.5", 443, 10)])])
    assert get_wb(b, "host").windows == 1


def test_skip_excludes_workloads() -> None:
    b = Baseline()
    lr = Learner(b, "UTC", skip=lambda w: w == "acme/db")
    lr.on_window(
        window(
            T0,
            flows=[flow(API, "172.17.0.3", 5432, 500, peer=DB), flow(DB, "203.0.113.5", 443, 10)],
            execs=[exec_(DB, T0 - 1, "/usr/bin/psql")],
            lifecycle=[life(DB, T0 - 2, "stop", 3.0)],
        )
    )
    assert b.get("acme/db") is None
    # the peer relation of a learned workload is still learned
    assert get_wb(b, "acme/api").peers == {"acme/db": 1}
    lr.skip = lambda w: False
    lr.on_window(window(T0 + 10, flows=[flow(DB, "203.0.113.5", 443, 10)]))
    assert get_wb(b, "acme/db").windows == 1


# --- learning while detecting: quarantine around findings ------------------------------


def _qwin(i: int, ip: str) -> WindowView:
    return window(T0 + i * WINDOW, flows=[flow(container("api-1", image="acme/api:1"), ip, 443, 1000, proto="tls")])


def test_quarantine_excludes_windows_before_and_after_a_finding() -> None:
    """An attacker's quiet window right before the alert (connect, small
    probe) and right after it must not make the destination known."""
    hot = {5}
    i_now = [0]
    lr = Learner(Baseline(), "UTC", skip=lambda _w: i_now[0] in hot, quarantine_windows=2)
    for i in range(12):
        i_now[0] = i
        lr.on_window(_qwin(i, f"198.18.0.{i + 1}"))
    wb = lr.baseline.get("acme/api")
    assert wb is not None
    known = sorted(int(k.split("|")[0].rsplit(".", 1)[1]) - 1 for k in wb.destinations)
    # windows 3..7 are within 2 of the finding at 5; 10 and 11 still wait
    assert known == [0, 1, 2, 8, 9]
    assert lr.quarantined == 4  # 3, 4, 6, 7 quarantined; 5 itself raised


def test_no_quarantine_learns_at_once() -> None:
    lr = Learner(Baseline(), "UTC")
    lr.on_window(_qwin(0, "198.18.0.1"))
    assert lr.baseline.get("acme/api") is not None and lr.windows == 1


def test_while_detecting_a_resolver_no_workload_knows_is_not_learned() -> None:
    """A resolver vouches for names: learning while detecting, a workload
    learns one only when another workload already knows it (the cluster's
    resolver, for a new workload); a few queries to an attacker's resolver
    are not learned into trust. Learning proper learns every resolver."""
    b = Baseline()
    Learner(b, "UTC").on_window(window(T0, flows=[flow(DB, "10.96.0.10", 53, 80, transport="udp")]))
    lr = Learner(b, "UTC", new_resolvers=False)
    lr.on_window(
        window(
            T0 + WINDOW,
            flows=[
                flow(API, "10.96.0.10", 53, 80, transport="udp"),  # the cluster's: DB knows it
                flow(API, "203.0.113.53", 53, 80, transport="udp"),  # nobody's
                flow(DB, "203.0.113.53", 53, 90, transport="tcp"),
                flow(API, "203.0.113.5", 443, KIB),  # not a resolver: learned as always
            ],
        )
    )
    api, db = get_wb(b, "acme/api"), get_wb(b, "acme/db")
    assert api.knows_resolver("10.96.0.10") and not api.knows_resolver("203.0.113.53")
    assert not db.knows_resolver("203.0.113.53") and db.knows_resolver("10.96.0.10")
    assert "203.0.113.5|443|tcp" in api.destinations
    assert lr.resolvers_withheld == 2
    Learner(b, "UTC").on_window(window(T0 + 2 * WINDOW, flows=[flow(API, "203.0.113.53", 53, 80, transport="udp")]))
    assert get_wb(b, "acme/api").knows_resolver("203.0.113.53")  # `sluice baseline learn` learns it
    # a resolver is learned by its address, even when the flow carried a name
    named = flow(JOB, "10.96.0.53", 53, 80, transport="tcp")
    named.summary.domain = "dns.example.net"
    Learner(b, "UTC").on_window(window(T0 + 3 * WINDOW, flows=[named]))
    assert get_wb(b, "acme/job").knows_resolver("10.96.0.53")
    assert "10.96.0.53" in b.resolvers()
