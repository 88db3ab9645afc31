"""``turbocat templates load|official`` against real databases."""

from __future__ import annotations

from typer.testing import CliRunner

from turbocat.cli.main import app
from turbocat.config import Settings
from turbocat.services.templates import read_official_templates


def test_load_is_idempotent_and_official_lists_them(settings: Settings) -> None:
    env = {
        "TURBOCAT_DATABASE_URL": settings.resolved_database_url,
        "TURBOCAT_HOME": str(settings.home),
    }
    runner = CliRunner()
    first = runner.invoke(app, ["templates", "load"], env=env)
    assert first.exit_code == 0, first.output
    assert f"official templates: {len(read_official_templates())} changed" in first.output
    again = runner.invoke(app, ["templates", "load"], env=env)
    assert again.exit_code == 0, again.output
    assert "official templates: 0 changed; built-in components: 0 changed" in again.output
    listed = runner.invoke(app, ["templates", "official"], env=env)
    assert listed.exit_code == 0 and "Lead scoring" in listed.output
