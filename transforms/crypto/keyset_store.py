"""Where a keyset and the files beside it live: read, write and lock them at a local path or a URI.

``--keys`` is a local file or any URI Beam's FileSystems reads (``gs://``, ``s3://``, ...). Beside the keyset
are its registry (``KEYS.registry.json``), its lock (``KEYS.lock``) and, for a keyset at a URI, its audit
folder (``KEYS_DIR/audit/``).

* Local paths behave as they always did: a keyset file is refused unless it is private (mode 0600); writes
  go to a temporary file in the same folder, fsync, then a rename; the lock is an exclusive ``flock``.
* ``s3://`` goes through boto3, set up as Beam's S3 file system sets it up: on a worker from the pipeline's
  ``--s3_*`` options, else from the environment (``AWS_ENDPOINT_URL``, credentials, region).
* Everything else (``gs://``, ...) is read and written through Beam's FileSystems; the lock of a ``gs://``
  keyset goes through google-cloud-storage.

An object write is atomic on an object store: the object is replaced whole or not at all. There is no flock:
the lock is the object ``KEYS.lock``, created only if absent (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``), holding who took it and when, and deleted by its holder at the end. A command
that finds it waits up to ``LOCK_WAIT`` seconds, then stops in one line naming the holder and the object (a
holder that crashed leaves it: delete it once no ``backfill keys`` command runs). Stores without
conditional writes get no lock: changes to a keyset there are refused (reads work).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import tempfile
import threading
import time
import uuid

from transforms.crypto.keyset_support import KeysetError, check_permissions

__all__ = ["is_remote", "parent", "join", "read_bytes", "write_bytes", "append_bytes", "keyset_lock", "LOCK_WAIT"]

_clients: dict = {}  # boto3 clients, made once per process (a session costs about a second)
_clients_lock = threading.Lock()
LOCK_WAIT = 60.0  # seconds a command waits for a remote keyset's lock object
_POLL = 0.5
_S3_HINTS = {
    "NoSuchKey": "not found",
    "404": "not found",
    "NoSuchBucket": "no such bucket",
    "AccessDenied": "access denied",
    "403": "access denied",
    "InvalidAccessKeyId": "the credentials are not valid for this store",
    "SignatureDoesNotMatch": "the credentials are not valid for this store",
}


def is_remote(path: str) -> bool:
    return "://" in path


def parent(path: str) -> str:
    """The folder a keyset lies in: a URI's prefix, or the absolute local folder."""
    if is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


def join(folder: str, *names: str) -> str:
    if is_remote(folder):
        return "/".join([folder.rstrip("/"), *names])
    return os.path.join(folder, *names)


# -- s3:// through boto3 ------------------------------------------------------------------------------------
def _beam_s3_options() -> dict:
    """The ``--s3_*`` options a Beam worker (or a launcher after its pipeline began) was given, if any."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options
    from apache_beam.options.value_provider import RuntimeValueProvider

    options = FileSystems._pipeline_options or RuntimeValueProvider.runtime_options
    names = ("s3_endpoint_url", "s3_region_name", "s3_access_key_id", "s3_secret_access_key", "s3_session_token")
    if isinstance(options, PipelineOptions):
        view = options.view_as(S3Options)
        return {name: getattr(view, name, None) for name in names + ("s3_verify", "s3_disable_ssl")}
    if isinstance(options, dict):
        return {name: options.get(name) for name in names + ("s3_verify", "s3_disable_ssl")}
    return {}


def _s3():
    import boto3
    from botocore.config import Config

    o = _beam_s3_options()
    kwargs = {
        "endpoint_url": o.get("s3_endpoint_url"),
        "region_name": o.get("s3_region_name"),
        "aws_access_key_id": o.get("s3_access_key_id"),
        "aws_secret_access_key": o.get("s3_secret_access_key"),
        "aws_session_token": o.get("s3_session_token"),
        "verify": o.get("s3_verify"),
    }
    if o.get("s3_disable_ssl"):
        kwargs["use_ssl"] = False
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    key = ("s3", tuple(sorted(kwargs.items())), aws_environment())
    with _clients_lock:
        if key not in _clients:
            config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
            _clients[key] = boto3.session.Session().client("s3", config=config, **kwargs)
        return _clients[key]


def aws_environment() -> tuple:
    """The AWS_* environment a boto3 client was made under (a client is kept per process for each)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def _s3_code(exc: Exception) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None


def _why(exc: Exception) -> str:
    """A store error as a short reason: a code or a class name, never the client's message."""
    code = _s3_code(exc)
    if code:
        return f"{code}: {_S3_HINTS[code]}" if code in _S3_HINTS else code
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
        return "no credentials for this store"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return "the store cannot be reached (check AWS_ENDPOINT_URL and the network)"
    return name


def _missing(exc: Exception) -> bool:
    return _s3_code(exc) in ("NoSuchKey", "404", "NotFound") or type(exc).__name__ in ("NotFound", "FileNotFoundError")


# -- other URIs through Beam's FileSystems ------------------------------------------------------------------
def _filesystems():
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider

    if FileSystems._pipeline_options is None and RuntimeValueProvider.runtime_options is None:
        FileSystems.set_options(PipelineOptions([]))  # a launcher before its pipeline: defaults and the environment
    return FileSystems


def _read_remote(path: str) -> bytes | None:
    """The object's bytes; None when there is none."""
    if path.startswith("s3://"):
        bucket, key = _bucket_key(path)
        try:
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _missing(exc):
                return None
            raise
    from apache_beam.io.filesystem import CompressionTypes

    fs = _filesystems()
    try:
        with fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    except Exception:
        if not fs.exists(path):
            return None
        raise


