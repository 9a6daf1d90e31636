"""Generate the PKI a throwaway API server needs: CA, serving and admin certs, SA keys."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# ECDSA P-256 everywhere: key generation is instant (RSA-2048 takes tens of ms per key)
# and kube-apiserver, Go TLS, OpenSSL and the service-account token signer (ES256)
# all accept it.
_CURVE = ec.SECP256R1()
# Certificates start an hour in the past so small clock differences never make them
# "not yet valid"; they only need to outlive a test session or a day of experiments.
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=30)

#: Names the serving certificate is valid for: loopback plus the in-cluster names a
#: client might use for the `kubernetes` Service.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files written by :func:`write_pki`."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path
    #: The API server's client certificate towards kubelets (group system:masters).
    kubelet_client_cert: Path
    kubelet_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVE)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        # Kubernetes maps O= of a client certificate to the user's groups.
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    now: datetime.datetime,
    san: x509.SubjectAlternativeName | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(subject, ca_name, key, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create a fresh CA and every certificate and key under ``directory`` (mode 0700).

    ``extra_ips`` are added to the serving certificate's SANs (a cluster with nodes
    reaches the API server on its underlay address and on the `kubernetes` ClusterIP).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    ca_key = _key()
    ca_name = _name("labelwall-testenv-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in SERVING_DNS_NAMES]
        + [x509.IPAddress(ip) for ip in SERVING_IPS]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips]
    )
    serving_cert, serving_key = _leaf(
        ca_key, ca_name, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, now, san
    )
    # system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    admin_cert, admin_key = _leaf(
        ca_key,
        ca_name,
        _name("labelwall-admin", "system:masters"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
    )
    # The kubelets authorise the API server's exec/logs/port-forward calls by a
    # SubjectAccessReview of this user; system:masters is allowed everything.
    kubelet_client_cert, kubelet_client_key = _leaf(
        ca_key,
        ca_name,
        _name("kube-apiserver-kubelet-client", "system:masters"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
    )
    sa_key = _key()

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
        kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
        kubelet_client_key=directory / "apiserver-kubelet-client.key",
    )
    files: dict[Path, bytes] = {
        pki.ca_cert: _cert_pem(ca_cert),
        pki.ca_key: _key_pem(ca_key),
        pki.serving_cert: _cert_pem(serving_cert),
        pki.serving_key: _key_pem(serving_key),
        pki.admin_cert: _cert_pem(admin_cert),
        pki.admin_key: _key_pem(admin_key),
        pki.sa_private_key: _key_pem(sa_key),
        pki.sa_public_key: sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        pki.kubelet_client_cert: _cert_pem(kubelet_client_cert),
        pki.kubelet_client_key: _key_pem(kubelet_client_key),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)
    return pki


def _load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki.ca_key}: not an EC private key")
    return cert, key


def issue_client_cert(
    pki: Pki, stem: Path, common_name: str, organization: str | None = None
) -> tuple[Path, Path]:
    """A client certificate for ``CN=common_name, O=organization`` signed by the CA.

    Writes ``stem.crt`` and ``stem.key`` (mode 0600) and returns their paths. Kubernetes
    maps CN to the user and O to its group: ``system:node:NAME``/``system:nodes`` for a
    kubelet (Node authorizer, NodeRestriction), ``system:kube-proxy`` for kube-proxy.
    """
    ca_cert, ca_key = _load_ca(pki)
    cert, key = _leaf(
        ca_key,
        ca_cert.subject,
        _name(common_name, organization),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        datetime.datetime.now(datetime.UTC),
    )
    crt_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    for path, data in ((crt_path, _cert_pem(cert)), (key_path, _key_pem(key))):
        path.write_bytes(data)
        path.chmod(0o600)
    return crt_path, key_path
