"""The deploy's release actions: ``release_upload``, ``release_switch``, ``release_mark``,
``release_prune``, on the deploy's release component."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aura_ops.components import build_as
from aura_ops.components.release import ReleaseComponent
from aura_ops.engine.actions.base import Action, Context, NoParams, _Params
from aura_ops.errors import ConfigError


def _release(ctx: Context) -> ReleaseComponent:
    """The deploy's release component, on its host."""
    name = ctx.config.only("release", ctx.config.deploy.release, "release")
    if name is None:
        raise ConfigError("a deploy needs a component of type release")
    return build_as(ctx.config, name, ctx.hosts, ReleaseComponent)


class ReleaseUploadParams(_Params):
    version: str
    source: str


class ReleaseUploadAction(Action):
    """Upload a release (it does not switch); compensation removes it unless it is current."""

    identifiers = frozenset({"version", "path"})

    Params = ReleaseUploadParams

    def describe(self, p: ReleaseUploadParams, ctx: Context) -> tuple[str, str]:
        return f"upload {p.source} as release {p.version}", f"remove release {p.version} (unless current)"

    def apply(self, p: ReleaseUploadParams, ctx: Context) -> dict[str, Any]:
        return _release(ctx).upload(p.version, str(Path(p.source)))

    def compensate(self, p: ReleaseUploadParams, ctx: Context, outputs: dict[str, Any]) -> None:
        _release(ctx).remove(p.version)


class ReleaseSwitchParams(_Params):
    version: str


class ReleaseSwitchAction(Action):
    """Point ``current`` at the version; compensation points it back and marks it rolled_back."""

    identifiers = frozenset({"previous"})

    Params = ReleaseSwitchParams

    def describe(self, p: ReleaseSwitchParams, ctx: Context) -> tuple[str, str]:
        previous = _release(ctx).current()
        undo = f"switch current back to {previous}" if previous else "remove current (no release was current)"
        return f"switch current to {p.version}", undo

    def can_check(self, p: ReleaseSwitchParams) -> bool:
        return True

    def check(self, p: ReleaseSwitchParams, ctx: Context) -> bool:
        return _release(ctx).current() == p.version

    def apply(self, p: ReleaseSwitchParams, ctx: Context) -> dict[str, Any]:
        component = _release(ctx)
        if "previous" not in (
            ctx.remembered() or {}
        ):  # journaled before the switch: a crash right after it loses no state
            ctx.remember({"previous": component.current()})
        return {"previous": component.switch(p.version)}

    def _previous(self, ctx: Context, outputs: dict[str, Any]) -> str | None:
        """The release that was current before this step: journaled, or in the run's folder
        (a run an older aura-ops began), or (last resort) the step's outputs."""
        recorded = ctx.remembered()
        if recorded is not None and "previous" in recorded:  # (a custom undo's record is not ours)
            return recorded.get("previous")
        control, older = ctx.hosts.local(), str(ctx.work_dir / f"{ctx.step}.previous")
        return control.read_text(older) if control.exists(older) else outputs.get("previous")

    def compensate(self, p: ReleaseSwitchParams, ctx: Context, outputs: dict[str, Any]) -> None:
        component = _release(ctx)
        previous = self._previous(ctx, outputs)
        if component.current() == p.version:
            if previous:
                component.switch(previous)
            else:
                component.unlink_current()
        if component.is_installed(p.version):
            component.mark(p.version, "rolled_back")


class ReleaseMarkParams(_Params):
    version: str
    state: str


class ReleaseMarkAction(Action):
    Params = ReleaseMarkParams

    def describe(self, p: ReleaseMarkParams, ctx: Context) -> tuple[str, str]:
        return f"mark release {p.version} {p.state}", "nothing"

    def apply(self, p: ReleaseMarkParams, ctx: Context) -> dict[str, Any]:
        _release(ctx).mark(p.version, p.state)
        return {"state": p.state}


class ReleasePruneAction(Action):
    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return f"prune releases beyond keep={_release(ctx).config.keep}", "nothing (pruned releases are gone)"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        return {"pruned": _release(ctx).prune()}
