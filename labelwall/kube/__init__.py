"""All Kubernetes API I/O: client construction, list+watch reflectors, the Identity registry,
the cluster source the agent reads, and the API objects they decode and encode."""
