"""The offline CLI end to end: exit codes, output formats, and verdicts on the bundled example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from labelwall.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cells_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"from", "to", "port", "protocol", "allowed"}`` per shown cell (``-``: none)."""
    out: list[dict[str, Any]] = []
    columns: list[str] = doc["columns"]
    for g in doc["grids"]:
        for pp in g["ports"]:
            for row in g["rows"]:
                assert len(row["to"]) == len(columns)
                for dst, ch in zip(columns, row["to"], strict=True):
                    assert ch in ".X-", ch
                    if ch != "-":
                        out.append(
                            {
                                "from": row["from"],
                                "to": dst,
                                "port": pp["port"],
                                "protocol": pp["protocol"],
                                "allowed": ch == ".",
                            }
                        )
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_summarises_the_example_and_exits_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", "-f", str(EXAMPLES), "-o", "json")
    assert code == 0
    summary = json.loads(out)
    assert summary["policies"] == 5
    assert summary["pods"] == 5
    assert summary["entries"]["lw_policy_v1"] > 0
    assert summary["entries"]["lw_ipcache_v1"] == 5


def test_compile_strict_turns_a_warning_into_a_finding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: wide, namespace: shop}\n"
        "spec:\n  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 10.244.1.1/4}}]\n"
    )
    code, out, _ = run(capsys, "compile", "-f", str(tmp_path))
    assert code == 0
    assert "warning:" in out
    code, _, _ = run(capsys, "compile", "--strict", "-f", str(tmp_path))
    assert code == 1


def test_invalid_policy_exits_2_naming_file_object_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: typo, namespace: x}\nspec:\n  podSelectr: {}\n"
    )
    code, out, err = run(capsys, "compile", "-f", str(bad))
    assert code == 2
    assert out == ""
    assert str(bad) in err
    assert "x/typo" in err
    assert "podSelectr" in err


def test_matrix_json_cells_follow_the_published_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "matrix", "-f", str(EXAMPLES), "--port", "5432", "--protocol", "TCP", "-o", "json"
    )
    assert code == 0
    cells = cells_of(json.loads(out))
    assert len(cells) == 25
    assert set(cells[0]) == {"from", "to", "port", "protocol", "allowed"}
    allowed = {(c["from"], c["to"]) for c in cells if c["allowed"] and c["from"] != c["to"]}
    # Only api may reach db on 5432; tenant/client and monitoring are not isolated.
    assert ("shop/api", "shop/db") in allowed
    assert ("shop/web", "shop/db") not in allowed
    assert ("tenant/client", "shop/db") not in allowed
    assert ("tenant/client", "monitoring/prometheus") in allowed


def test_matrix_grid_marks_allowed_and_blocked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matrix", "-f", str(EXAMPLES), "--port", "http")
    assert code == 0
    assert "TCP/http" in out
    row = next(line for line in out.splitlines() if line.startswith("| shop/web "))
    # columns: monitoring/prometheus, shop/api, shop/db, shop/web, tenant/client
    marks = [c.strip() for c in row.split("|")[2:-1]]
    assert marks[1] == "."  # web -> api on api's named port http (9000)
    assert marks[2] == "X"  # web -> db


def test_explain_names_the_policy_rule_that_allowed_the_flow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        str(EXAMPLES),
        "--from",
        "shop/web",
        "--to",
        "shop/api",
        "--port",
        "http",
        "-o",
        "json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["allowed"] is True
    text = json.dumps(report)
    assert "shop/web-to-api" in text
    assert "shop/api" in text


def test_explain_says_when_no_entry_matched(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        str(EXAMPLES),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "5432",
    )
    assert code == 0
    assert "blocked" in out.lower() or "denied" in out.lower()


