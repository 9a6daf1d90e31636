"""A real etcd + kube-apiserver on loopback for tests and local experiments (no kubelet)."""

from labelwall.testenv.binaries import Binaries, BinariesMissingError, find_binaries
from labelwall.testenv.env import TestEnv, TestEnvError
from labelwall.testenv.serviceaccount import service_account_kubeconfig

__all__ = [
    "Binaries",
    "BinariesMissingError",
    "TestEnv",
    "TestEnvError",
    "find_binaries",
    "service_account_kubeconfig",
]
