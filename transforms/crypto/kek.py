"""Key-encryption keys (KEKs): wrap and unwrap a keyset's data-encryption key.

A wrapped keyset (``transforms/crypto/keyset_sealed.py``) is sealed under a fresh 32-byte data key; the KEK
wraps only that data key, bound to the keyset by a context (``{"format": ..., "keyset_id": ...}``: AWS KMS's
encryption context, Cloud KMS's additional authenticated data, the local KEK's AES-GCM associated data).
Three kinds, named by URI (the wrapped keyset names its KEK, so later commands need only the keyset)::

    gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K    Cloud KMS (google-cloud-kms)
    aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID                 the AWS KMS API (boto3); the endpoint is
                                                                AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL
    local-kek:///abs/path/kek.b64                               a local file, mode 0600: 32 random bytes,
                                                                base64, one line (the embedded default)

Every failure is a :class:`KeysetError` of one line naming the KEK and the kind of failure (an error code,
never a client's message, which may quote its inputs).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from typing import Protocol

from transforms.crypto.keyset_support import KeysetError, check_permissions

__all__ = ["Kek", "kek_for", "create_local_kek", "LocalKek", "AwsKmsKek", "GcpKmsKek", "KEK_SCHEMES"]

KEK_SCHEMES = ("gcp-kms://", "aws-kms://", "local-kek://")
_AWS_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:kms:([a-z0-9-]+):\d{12}:(?:key|alias)/[A-Za-z0-9/_+=.@-]+")
_GCP_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_DEK_BYTES = 32
_NONCE = 12


class Kek(Protocol):
    """A key-encryption key: ``uri`` names it; ``wrap``/``unwrap`` a data key bound to ``context``."""

    uri: str

    def wrap(self, dek: bytes, context: dict[str, str]) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes: ...


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode("utf-8")


def kek_for(uri: str) -> Kek:
    """The KEK a URI names (no network call yet); a URI of no known kind is an error."""
    uri = (uri or "").strip()
    if uri.startswith("local-kek://"):
        return LocalKek(uri)
    if uri.startswith("aws-kms://"):
        return AwsKmsKek(uri)
    if uri.startswith("gcp-kms://"):
        return GcpKmsKek(uri)
    raise KeysetError(
        f"key-encryption key {uri or '(empty)'}: give gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K, "
        "aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID or local-kek:///path/to/kek.b64"
    )


# -- local ----------------------------------------------------------------------------------------------------
def local_kek_uri(path: str) -> str:
    """``local-kek://`` and the absolute path (a relative one would depend on the working directory)."""
    return "local-kek://" + os.path.abspath(path)


