"""The hosts a configuration names: built once per command and passed down.

``local`` is built in (this machine). Entries under ``hosts:`` with ``local: true`` are this
machine under another name (the name shows in logs and errors). Remote entries are refused by the
configuration's checks until the SSH host lands; asking for one here is a usage error.
"""

from __future__ import annotations

from collections.abc import Mapping

from aura_ops.config import Config
from aura_ops.errors import ConfigError
from aura_ops.hosts.base import Host
from aura_ops.hosts.local import LocalHost

LOCAL = "local"


class Inventory:
    """Host objects by name, made on first use and shared by everything in one command.

    ``hosts`` hands out pre-built hosts by name instead of making them (a unit test's
    ``FakeHost``: ``Inventory(config, hosts={"local": fake})``); names it does not hold are made
    from the configuration as usual."""

    def __init__(self, config: Config, hosts: Mapping[str, Host] | None = None) -> None:
        self._config = config
        self._hosts: dict[str, Host] = dict(hosts or {})

    def get(self, name: str = LOCAL) -> Host:
        """The host called ``name`` in the configuration (``local``: this machine)."""
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = self._make(name)
        return host

    def local(self) -> Host:
        return self.get(LOCAL)

    def for_component(self, component: str) -> Host:
        """The host the named component lives on."""
        return self.get(self._config.component(component).host)

    def _make(self, name: str) -> Host:
        if name == LOCAL:
            return LocalHost(LOCAL)
        entry = self._config.hosts.get(name)
        if entry is None:
            known = ", ".join(sorted(self._config.hosts)) or "none"
            raise ConfigError(f"unknown host {name!r} (configured: local, {known})")
        if entry.local:
            return LocalHost(name)
        raise ConfigError(f"host {name!r}: remote hosts are not supported yet; use a local host")
