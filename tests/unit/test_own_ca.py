"""components.own_ca: a brought CA is checked on its own, and only the certificate comes back."""

from __future__ import annotations

import time

import pytest

from components.own_ca import check_own_ca
from tests.support.hostile import CA_CERT, CA_KEY, own_ca_pem


def test_a_good_pair_comes_back_as_the_certificate_alone_re_encoded():
    """White space around the PEM is dropped: the result is the certificate's own encoding."""
    assert check_own_ca("\n  " + CA_CERT + "\r\n", CA_KEY, time.time(), 2160) == CA_CERT


@pytest.mark.parametrize("cert, key, blamed", [
    (CA_CERT + CA_KEY, CA_KEY, "caCertificatePem: holds a private key"),
    ("junk\n" + CA_CERT, CA_KEY, "caCertificatePem: is not exactly one PEM certificate"),
    (CA_CERT + CA_CERT, CA_KEY, "caCertificatePem: is not exactly one PEM certificate"),
    (CA_CERT, own_ca_pem()[1], "caPrivateKeyPem: is not the private key of caCertificatePem"),
    (CA_CERT, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "caPrivateKeyPem: is not an unencrypted"),
])
def test_problems_name_the_setting_they_blame(cert, key, blamed):
    """Each refusal starts with the setting to fix; the key's text is never in it."""
    with pytest.raises(ValueError) as caught:
        check_own_ca(cert, key, time.time(), 2160)
    assert str(caught.value).startswith(blamed)
    assert "PRIVATE KEY" not in str(caught.value)