def test_diff_reports_the_pairs_a_policy_change_opens(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(EXAMPLES / "policies", before)
    shutil.copytree(EXAMPLES / "policies", after)
    (after / "web-to-db.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: web-to-db, namespace: shop}\n"
        "spec:\n  podSelector: {matchLabels: {tier: data}}\n"
        "  ingress:\n  - from: [{podSelector: {matchLabels: {tier: frontend}}}]\n"
        "    ports: [{port: 5432}]\n"
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: web-egress-db, namespace: shop}\n"
        "spec:\n  podSelector: {matchLabels: {tier: frontend}}\n  policyTypes: [Egress]\n"
        "  egress:\n  - to: [{podSelector: {matchLabels: {tier: data}}}]\n"
        "    ports: [{port: 5432}]\n"
    )
    cluster = str(EXAMPLES / "cluster.yaml")
    code, out, _ = run(
        capsys, "diff", "--before", str(before), "--after", str(before), "-f", cluster
    )
    assert code == 0
    assert "no reachability changes" in out
    code, out, _ = run(
        capsys,
        "diff",
        "--before",
        str(before),
        "--after",
        str(after),
        "-f",
        cluster,
        "--port",
        "5432",
        "-o",
        "json",
    )
    assert code == 1
    changes = json.loads(out)["changes"]
    assert changes == [
        {
            "from": "shop/web",
            "to": "shop/db",
            "port": 5432,
            "protocol": "TCP",
            "before": False,
            "after": True,
            "because": [
                "egress at shop/web allowed by shop/web-egress-db spec.egress[0]",
                "ingress at shop/db allowed by shop/web-to-db spec.ingress[0]",
            ],
            "services": [],
        }
    ]
    code, out, _ = run(
        capsys, "diff", "--before", str(before), "--after", str(after), "-f", cluster,
        "--port", "5432", "-o", "markdown",
    )  # fmt: skip
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (
        "**labelwall diff**: 1 reachability change: 1 newly allowed, 0 newly blocked, "
        "across 1 pod pair"
    )
    assert lines[2] == "| from | to | port | before | after | because |"
    assert lines[3] == "|---|---|---|---|---|---|"
    assert lines[4].startswith("| shop/web | shop/db | TCP/5432 | blocked | allowed | egress at")
    code, out, _ = run(
        capsys, "diff", "--before", str(after), "--after", str(before), "-f", cluster,
        "--port", "5432", "-o", "json",
    )  # fmt: skip
    (closed,) = json.loads(out)["changes"]
    assert closed["because"] == [
        "egress at shop/web: shop/web-egress-db spec.egress[0] no longer allows it",
        "ingress at shop/db: shop/web-to-db spec.ingress[0] no longer allows it",
    ]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "matrix", "-f", str(EXAMPLES), "--protocol", "UDP")
    assert code == 2
    assert "--port" in err


@pytest.mark.parametrize("command", ["compile", "matrix"])
def test_input_without_objects_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    # An empty file is what a failed `helm template ... > out.yaml` leaves: never a pass.
    (tmp_path / "empty.yaml").write_text("# nothing rendered\n")
    code, out, err = run(capsys, command, "-f", str(tmp_path / "empty.yaml"))
    assert code == 2
    assert "no objects in input" in err
    assert out == ""


def test_namespace_flag_places_namespace_less_manifests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\n"
        "spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.244.1.5}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n"
        "spec: {podSelector: {}}\n"
    )
    code, out, _ = run(capsys, "compile", "-f", str(tmp_path), "-n", "shop", "-o", "json")
    assert code == 0
    assert json.loads(out)["pods"] == 1
    code, out, _ = run(
        capsys, "explain", "-f", str(tmp_path), "-n", "shop",
        "--from", "shop/web", "--to", "shop/web", "--port", "80", "-o", "json",
    )  # fmt: skip
    assert code == 0
    ingress = json.loads(out)["ingress"]
    assert ingress["isolated"] is True
    assert ingress["policies"] == ["shop/deny"]


def test_matrix_judges_a_hostnetwork_pod_on_another_node_as_that_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Each agent treats only its own node as `host`; the offline answer must match.
    def node(name: str, ip: str) -> str:
        return (
            f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
            f"status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n"
        )

    def hostnet(name: str, on: str, ip: str) -> str:
        return (
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: kube-system}}\n"
            f"spec: {{nodeName: {on}, hostNetwork: true, containers: [{{name: c, image: i}}]}}\n"
            f"status: {{podIP: {ip}}}\n---\n"
        )

    (tmp_path / "c.yaml").write_text(
        node("n1", "192.168.0.1")
        + node("n2", "192.168.0.2")
        + hostnet("local", "n1", "192.168.0.1")
        + hostnet("remote", "n2", "192.168.0.2")
        + "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\n"
        "spec: {nodeName: n1, containers: [{name: c, image: i}]}\n"
        "status: {podIP: 10.244.1.10}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n"
    )
    code, out, _ = run(capsys, "matrix", "-f", str(tmp_path), "--port", "10250", "-o", "json")
    assert code == 0
    into_a = {c["from"]: c["allowed"] for c in cells_of(json.loads(out)) if c["to"] == "x/a"}
    assert into_a["kube-system/local"] is True
    assert into_a["kube-system/remote"] is False


