"""Encryption at rest: a keyring of AES-256-GCM keys, each known by an id.

A sealed value is self-describing, so keys can rotate while old values stay readable::

    version (1 byte, 0x01) | id length (1 byte) | key id (ASCII) | nonce (12 random bytes)
    | ciphertext + GCM tag (16 bytes)

The associated data binds a value to where it is stored (``row_aad``: organization id and row
id), so a ciphertext copied into another row, or another tenant, fails to decrypt (SPEC 10).

Keys come from ``TURBOCAT_SECRET_KEYS`` (JSON) or from the key file
(``settings.secret_key_file``, default ``$TURBOCAT_HOME/secret-keys.json``), both shaped
``{"active": "<id>", "keys": {"<id>": "<base64 of 32 bytes>"}}``. The embedded setup (SQLite)
generates the file on first use with mode 0600; a PostgreSQL deployment must provide the keys
(``turbocat secrets init``), since every API and worker process has to share them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from turbocat.config import Settings

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
ENV_VAR = "TURBOCAT_SECRET_KEYS"
KEY_FILE_NAME = "secret-keys.json"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CryptoError(Exception):
    """Root of the errors of this module; messages never contain key material or plaintext."""


class KeyringError(CryptoError):
    """The keys cannot be loaded or are malformed (a configuration problem)."""


class UnknownKey(CryptoError):
    """A value was sealed with a key that is not in this keyring."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"the value was encrypted with key {key_id!r}, which is not in this keyring; "
            f"restore that key to {ENV_VAR} or the key file (it may have been retired too early)"
        )
        self.key_id = key_id


class DecryptionFailed(CryptoError):
    """The value is corrupt, was tampered with, or belongs to another row (associated data)."""


def row_aad(organization_id: uuid.UUID, row_id: uuid.UUID) -> bytes:
    """Associated data of a value stored in a tenant's row: it only opens in that row."""
    return f"turbocat:org={organization_id}:row={row_id}".encode()


def new_key_id() -> str:
    return "k" + secrets.token_hex(8)


class Keyring:
    """Immutable set of AES-256-GCM keys by id; one of them (``active_id``) seals new values."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyringError(f"the active key {active!r} is not among the keys")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise KeyringError(
                    f"key id {key_id!r} must be 1-64 characters of letters, digits, '.', '_', '-'"
                )
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes (AES-256)")
        self._keys = dict(keys)
        self._active = active
        self._ciphers = {key_id: AESGCM(key) for key_id, key in self._keys.items()}

    def __repr__(self) -> str:  # never the key material
        return f"Keyring(active={self._active!r}, ids={list(self._keys)!r})"

    @classmethod
    def generate(cls) -> Keyring:
        key_id = new_key_id()
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id)

    @property
    def active_id(self) -> str:
        return self._active

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def with_new_active_key(self) -> Keyring:
        """A copy with a fresh key made active; the old keys stay for decryption."""
        key_id = new_key_id()
        return Keyring({**self._keys, key_id: AESGCM.generate_key(bit_length=256)}, key_id)

    def without_inactive_keys(self) -> Keyring:
        """A copy holding only the active key (after every value was re-encrypted with it)."""
        return Keyring({self._active: self._keys[self._active]}, self._active)

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self._active.encode("ascii")
        sealed = self._ciphers[self._active].encrypt(nonce, plaintext, associated_data)
        return bytes([VERSION, len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, blob: bytes, *, associated_data: bytes) -> bytes:
        key_id, nonce, sealed = _parse(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKey(key_id)
        try:
            return cipher.decrypt(nonce, sealed, associated_data)
        except InvalidTag as exc:
            raise DecryptionFailed(
                "the value does not decrypt: it was altered or belongs to another row"
            ) from exc

    def encrypt_json(self, obj: Any, aad: bytes) -> bytes:
        data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        return self.encrypt(data, associated_data=aad)

    def decrypt_json(self, blob: bytes, aad: bytes) -> Any:
        return json.loads(self.decrypt(blob, associated_data=aad))

    def to_json(self) -> str:
        keys = {k: base64.b64encode(v).decode("ascii") for k, v in self._keys.items()}
        return json.dumps({"active": self._active, "keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Keyring:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise KeyringError(f"{source} is not valid JSON") from exc
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("active"), str)
            or not isinstance(doc.get("keys"), dict)
        ):
            raise KeyringError(
                f'{source} must be {{"active": "<key id>", "keys": {{"<key id>": "<base64>"}}}}'
            )
        keys: dict[str, bytes] = {}
        for key_id, encoded in doc["keys"].items():
            try:
                keys[str(key_id)] = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KeyringError(f"{source}: key {key_id!r} is not valid base64") from exc
        try:
            return cls(keys, doc["active"])
        except KeyringError as exc:
            raise KeyringError(f"{source}: {exc}") from exc


def key_id_of(blob: bytes) -> str:
    """The id of the key that sealed ``blob``."""
    return _parse(blob)[0]


def _parse(blob: bytes) -> tuple[str, bytes, bytes]:
    if len(blob) < 2 or blob[0] != VERSION:
        raise DecryptionFailed("not a turbocat encrypted value (unknown format version)")
    id_len = blob[1]
    start = 2 + id_len
    if id_len == 0 or len(blob) < start + NONCE_BYTES + TAG_BYTES:
        raise DecryptionFailed("the encrypted value is truncated")
    try:
        key_id = blob[2:start].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecryptionFailed("the encrypted value has a malformed key id") from exc
    return key_id, blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]


# --- where the keys live -------------------------------------------------------------------


def key_file_path(settings: Settings) -> Path:
    return (settings.secret_key_file or settings.home / KEY_FILE_NAME).expanduser()


def is_embedded(settings: Settings) -> bool:
    return settings.resolved_database_url.startswith("sqlite")


def read_key_file(path: Path) -> Keyring:
    """Load a key file, refusing one that others than its owner could read."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise KeyringError(f"the key file {path} does not exist") from exc
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(
            f"the key file {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); it holds the keys to every stored credential. "
            f"Run: chmod 600 {path}"
        )
    return Keyring.from_json(path.read_text(encoding="utf-8"), source=str(path))


