import datetime

import pytest
from cryptography import x509

from stackube.devbox import pki

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)
SERVER = pki.CertSpec(
    "apiserver",
    "kube-apiserver",
    dns_names=["kubernetes", "localhost"],
    ip_addresses=["127.0.0.1", "10.96.0.1"],
    server=True,
)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.issue_ca("test-ca", NOW)


def test_leaf_carries_the_requested_names_usages_and_issuer(ca: pki.Issued) -> None:
    leaf = pki.issue_leaf(SERVER, ca, NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"kubernetes", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.96.0.1"}
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_client_cert_puts_groups_in_the_organization(ca: pki.Issued) -> None:
    spec = pki.CertSpec("admin", "kubernetes-admin", organizations=["system:masters"], client=True)
    cert = x509.load_pem_x509_certificate(pki.issue_leaf(spec, ca, NOW).cert_pem)
    orgs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]


def test_an_issued_leaf_matches_its_spec(ca: pki.Issued) -> None:
    leaf = pki.issue_leaf(SERVER, ca, NOW)
    assert pki.leaf_matches(leaf.cert_pem, SERVER, ca.cert_pem, NOW)


def test_changed_sans_mean_reissue(ca: pki.Issued) -> None:
    leaf = pki.issue_leaf(SERVER, ca, NOW)
    wider = pki.CertSpec(
        SERVER.name,
        SERVER.common_name,
        dns_names=["kubernetes"],
        ip_addresses=["127.0.0.1", "10.96.0.1", "10.0.0.1"],
        server=True,
    )
    assert not pki.leaf_matches(leaf.cert_pem, wider, ca.cert_pem, NOW)


def test_a_leaf_from_another_ca_does_not_match(ca: pki.Issued) -> None:
    other = pki.issue_ca("test-ca", NOW)  # same name, different key
    leaf = pki.issue_leaf(SERVER, other, NOW)
    assert not pki.leaf_matches(leaf.cert_pem, SERVER, ca.cert_pem, NOW)


def test_a_leaf_close_to_expiry_does_not_match(ca: pki.Issued) -> None:
    leaf = pki.issue_leaf(SERVER, ca, NOW)
    later = NOW + pki.LEAF_VALIDITY - datetime.timedelta(days=1)
    assert not pki.leaf_matches(leaf.cert_pem, SERVER, ca.cert_pem, later)
