"""The keyring: AES-256-GCM with key ids, associated data, key files, rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from turbocat.config import Settings
from turbocat.security import crypto
from turbocat.security.crypto import DecryptionFailed, Keyring, KeyringError, UnknownKey

ORG, ROW = uuid.uuid4(), uuid.uuid4()
AAD = crypto.row_aad(ORG, ROW)


def test_round_trip_and_blob_layout() -> None:
    ring = Keyring.generate()
    blob = ring.encrypt(b"hunter2", associated_data=AAD)
    assert ring.decrypt(blob, associated_data=AAD) == b"hunter2"
    key_id = ring.active_id.encode()
    assert blob[0] == 1 and blob[1] == len(key_id) and blob[2 : 2 + len(key_id)] == key_id
    assert len(blob) == 2 + len(key_id) + 12 + len(b"hunter2") + 16
    assert b"hunter2" not in blob
    assert crypto.key_id_of(blob) == ring.active_id
    # a fresh random nonce every time
    assert ring.encrypt(b"hunter2", associated_data=AAD) != blob


def test_json_helpers() -> None:
    ring = Keyring.generate()
    value = {"api_key": "sk-123", "nested": [1, 2]}
    assert ring.decrypt_json(ring.encrypt_json(value, AAD), AAD) == value


def test_wrong_associated_data_fails() -> None:
    ring = Keyring.generate()
    blob = ring.encrypt(b"secret", associated_data=AAD)
    with pytest.raises(DecryptionFailed, match="another row"):
        ring.decrypt(blob, associated_data=crypto.row_aad(ORG, uuid.uuid4()))
    with pytest.raises(DecryptionFailed):
        ring.decrypt(blob, associated_data=crypto.row_aad(uuid.uuid4(), ROW))


@pytest.mark.parametrize("position", [-1, -20, 30])
def test_tampering_fails(position: int) -> None:
    ring = Keyring.generate()
    blob = bytearray(ring.encrypt(b"a secret value", associated_data=AAD))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        ring.decrypt(bytes(blob), associated_data=AAD)


def test_malformed_blobs_fail_clearly() -> None:
    ring = Keyring.generate()
    for blob in (b"", b"\x02abc", b"\x01\x05abc", b"\x01\x00" + bytes(40)):
        with pytest.raises(DecryptionFailed):
            ring.decrypt(blob, associated_data=AAD)


def test_unknown_key_id_fails_with_a_clear_error() -> None:
    blob = Keyring.generate().encrypt(b"x", associated_data=AAD)
    other = Keyring.generate()
    with pytest.raises(UnknownKey, match=crypto.key_id_of(blob)) as info:
        other.decrypt(blob, associated_data=AAD)
    assert "not in this keyring" in str(info.value)


def test_rotation_keeps_old_blobs_decryptable() -> None:
    ring = Keyring.generate()
    old_blob = ring.encrypt(b"old", associated_data=AAD)
    rotated = ring.with_new_active_key()
    assert rotated.active_id != ring.active_id and set(rotated.ids) == {
        ring.active_id,
        rotated.active_id,
    }
    new_blob = rotated.encrypt(b"new", associated_data=AAD)
    assert crypto.key_id_of(new_blob) == rotated.active_id
    assert rotated.decrypt(old_blob, associated_data=AAD) == b"old"
    retired = rotated.without_inactive_keys()
    assert retired.ids == (rotated.active_id,)
    assert retired.decrypt(new_blob, associated_data=AAD) == b"new"
    with pytest.raises(UnknownKey):
        retired.decrypt(old_blob, associated_data=AAD)


def test_keyring_json_round_trip_and_validation() -> None:
    ring = Keyring.generate().with_new_active_key()
    again = Keyring.from_json(ring.to_json(), source="test")
    assert again.active_id == ring.active_id and again.ids == ring.ids
    blob = ring.encrypt(b"x", associated_data=AAD)
    assert again.decrypt(blob, associated_data=AAD) == b"x"
    for material in json.loads(ring.to_json())["keys"].values():
        assert material not in repr(ring)
    key = base64.b64encode(bytes(32)).decode()
    bad = [
        "not json",
        json.dumps({"keys": {"a": key}}),
        json.dumps({"active": "b", "keys": {"a": key}}),
        json.dumps({"active": "a", "keys": {"a": base64.b64encode(bytes(16)).decode()}}),
        json.dumps({"active": "a", "keys": {"a": "%%%"}}),
        json.dumps({"active": "a b", "keys": {"a b": key}}),
    ]
    for text in bad:
        with pytest.raises(KeyringError, match="test"):
            Keyring.from_json(text, source="test")


def _settings(tmp_path: Path, url: str = "") -> Settings:
    return Settings(home=tmp_path / "home", database_url=url or f"sqlite:///{tmp_path}/t.db")


def test_key_file_generated_for_the_embedded_setup_with_mode_0600(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ring = crypto.load_keyring(settings, environ={})
    path = tmp_path / "home" / "secret-keys.json"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["active"] == ring.active_id and list(doc["keys"]) == [ring.active_id]
    # loading again reads the same keys
    assert crypto.load_keyring(settings, environ={}).active_id == ring.active_id


def test_group_or_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    crypto.load_keyring(settings, environ={})
    path = crypto.key_file_path(settings)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match=r"chmod 600") as info:
        crypto.load_keyring(settings, environ={})
    assert str(path) in str(info.value) and "644" in str(info.value)
    os.chmod(path, 0o640)
    with pytest.raises(KeyringError):
        crypto.load_keyring(settings, environ={})


def test_postgres_deployments_must_provide_keys(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "postgresql://db.invalid/turbocat")
    with pytest.raises(KeyringError, match="turbocat secrets init"):
        crypto.load_keyring(settings, environ={})
    assert not crypto.key_file_path(settings).exists()


def test_keys_from_the_environment_win(tmp_path: Path) -> None:
    ring = Keyring.generate()
    settings = _settings(tmp_path)
    loaded = crypto.load_keyring(settings, environ={crypto.ENV_VAR: ring.to_json()})
    assert loaded.active_id == ring.active_id
    assert not crypto.key_file_path(settings).exists()
    with pytest.raises(KeyringError, match=crypto.ENV_VAR):
        crypto.load_keyring(settings, environ={crypto.ENV_VAR: "{}"})


def test_explicit_key_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "keys.json"
    ring = Keyring.generate()
    crypto.write_key_file(path, ring)
    settings = Settings(
        home=tmp_path / "home", database_url="postgresql://x/y", secret_key_file=path
    )
    assert crypto.load_keyring(settings, environ={}).active_id == ring.active_id


def test_source_reloads_when_the_file_changes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    source = crypto.KeyringSource(settings, environ={})
    first = source.get()
    assert source.get() is first
    rotated = first.with_new_active_key()
    crypto.write_key_file(crypto.key_file_path(settings), rotated)
    assert source.get().active_id == rotated.active_id


def test_every_sealed_column_is_registered_for_rotation() -> None:
    from turbocat.services import key_rotation

    names = {c.name for c in key_rotation.SEALED_COLUMNS}
    assert names == {
        "integrations.credentials_encrypted",
        "webhooks.signing_secrets_encrypted",
        "deployments.environment_vars_encrypted",
    }
    for column in key_rotation.SEALED_COLUMNS:
        assert column.key_id in column.table.c
        assert "organization_id" in column.table.c


def test_exclusive_write_never_replaces_existing_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = Keyring.generate()
    crypto.write_key_file(path, first, exclusive=True)
    with pytest.raises(FileExistsError):
        crypto.write_key_file(path, Keyring.generate(), exclusive=True)
    assert crypto.read_key_file(path).active_id == first.active_id
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary files left
