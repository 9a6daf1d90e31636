"""Shared pytest configuration: the real kube-apiserver fixtures live in a plugin module."""

pytest_plugins = ["apiserver_plugin"]
