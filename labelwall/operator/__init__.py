"""Kubernetes operator and cluster agent glue (the only code importing kopf/kubernetes)."""
