"""Entry point: ``turbocat <verb>``."""

from __future__ import annotations

import typer

import turbocat
from turbocat.cli import (
    admin,
    db,
    operations,
    resources,
    retention,
    run,
    scheduler,
    secrets,
    serve,
    templates,
    worker,
)

app = typer.Typer(
    name="turbocat",
    help="Build, run, deploy and govern AI-agent workflows.\n\n"
    "Settings come from TURBOCAT_* environment variables (TURBOCAT_DATABASE_URL, TURBOCAT_HOME, "
    "...) or $TURBOCAT_HOME/turbocat.toml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("scheduler")(scheduler.scheduler)
app.command("run")(run.run)
app.add_typer(db.app, name="db")
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.orgs_app, name="orgs")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.queues_app, name="queues")
app.add_typer(secrets.app, name="secrets")
app.add_typer(templates.app, name="templates")
app.add_typer(resources.workflows_app, name="workflows")
app.add_typer(resources.agents_app, name="agents")
app.command("api")(resources.api)
app.command("usage")(resources.usage)
app.command("doctor")(operations.doctor)
app.command("export")(operations.export)
app.command("import")(operations.import_)
app.add_typer(retention.app, name="retention")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(turbocat.__version__)


def main() -> None:
    app()
