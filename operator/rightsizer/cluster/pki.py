"""The certificates and keys a local control plane needs: a CA, the API server's serving certificate, an admin
client certificate (group system:masters, so RBAC lets it do anything) and the service-account signing key."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclasses.dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, signing_key, *, ca: bool,
                 usages: list, alt_names: list | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=not ca, key_cert_sign=ca, crl_sign=ca,
                          content_commitment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def create(directory: Path, ip_addresses: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """`ip_addresses`: what the serving certificate names besides localhost and the in-cluster DNS names (a node's
    API server is also reached at its advertised address and at the `kubernetes` Service's ClusterIP)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(directory / name for name in (
        "ca.crt", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key", "sa.key", "sa.pub")))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rightsizer-local-ca")])
    ca_cert = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True, usages=[])

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = _certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key.public_key(), ca_name,
        ca_key, ca=False, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        alt_names=[x509.DNSName(name) for name in ("localhost", "kubernetes", "kubernetes.default",
                                                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")]
        + [x509.IPAddress(ipaddress.ip_address(address)) for address in dict.fromkeys(("127.0.0.1", *ip_addresses))],
    )

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = _certificate(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "rightsizer-admin")]),
        admin_key.public_key(), ca_name, ca_key, ca=False, usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    # Service-account tokens must be signed with RSA or ECDSA; RSA is what every Kubernetes tool expects.
    service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    pki.serving_key.write_bytes(_key_pem(serving_key))
    pki.admin_cert.write_bytes(admin_cert.public_bytes(serialization.Encoding.PEM))
    pki.admin_key.write_bytes(_key_pem(admin_key))
    pki.service_account_key.write_bytes(_key_pem(service_account_key))
    pki.service_account_public_key.write_bytes(
        service_account_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    for private in (pki.serving_key, pki.admin_key, pki.service_account_key):
        private.chmod(0o600)
    return pki