def write_key_file(path: Path, keyring: Keyring, *, exclusive: bool = False) -> None:
    """Write atomically with mode 0600 (a temporary file in the same folder, then rename).

    ``exclusive`` refuses to replace an existing file (``FileExistsError``), so two processes
    generating keys at once cannot overwrite each other's.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".secret-keys-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(keyring.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_keyring(
    settings: Settings, *, environ: Mapping[str, str] | None = None, generate: bool | None = None
) -> Keyring:
    """The keyring from ``TURBOCAT_SECRET_KEYS`` or the key file.

    A missing file is generated when ``generate`` is true (default: only for the embedded
    SQLite setup); otherwise the error says how to provide the keys.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_VAR)
    if raw:
        return Keyring.from_json(raw, source=ENV_VAR)
    path = key_file_path(settings)
    if path.exists():
        return read_key_file(path)
    if generate if generate is not None else is_embedded(settings):
        keyring = Keyring.generate()
        try:
            write_key_file(path, keyring, exclusive=True)
        except FileExistsError:  # another process generated them first: use theirs
            return read_key_file(path)
        return keyring
    raise KeyringError(
        f"no credential encryption keys: {path} does not exist and {ENV_VAR} is unset. "
        "Every API and worker process must share the same keys: run `turbocat secrets init` "
        f"once and copy the file to each machine, or set {ENV_VAR}."
    )


class KeyringSource:
    """The process's keyring, loaded on first use and reloaded when the key file changes.

    Reloading lets running processes pick up a key added by ``turbocat secrets rotate``
    without a restart (keys from the environment only change with a restart). Loading lazily
    keeps processes that never touch a credential free of key set-up.
    """

    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._environ = environ
        self._keyring: Keyring | None = None
        self._fixed = False
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def _from_env(self) -> bool:
        env = os.environ if self._environ is None else self._environ
        return bool(env.get(ENV_VAR))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = key_file_path(self._settings).stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def get(self) -> Keyring:
        with self._lock:
            if self._keyring is not None and (
                self._fixed or self._from_env() or self._file_stamp() == self._stamp
            ):
                return self._keyring
            # the stamp is taken first: a change during the load triggers another load later
            stamp = None if self._from_env() else self._file_stamp()
            self._keyring = load_keyring(self._settings, environ=self._environ)
            self._stamp = stamp if stamp is not None else self._file_stamp()
            return self._keyring

    def set(self, keyring: Keyring) -> None:
        """Use ``keyring`` from now on, whatever the file says (tests, tools)."""
        with self._lock:
            self._keyring = keyring
            self._fixed = True


__all__ = [
    "ENV_VAR",
    "CryptoError",
    "DecryptionFailed",
    "Keyring",
    "KeyringError",
    "KeyringSource",
    "UnknownKey",
    "is_embedded",
    "key_file_path",
    "key_id_of",
    "load_keyring",
    "read_key_file",
    "row_aad",
    "write_key_file",
]