def test_errors_come_as_json_when_json_was_asked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: bad, namespace: x}\nspec: {podSelector: {}, policyTypes: [Sideways]}\n"
    )
    code, out, err = run(capsys, "compile", "-f", str(tmp_path), "-o", "json")
    assert code == 2
    (error,) = json.loads(out)["errors"]
    assert error["file"] == str(tmp_path / "p.yaml")
    assert error["document"] == 0
    assert error["object"] == "NetworkPolicy x/bad"
    assert error["field"] == "spec.policyTypes[0]"
    assert "Sideways" in error["message"]
    assert "spec.policyTypes[0]" in err  # people reading the log still see it


def test_compile_json_lists_findings_with_their_stable_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "compile", "-f", str(EXAMPLES), "-o", "json", "--strict")
    assert code == 1  # the example's default-deny blocks DNS: a finding
    findings = json.loads(out)["findings"]
    dns = [f for f in findings if f["code"] == "egress-blocks-dns"]
    assert [f["policy"] for f in dns] == ["shop/default-deny", "shop/web-to-api"]
    assert all(f["field"] == "spec.policyTypes" for f in dns)


def test_explain_takes_an_address_outside_the_cluster_at_either_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "explain", "-f", str(EXAMPLES), "--from", "203.0.113.5", "--to", "shop/web",
        "--port", "http", "-o", "json",
    )  # fmt: skip
    assert code == 0
    inbound = json.loads(out)
    assert inbound["allowed"] is True
    assert inbound["egress"]["address"] == "203.0.113.5"  # no classifier on the outside end
    assert inbound["ingress"]["rule"]["policy"] == "shop/web-public"
    assert inbound["identities"]["from"]["number"] == 2  # world

    code, out, _ = run(
        capsys, "explain", "-f", str(EXAMPLES), "--from", "shop/web", "--to", "203.0.113.5",
        "--port", "443", "-o", "json",
    )  # fmt: skip
    outbound = json.loads(out)
    assert outbound["allowed"] is False
    assert outbound["egress"]["reason"] == "POLICY_DENIED"
    assert "shop/default-deny" in outbound["egress"]["policies"]


def test_explain_needs_a_pod_at_one_end(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "explain", "-f", str(EXAMPLES), "--from", "1.1.1.1", "--to", "2.2.2.2",
        "--port", "80",
    )  # fmt: skip
    assert code == 2
    assert "one end of the flow must be a pod" in err


def test_matrix_filters_sources_destinations_and_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def cells(*flags: str) -> list[dict[str, object]]:
        code, out, _ = run(capsys, "matrix", "-f", str(EXAMPLES), "--port", "http", "-o", "json",
                           *flags)  # fmt: skip
        assert code == 0
        result: list[dict[str, object]] = cells_of(json.loads(out))
        return result

    everything = cells()
    shop_to_web = cells("--from-namespace", "shop", "--to-label", "tier=frontend")
    assert shop_to_web
    assert {c["to"] for c in shop_to_web} == {"shop/web"}
    assert all(str(c["from"]).startswith("shop/") for c in shop_to_web)
    denied = cells("--only-denied")
    allowed = cells("--only-allowed")
    assert all(c["allowed"] is False for c in denied)
    assert all(c["allowed"] is True for c in allowed)
    assert len(denied) + len(allowed) == len(everything)


def test_matrix_grid_with_filters_is_rows_by_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "matrix", "-f", str(EXAMPLES), "--port", "http", "--to-label", "tier=frontend"
    )
    assert code == 0
    header = out.splitlines()[1]
    assert header.split("|")[2].strip() == "SHOP/WEB"
    assert len(header.split("|")) == 4  # title column, one destination column


