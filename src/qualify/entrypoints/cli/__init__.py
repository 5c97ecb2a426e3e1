"""The `qualify` command line. Every command calls one use case; output is a table or `--json`.

The commands live in modules by subject; importing them registers them on `app`, in the
order `qualify --help` lists them.
"""

# isort: off
from qualify.entrypoints.cli import workspace  # noqa: F401 - registers init, demo, examples
from qualify.entrypoints.cli import reading  # noqa: F401 - import, score, leads, lead, funnel, stage
from qualify.entrypoints.cli import lead_admin  # noqa: F401 - merge, export, erase
from qualify.entrypoints.cli import analytics  # noqa: F401 - rescore, backtest, report
from qualify.entrypoints.cli import service  # noqa: F401 - serve, keys, worker, webhooks
from qualify.entrypoints.cli import models  # noqa: F401 - model validate, activate, show
from qualify.entrypoints.cli import automation  # noqa: F401 - segments, workflows
from qualify.entrypoints.cli import crm  # noqa: F401 - crm connect, sync, status

# isort: on
from qualify.entrypoints.cli.base import app, tidy_help


def main() -> None:
    import typer

    command = typer.main.get_command(app)
    tidy_help(command)
    command(prog_name="qualify")


__all__ = ["app", "main"]
