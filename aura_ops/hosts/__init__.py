"""Hosts: the one seam through which aura-ops touches a machine (programs, files, services).

``base`` defines the ``Host`` protocol and the values it trades in; ``local`` is this machine;
``fake`` keeps files in memory for unit tests; ``inventory`` builds the hosts a configuration
names. Modules take a host as an argument; none constructs one on its own.
"""

from aura_ops.hosts.base import DEVNULL, PIPE, Command, FileStat, Host, Process, Result
from aura_ops.hosts.local import LocalHost, local_hostname, make_user_dirs, remember_user_umask, user_umask

__all__ = [
    "DEVNULL",
    "PIPE",
    "Command",
    "FileStat",
    "Host",
    "LocalHost",
    "Process",
    "Result",
    "local_hostname",
    "make_user_dirs",
    "remember_user_umask",
    "user_umask",
]
