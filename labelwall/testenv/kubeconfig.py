"""Write self-contained kubeconfig files (certificates and tokens embedded, not referenced)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _write(path: Path, server: str, ca_cert: Path, user_name: str, user: dict[str, str]) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "labelwall-testenv",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [
            {
                "name": "labelwall-testenv",
                "context": {"cluster": "labelwall-testenv", "user": user_name},
            }
        ],
        "current-context": "labelwall-testenv",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def write_cert_kubeconfig(
    path: Path, server: str, ca_cert: Path, client_cert: Path, client_key: Path
) -> Path:
    """A kubeconfig authenticating with a client certificate."""
    return _write(
        path,
        server,
        ca_cert,
        "labelwall-admin",
        {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)},
    )


def write_token_kubeconfig(
    path: Path, server: str, ca_cert: Path, user_name: str, token: str
) -> Path:
    """A kubeconfig authenticating with a bearer token (e.g. a ServiceAccount's)."""
    return _write(path, server, ca_cert, user_name, {"token": token})
