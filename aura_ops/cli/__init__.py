"""The command line: parsing, confirmation, output; the one place errors become exit codes.

``base`` holds the group, the common options, the shared output helpers and ``main`` (the edge);
each other module registers one group of commands on it when imported here.
"""

from aura_ops.cli import deploy, doctor, retention, runs, snapshots, space  # noqa: F401 - each registers its commands
from aura_ops.cli.base import cli, main, run

__all__ = ["cli", "main", "run"]