def read_bytes(path: str, what: str = "keyset", *, missing_ok: bool = False) -> bytes | None:
    """A file's or object's bytes (a local keyset's permissions checked first); None when missing and
    ``missing_ok``; otherwise a one-line :class:`KeysetError`."""
    if not is_remote(path):
        if what == "keyset":
            check_permissions(path)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise KeysetError(f"{what} {path} not found") from None
        except OSError as exc:
            raise KeysetError(f"{what} {path} cannot be read ({exc.strerror})") from None
    try:
        data = _read_remote(path)
    except Exception as exc:  # (a client's message may quote its inputs)
        raise KeysetError(f"{what} {path} cannot be read ({_why(exc)})") from None
    if data is None and not missing_ok:
        hint = f" (create one with: backfill keys init --keys {path} --kek KEK)" if what == "keyset" else ""
        raise KeysetError(f"{what} {path} not found{hint}")
    return data


# -- writing ----------------------------------------------------------------------------------------------------
def _write_local(path: str, data: bytes, *, create_only: bool, what: str) -> None:
    """Atomically, mode 0600: a temporary file in the same folder, fsync, then a rename (or a hard link,
    which never replaces, for ``create_only``), then the folder is synced."""
    if what == "keyset" and os.path.islink(path):  # a rename would replace the link, not the keyset it names
        raise KeysetError(f"keyset {path} is a symbolic link: give --keys the file itself; nothing was written")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keyset-", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        if create_only:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        raise KeysetError(f"{what} {path} already exists (pass --force to replace it)") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_if_absent(path: str, data: bytes) -> bool:
    """Write the object only if there is none; False when one exists. Refused where it cannot be done."""
    if path.startswith("s3://"):
        bucket, key = _bucket_key(path)
        try:
            _s3().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as exc:
            if _s3_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise
        return True
    if path.startswith("gs://"):
        from google.api_core import exceptions
        from google.cloud import storage

        bucket, key = _bucket_key(path)
        try:
            storage.Client().bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True
    raise KeysetError(f"{path}: this store has no conditional write (s3:// and gs:// have): nothing was written")


def _write_remote(path: str, data: bytes) -> None:
    if path.startswith("s3://"):
        bucket, key = _bucket_key(path)
        _s3().put_object(Bucket=bucket, Key=key, Body=data)
        return
    from apache_beam.io.filesystem import CompressionTypes

    with _filesystems().create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def write_bytes(path: str, data: bytes, what: str = "keyset", *, create_only: bool = False) -> None:
    """Write a whole file or object atomically; ``create_only``: refuse when one exists."""
    if not is_remote(path):
        _write_local(path, data, create_only=create_only, what=what)
        return
    try:
        if create_only:
            if not _create_if_absent(path, data):
                raise KeysetError(f"{what} {path} already exists (pass --force to replace it)")
        else:
            _write_remote(path, data)
    except KeysetError:
        raise
    except Exception as exc:
        raise KeysetError(f"{what} {path} cannot be written ({_why(exc)}); nothing was written") from None


def append_bytes(path: str, data: bytes, what: str = "audit log") -> None:
    """Append to an object (read it, write it back with ``data`` after it): for a remote keyset's audit
    logs, always under the keyset's lock. A cut-off last line stays as it is."""
    old = read_bytes(path, what, missing_ok=True) or b""
    if old and not old.endswith(b"\n"):
        data = b"\n" + data
    write_bytes(path, old + data, what)


# -- the lock -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def keyset_lock(path: str):
    """One keyset change at a time: an exclusive flock on the local ``PATH.lock`` (the keyset must exist), or
    the lock object ``PATH.lock`` beside a remote keyset. Not re-entrant (a second lock in the same process
    waits for the first)."""
    if is_remote(path):
        with _object_lock(path):
            yield
        return
    check_permissions(path)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _object_lock(path: str):
    read_bytes(path)  # the keyset must exist (and be readable) before its lock is taken
    lock = path + ".lock"
    token = uuid.uuid4().hex
    stamp = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = json.dumps({"host": platform.node(), "pid": os.getpid(), "at": stamp, "token": token}).encode()
    deadline = time.monotonic() + LOCK_WAIT
    try:
        while not _create_if_absent(lock, body):
            if time.monotonic() > deadline:
                raise KeysetError(f"keyset {path} is locked {_holder(lock)}; {_stale_hint(lock)}")
            time.sleep(_POLL)
    except KeysetError:
        raise
    except Exception as exc:
        raise KeysetError(f"keyset {path}: its lock {lock} cannot be taken ({_why(exc)})") from None
    try:
        yield
    finally:
        _release(lock, token)


def _holder(lock: str) -> str:
    try:
        held = json.loads(read_bytes(lock, "lock", missing_ok=True) or b"{}")
        return f"by {held.get('host')} (pid {held.get('pid')}) since {held.get('at')}"
    except (KeysetError, ValueError, AttributeError):
        return "by another command"


def _stale_hint(lock: str) -> str:
    return f"waited {LOCK_WAIT:.0f} s; if no backfill keys command runs there, delete {lock}"


def _release(lock: str, token: str) -> None:
    """Delete the lock object if it is still ours (a lock someone deleted and another took is left alone)."""
    try:
        held = json.loads(read_bytes(lock, "lock", missing_ok=True) or b"{}")
        if held.get("token") != token:
            return
        if lock.startswith("s3://"):
            bucket, key = _bucket_key(lock)
            _s3().delete_object(Bucket=bucket, Key=key)
        else:
            _filesystems().delete([lock])
    except Exception:  # (the change is done; a lock left behind is reported by the next command)
        return
