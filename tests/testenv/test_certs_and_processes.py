"""The generated PKI is what kube-apiserver expects, and stopping never hits foreign pids."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labelwall.testenv.certs import write_pki
from labelwall.testenv.processes import is_running, stop_pid


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_cert_is_signed_by_the_ca_for_loopback_names(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    ca, serving = _cert(pki.ca_cert), _cert(pki.serving_cert)

    serving.verify_directly_issued_by(ca)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_admin_cert_is_a_client_cert_in_group_system_masters(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    admin = _cert(pki.admin_cert)

    admin.verify_directly_issued_by(_cert(pki.ca_cert))
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_private_keys_are_readable_only_by_their_owner(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")

    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_private_key):
        assert key.stat().st_mode & 0o077 == 0, key


def test_stop_never_signals_a_recorded_pid_whose_command_line_lacks_the_owner_marker() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        # No Popen passed: the pid is treated as read from a state file.
        stop_pid(proc.pid, "/no/such/testenv/dir", grace_s=0.5)
        assert is_running(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_stop_terminates_an_owned_process_and_reaps_it() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        stop_pid(proc.pid, "unused-with-popen", popen=proc, grace_s=5)
        assert proc.returncode is not None
        assert not is_running(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
