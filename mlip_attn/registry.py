"""The extension points — backbones, global blocks, reference systems and per-atom input
encoders — as registries.

A component is one module that registers itself with a decorator::

    from mlip_attn.registry import GLOBAL_BLOCKS
    from mlip_attn.attention.base import GlobalBlock

    @GLOBAL_BLOCKS.register("my-attention", summary="one line for `mlip-attn components`",
                            presets={"my-attention": {}})
    class MyAttention(GlobalBlock):
        def __init__(self, widths: tuple[int, ...], strength: float = 1.0): ...
        def forward(self, x: Features, graph: Graph) -> Features: ...

Dropping the file into the component's package (``mlip_attn/backbones``, ``mlip_attn/attention``
``mlip_attn/qm/systems`` or ``mlip_attn/encoders``) is all it takes: each registry imports every module of its package
on first use. Other packages add modules through the entry point groups
``mlip_attn.backbones``, ``mlip_attn.global_blocks``, ``mlip_attn.reference_systems`` and
``mlip_attn.encoders`` (each
entry point names a module to import). The constructor's signature *is* the config schema: its
parameters (less the host arguments the builder supplies, e.g. ``widths``) are the config keys,
its defaults are the defaults, and its annotations are checked (``bool``, ``int``, ``float``,
``str``, ``Literal``, ``Optional`` …) with messages naming the key. Capabilities (rotation
order, reach, periodic support, export) are attributes of the component — see
`mlip_attn.backbones.base`, `mlip_attn.attention.base` and `mlip_attn.qm.systems.base` for the
contracts.

The builder, config validation, CLI choices, benchmark variants, the trainer's reach check,
the exporter and the test matrix all read these registries, so none of them lists
components by name.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterator


@dataclass(frozen=True)
class Check:
    """A value constraint for `Annotated` option types: ``predicate(value)`` must hold."""

    predicate: Callable[[Any], bool]
    description: str


PositiveInt = Annotated[int, Check(lambda v: v > 0, "a positive integer")]
PositiveFloat = Annotated[float, Check(lambda v: v > 0, "a positive number")]

@dataclass(frozen=True)
class Component:
    """A registered component: ``factory`` builds it from its options (plus host arguments)."""

    kind: str
    name: str
    factory: Callable
    summary: str
    host_arguments: tuple[str, ...]
    presets: dict[str, dict] = field(default_factory=dict)

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Config keys → their `inspect.Parameter` (default, annotation), host arguments excluded."""
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        params = list(inspect.signature(target).parameters.values())
        return {p.name: p for p in params
                if p.name != "self" and p.name not in self.host_arguments
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters().items()
                if p.default is not inspect.Parameter.empty}

    def resolve(self, options: dict, where: str) -> dict:
        """``options`` with defaults filled in and checked against the signature; errors name
        the key as ``where.key``."""
        params = self.parameters()
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key for {self.kind} {self.name!r}; "
                             f"allowed: {sorted(params)}")
        out = {**self.defaults(), **options}
        missing = sorted(set(params) - set(out))
        if missing:
            raise ValueError(f"{where}.{missing[0]}: required by {self.kind} {self.name!r}")
        hints = _type_hints(self.factory)
        for key, value in list(out.items()):
            if key in hints:
                out[key] = check_value(value, hints[key], f"{where}.{key}")
        return out


class Registry:
    """Name → `Component` for one extension point; fills itself from its package on first use."""

    def __init__(self, kind: str, package: str, entry_points: str,
                 host_arguments: tuple[str, ...]):
        self.kind = kind
        self.package = package
        self.entry_points = entry_points
        self.host_arguments = host_arguments
        self._components: dict[str, Component] = {}
        self._loaded = False

    def register(self, name: str, *, summary: str, presets: dict[str, dict] | None = None):
        """Class (or function) decorator that registers a component under ``name``."""
        def decorate(factory):
            if name in self._components and self._components[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({self._components[name].factory.__module__} and "
                                 f"{factory.__module__})")
            component = Component(self.kind, name, factory, summary, self.host_arguments,
                                  dict(presets or {}))
            _type_hints(factory)  # unresolvable annotations fail here, not silently later
            self._components[name] = component
            factory.registered_name = name
            return factory
        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        from importlib.metadata import entry_points
        for ep in entry_points(group=self.entry_points):
            importlib.import_module(ep.value)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._components)

    def __getitem__(self, name: str) -> Component:
        self._load()
        if name not in self._components:
            raise KeyError(name)
        return self._components[name]

    def get(self, name: str, where: str) -> Component:
        """The component called ``name``; a `ValueError` naming ``where`` and the choices if none."""
        self._load()
        if not isinstance(name, str) or name not in self._components:
            raise ValueError(f"{where}: {name!r} is not one of {self.names()}")
        return self._components[name]

    def __contains__(self, name) -> bool:
        self._load()
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        self._load()
        return iter([self._components[n] for n in sorted(self._components)])

    def presets(self) -> dict[str, tuple[str, dict]]:
        """Every preset of every component: preset name → (component name, options)."""
        return {preset: (c.name, dict(options)) for c in self for preset, options in c.presets.items()}


BACKBONES = Registry("backbone", "mlip_attn.backbones", "mlip_attn.backbones",
                     host_arguments=("num_elements", "global_blocks", "physics"))
GLOBAL_BLOCKS = Registry("global block", "mlip_attn.attention", "mlip_attn.global_blocks",
                         host_arguments=("widths", "physics"))
REFERENCE_SYSTEMS = Registry("reference system", "mlip_attn.qm.systems",
                             "mlip_attn.reference_systems", host_arguments=())
ENCODERS = Registry("encoder", "mlip_attn.encoders", "mlip_attn.encoders",
                    host_arguments=("elements",))


# ----------------------------------------------------------------------------- type checks

def _type_hints(factory) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise TypeError(f"{factory.__qualname__}: the annotations of its options cannot be "
                        f"resolved ({exc}); they are its config schema") from exc


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        checks = [m.description for m in hint.__metadata__ if isinstance(m, Check)]
        return checks[0] if checks else _describe(typing.get_args(hint)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (list, tuple) or hint in (list, tuple):
        return "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_value(value, hint, where: str):
    """``value`` if it fits the annotation ``hint`` (ints are accepted and returned as floats
    where a float is expected); otherwise a `ValueError` naming ``where``."""
    ok, converted = _fits(value, hint)
    if not ok:
        raise ValueError(f"{where}: must be {_describe(hint)}, got {value!r}")
    return converted


def _fits(value, hint) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True, value
    if origin is Annotated:
        ok, converted = _fits(value, typing.get_args(hint)[0])
        return ok and all(m.predicate(converted) for m in hint.__metadata__
                          if isinstance(m, Check)), converted
    if origin is typing.Literal:
        return value in typing.get_args(hint) and not (
            isinstance(value, bool) and True not in typing.get_args(hint)), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _fits(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(hint)
        if args and args[-1] is not Ellipsis and origin is list:
            items = [_fits(v, args[0]) for v in value]
            return all(ok for ok, _ in items), [v for _, v in items]
        return True, list(value)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if inspect.isclass(hint):
        return isinstance(value, hint), value
    return True, value
