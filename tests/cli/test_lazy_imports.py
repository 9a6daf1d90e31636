"""Building the `labelwall` parser imports neither kopf nor the Kubernetes client (f21ce42)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from labelwall.cli.main import build_parser
build_parser()
from labelwall.agent.app import make_source
print(sorted(m for m in ("kopf", "kubernetes") if m in sys.modules))
"""


def test_parser_and_agent_wiring_import_no_kubernetes_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
