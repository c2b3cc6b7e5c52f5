"""Playbooks: YAML files of steps, validated as a whole before anything runs.

A step names an action and its parameters (``with``); strings may be Jinja templates rendered in
a sandbox, seeing ``params`` (the playbook's parameters), ``steps`` (outputs of earlier steps)
and ``run_id``. Nothing else reaches a template: no environment, no secrets, no ``eval``.

Parameters named in ``secrets`` are secret: their values come only from ``-e`` (never from a
default in the file), are registered for masking before the run starts, and are never stored
in the journal (``runs resume`` / ``runs abort`` ask for them again).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Literal

from jinja2 import StrictUndefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aura_ops import yamlfile
from aura_ops.engine.actions import REGISTRY
from aura_ops.errors import ConfigError
from aura_ops.secrets import MASK, mask_values, register


def _shipped() -> Path:
    """The shipped playbooks: the package data ``aura_ops.playbooks`` (a wheel, or an editable
    install mapping it to the checkout's ``playbooks/``), else, in a source checkout run without
    installing, its ``playbooks/`` folder."""
    try:
        folder = importlib.resources.files("aura_ops.playbooks")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "playbooks"
    if isinstance(folder, Path):
        return folder
    return Path(__file__).resolve().parents[2] / "playbooks"  # a namespace package: the checkout's folder


SHIPPED = _shipped()
STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Undo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(pattern=STEP_NAME)
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = None
    retries: int = Field(0, ge=0, le=20)
    delay: float = Field(1.0, ge=0)
    timeout: float | None = Field(None, gt=0)
    verify: bool = True
    on_failure: Literal["rollback", "continue"] = "rollback"
    undo: Undo | None = None
    always_undo: bool = False  # undone even when a run stops at a failure without rolling back


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)  # parameters whose values are secret
    steps: list[Step] = Field(min_length=1)
    source: str = ""

    def resolve_params(self, given: dict[str, str]) -> dict[str, Any]:
        """Defaults overridden by ``given``; ConfigError for unknown or missing parameters.
        Secret values are registered for masking from here on."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise ConfigError(
                f"{self.source}: unknown parameter(s) {', '.join(unknown)} "
                f"(declared: {', '.join(self.params) or 'none'})"
            )
        values = {**self.params, **given}
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise ConfigError(f"{self.source}: parameter(s) {', '.join(missing)} required (-e k=v)")
        for name in self.secrets:
            register(str(values[name]))
        return values

    def stored_params(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """What the journal keeps of ``values``, and the parameters it withholds: every secret
        parameter, and any other whose value holds a registered secret, is stored masked."""
        stored = {name: MASK if name in self.secrets else mask_values(value) for name, value in values.items()}
        return stored, [name for name in values if name in self.secrets or stored[name] != values[name]]


def environment() -> Any:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(value: Any, context: dict[str, Any], env: Any | None = None) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively)."""
    env = env or environment()
    if isinstance(value, str):
        return env.from_string(value).render(context) if "{" in value else value
    if isinstance(value, dict):
        return {k: render(v, context, env) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, env) for v in value]
    return value


def _strings(value: Any, key: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _strings(v, f"{key}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _strings(v, f"{key}[{i}]")]
    return []


def _references(env: Any, text: str) -> tuple[set[str], set[str], set[str]]:
    """(steps referenced, params referenced, other names) in one template."""
    tree = env.parse(text)
    steps: set[str] = set()
    params: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name in ("steps", "params"):
            attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(attr, str):
                (steps if node.node.name == "steps" else params).add(attr)
    others = meta.find_undeclared_variables(tree) - {"steps", "params", "run_id"}
    return steps, params, others


def _check_step(
    index: int, step: Step, earlier: list[str], declared: set[str], all_names: list[str], env: Any
) -> list[str]:
    where = f"step {index + 1} '{step.name}'"
    problems = []
    for action_name, params, label in [(step.action, step.with_, "with")] + (
        [(step.undo.action, step.undo.with_, "undo.with")] if step.undo else []
    ):
        action = REGISTRY.get(action_name)
        if action is None:
            problems.append(f"{where}: unknown action {action_name!r} (known: {', '.join(sorted(REGISTRY))})")
            continue
        if label == "with" and step.timeout is not None and not action.honours_timeout:
            takers = ", ".join(sorted(n for n, a in REGISTRY.items() if a.honours_timeout))
            problems.append(f"{where}: timeout: {action_name} cannot be stopped at a timeout (only {takers} can)")
        fields = action.Params.model_fields
        for key in sorted(set(params) - set(fields)):
            problems.append(f"{where}: {label}.{key}: unknown parameter of {action_name}")
        for key, field in fields.items():
            if field.is_required() and key not in params:
                problems.append(f"{where}: {label}.{key}: required by {action_name}")
    texts = _strings(step.with_, "with") + ([("when", step.when)] if step.when else [])
    texts += _strings(step.undo.with_, "undo.with") if step.undo else []
    for key, text in texts:
        try:
            used_steps, used_params, others = _references(env, text)
        except Exception as exc:  # noqa: BLE001 - a template syntax error, reported with its place
            problems.append(f"{where}: {key}: template error: {exc}")
            continue
        for name in sorted(used_steps):
            if name == step.name or (name in all_names and name not in earlier):
                problems.append(
                    f"{where}: {key}: refers to step '{name}', which does not run "
                    "before it (a forward reference or cycle)"
                )
            elif name not in all_names:
                problems.append(f"{where}: {key}: refers to unknown step '{name}'")
        for name in sorted(used_params - declared):
            problems.append(f"{where}: {key}: refers to undeclared parameter '{name}'")
        for name in sorted(others):
            problems.append(f"{where}: {key}: unknown name '{name}' (use params., steps. or run_id)")
    return problems


def validate(playbook: Playbook) -> list[str]:
    """Every semantic problem of a structurally valid playbook, with step and key."""
    env = environment()
    names = [s.name for s in playbook.steps]
    problems = [f"step '{n}': duplicate step name" for n in sorted({n for n in names if names.count(n) > 1})]
    for name in playbook.secrets:
        if name not in playbook.params:
            problems.append(f"secrets: {name!r} is not a declared parameter")
        elif playbook.params[name] is not None:  # the value itself is never repeated here
            problems.append(f"secrets: {name!r} must not have a default (secrets never live in a file; use -e)")
    for name, default in playbook.params.items():  # a plausible spelling that would leave the value unmasked
        if isinstance(default, dict) and "secret" in default and name not in playbook.secrets:
            problems.append(
                f"params: {name!r}: a secret parameter is declared by listing it in 'secrets: [{name}]' with no"
                " default ('secret:' under it would be read as its default value, and the value left unmasked)"
            )
    for index, step in enumerate(playbook.steps):
        problems += _check_step(index, step, names[:index], set(playbook.params), names, env)
    return problems


def find(reference: str, config_dir: Path | None = None) -> Path:
    """A playbook file: a path, or a name looked up beside the config, then among shipped ones."""
    path = Path(reference)
    if path.is_file():
        return path
    for folder in ([config_dir / "playbooks"] if config_dir else []) + [SHIPPED]:
        for candidate in (folder / reference, folder / f"{reference}.yaml"):
            if candidate.is_file():
                return candidate
    raise ConfigError(f"playbook {reference!r} not found (a path, or a name in playbooks/)")


def load(reference: str, config_dir: Path | None = None) -> Playbook:
    """Load and validate a playbook; ConfigError (exit 2) listing every problem."""
    path = find(reference, config_dir)
    try:
        raw = yamlfile.read_capped(path)
    except OSError as exc:
        raise ConfigError(f"cannot read playbook {path}: {exc.strerror}") from None
    data = yamlfile.parse(raw, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        playbook = Playbook.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        problems = [
            _location(e["loc"], data) + ": " + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        ]
        raise ConfigError(f"{path} is invalid:", problems) from None
    problems = validate(playbook)
    if problems:
        raise ConfigError(f"{path} is invalid:", problems)
    return playbook


def _location(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        name = steps[loc[1]].get("name", "?") if loc[1] < len(steps) and isinstance(steps[loc[1]], dict) else "?"
        rest = ".".join(str(p) for p in loc[2:])
        return f"step {loc[1] + 1} '{name}'" + (f": {rest}" if rest else "")
    return "At '" + ".".join(str(p) for p in loc) + "'"