def test_compile_sarif_points_each_finding_at_its_file_and_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "compile", "-f", str(EXAMPLES), "-o", "sarif")
    assert code == 0
    log = json.loads(out)
    assert log["version"] == "2.1.0"
    (sarif_run,) = log["runs"]
    assert [r["id"] for r in sarif_run["tool"]["driver"]["rules"]] == ["egress-blocks-dns"]
    text = (EXAMPLES / "policies" / "shop.yaml").read_text().splitlines()
    for result in sarif_run["results"]:
        (loc,) = result["locations"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        line = loc["physicalLocation"]["region"]["startLine"]
        assert uri.endswith("policies/shop.yaml")
        policy = result["message"]["text"].split()[1]  # "NetworkPolicy shop/x: ..."
        name = policy.split("/")[1].rstrip(":")
        # The document starting at that line is the policy the finding names.
        assert text[line - 1] == "apiVersion: networking.k8s.io/v1"
        assert f"name: {name}," in text[line + 1]


def test_json_errors_carry_the_line_their_document_starts_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n# the bad one\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: bad, namespace: x}\nspec: {podSelector: {}, policyTypes: [Up]}\n"
    )
    code, out, _ = run(capsys, "compile", "-f", str(tmp_path), "-o", "json")
    assert code == 2
    (error,) = json.loads(out)["errors"]
    assert (error["document"], error["line"]) == (1, 6)


def test_matrix_reads_workloads_from_stdin_as_helm_template_pipes_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    def deployment(name: str, port: str) -> str:
        return (
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n"
            f"spec:\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n"
            f"    spec: {{containers: [{{name: c, image: i, ports: [{{name: {port}, "
            f"containerPort: 8080}}]}}]}}\n---\n"
        )

    rendered = (
        deployment("frontend", "http")
        + deployment("checkout", "grpc")
        + "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: checkout}\n"
        "spec:\n  podSelector: {matchLabels: {app: checkout}}\n"
        "  ingress: [{from: [{podSelector: {matchLabels: {app: frontend}}}],\n"
        "              ports: [{port: grpc}]}]\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(rendered))
    code, out, _ = run(capsys, "matrix", "-f", "-", "-n", "shop", "--port", "grpc", "-o", "json")
    assert code == 0
    cells = {(c["from"], c["to"]): c["allowed"] for c in cells_of(json.loads(out))}
    assert cells[("shop/frontend[Deployment]", "shop/checkout[Deployment]")] is True
    assert cells[("shop/checkout[Deployment]", "shop/checkout[Deployment]")] is True  # itself
    assert ("shop/frontend[Deployment]", "shop/frontend[Deployment]") in cells


SHOP = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: frontend, namespace: shop}\n"
    "spec:\n  template:\n    metadata: {labels: {app: frontend}}\n"
    "    spec: {containers: [{name: c, image: i}]}\n---\n"
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: checkoutservice, namespace: shop}\n"
    "spec:\n  template:\n    metadata: {labels: {app: checkout}}\n"
    "    spec: {containers: [{name: c, image: i, ports: [{name: grpc, containerPort: 5050}]}]}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: checkout, namespace: shop}\n"
    "spec: {type: ClusterIP, selector: {app: checkout}, ports: [{port: 5050, targetPort: grpc}]}\n"
)
DENY = (
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    "metadata: {name: checkout, namespace: shop}\n"
    "spec: {podSelector: {matchLabels: {app: checkout}}, policyTypes: [Ingress]}\n"
)
ALLOW = DENY.replace(
    "policyTypes: [Ingress]}",
    "ingress: [{from: [{podSelector: {matchLabels: {app: frontend}}}], ports: [{port: grpc}]}]}",
)


