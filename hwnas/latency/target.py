"""A deployment target is one registered object: `Target`, registered with `@register_target`.

    @register_target
    class MyTarget(Target):
        name = "openvino_cpu"
        schema = OpenVINOConfig          # a `hwnas.latency.config.TargetConfig` dataclass: its keys and defaults
        backend = OpenVINOBackend        # a `hwnas.latency.backends.Backend` subclass: how it is timed
        form = OpenVINOGraph             # a `hwnas.latency.deploy.DeployForm` subclass: what it runs
        form_keys = ("batch", "precision")
        device = "cpu"                   # whose device this machine names: "cpu", "cuda" or None
        ships = "onnx"                   # the export format (`hwnas.export.format`) that ships it
        how = "model.onnx (format=onnx) in an OpenVINO CPU session"

Everything else in hwnas asks the registry (`get_target(name)`): the profile and search apps, the
backends, the deploy forms, the extract app's manifest and the search report; none tests a target's
name. The five built-in targets are registered by `hwnas.latency.targets` when `hwnas.latency` is
imported; a target defined elsewhere (a user's package, a test) registers the same way, and its
`+target=NAME` option is stored in Hydra's ConfigStore from its schema's defaults where
`hwnas/conf/target/NAME.yaml` does not exist.

Like Optuna's `BaseSampler`, the interface is small and most of it has defaults: a target sets
`name`, `schema`, `backend` and `form`; `profile_elsewhere` is a hook for a target that cannot be
timed on the machine that profiles (Core ML off macOS). No Hydra or Optuna import: the GPU
machine profiles with this package alone.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from hwnas._registry import Registry
from hwnas.config import CONF_DIR
from hwnas.errors import ConfigError

from .errors import UnknownTargetError


class Target:
    """One deployment target: its schema and defaults, deploy form, timing backend, device and shipped format."""

    #: the name users give (`+target=NAME`, `targets=[...]`), the folder of its tables
    name: str = ""
    #: its keys and their defaults (a `TargetConfig` dataclass whose `name` defaults to `name`)
    schema: type = None  # type: ignore[assignment]
    #: its timing backend (a `Backend` subclass whose `name` is `name`)
    backend: type = None  # type: ignore[assignment]
    #: its deploy form (a `DeployForm` subclass): what a table times and what ships
    form: type = None  # type: ignore[assignment]
    #: the settings of the form (what its `settings()` records in a table's provenance)
    form_keys: tuple[str, ...] = ("batch", "precision")
    #: whose device this machine has for it: "cpu" (its CPU), "cuda" (its NVIDIA GPU) or None (a
    #: device elsewhere, e.g. a phone): a table measured on another device is then named as such
    device: Optional[str] = "cpu"
    #: where the profiler builds a block or network before the backend deploys and times it
    build_device: str = "cpu"
    #: the export format that ships what this target runs (`python -m hwnas.extract format=[...]`)
    ships: str = "pt"
    #: how a user runs what ships as this target timed it (the manifest's `deploy.how`);
    #: SETTINGS stands for the form's settings (`batch=1, precision=fp32`)
    how: str = ""
    #: its short name in report tables (empty: `name`)
    label: str = ""
    #: what is known of how its tables transfer to another device of the same kind (None: nothing)
    transfer_note: Optional[str] = None
    #: whether a run naming it loads compiled packages that need g++'s libstdc++ preloaded
    #: (`hwnas.convert.cxx_runtime`; the apps restart themselves with it: `hwnas.export.loads_cxx_packages`)
    cxx_runtime: bool = False
    #: targets whose tables `adapt=N` may start from when this one has none: their deploy form is this
    #: form before a last step (e.g. compiling), so their block rows rank this target's networks and a
    #: correction fitted on N whole networks timed as this target ships carries them over
    #: (`hwnas.latency.adapt`; the adapted table says so)
    adapts_from: tuple[str, ...] = ()
    #: settings the suggested `adapt=N` command adds (`target.KEY=VALUE`), where they measured better
    adapt_settings: tuple[str, ...] = ()

    def deploy_form(self, **settings: Any):
        """The deploy form configured by `settings` (`form_keys`; None takes the default, another
        key is a `ConfigError` naming the allowed ones); the default precision is the schema's."""
        unknown = sorted(set(settings) - set(self.form_keys))
        if unknown:
            raise ConfigError(f"the {self.name} deploy form takes no setting {unknown[0]!r} "
                              f"(its settings: {', '.join(self.form_keys)})")
        kw = {k: v for k, v in settings.items() if v is not None}
        if "precision" in self.form_keys:
            kw.setdefault("precision", self.schema.precision)
        form = self.form(**kw)
        form.target = self.name
        return form

    def defaults(self) -> dict:
        """Its keys and their default values: `hwnas/conf/target/<name>.yaml` where it ships one (as
        the built-in targets do), else its schema's defaults."""
        path = CONF_DIR / "target" / f"{self.name}.yaml"
        if path.is_file():
            import yaml
            d = yaml.safe_load(path.read_text())
            d.pop("defaults", None)
            return d
        return asdict(self.schema())

    def how_to_run(self, form) -> str:
        """`how` with the form's settings filled in."""
        return self.how.replace("**SETTINGS", ", ".join(f"{k}={v}" for k, v in form.settings().items()))

    def profile_elsewhere(self, cfg, backend, space, archs, out, tables_dir, run_dir):
        """For a target this machine cannot time (Core ML off macOS): do what can be done here instead
        (build a bundle for the device, import its results) and return the path written; None (the
        default): the profile times here."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_TARGETS: Registry[Target] = Registry(
    "target", UnknownTargetError, "a new one is a Target registered with hwnas.latency.target.register_target")
_STORED = False


def register_target(target):
    """Register `target` (a `Target` subclass, as a class decorator, or an instance) under its `name`,
    replacing an earlier one of that name; returns what it was given."""
    obj = target() if isinstance(target, type) else target
    if not isinstance(obj, Target):
        raise TypeError(f"register_target expects a hwnas.latency.target.Target subclass, got {target!r}")
    missing = [k for k in ("name", "schema", "backend", "form") if not getattr(obj, k)]
    if missing:
        raise ConfigError(f"register_target: {type(obj).__name__} sets no {', '.join(missing)}")
    if obj.schema.name != obj.name or obj.backend.name != obj.name:
        raise ConfigError(f"register_target: {type(obj).__name__}: its schema's name ({obj.schema.name!r}) and its "
                          f"backend's ({obj.backend.name!r}) must both be {obj.name!r}")
    _TARGETS.add(obj.name, obj)
    if _STORED:  # Hydra's store was filled already: add this one (else store_schemas will)
        _store(obj)
    return target


def unregister_target(name: str) -> None:
    """Forget target `name` (a plug-in test cleaning up after itself), its Hydra options too."""
    if _TARGETS.remove(name) is not None and _STORED:
        from hydra.core.config_store import ConfigStore
        repo = ConfigStore.instance().repo
        repo.pop(f"schema_target_{name}.yaml", None)
        repo.get("target", {}).pop(f"{name}.yaml", None)


def list_targets() -> list[str]:
    return _TARGETS.names()


def get_target(name: str) -> Target:
    """The target registered as `name`; an unknown one is an `UnknownTargetError` listing them."""
    return _TARGETS.lookup(name)


def find_target(name: str) -> Target | None:
    """The target registered as `name`, or None (a table of a target no longer registered)."""
    return _TARGETS.get(name)


def _store(target: Target) -> None:
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    cs.store(name=f"schema_target_{target.name}", node=target.schema)
    if not (CONF_DIR / "target" / f"{target.name}.yaml").is_file():
        cs.store(group="target", name=target.name, node=target.schema)


def store_schemas() -> None:
    """Store each target's schema in Hydra's ConfigStore as `schema_target_<name>` (outside the
    `target` group: a target's YAML names it in its defaults, so the options of `+target=` are only
    real targets), and, for a target without a YAML in hwnas/conf/target/, the option itself."""
    global _STORED
    for target in _TARGETS.values():
        _store(target)
    _STORED = True


__all__ = ["Target", "find_target", "get_target", "list_targets", "register_target", "store_schemas",
           "unregister_target"]
