"""The command line: parsing, confirmation, output; the one place errors become exit codes."""

from aura_ops.cli.commands import cli, main

__all__ = ["cli", "main"]
