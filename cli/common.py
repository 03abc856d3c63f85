"""What every `playbook` command module shares: exit codes, the usage-problem
exception, and the options that mean the same thing everywhere.

A leaf module on purpose. `Fail` used to live in cli.main, which each command
module could only import lazily (cli.main imports them at its end), and under
`python -m cli.main` that import made a second module with its own `Fail`
class the running guard did not catch. Defined here, there is one class.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
# A store or server (database, Temporal) could not be reached: the environment,
# not the input and not a bug. Retried first where a retry can help.
EXIT_UNREACHABLE = 4


class Fail(Exception):
    """A usage problem found inside a command (exit 2), reported like click's."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class TextOrJson(str, enum.Enum):
    text = "text"
    json = "json"


DbOpt = Annotated[str | None, typer.Option(
    "--db", "--database", help="Store URL [env PLAYBOOK_DATABASE_URL; default .playbook/playbook.db].",
    show_default=False)]
