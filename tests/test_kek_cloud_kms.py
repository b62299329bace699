"""Cloud KMS key-encryption keys (``gcp-kms://``, transforms/crypto/kek.py): the requests a wrapped keyset sends.

Cloud KMS has no emulator: a stub client answers as Cloud KMS does (a real AEAD under the additional
authenticated data, the CRC32C fields filled and checked) and records every request. The whole path of a
wrapped keyset (a bucket, a KMS, worker processes) is tested against moto's AWS KMS in tests/test_keys_kms.py.
"""

from __future__ import annotations

import base64
import json
import os

import pytest

from transforms.crypto.kek import GcpKmsKek
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.keyset_sealed import forget_all

GCP_KEY = "projects/p/locations/asia-east2/keyRings/backfill/cryptoKeys/keyset"


class StubCloudKms:
    """Encrypt/Decrypt as Cloud KMS answers them: a real AEAD under the additional authenticated data, the
    CRC32C fields filled and checked; every request recorded."""

    def __init__(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.requests, self.fail, self.corrupt = [], None, False
        self._aead = AESGCM(AESGCM.generate_key(256))

    def encrypt(self, request, timeout=None):
        import google_crc32c
        from google.cloud import kms

        self.requests.append(("encrypt", dict(request)))
        if self.fail:
            raise self.fail
        assert request["plaintext_crc32c"] == google_crc32c.value(request["plaintext"])
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, request["plaintext"], request["additional_authenticated_data"])
        return kms.EncryptResponse(
            name=request["name"] + "/cryptoKeyVersions/3",
            ciphertext=blob,
            ciphertext_crc32c=google_crc32c.value(blob),
            verified_plaintext_crc32c=True,
            verified_additional_authenticated_data_crc32c=True,
        )

    def decrypt(self, request, timeout=None):
        import google_crc32c
        from google.api_core import exceptions
        from google.cloud import kms

        self.requests.append(("decrypt", dict(request)))
        if self.fail:
            raise self.fail
        blob = request["ciphertext"]
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], request["additional_authenticated_data"])
        except Exception:
            raise exceptions.InvalidArgument(f"Decryption failed: the ciphertext is invalid: {blob!r}") from None
        crc = google_crc32c.value(plain) ^ (1 if self.corrupt else 0)
        return kms.DecryptResponse(plaintext=plain, plaintext_crc32c=crc)


def test_a_cloud_kms_wrapped_keyset_sends_cloud_kms_the_requests_it_expects(tmp_path):
    import google_crc32c
    from google.api_core import exceptions

    stub, path = StubCloudKms(), str(tmp_path / "keys.json")
    keyset = Keyset.generate(GcpKmsKek("gcp-kms://" + GCP_KEY, client=stub))
    keyset.save(path)
    aad = json.dumps(
        {"format": "subscriber-backfill/wrapped-keyset/1", "keyset_id": keyset.keyset_id}, separators=(",", ":")
    ).encode()
    ((op, sent),) = stub.requests
    assert op == "encrypt" and sent["name"] == GCP_KEY and sent["additional_authenticated_data"] == aad
    assert len(sent["plaintext"]) == 32 and sent["additional_authenticated_data_crc32c"] == google_crc32c.value(aad)
    outer = json.loads(open(path, encoding="utf-8").read())
    assert outer["kek"] == "gcp-kms://" + GCP_KEY
    forget_all()
    loaded = Keyset.load(path, kek=GcpKmsKek("gcp-kms://" + GCP_KEY, client=stub))
    assert loaded.keyset_id == keyset.keyset_id and loaded._Keyset__material == keyset._Keyset__material
    op, sent = stub.requests[-1]
    assert op == "decrypt" and sent["name"] == GCP_KEY and sent["additional_authenticated_data"] == aad
    assert sent["ciphertext"] == base64.b64decode(outer["wrapped_dek"])
    assert sent["ciphertext_crc32c"] == google_crc32c.value(sent["ciphertext"]) and len(stub.requests) == 2
    cases = [
        (exceptions.FailedPrecondition("projects/p/... is not enabled, plaintext=CANARY-QUOTE"), "FAILED_PRECONDITION"),
        (
            exceptions.PermissionDenied("Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' CANARY-QUOTE"),
            "PERMISSION_DENIED",
        ),
    ]
    for error, code in cases:
        forget_all()
        stub.fail = error
        with pytest.raises(KeysetError) as refused:
            Keyset.load(path, kek=GcpKmsKek("gcp-kms://" + GCP_KEY, client=stub))
        assert code in str(refused.value) and "CANARY-QUOTE" not in str(refused.value)
    stub.fail, stub.corrupt = None, True
    forget_all()
    with pytest.raises(KeysetError, match="integrity check"):
        Keyset.load(path, kek=GcpKmsKek("gcp-kms://" + GCP_KEY, client=stub))
    with pytest.raises(KeysetError, match="wrapped by gcp-kms://"):
        Keyset.load(path, kek=GcpKmsKek("gcp-kms://" + GCP_KEY.replace("keyset", "other"), client=stub))
