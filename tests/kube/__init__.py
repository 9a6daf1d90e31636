"""Tests of labelwall/kube (client, reflector, registry, cluster source) and the operator app."""
