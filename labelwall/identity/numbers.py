"""Identity numbers: the wildcard, reserved identities and the numeric ranges (ARCHITECTURE §2).

Mirrors LW_ID_* in bpf_src/include/labelwall/abi.h.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NewType

IdentityNumber = NewType("IdentityNumber", int)

#: Wildcard in policy map keys ("any peer").
ANY = IdentityNumber(0)


class Reserved(IntEnum):
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7


#: Reserved identities occupy 1..255.
RESERVED_MAX = 255
#: Cluster-wide (label-set) identities: 256 .. 2^24-1, claimed through the Identity registry.
CLUSTER_MIN = 256
CLUSTER_MAX = (1 << 24) - 1
#: Node-local identities (CIDR prefixes named by ipBlock): bit 24 set, never published.
LOCAL_FLAG = 1 << 24
LOCAL_MIN = LOCAL_FLAG | 1
LOCAL_MAX = LOCAL_FLAG | ((1 << 24) - 1)


def is_cluster(n: int) -> bool:
    return CLUSTER_MIN <= n <= CLUSTER_MAX


def is_local(n: int) -> bool:
    return LOCAL_MIN <= n <= LOCAL_MAX
