"""Tests of labelwall/decode: Kubernetes objects to labelwall values, validated."""
