"""Pure, table-tested: Hubble's filter flags over a recorded set of flows, and bad input."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from labelwall.cli import observe as cli
from labelwall.cluster import Direction, Protocol
from labelwall.errors import InvalidInputError
from labelwall.policy import flowfilter
from labelwall.policy.compile import Compiled
from labelwall.policy.flows import Flow, FlowView, VerdictEvent, to_flow
from labelwall.policy.lookup import Reason

from .scenario import ADDRESS
from .test_flows import CASES, T0, compiled, ip, kernel_event  # noqa: F401 - the fixture

SEC = 1_000_000_000


@pytest.fixture(scope="module")
def recorded(compiled: Compiled) -> list[Flow]:  # noqa: F811
    """Both ends of every case in both families (one second apart), plus one TCP reply."""
    view = FlowView.of(compiled, "node-a")
    out = []
    t = T0
    for family in (0, 1):
        for src, dst, proto, port in CASES:
            for d in (Direction.EGRESS, Direction.INGRESS):
                ev = kernel_event(compiled, d, src, dst, proto, port, family)
                out.append(to_flow(dataclasses.replace(ev, time_ns=t), view))
                t += SEC
    web, client = ip(ADDRESS["shop/web"][0]), ip(ADDRESS["shop/client"][0])
    reply = VerdictEvent(t, Direction.EGRESS, True, Reason.CT_REPLY, 0, 0, 0, 0, 6, 80, 40000,
                         web, client, 0x12)  # fmt: skip
    out.append(to_flow(reply, view))
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(exit_on_error=False)
    cli.add_arguments(p)
    return p.parse_args(argv)


def run(flows: list[Flow], argv: list[str], now: int | None = None) -> list[Flow]:
    q = cli.query_of(parse(argv), now)
    return flowfilter.select(flows, q.keep, q.since_ns, q.until_ns, q.last)


def ends(flows: list[Flow]) -> set[str]:
    return {f"{f.source.key}>{f.destination.key}" for f in flows}


N = len(CASES) * 4 + 1  # cases x 2 ends x 2 families + the reply
C, W, O = "shop/client", "shop/web", "tenant/other"  # noqa: E741

TABLE = [
    ([], N, None),
    (["-n", "tenant"], 12, {f"{C}>{O}", f"{O}>{W}"}),
    (["-n", "tenant", "-n", "shop"], N, None),  # OR within a flag
    (["-A"], N, None),
    (["--pod", "shop/cl"], 4 * 4 + 1, None),  # prefix, either end
    (["--pod", "other"], 12, None),  # a bare name: any namespace
    (["--from-pod", "tenant/other"], 8, {f"{O}>{W}"}),
    (["--to-pod", "shop/web"], 4 * 5, None),
    (["--from-namespace", "shop", "--to-namespace", "tenant"], 4, {f"{C}>{O}"}),  # AND
    (["-l", "app=other"], 12, None),
    (["--from-label", "app=client,!missing"], 4 * 4, None),
    (["--to-label", "app!=web"], 4 + 1, None),
    (["--from-ip", "10.244.30.3"], 4, {f"{O}>{W}"}),
    (["--to-ip", "fd00:10:244::30:0/112"], 12, None),
    (["--port", "53"], 8, None),
    (["--to-port", "8080"], 4, None),
    (["--from-port", "80"], 1, None),  # the reply
    (["--protocol", "udp"], 8, None),
    (["--protocol", "TCP", "--protocol", "udp"], N, None),
    (["--verdict", "DROPPED"], 6, None),  # cases 4, 5, 6 at the isolated end
    (["--verdict", "forwarded", "--traffic-direction", "ingress"], 2 * 4 + 1, None),
    (["--drop-reason-desc", "POLICY_DENIED"], 6, None),
    (["--traffic-direction", "egress"], 12, None),
    (["--node-name", "node-*"], N, None),
    (["--node-name", "other"], 0, None),
    (["--policy", "shop/default-deny"], 6, None),
    (["--policy", "shop/allow-web"], 2 * 5, None),  # 3 allowed + 2 denied
    (["--not", "--verdict", "DROPPED"], N - 6, None),
    (["--not", "--pod", "shop/client", "--verdict", "DROPPED"], 4, {f"{O}>{W}"}),
    (["--identity", "world"], 0, None),
    (["--last", "3"], 3, None),
]


IDS = [" ".join(a) or "(none)" for a, _, _ in TABLE]


@pytest.mark.parametrize(("argv", "count", "pairs"), TABLE, ids=IDS)
def test_filter_flags(recorded: list[Flow], argv: list[str], count: int,
                      pairs: set[str] | None) -> None:  # fmt: skip
    got = run(recorded, argv)
    assert len(got) == count, [cli.compact(f) for f in got]
    if pairs is not None:
        assert ends(got) == pairs


def test_identity_by_number_and_ip_either_end(recorded: list[Flow], compiled: Compiled) -> None:  # noqa: F811
    web = compiled.pod_identity["shop/web"]
    assert len(run(recorded, ["--to-identity", str(web)])) == 20
    assert len(run(recorded, ["--ip", "10.244.30.2", "--protocol", "udp"])) == 4


def test_since_until_and_last_select_by_time(recorded: list[Flow]) -> None:
    now = T0 + 100 * SEC
    assert len(run(recorded, ["--since", "2025-12-02T16:20:10Z"])) == N - 10
    assert len(run(recorded, ["--until", "2025-12-02T16:20:09+00:00"])) == 10
    assert len(run(recorded, ["--since", "95s"], now)) == N - 5
    got = run(recorded, ["--since", "1m40s", "--last", "2"], now)
    assert [f.time_ns for f in got] == [T0 + (N - 2) * SEC, T0 + (N - 1) * SEC]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--since", "yesterday"], "--since"),
        (["--until", "2025-12-02 16:20"], "--until"),
        (["--since", "5m", "--until", "10m"], "--until"),
        (["--last", "0"], "--last"),
        (["--verdict", "BLOCKED"], "--verdict"),
        (["--protocol", "gre"], "--protocol"),
        (["--from-ip", "10.0.0.300"], "--from-ip"),
        (["--port", "70000"], "--port"),
        (["--policy", "default-deny"], "--policy"),
        (["--identity", "nobody"], "--identity"),
        (["--traffic-direction", "sideways"], "--traffic-direction"),
        (["--drop-reason-desc", "NOPE"], "--drop-reason-desc"),
        (["-A", "-n", "shop"], "-A"),
        (["--verdict", "DROPPED", "--not"], "--not"),
        (["-l", "a=b,,c"], "--label"),
    ],
)
def test_bad_values_are_a_clear_error_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        cli.query_of(parse(argv), T0)
    assert err.value.errors[0].field == flag, str(err.value)


def test_an_unknown_flag_is_a_usage_error_exit_2() -> None:
    from labelwall.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["lab", "observe", "--frm-pod", "x"])
    assert exc.value.code == 2


def test_bad_time_exits_2_before_touching_the_lab(capsys: pytest.CaptureFixture[str]) -> None:
    from labelwall.cli.main import main

    assert main(["lab", "observe", "--since", "noon"]) == 2
    assert "--since" in capsys.readouterr().err


def test_compact_and_table_print_the_policy_names(recorded: list[Flow]) -> None:
    denied = run(recorded, ["--from-pod", "tenant/other", "--traffic-direction", "ingress",
                            "--protocol", "tcp", "--last", "1"])  # fmt: skip
    line = cli.compact(denied[0])
    assert "tenant/other:40000" in line
    assert "shop/web:80" in line
    assert "DROPPED (POLICY_DENIED)" in line
    assert line.endswith("denied by shop/allow-web, shop/default-deny")
    allowed = run(recorded, ["--to-port", "8080", "--traffic-direction", "ingress", "--last", "1"])
    assert cli.render(allowed, "table").splitlines()[1].endswith("allowed by shop/allow-web[1]")
    assert cli.compact(recorded[-1]).endswith("reply of a tracked connection")
    assert Protocol.TCP  # the scenario's protocols are the model's
