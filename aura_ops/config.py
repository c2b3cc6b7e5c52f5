"""aura.yaml: loaded, validated as a whole (every problem reported with its path), then trusted.

Secrets never live in the file: a component names the environment variable or the file that
holds them (``dsn_env``, ``password_env``, ``password_file``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from aura_ops import yamlfile
from aura_ops.errors import ConfigError

if TYPE_CHECKING:
    from aura_ops.repository.space import Reserve
    from aura_ops.retention import policy as retention_policy

DEFAULT_CONFIG = "aura.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_items() -> list[Any]:
    """An empty list, the default of a list field. (A function of ours, not ``list``: pydantic
    reads a default factory's signature, and a builtin's is parsed from its text signature
    with tokenize and ast, about 1-2 ms each at every start.)"""
    return []


def _no_entries() -> dict[str, Any]:
    """An empty mapping, the default of a mapping field (see ``_no_items``)."""
    return {}


DEFAULT_RESERVE = "5%"


class RepositoryConfig(_Model):
    """Where snapshots are kept. ``reserve``: the free space a backup (or the snapshot a deploy or
    playbook takes) must leave on the repository's disk, else it is refused before anything is
    written: a size (``1GiB``, ``500MB``; 0: only the estimate must fit) or a percentage of the
    disk's size (``5%``, the default: like ext4's blocks reserved for root, and on top of them)."""

    path: Path
    reserve: str | int = DEFAULT_RESERVE

    @field_validator("reserve", mode="before")
    @classmethod
    def _reserve(cls, value: Any) -> Any:
        from aura_ops.repository import space

        space.parse_reserve(value)
        return value

    def reserve_setting(self) -> Reserve:
        """The reserve, parsed."""
        from aura_ops.repository import space

        return space.parse_reserve(self.reserve)


class HostConfig(_Model):
    local: bool = False
    address: str | None = None
    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    key: Path | None = None
    known_hosts: Path | None = None


class PostgresConfig(_Model):
    """A PostgreSQL database, dumped with pg_dump (directory format, parallel)."""

    type: Literal["postgres"]
    host: str = "local"
    dsn_env: str | None = None
    dsn: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    jobs: int | None = Field(None, ge=1, le=64)
    compression_level: int = Field(1, ge=1, le=19)
    checksums: bool = False
    globals: bool = True
    bin_dir: Path | None = None
    maintenance_db: str = "postgres"
    restore_in_place: Literal["swap", "clean"] = "swap"
    connect_timeout: int = Field(10, ge=1)
    connect_attempts: int = Field(3, ge=1, le=20)

    @field_validator("dsn")
    @classmethod
    def _no_password_in_yaml(cls, value: str | None) -> str | None:
        from aura_ops.secrets import mask

        if value and mask(value) != value:
            raise ValueError("must not contain a password; use dsn_env, password_env or password_file")
        return value


class FilesConfig(_Model):
    """A file tree, snapshotted as a browsable tree with unchanged files hard-linked."""

    type: Literal["files"]
    host: str = "local"
    path: Path
    exclude: list[str] = Field(default_factory=_no_items)
    ignore_ctime: bool = False  # unchanged: same size, mtime, inode, mode, owner, xattrs (restic's --ignore-ctime)


class ReleaseConfig(_Model):
    """Code releases, Capistrano-style: ``<path>/releases/<version>/`` and a ``current`` symlink."""

    type: Literal["release"]
    host: str = "local"
    path: Path
    keep: int = Field(5, ge=2, le=100)


class DockerConfig(_Model):
    """Containers on a Docker engine, chosen by name, by label, or as Compose services."""

    type: Literal["docker"]
    host: str = "local"
    url: str | None = None
    containers: list[str] = Field(default_factory=_no_items)
    label: str | None = None
    compose_project: str | None = None
    compose_services: list[str] = Field(default_factory=_no_items)
    timeout: float = Field(60, gt=0)
    settle: float = Field(1.0, ge=0)
    log_lines: int = Field(20, ge=0, le=1000)

    @model_validator(mode="after")
    def _one_selector(self) -> DockerConfig:
        chosen = [bool(self.containers), bool(self.label), bool(self.compose_project)]
        if sum(chosen) != 1:
            raise ValueError("choose containers by exactly one of containers, label or compose_project")
        if self.compose_services and not self.compose_project:
            raise ValueError("compose_services needs compose_project")
        return self


ComponentConfig = Annotated[PostgresConfig | FilesConfig | ReleaseConfig | DockerConfig, Field(discriminator="type")]


class _Check(_Model):
    """What every check has: a name for messages, and how long and how often to retry it."""

    name: str | None = None
    deadline: float = Field(30, gt=0)
    delay: float = Field(0, ge=0)
    interval: float = Field(1, gt=0)


class HttpCheck(_Check):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    expect_status: int = Field(200, ge=100, le=599)
    body_contains: str | None = None
    timeout: float = Field(5, gt=0)


class TcpCheck(_Check):
    type: Literal["tcp"]
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    timeout: float = Field(3, gt=0)


class CommandCheck(_Check):
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(10, gt=0)


class SqlCheck(_Check):
    type: Literal["sql"]
    component: str
    query: str
    expect: str | None = None
    timeout: float = Field(5, gt=0)


class ContainerCheck(_Check):
    """The containers of a docker component (or only ``containers``) are running, and healthy
    when they have a Docker healthcheck."""

    type: Literal["container"]
    component: str
    containers: list[str] = Field(default_factory=_no_items)


CheckConfig = Annotated[HttpCheck | TcpCheck | CommandCheck | SqlCheck | ContainerCheck, Field(discriminator="type")]


CHECK_TYPES = ("http", "tcp", "command", "sql", "container")


class DeployConfig(_Model):
    """Which components a deploy drives (each defaults to the only one of its type)."""

    release: str | None = None
    services: str | None = None
    database: str | None = None
    migrate: list[str] = Field(default_factory=_no_items)
    # a same-server clone of the database kept while services are stopped, swapped back in
    # seconds on a rollback within the run; "required" fails the deploy when it cannot be made
    fast_rollback: Literal["auto", "required", "off"] = "auto"
    fast_rollback_wait: float = Field(default=10.0, ge=0)  # seconds for other sessions to leave before cloning

    @field_validator("fast_rollback", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true)
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value


class StateConfig(_Model):
    path: Path = Path("state")


class LoggingConfig(_Model):
    dir: Path = Path("logs")
    level: Literal["debug", "info", "warning", "error"] = "info"


def _keep_count(value: Any) -> Any:
    from aura_ops.retention import policy as retention_policy  # (imported when used: a restore never is)

    if value == "unlimited":
        return retention_policy.UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a count (0 or more) or 'unlimited'")
    return value


KeepCount = Annotated[int, BeforeValidator(_keep_count)]


class RetentionPolicyConfig(_Model):
    """Which snapshots a prune keeps, as restic's ``forget --keep-*`` (see aura_ops.retention);
    no keep_* at all keeps everything. A keep_tags item is a tag or a list of tags that must all
    be present (``""``: untagged)."""

    keep_last: KeepCount = 0
    keep_hourly: KeepCount = 0
    keep_daily: KeepCount = 0
    keep_weekly: KeepCount = 0
    keep_monthly: KeepCount = 0
    keep_yearly: KeepCount = 0
    keep_within: str | None = None
    keep_tags: list[str | list[str]] = Field(default_factory=_no_items)

    @field_validator("keep_within", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        from aura_ops.retention import policy as retention_policy

        if value is None:
            return None
        return str(retention_policy.parse_duration(value if isinstance(value, str) else repr(value)))

    @field_validator("keep_tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [None]:
            tags = [item] if isinstance(item, str) else item
            if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
                raise ValueError("expected a list whose items are a tag or a list of tags (all must be present)")
            if "" in tags and len(tags) > 1:
                raise ValueError("'' (a snapshot without tags) stands alone, not in a list with other tags")
        return value

    def policy(self) -> retention_policy.Policy:
        from aura_ops.retention import policy as retention_policy

        return retention_policy.Policy(
            last=self.keep_last,
            hourly=self.keep_hourly,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
            within=retention_policy.parse_duration(self.keep_within) if self.keep_within else None,
            tags=tuple(frozenset([item] if isinstance(item, str) else item) for item in self.keep_tags),
        )


class RetentionConfig(RetentionPolicyConfig):
    """The policy for every component, or per component: an entry in ``components`` replaces
    the top-level keep_* for that component entirely. Buckets and keep_within follow the
    calendar of ``timezone`` (an IANA name)."""

    timezone: str = "UTC"
    components: dict[str, RetentionPolicyConfig] = Field(default_factory=_no_entries)
    auto: bool = False  # prune after each `backup` and each deploy

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from aura_ops.retention import policy as retention_policy

        retention_policy.time_zone(value)
        return value

    def retention(self) -> retention_policy.Retention:
        from aura_ops.retention import policy as retention_policy

        components = {name: entry.policy() for name, entry in self.components.items()}
        return retention_policy.Retention(self.policy(), components, retention_policy.time_zone(self.timezone))


class Config(_Model):
    repository: RepositoryConfig
    hosts: dict[str, HostConfig] = Field(default_factory=_no_entries)
    components: dict[Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)], ComponentConfig] = Field(
        default_factory=_no_entries
    )
    deploy: DeployConfig = DeployConfig()
    checks: list[CheckConfig] = Field(default_factory=_no_items)
    smoke_checks: list[CheckConfig] = Field(default_factory=_no_items)
    logging: LoggingConfig = LoggingConfig()
    state: StateConfig = StateConfig()
    retention: RetentionConfig = RetentionConfig()
    source: Path | None = None

    def only(self, kind: str, chosen: str | None, what: str) -> str | None:
        """The component ``chosen`` (checked to be of ``kind``), or the only one of that kind."""
        if chosen:
            if self.component(chosen).type != kind:
                raise ConfigError(f"deploy.{what}: component {chosen!r} is not of type {kind}")
            return chosen
        names = [n for n, c in self.components.items() if c.type == kind]
        if len(names) > 1:
            raise ConfigError(f"deploy.{what}: several {kind} components ({', '.join(names)}); name one")
        return names[0] if names else None

    def component(self, name: str) -> PostgresConfig | FilesConfig | ReleaseConfig | DockerConfig:
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(sorted(self.components)) or "none"
            raise ConfigError(f"unknown component {name!r} (configured: {known})") from None


def _format_location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # Drop the discriminator tag pydantic inserts: ('components', 'db', 'postgres', 'jobs').
    if len(parts) > 2 and parts[0] == "components" and parts[2] in ("postgres", "files", "release", "docker"):
        del parts[2]
    if len(parts) > 2 and parts[0] in ("checks", "smoke_checks") and parts[2] in CHECK_TYPES:
        del parts[2]
    return ".".join(parts)


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "union_tag_invalid":
            expected = (
                "http, tcp, command, sql or container"
                if "checks" in str(item["loc"][0])
                else "postgres, files, release or docker"
            )
            message = f"unknown type {item['input'].get('type')!r}; expected {expected}"
        lines.append(f"At '{_format_location(item['loc'])}': {message}")
    return lines


def _cross_checks(config: Config) -> list[str]:
    problems = []
    for name, component in config.components.items():
        if component.host != "local" and component.host not in config.hosts:
            problems.append(f"At 'components.{name}.host': unknown host {component.host!r}")
        elif component.host != "local" and not config.hosts[component.host].local:
            problems.append(f"At 'components.{name}.host': remote hosts are not supported yet; use a local host")
        if isinstance(component, PostgresConfig) and not (component.dsn_env or component.dsn):
            problems.append(f"At 'components.{name}': one of dsn_env or dsn is required")
    for name in config.retention.components:
        if name not in config.components:
            problems.append(f"At 'retention.components.{name}': unknown component {name!r}")
    if config.retention.auto and not config.retention.retention().configured:
        problems.append("At 'retention.auto': needs a keep_* rule (here or under components); it would delete nothing")
    for section in ("checks", "smoke_checks"):
        for index, check in enumerate(getattr(config, section)):
            if isinstance(check, SqlCheck) and not isinstance(config.components.get(check.component), PostgresConfig):
                problems.append(f"At '{section}.{index}.component': no postgres component {check.component!r}")
            if isinstance(check, ContainerCheck) and not isinstance(
                config.components.get(check.component), DockerConfig
            ):
                problems.append(f"At '{section}.{index}.component': no docker component {check.component!r}")
    return problems


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in the file are relative to the file's folder, not the working directory."""

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            return str(base / value)
        return os.path.expanduser(value) if isinstance(value, str) else value

    repo = data.get("repository")
    if isinstance(repo, dict) and "path" in repo:
        repo["path"] = absolute(repo["path"])
    state_section = data.get("state")
    if isinstance(state_section, dict) and "path" in state_section:
        state_section["path"] = absolute(state_section["path"])
    elif isinstance(data, dict) and "state" not in data:
        data["state"] = {"path": str(base / "state")}
    logging_section = data.get("logging")
    if isinstance(logging_section, dict) and "dir" in logging_section:
        logging_section["dir"] = absolute(logging_section["dir"])
    elif isinstance(data, dict):
        data.setdefault("logging", {})
        if isinstance(data["logging"], dict):
            data["logging"]["dir"] = str(base / "logs")
    for component in (data.get("components") or {}).values():
        if isinstance(component, dict):
            for key in ("path", "password_file", "bin_dir"):
                if key in component:
                    component[key] = absolute(component[key])


def parse(data: Any, source: Path | None = None) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem with its path."""
    where = str(source) if source else "configuration"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    _resolve_paths(data, source.parent if source else Path.cwd())
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(f"{where} is invalid:", _problems(exc)) from None
    problems = _cross_checks(config)
    if problems:
        raise ConfigError(f"{where} is invalid:", problems)
    from aura_ops import secrets

    secrets.register_config(config)  # masked from now on, before any step runs
    return config


def load(path: str | Path | None = None) -> Config:
    """Load and validate the configuration from ``path``, ``$AURA_CONFIG`` or ``aura.yaml``."""
    if path is not None and not str(path).strip():
        # `-c "$STAGING"` with the variable unset must not fall back to AURA_CONFIG (production)
        raise ConfigError("--config is empty: name the config file (nothing was read)")
    file = Path(path or os.environ.get("AURA_CONFIG") or DEFAULT_CONFIG).expanduser().absolute()
    try:
        raw = yamlfile.read_capped(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found (use --config or AURA_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    return parse(yamlfile.parse(raw, str(file)), file)
