"""kube-controller-manager and kube-scheduler command lines (run in the control-plane ns)."""

from __future__ import annotations

from pathlib import Path

from labelwall.testenv.certs import Pki

#: The controllers a cluster of real nodes needs (v1.33 names): node lifecycle (the
#: not-ready taint), the root CA ConfigMap and service-account tokens pods mount,
#: namespace deletion, Endpoints/EndpointSlices for kube-proxy, and the workload
#: controllers behind Deployments (the operator) and DaemonSets (the agent).
CONTROLLERS = (
    "nodelifecycle",
    "root-ca-cert-publisher",
    "serviceaccount",
    "serviceaccount-token",
    "namespace",
    "endpoint",
    "endpointslice",
    "garbagecollector",
    "replicaset",
    "deployment",
    "daemonset",
    "statefulset",
    "job",
    "podgc",
    "clusterrole-aggregation",
)


def controller_manager_argv(
    binary: Path, kubeconfig: Path, pki: Pki, service_cidr: str
) -> list[str]:
    kc = str(kubeconfig)
    return [
        str(binary),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={service_cidr}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--v=1",
    ]


def scheduler_argv(binary: Path, kubeconfig: Path) -> list[str]:
    kc = str(kubeconfig)
    return [
        str(binary),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--v=1",
    ]
