"""labelwall: identity-based Kubernetes NetworkPolicy engine with an eBPF datapath."""

__version__ = "0.1.0"
