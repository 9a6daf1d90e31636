"""Kubernetes objects (decoded YAML/JSON mappings) to labelwall values, validated as the API
server validates them: field reading, syntax rules, one decoder per kind, the kinds table."""
