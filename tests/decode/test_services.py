"""Services read for naming flows: decoding (table-driven) and which Service a pod backs."""

from __future__ import annotations

from typing import Any

import pytest

from labelwall.cluster import ContainerPort, Labels, Pod, Protocol
from labelwall.decode.fields import Problems
from labelwall.decode.services import decode_service
from labelwall.policy.services import Service, ServicePort, backing, describe


def svc(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": "shop", **meta},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "ports"),
    [
        ({"selector": {"app": "c"}, "ports": [{"port": 5050}]},
         (ServicePort(5050, 5050, Protocol.TCP),)),
        ({"selector": {"app": "c"}, "ports": [{"port": 5050, "targetPort": 8080}]},
         (ServicePort(5050, 8080, Protocol.TCP),)),
        ({"selector": {"app": "c"}, "ports": [{"port": 5050, "targetPort": "grpc"}]},
         (ServicePort(5050, "grpc", Protocol.TCP),)),
        ({"selector": {"app": "c"}, "ports": [{"port": 53, "protocol": "UDP", "name": "dns"}]},
         (ServicePort(53, 53, Protocol.UDP, "dns"),)),
        ({"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
         (ServicePort(80, 80, Protocol.TCP),)),
    ],
)  # fmt: skip
def test_a_valid_service_decodes_its_selector_and_ports(
    spec: dict[str, Any], ports: tuple[ServicePort, ...]
) -> None:
    p = Problems()
    label, service = decode_service(svc(spec), "", p)
    assert p.errors == []
    assert label == "Service shop/checkout"
    assert service is not None
    assert service.ports == ports


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"ports": [{"targetPort": 80}]}, "spec.ports[0].port", "Required value"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port", "between 1 and 65535"),
        ({"ports": [{"port": "80"}]}, "spec.ports[0].port", "must be an integer"),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol", "Unsupported"),
        ({"ports": [{"port": 80, "targetPort": True}]}, "spec.ports[0].targetPort", "port name"),
        ({"ports": [{"port": 80, "targetPort": "-bad-"}]}, "spec.ports[0].targetPort", "Invalid"),
        ({"selector": {"app": "-x-"}, "ports": []}, "spec.selector", "Invalid value"),
    ],
)
def test_an_invalid_service_names_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    p = Problems()
    _, service = decode_service(svc(spec), "", p)
    assert service is None
    assert any(path.startswith(field) and message in msg for path, msg in p.errors), p.errors


POD = Pod(
    "shop", "checkout[Deployment]", Labels({"app": "c"}), (),
    (ContainerPort(8080, Protocol.TCP, "grpc"),),
)  # fmt: skip


@pytest.mark.parametrize(
    ("service", "port", "want"),
    [
        (Service("shop", "checkout", Labels({"app": "c"}), (ServicePort(5050, "grpc"),)), 8080,
         "Service checkout:5050"),
        (Service("shop", "checkout", Labels({"app": "c"}), (ServicePort(5050, 8080),)), 8080,
         "Service checkout:5050"),
        (Service("shop", "checkout", Labels({"app": "c"}), (ServicePort(5050, 9090),)), 8080, ""),
        (Service("shop", "other", Labels({"app": "x"}), (ServicePort(5050, 8080),)), 8080, ""),
        (Service("shop", "manual", Labels(), (ServicePort(5050, 8080),)), 8080, ""),
        (Service("web", "checkout", Labels({"app": "c"}), (ServicePort(5050, 8080),)), 8080, ""),
        (Service("shop", "udp", Labels({"app": "c"}),
                 (ServicePort(5050, 8080, Protocol.UDP),)), 8080, ""),
        (Service("shop", "checkout", Labels({"app": "c"}), (ServicePort(5050, "grpc"),)), None,
         ""),
    ],
)  # fmt: skip
def test_which_service_a_destination_backs(service: Service, port: int | None, want: str) -> None:
    assert describe(backing([service], POD, port, Protocol.TCP)) == want
