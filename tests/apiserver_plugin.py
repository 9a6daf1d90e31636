"""pytest plugin: fixtures that run a real etcd + kube-apiserver for `apiserver` tests.

Register with ``pytest_plugins = ["apiserver_plugin"]`` in tests/conftest.py (tests/ has no
__init__.py, so pytest puts tests/ itself on sys.path when it loads that conftest).
The binaries come from tools/k8s/build.sh; when they are missing the fixture fails
(it never skips) and says how to build them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labelwall.testenv import Binaries, BinariesMissingError, TestEnv, find_binaries


@pytest.fixture(scope="session")
def k8s_binaries() -> Binaries:
    """Paths of etcd, kube-apiserver and kubectl; fails clearly if they are not built."""
    try:
        return find_binaries()
    except BinariesMissingError as e:
        message = str(e)
    # Outside the except block, so the report shows one message and no chained traceback.
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def apiserver(
    tmp_path_factory: pytest.TempPathFactory, k8s_binaries: Binaries
) -> Iterator[TestEnv]:
    """One etcd + kube-apiserver (RBAC on, admin kubeconfig) shared by the session.

    Tests share it: give each test its own namespace. Stopped and removed at session end,
    also when tests fail.
    """
    env = TestEnv.start(tmp_path_factory.mktemp("apiserver") / "env", k8s_binaries)
    try:
        yield env
    finally:
        env.stop()
