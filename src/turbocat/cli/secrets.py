"""``turbocat secrets``: the keys that encrypt stored credentials, and their rotation.

Rotation without downtime, keys in a file (``$TURBOCAT_HOME/secret-keys.json``):

1. ``turbocat secrets rotate``: adds a new key, makes it active (the file is rewritten
   atomically; running processes reload it on their next use), and re-encrypts every sealed
   value in batches. Old keys stay in the file, so values not yet re-encrypted still open.
2. With several machines, copy the file to each of them.
3. ``turbocat secrets rotate --no-new-key --retire-old``: re-encrypts stragglers (values
   written by a process that had not reloaded yet), then drops the old keys once no row uses
   them. On one machine, ``turbocat secrets rotate --retire-old`` does both steps at once.

Keys from ``TURBOCAT_SECRET_KEYS`` are never written by turbocat: put a new key there as
active (``turbocat secrets init --print`` makes one), restart, run ``rotate --no-new-key``, and
``--retire-old`` prints the value to set once old keys are unused.
"""

from __future__ import annotations

import json
import os

import typer

from turbocat.cli.common import fail, run, settings_or_exit
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.security import crypto
from turbocat.services import key_rotation

app = typer.Typer(help="Credential encryption keys: create, inspect, rotate.", no_args_is_help=True)


def _from_env() -> bool:
    return bool(os.environ.get(crypto.ENV_VAR))


def _keyring(settings: Settings) -> crypto.Keyring:
    try:
        return crypto.load_keyring(settings, generate=False)
    except crypto.KeyringError as exc:
        raise fail(str(exc)) from exc


@app.command()
def init(
    print_: bool = typer.Option(
        False, "--print", help=f"Print new keys as JSON for {crypto.ENV_VAR} instead of a file"
    ),
) -> None:
    """Create the key file (mode 0600) if there is none; PostgreSQL deployments need this."""
    if print_:
        typer.echo(json.dumps(json.loads(crypto.Keyring.generate().to_json())))
        return
    settings = settings_or_exit()
    path = crypto.key_file_path(settings)
    if _from_env():
        raise fail(f"keys come from {crypto.ENV_VAR}; no file is needed")
    if path.exists():
        keyring = _keyring(settings)
        typer.echo(f"keys already at {path} (active key {keyring.active_id})")
        return
    keyring = crypto.Keyring.generate()
    crypto.write_key_file(path, keyring)
    typer.echo(f"wrote {path} (active key {keyring.active_id}); copy it to every machine")


@app.command()
def status() -> None:
    """Show the keys (never their material) and how many stored values use each."""
    settings = settings_or_exit()
    keyring = _keyring(settings)
    source = crypto.ENV_VAR if _from_env() else str(crypto.key_file_path(settings))
    usage = run(lambda: _usage(settings))
    columns = [c.name for c in key_rotation.SEALED_COLUMNS]
    typer.echo(f"keys from {source}")
    key_ids = list(keyring.ids) + sorted({u.key_id or "(none)" for u in usage} - set(keyring.ids))
    for key_id in key_ids:
        state = (
            "active"
            if key_id == keyring.active_id
            else ("old" if key_id in keyring.ids else "MISSING from the keyring")
        )
        counts = {
            c: sum(u.rows for u in usage if (u.key_id or "(none)") == key_id and u.column == c)
            for c in columns
        }
        rows = ", ".join(f"{c}: {n}" for c, n in counts.items())
        typer.echo(f"{key_id}  {state}  ({rows})")


async def _usage(settings: Settings) -> list[key_rotation.KeyUsage]:
    db = Database.from_settings(settings, app_role=False)
    try:
        return await key_rotation.key_usage(db)
    finally:
        await db.dispose()


async def _rotate(
    settings: Settings, keyring: crypto.Keyring, batch_size: int
) -> tuple[key_rotation.RotationReport, int]:
    db = Database.from_settings(settings, app_role=False)
    try:
        report = await key_rotation.rotate_credentials(db, keyring, batch_size=batch_size)
        remaining = await key_rotation.rows_not_using(db, keyring.active_id)
        return report, remaining
    finally:
        await db.dispose()


@app.command()
def rotate(
    retire_old: bool = typer.Option(
        False, "--retire-old", help="Afterwards drop the old keys, once no stored value uses them"
    ),
    new_key: bool = typer.Option(
        True,
        "--new-key/--no-new-key",
        help="Add a new active key first (--no-new-key: re-encrypt with the current active key)",
    ),
    batch_size: int = typer.Option(
        key_rotation.DEFAULT_BATCH_SIZE, min=1, max=10_000, help="Rows per transaction"
    ),
) -> None:
    """Re-encrypt every stored credential with the active key (optionally a new one)."""
    settings = settings_or_exit()
    keyring = _keyring(settings)
    path = crypto.key_file_path(settings)
    env = _from_env()
    if new_key:
        if env:
            raise fail(
                f"keys come from {crypto.ENV_VAR}, which turbocat cannot change: add a new key "
                "there as active, restart the processes, then run "
                "`turbocat secrets rotate --no-new-key`"
            )
        keyring = keyring.with_new_active_key()
        crypto.write_key_file(path, keyring)
        typer.echo(f"new active key {keyring.active_id} written to {path}")
    report, remaining = run(lambda: _rotate(settings, keyring, batch_size))
    for column, count in report.reencrypted.items():
        typer.echo(f"{column}: re-encrypted {count}")
    if report.skipped_concurrent:
        typer.echo(f"{report.skipped_concurrent} changed concurrently (already re-sealed)")
    for failure in report.failures:
        typer.echo(f"cannot re-encrypt {failure.column} {failure.row_id}: {failure.reason}")
    if report.failures:
        raise fail(f"{len(report.failures)} values could not be re-encrypted; old keys kept")
    if not retire_old:
        typer.echo(f"done; all values use key {keyring.active_id}" if remaining == 0 else
                      f"{remaining} values still use old keys")  # fmt: skip
        return
    if remaining:
        raise fail(f"{remaining} values still use old keys (written meanwhile); run again")
    retired = [k for k in keyring.ids if k != keyring.active_id]
    kept = keyring.without_inactive_keys()
    if env:
        typer.echo(f"set {crypto.ENV_VAR} to the following, then restart the processes:")
        typer.echo(json.dumps(json.loads(kept.to_json())))
        return
    crypto.write_key_file(path, kept)
    typer.echo(f"retired {', '.join(retired) or 'no keys'}; {path} keeps {kept.active_id}")