def _shop(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    (tmp_path / "shop.yaml").write_text(SHOP)
    (tmp_path / "before" / "p.yaml").write_text(DENY)
    (tmp_path / "after" / "p.yaml").write_text(ALLOW)
    return tmp_path / "shop.yaml", tmp_path / "before", tmp_path / "after"


@pytest.mark.parametrize(
    ("command", "want"),
    [
        (["diff", "-o", "markdown"],
         "| shop/frontend[Deployment] | shop/checkoutservice[Deployment] "
         "(Service checkout:5050) | TCP/grpc | blocked | allowed |"),
        (["diff"], "shop/checkoutservice[Deployment] (Service checkout:5050)"),
        (["explain", "--from", "shop/frontend[Deployment]",
          "--to", "shop/checkoutservice[Deployment]", "--port", "grpc"],
         "shop/checkoutservice[Deployment] backs Service checkout:5050"),
        (["matrix", "--port", "grpc"],
         "shop/checkoutservice[Deployment]: Service checkout:5050 -> TCP/grpc"),
    ],
)  # fmt: skip
def test_findings_name_the_service_the_destination_backs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], want: str
) -> None:
    shop, before, after = _shop(tmp_path)
    argv = [*command, "-f", str(shop)]
    if command[0] == "diff":
        argv += ["--before", str(before), "--after", str(after)]
    else:
        argv += ["-f", str(after)]
    code, out, _ = run(capsys, *argv)
    assert code == (1 if command[0] == "diff" else 0)
    assert want in out, out


def test_diff_json_lists_the_services_of_each_change(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shop, before, after = _shop(tmp_path)
    code, out, _ = run(
        capsys, "diff", "-f", str(shop), "--before", str(before), "--after", str(after),
        "--port", "grpc", "-o", "json",
    )  # fmt: skip
    assert code == 1
    (change,) = json.loads(out)["changes"]
    assert change["to"] == "shop/checkoutservice[Deployment]"
    assert change["services"] == ["shop/checkout:5050"]


def test_matrix_json_names_services_per_destination(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shop, _, after = _shop(tmp_path)
    code, out, _ = run(capsys, "matrix", "-f", str(shop), "-f", str(after), "-o", "json")
    assert code == 0
    (grid,) = json.loads(out)["grids"]
    assert grid["services"] == {
        "shop/checkoutservice[Deployment]": ["Service checkout:5050 -> TCP/grpc"]
    }


TWICE = (
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n"
    "spec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n  - ports: [{port: 80}]\n"
    "  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ghost}}}]\n"
    "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n"
    "spec: {template: {spec: {containers: [{name: c, image: i}]}}}\n"
)


@pytest.mark.parametrize(
    ("code", "field"),
    [("redundant-rule", "spec.ingress[1]"),
     ("unknown-namespace", "spec.ingress[2].from[0].namespaceSelector.matchLabels")],
)  # fmt: skip
def test_new_lints_fail_strict_and_reach_json_and_sarif(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, code: str, field: str
) -> None:
    (tmp_path / "p.yaml").write_text(TWICE)
    rc, out, _ = run(capsys, "compile", "-f", str(tmp_path), "-o", "json")
    assert rc == 0
    assert {"policy": "shop/p", "field": field, "code": code} in [
        {k: f[k] for k in ("policy", "field", "code")} for f in json.loads(out)["findings"]
    ]
    rc, _, _ = run(capsys, "compile", "--strict", "-f", str(tmp_path))
    assert rc == 1
    rc, out, _ = run(capsys, "compile", "-f", str(tmp_path), "-o", "sarif")
    run_ = json.loads(out)["runs"][0]
    assert code in {r["id"] for r in run_["tool"]["driver"]["rules"]}
    (hit,) = [r for r in run_["results"] if r["ruleId"] == code]
    assert (
        hit["locations"][0]["physicalLocation"]["region"]["startLine"] == 5
    )  # the document after `---`


@pytest.mark.parametrize("fmt", ["table", "markdown", "json"])
def test_exposure_reports_each_workload(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = run(capsys, "exposure", "-f", str(EXAMPLES), "-o", fmt)
    assert code == 0
    if fmt == "json":
        rows = {w["workload"]: w for w in json.loads(out)["workloads"]}
        web = rows["shop/web"]["ingress"]
        assert web["isolated"] is True
        assert web["fromOutside"] == [
            {"peer": "any address", "ports": "TCP/http", "rule": "shop/web-public spec.ingress[0]"}
        ]
        assert rows["shop/db"]["ingress"]["fromOutside"] == []
        assert rows["tenant/client"]["egress"]["toOutside"][0]["peer"] == "any address"
        return
    lines = out.splitlines()
    head = lines[0].lower()
    for column in ("from outside", "from every namespace", "from every pod", "to outside"):
        assert column in head
    web = next(line for line in lines if "shop/web" in line)
    assert "any address: TCP/http (shop/web-public spec.ingress[0])" in web
    if fmt == "markdown":
        assert lines[1].startswith("|---")
