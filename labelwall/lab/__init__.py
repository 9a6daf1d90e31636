"""The lab: pods as network namespaces on one machine, wired like a routed CNI."""
