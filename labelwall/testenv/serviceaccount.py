"""Create a ServiceAccount and a kubeconfig holding a TokenRequest token for it."""

from __future__ import annotations

from pathlib import Path

import yaml

from labelwall.testenv.env import TestEnv
from labelwall.testenv.kubeconfig import write_token_kubeconfig


def service_account_kubeconfig(
    env: TestEnv,
    namespace: str,
    name: str,
    path: Path | None = None,
    duration: str = "24h",
) -> Path:
    """Ensure ``namespace`` and ServiceAccount ``name`` exist; write a kubeconfig for it.

    The token comes from the TokenRequest API (``kubectl create token``), so the client
    authenticates as ``system:serviceaccount:<namespace>:<name>`` and gets exactly the
    RBAC rules bound to that account: none until the caller binds some.
    ``duration`` is a Go duration (the API server may cap it).
    """
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
    ]
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
    token = env.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    out = path or env.directory / f"sa-{namespace}-{name}.kubeconfig"
    return write_token_kubeconfig(
        out, env.server, env.pki.ca_cert, f"system:serviceaccount:{namespace}:{name}", token
    )
