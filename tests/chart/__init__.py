"""Tests of the Helm chart: rendering, schema, RBAC, CRDs, docs and the image recipe."""
