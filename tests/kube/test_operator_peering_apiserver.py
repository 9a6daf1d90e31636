"""`labelwall operator` outside the chart never waits silently for its peering object (issue 10).

Against the real kube-apiserver: a missing ClusterKopfPeering is created when the
operator may (an admin kubeconfig); with the chart's RBAC (no create) it runs standalone
and says so in one log line. Either way it acts: the policy gets its status annotation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labelwall.testenv import TestEnv, service_account_kubeconfig

from .operator_harness import OperatorProcess, apply, namespace, pod, wait_for
from .test_operator_apiserver import _render_operator_rbac

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]


class PeeringOperator(OperatorProcess):
    """An operator with kopf peering on, through the ClusterKopfPeering ``peering``."""

    def __init__(
        self, env: TestEnv, workdir: Path, peering: str, pod_id: str | None = None, **kw: object
    ) -> None:
        super().__init__(env, workdir, standalone=False, **kw)  # type: ignore[arg-type]
        self.peering = peering
        self.pod_id = pod_id  # kopf's peer id, as the chart sets it (POD_ID)

    def start(self) -> PeeringOperator:
        argv = [sys.executable, "-m", "labelwall.cli.main", "operator",
                "--config", str(self.config), "--peering", self.peering]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.pod_id is not None:
            env["POD_ID"] = self.pod_id
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self


@pytest.fixture
def peering_ops(crds: TestEnv, tmp_path: Path) -> Iterator[Callable[..., PeeringOperator]]:
    started: list[PeeringOperator] = []

    def start(peering: str, pod_id: str | None = None, **kw: object) -> PeeringOperator:
        op = PeeringOperator(crds, tmp_path, peering, pod_id, name=f"peer{len(started)}", **kw)
        started.append(op)
        return op.start()

    try:
        yield start
    finally:
        for op in started:
            op.stop()
        for op in started:
            crds.kubectl("delete", "clusterkopfpeering", op.peering, "--ignore-not-found")


def _acts(env: TestEnv, op: OperatorProcess, ns: str, within_s: float = 45) -> None:
    """The operator syncs: a new policy gets its labelwall.io/status annotation."""
    apply(
        env,
        namespace(ns),
        pod(ns, "web", {"app": "web"}),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}},
        },
    )

    def annotated() -> str | None:
        out = env.kubectl(
            "get", "networkpolicy", "web", "-n", ns,
            "-o", "jsonpath={.metadata.annotations.labelwall\\.io/status}", check=False,
        ).stdout  # fmt: skip
        return out or None

    status = wait_for(annotated, within_s, f"the policy's status annotation\n{op.tail()}")
    assert json.loads(status)["subjects"] == 1


def test_a_missing_peering_object_is_created_and_the_operator_acts(
    crds: TestEnv,
    peering_ops: Callable[..., PeeringOperator],
    fresh_ns: Callable[[str], str],
) -> None:
    name = f"lw-peer-{os.getpid()}"
    missing = crds.kubectl("get", "clusterkopfpeering", name, check=False)
    assert missing.returncode != 0  # today's code waits for it forever
    op = peering_ops(name)
    wait_for(
        lambda: crds.kubectl("get", "clusterkopfpeering", name, check=False).returncode == 0,
        30,
        f"the peering object\n{op.tail()}",
    )
    _acts(crds, op, fresh_ns("op-peer"))
    assert f"created ClusterKopfPeering '{name}'" in op.log.read_text()


def test_without_rights_to_create_it_the_operator_runs_standalone_and_says_so(
    crds: TestEnv,
    peering_ops: Callable[..., PeeringOperator],
    fresh_ns: Callable[[str], str],
) -> None:
    sa_ns, name = fresh_ns("op-peer-sa"), f"lw-peer-sa-{os.getpid()}"
    docs = _render_operator_rbac(f"lwpeer{os.getpid()}", sa_ns)
    account = docs[1]["subjects"][0]["name"]
    kubeconfig = service_account_kubeconfig(crds, sa_ns, account)
    apply(crds, *docs)  # the chart's operator role: get/list/watch/patch peerings, no create
    op = peering_ops(name, kubeconfig=kubeconfig)
    _acts(crds, op, fresh_ns("op-peer"))
    log = op.log.read_text()
    assert log.count("running standalone") == 1, log
    assert "creating it was refused (403" in log, log
    assert crds.kubectl("get", "clusterkopfpeering", name, check=False).returncode != 0


def test_two_replicas_on_one_peering_object_the_newer_acts_the_older_stands_by(
    crds: TestEnv,
    peering_ops: Callable[..., PeeringOperator],
    fresh_ns: Callable[[str], str],
) -> None:
    """kopf pauses every replica while two live ones share a priority (its default 0 for
    all): before, two replicas both paused for good and nothing was ever synced."""
    name = f"lw-peer-two-{os.getpid()}"
    older = peering_ops(name, pod_id="operator-older")
    older.wait_synced(timeout_s=45)
    newer = peering_ops(name, pod_id="operator-newer")
    wait_for(lambda: "Pausing operations in favour of" in older.log.read_text() or None, 45,
             f"the older replica pausing\n{older.tail()}\n{newer.tail()}")  # fmt: skip
    _acts(crds, newer, fresh_ns("op-peer-two"))
    assert "Pausing" not in newer.log.read_text(), newer.tail()


def test_an_operator_restarted_after_kill_9_acts_at_once(
    crds: TestEnv,
    peering_ops: Callable[..., PeeringOperator],
    fresh_ns: Callable[[str], str],
) -> None:
    """A container restarted in its pod after a crash (same POD_ID) and a replacement pod
    (another POD_ID) both act within seconds, not after the dead entry's 60 s lifetime."""
    name = f"lw-peer-kill-{os.getpid()}"
    first = peering_ops(name, pod_id="operator-a")
    _acts(crds, first, fresh_ns("op-peer-k0"))
    for pod_id in ("operator-a", "operator-b"):
        assert first.proc is not None
        first.proc.kill()  # SIGKILL: kopf leaves its peering entry alive for its lifetime
        first.proc.wait(timeout=10)
        first = peering_ops(name, pod_id=pod_id)
        _acts(crds, first, fresh_ns(f"op-peer-{pod_id}"), within_s=20)
        assert "Pausing" not in first.log.read_text(), first.tail()
