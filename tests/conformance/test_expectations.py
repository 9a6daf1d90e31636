"""The expectation evaluator behaves exactly like upstream reachability.go / truthtable.go."""

from __future__ import annotations

import pytest

from .expectations import Peer, compare, diff_report, evaluate, grid
from .model import pod_keys

PODS = pod_keys()


def _blocked(table: dict[tuple[str, str], bool]) -> set[tuple[str, str]]:
    return {cell for cell, allowed in table.items() if not allowed}


def test_default_alone_fills_all_81_cells() -> None:
    assert evaluate(PODS, {"default": True, "ops": []}) == {
        (s, d): True for s in PODS for d in PODS
    }
    assert len(evaluate(PODS, {"default": False})) == 81
    assert not any(evaluate(PODS, {"default": False}).values())


def test_peer_with_empty_fields_matches_every_pod_like_upstream_peer_matches() -> None:
    assert all(Peer().matches(p) for p in PODS)
    assert [p for p in PODS if Peer(namespace="y").matches(p)] == ["y/a", "y/b", "y/c"]
    assert [p for p in PODS if Peer(pod="b").matches(p)] == ["x/b", "y/b", "z/b"]
    assert [p for p in PODS if Peer("z", "c").matches(p)] == ["z/c"]


def test_expect_peer_from_anyone_to_a_namespace_blocks_that_namespaces_columns() -> None:
    table = evaluate(
        PODS,
        {
            "default": True,
            "ops": [{"expect_peer": {"from": {}, "to": {"namespace": "x"}, "allowed": False}}],
        },
    )
    assert _blocked(table) == {(s, d) for s in PODS for d in ("x/a", "x/b", "x/c")}


def test_expect_peer_with_namespace_and_pod_sets_exactly_the_matching_cells() -> None:
    op = {"from": {"namespace": "x"}, "to": {"namespace": "x", "pod": "a"}, "allowed": False}
    table = evaluate(PODS, {"default": True, "ops": [{"expect_peer": op}]})
    assert _blocked(table) == {("x/a", "x/a"), ("x/b", "x/a"), ("x/c", "x/a")}


def test_expect_all_ingress_sets_the_whole_column_including_loopback() -> None:
    table = evaluate(
        PODS, {"default": True, "ops": [{"expect_all_ingress": {"pod": "y/b", "allowed": False}}]}
    )
    assert _blocked(table) == {(s, "y/b") for s in PODS}


def test_expect_all_egress_sets_the_whole_row_including_loopback() -> None:
    table = evaluate(
        PODS, {"default": True, "ops": [{"expect_all_egress": {"pod": "z/c", "allowed": False}}]}
    )
    assert _blocked(table) == {("z/c", d) for d in PODS}


def test_expect_sets_one_cell_and_later_ops_override_earlier_ones() -> None:
    table = evaluate(
        PODS,
        {
            "default": True,
            "ops": [
                {"expect_all_ingress": {"pod": "x/a", "allowed": False}},
                {"expect": {"from": "x/b", "to": "x/a", "allowed": True}},
            ],
        },
    )
    assert _blocked(table) == {(s, "x/a") for s in PODS if s != "x/b"}


# Upstream's own "Expected results" grid, from the comment in the It "should support denying of
# egress traffic on the client side (even if the server explicitly allows this traffic)".
_UPSTREAM_CLIENT_SIDE_EGRESS_GRID = """
xa X X X . X X X X X
xb . . . X X . . . .
xc . . . X X . . . .
ya . . . X X . . . .
yb . . . X X . . . .
yc . . . X X . . . .
za . . . X X . . . .
zb . . . X X . . . .
zc . . . X X . . . .
"""


def test_ordered_expect_peer_ops_reproduce_upstreams_printed_client_side_egress_grid() -> None:
    ops = [
        {"expect_peer": {"from": {"namespace": "x", "pod": "a"}, "to": {}, "allowed": False}},
        {"expect_peer": {"from": {}, "to": {"namespace": "y", "pod": "a"}, "allowed": False}},
        {
            "expect_peer": {
                "from": {"namespace": "x", "pod": "a"},
                "to": {"namespace": "y", "pod": "a"},
                "allowed": True,
            }
        },
        {"expect_peer": {"from": {}, "to": {"namespace": "y", "pod": "b"}, "allowed": False}},
    ]
    table = evaluate(PODS, {"default": True, "ops": ops})
    want = {}
    for line in _UPSTREAM_CLIENT_SIDE_EGRESS_GRID.strip().splitlines():
        src, *marks = line.split()
        for dst, mark in zip(PODS, marks, strict=True):
            want[(f"{src[0]}/{src[1]}", dst)] = mark == "."
    assert table == want


@pytest.mark.parametrize(
    "ops",
    [
        [{"expect": {"from": "x/a", "to": "w/a", "allowed": True}}],
        [{"expect_all_ingress": {"pod": "x/d", "allowed": False}}],
        [{"expect_peer": {"from": {"ns": "x"}, "to": {}, "allowed": False}}],
        [{"expect_all_egress": {"pod": "x/a", "allowed": "no"}}],
        [{"expect_everything": {"allowed": False}}],
        [{"expect": {"from": "x/a", "to": "x/b", "allowed": True}, "expect_all_egress": {}}],
    ],
    ids=[
        "unknown-pod",
        "unknown-ingress-pod",
        "unknown-peer-field",
        "non-bool",
        "unknown-op",
        "two-ops-in-one",
    ],
)
def test_malformed_ops_are_rejected_instead_of_silently_ignored(ops: list[object]) -> None:
    with pytest.raises(ValueError, match="ops\\[0\\]"):
        evaluate(PODS, {"default": True, "ops": ops})


def test_compare_ignores_loopback_cells_like_upstream() -> None:
    expected = evaluate(PODS, {"default": True})
    observed = dict(expected)
    observed[("x/a", "x/a")] = False
    assert compare(PODS, expected, observed) == []
    observed[("x/a", "y/a")] = False
    del observed[("z/c", "y/a")]
    wrong = {(m.src, m.dst, m.expected, m.observed) for m in compare(PODS, expected, observed)}
    assert wrong == {("x/a", "y/a", True, False), ("z/c", "y/a", True, None)}


def test_grid_prints_dots_for_allowed_and_x_for_blocked_in_cyclonus_style() -> None:
    table = evaluate(
        PODS, {"default": True, "ops": [{"expect_all_ingress": {"pod": "x/a", "allowed": False}}]}
    )
    lines = grid("TCP/80", PODS, dict(table)).splitlines()
    assert lines[0] == "TCP/80"
    assert lines[1].split() == ["-", *PODS]
    assert lines[2].split() == ["x/a", "X"] + ["."] * 8
    assert all(line.split()[1] == "X" for line in lines[2:])


def test_diff_report_marks_the_differing_cell_and_names_it() -> None:
    expected = evaluate(PODS, {"default": True})
    observed = dict(expected)
    observed[("y/b", "z/a")] = False
    observed[("z/c", "z/c")] = False
    text = diff_report("case step 0 TCP/80", PODS, expected, observed)
    assert text.startswith("case step 0 TCP/80: 1 wrong cell(s)")
    assert "y/b -> z/a: expected allowed, got blocked" in text
    comparison = text.split("comparison:")[1].strip().splitlines()
    assert comparison[5].split()[7] == "X"  # row y/b, column z/a
    assert comparison[9].split()[9] == "~"  # loopback z/c: differs but ignored
