"""Tests of labelwall/testenv: certificates, processes, the real API server."""
