"""Find the cluster the standard way (in-cluster, else KUBECONFIG / ~/.kube/config)."""

from __future__ import annotations

from kubernetes import client, config


class NoClusterError(Exception):
    """Neither in-cluster credentials nor a kubeconfig were found."""


def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """A client Configuration: the service account when in a pod, else the kubeconfig.

    ``kubeconfig`` None means what kubectl uses: ``$KUBECONFIG``, else ``~/.kube/config``.
    """
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except config.ConfigException:
            pass
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    except (config.ConfigException, OSError) as e:
        raise NoClusterError(
            "no cluster: not in a pod and no usable kubeconfig "
            f"({kubeconfig or '$KUBECONFIG'}): {e}"
        ) from e
    return configuration


def api_client(kubeconfig: str | None = None, pool_size: int = 16) -> client.ApiClient:
    """An ApiClient with a connection pool big enough for concurrent allocation."""
    configuration = load_configuration(kubeconfig)
    configuration.connection_pool_maxsize = pool_size
    # urllib3 retries only failed connects here; API errors come back as ApiException and
    # the callers' loops decide (the sync retries with backoff, claims decide on 409).
    configuration.retries = 2
    return client.ApiClient(configuration)