def create_local_kek(uri: str) -> bool:
    """Create the file of a ``local-kek://`` URI (mode 0600, 32 random bytes, base64) unless it exists; True
    when it was created. Never replaces a file."""
    path = LocalKek(uri).path
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise KeysetError(f"key-encryption key {uri} cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(_DEK_BYTES)) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


class LocalKek:
    """AES-256-GCM under a key in a local file (mode 0600); the wrapped data key is nonce || ciphertext."""

    def __init__(self, uri: str):
        path = uri[len("local-kek://") :]
        if not path or "://" in path:
            raise KeysetError(f"key-encryption key {uri}: local-kek:// takes a local file path")
        self.path = os.path.abspath(path)
        self.uri = "local-kek://" + self.path

    def _aead(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            check_permissions(self.path, what="key-encryption key")
            with open(self.path, "rb") as handle:
                key = base64.b64decode(handle.read().strip(), validate=True)
        except KeysetError:
            raise
        except (OSError, ValueError, binascii.Error):
            raise KeysetError(f"key-encryption key {self.uri} cannot be read as 32 bytes of base64") from None
        if len(key) != _DEK_BYTES:
            raise KeysetError(f"key-encryption key {self.uri} cannot be read as 32 bytes of base64")
        return AESGCM(key)

    def wrap(self, dek: bytes, context: dict[str, str]) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead().encrypt(nonce, dek, _aad(context))

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        from cryptography.exceptions import InvalidTag

        aead = self._aead()
        try:
            return aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _aad(context))
        except (InvalidTag, ValueError):
            raise KeysetError(
                f"key-encryption key {self.uri} does not open this keyset (wrapped by another key, or altered)"
            ) from None


# -- AWS KMS API ----------------------------------------------------------------------------------------------
_AWS_HINTS = {
    "DisabledException": "the key is disabled",
    "KMSInvalidStateException": "the key is not usable (pending deletion or import)",
    "NotFoundException": "no such key",
    "AccessDeniedException": "access denied (kms:Encrypt / kms:Decrypt on this key)",
    "IncorrectKeyException": "the keyset was wrapped by another key",
    "InvalidCiphertextException": "wrapped by another key, or the wrapped keyset was altered",
    "UnrecognizedClientException": "the credentials are not valid for this KMS",
    "InvalidSignatureException": "the credentials are not valid for this KMS",
}


_aws_clients: dict = {}
_aws_lock = threading.Lock()


def _aws_kms_client(region: str):
    """A boto3 KMS client, one per process, region and AWS_* environment (a session costs about a second)."""
    import boto3
    from botocore.config import Config

    from transforms.crypto.keyset_store import aws_environment

    key = (region, aws_environment())
    with _aws_lock:
        if key not in _aws_clients:
            config = Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
            _aws_clients[key] = boto3.session.Session().client("kms", region_name=region, config=config)
        return _aws_clients[key]


class AwsKmsKek:
    """A symmetric key behind the AWS KMS API (AWS, or any service speaking it: the endpoint comes from
    ``AWS_ENDPOINT_URL_KMS`` or ``AWS_ENDPOINT_URL``, credentials from boto3's usual chain)."""

    def __init__(self, uri: str, client=None):
        arn = uri[len("aws-kms://") :]
        match = _AWS_ARN.fullmatch(arn)
        if not match:
            raise KeysetError(
                f"key-encryption key {uri}: aws-kms:// takes a key ARN, arn:aws:kms:REGION:ACCOUNT:key/ID"
            )
        self.uri, self.arn, self.region = uri, arn, match.group(1)
        self._client = client

    def _kms(self):
        if self._client is None:
            self._client = _aws_kms_client(self.region)
        return self._client

    def _fail(self, op: str, exc: Exception) -> KeysetError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        if code:
            why = f"{code}: {_AWS_HINTS[code]}" if code in _AWS_HINTS else code
        elif type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            why = "no AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role)"
        elif type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
            why = "the KMS cannot be reached (check AWS_ENDPOINT_URL and the network)"
        else:
            why = type(exc).__name__
        return KeysetError(f"the KMS could not {op} with key-encryption key {self.uri} ({why})")

    def check(self) -> None:
        """Before a keyset is written: refuse a key whose state is not Enabled (when DescribeKey is allowed)."""
        try:
            meta = self._kms().describe_key(KeyId=self.arn)["KeyMetadata"]
        except Exception as exc:  # (kms:DescribeKey may be denied: Encrypt then tells)
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "AccessDeniedException":
                return
            raise self._fail("encrypt", exc) from None
        state, usage = meta.get("KeyState"), meta.get("KeyUsage")
        if state != "Enabled" or (usage and usage != "ENCRYPT_DECRYPT"):
            why = f"key state {state}" if state != "Enabled" else f"key usage {usage}, not ENCRYPT_DECRYPT"
            raise KeysetError(f"the KMS could not encrypt with key-encryption key {self.uri} ({why})")

    def wrap(self, dek: bytes, context: dict[str, str]) -> bytes:
        self.check()
        try:
            return self._kms().encrypt(KeyId=self.arn, Plaintext=dek, EncryptionContext=context)["CiphertextBlob"]
        except Exception as exc:  # (the client's message may quote its inputs)
            raise self._fail("encrypt", exc) from None

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        try:
            reply = self._kms().decrypt(CiphertextBlob=wrapped, KeyId=self.arn, EncryptionContext=context)
        except Exception as exc:
            raise self._fail("decrypt", exc) from None
        return reply["Plaintext"]


def _crc_ok(crc, data: bytes) -> bool:
    import google_crc32c

    return crc is not None and int(crc) == google_crc32c.value(bytes(data))


# -- Cloud KMS ------------------------------------------------------------------------------------------------
class GcpKmsKek:
    """A Cloud KMS symmetric key (its primary version encrypts; the version that did decrypts), with the
    CRC32C integrity checks Cloud KMS recommends on both ways."""

    def __init__(self, uri: str, client=None):
        name = uri[len("gcp-kms://") :]
        if not _GCP_NAME.fullmatch(name):
            raise KeysetError(
                f"key-encryption key {uri}: gcp-kms:// takes projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        self.uri, self.name = uri, name
        self._client = client

    def _kms(self):
        if self._client is None:
            from google.cloud import kms

            self._client = kms.KeyManagementServiceClient()
        return self._client

    def _fail(self, op: str, exc: Exception) -> KeysetError:
        code = getattr(exc, "grpc_status_code", None)  # google.api_core's errors: the gRPC status
        name = getattr(code, "name", None) or type(exc).__name__
        if type(exc).__name__ == "DefaultCredentialsError":
            name = "no Google credentials (GOOGLE_APPLICATION_CREDENTIALS or the metadata server)"
        return KeysetError(f"Cloud KMS could not {op} with key-encryption key {self.uri} ({name})")

    def wrap(self, dek: bytes, context: dict[str, str]) -> bytes:
        import google_crc32c

        aad = _aad(context)
        request = {
            "name": self.name,
            "plaintext": dek,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": google_crc32c.value(dek),
            "additional_authenticated_data_crc32c": google_crc32c.value(aad),
        }
        try:
            reply = self._kms().encrypt(request=request, timeout=60)
        except Exception as exc:  # (the client's message may quote its inputs)
            raise self._fail("encrypt", exc) from None
        if not (
            reply.verified_plaintext_crc32c
            and reply.verified_additional_authenticated_data_crc32c
            and _crc_ok(reply.ciphertext_crc32c, reply.ciphertext)
            and reply.name.startswith(self.name + "/")
        ):
            raise KeysetError(f"Cloud KMS could not encrypt with key-encryption key {self.uri} (integrity check)")
        return bytes(reply.ciphertext)

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        import google_crc32c

        aad = _aad(context)
        request = {
            "name": self.name,
            "ciphertext": wrapped,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": google_crc32c.value(wrapped),
            "additional_authenticated_data_crc32c": google_crc32c.value(aad),
        }
        try:
            reply = self._kms().decrypt(request=request, timeout=60)
        except Exception as exc:
            raise self._fail("decrypt", exc) from None
        if not _crc_ok(reply.plaintext_crc32c, reply.plaintext):
            raise KeysetError(f"Cloud KMS could not decrypt with key-encryption key {self.uri} (integrity check)")
        return bytes(reply.plaintext)
