"""Command-line flags, YAML values and resume rules derived from configuration dataclasses.

Every leaf field of a configuration dataclass (nested dataclass fields are walked) carries one
:class:`Option`: in its own ``dataclasses.field(metadata=option(...))``, or, for a class this module's
users may not edit, in a table given to :func:`register_options`. The option says the field's flags
(``()``: none, YAML and Python only), help, argparse type and choices, and whether it may change when a
run is resumed. From that one declaration:

- :func:`add_config_arguments` builds the argparse options,
- :func:`overrides_from_args` turns parsed arguments into a nested mapping of the options given,
- :func:`build` and :func:`merge` turn nested mappings (defaults < YAML < flags) into the dataclass,
  converting YAML values by the field's annotation,
- :func:`resume_merge` checks a requested configuration against a run's saved one.

:func:`declaration_problems` lists fields without an option (tests fail on them). This module imports
only :mod:`so3krates.option_values` from so3krates, so the model, training and command-line layers may
all use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from so3krates.option_values import count, degrees, to_bool, to_int

FIXED, FREE, MOVED = "fixed", "free", "moved"
RESUME_POLICIES = (FIXED, FREE, MOVED)
METADATA_KEY = "so3krates.option"


@dataclass(frozen=True)
class Option:
    """How one configuration field appears on the command line and whether it may change on resume.

    Attributes:
        resume: FIXED (must keep the run's value), FREE (may change: how long to train, how to show it)
            or MOVED (a path that may point elsewhere; the caller checks it is the same content).
        group: title of the argparse group of the flag.
        help: help text of the flag.
        flags: flag spellings, the first the main one; None: ``--field-name``; (): no flag.
        type: parses a flag's text and a YAML value (its ``__name__`` appears in argparse's errors);
            None: from the field's annotation.
        choices: allowed values of the flag.
        dest: argparse destination; None: argparse's own (from the first flag).
        const: for a bool field, the value its flag sets.
    """

    resume: str
    group: str = ""
    help: str = ""
    flags: tuple[str, ...] | None = None
    type: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] | None = None
    dest: str | None = None
    const: Any = True

    def __post_init__(self) -> None:
        if self.resume not in RESUME_POLICIES:
            raise ValueError(f"resume must be one of {RESUME_POLICIES}, got {self.resume!r}")


def option(resume: str, group: str = "", help: str = "", **kwargs: Any) -> dict[str, Option]:
    """Field metadata: ``x: int = field(default=1, metadata=option(FIXED, "training", "help"))``."""
    return {METADATA_KEY: Option(resume, group, help, **kwargs)}


_REGISTRY: dict[type, dict[str, Option]] = {}


def register_options(cls: type, table: Mapping[str, Option]) -> None:
    """Options of the fields of ``cls`` given next to it instead of in field metadata."""
    _REGISTRY.setdefault(cls, {}).update(table)


@dataclass(frozen=True)
class Leaf:
    """A non-dataclass field reached from the root class by ``path``."""

    path: tuple[str, ...]
    hint: Any
    option: Option | None

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def flags(self) -> tuple[str, ...]:
        if self.option is None:
            return ()
        if self.option.flags is None:
            return ("--" + self.path[-1].replace("_", "-"),)
        return self.option.flags

    @property
    def dest(self) -> str:
        assert self.option is not None and self.flags
        return self.option.dest or self.flags[0].lstrip("-").replace("-", "_")

    def describe(self) -> str:
        return f"{self.key} ({self.flags[0]})" if self.flags else self.key


def _nested_class(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_option(cls: type, f: dataclasses.Field) -> Option | None:
    return f.metadata.get(METADATA_KEY) or _REGISTRY.get(cls, {}).get(f.name)


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every leaf field of ``cls``, nested dataclass fields walked, in declaration order."""
    hints, out = _hints(cls), []
    for f in dataclasses.fields(cls):
        nested = _nested_class(hints[f.name])
        if nested is not None:
            out += leaves(nested, (*prefix, f.name))
        else:
            out.append(Leaf((*prefix, f.name), hints[f.name], _field_option(cls, f)))
    return out


def _classes(cls: type) -> Iterator[type]:
    yield cls
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if (nested := _nested_class(hints[f.name])) is not None:
            yield from _classes(nested)


def declaration_problems(cls: type) -> list[str]:
    """Fields without a decided option, table entries naming no field, flags or dests given twice."""
    problems = [f"{leaf.key}: no Option (decide its flag and resume policy)" for leaf in leaves(cls) if not leaf.option]
    for c in _classes(cls):
        names = {f.name for f in dataclasses.fields(c)}
        problems += [
            f"{c.__name__}.{n}: registered option for no field" for n in _REGISTRY.get(c, {}) if n not in names
        ]
    seen: dict[str, str] = {}
    for leaf in leaves(cls):
        for token in (*leaf.flags, *(["dest " + leaf.dest] if leaf.flags else [])):
            if token in seen:
                problems.append(f"{leaf.key}: {token} already used by {seen[token]}")
            seen[token] = leaf.key
    return problems


def _kinds(hint: Any) -> tuple[frozenset[Any], bool]:
    """(the annotation's types other than None, whether None is allowed)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    parts = args or (hint,)
    kinds = frozenset(typing.get_origin(p) or p for p in parts if p is not type(None))
    return kinds, type(None) in parts


def _value_parser(leaf: Leaf, for_flag: bool) -> Callable[[Any], Any] | None:
    """What converts a value of ``leaf``: its option's type, else by annotation (None: keep as is)."""
    if leaf.option is not None and leaf.option.type is not None:
        return leaf.option.type
    kinds, _ = _kinds(leaf.hint)
    table: dict[frozenset[Any], Callable[[Any], Any]] = {
        frozenset({int, float}): count,
        frozenset({int}): int if for_flag else to_int,
        frozenset({float}): float,
        frozenset({bool}): to_bool,
        frozenset({tuple}): degrees,
    }
    return table.get(kinds)


def coerce(leaf: Leaf, value: Any) -> Any:
    """A YAML or Python value of ``leaf`` in its field's type (YAML reads ``1e-3`` as a string)."""
    if value is None and _kinds(leaf.hint)[1]:
        return None
    parse = _value_parser(leaf, for_flag=False)
    return value if parse is None else parse(value)


# -- mappings and dataclasses -------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """Nested dicts and lists (YAML ready) from a configuration; nested classes' ``to_dict`` is used."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return _plain_value(value)


def _plain_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else to_plain(value)
    if isinstance(value, tuple | list):
        return [_plain_value(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``layer``, nested mappings merged key by key (None in ``layer`` is a value)."""
    out = dict(base)
    for key, value in layer.items():
        value = to_plain(value) if dataclasses.is_dataclass(value) else value
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_path(mapping: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """``mapping[path[0]][path[1]]… = value``, making the nested dicts."""
    for key in path[:-1]:
        mapping = mapping.setdefault(key, {})
    mapping[path[-1]] = value


def build(cls: type, d: Any, where: str = "config", kind: str = "") -> Any:
    """An instance of ``cls`` from a nested mapping (missing fields: defaults); unknown keys are an error."""
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping of options, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown {kind + ' ' if kind else ''}options {unknown}; known: {sorted(fields)}")
    hints, values = _hints(cls), {}
    for name, value in d.items():
        nested = _nested_class(hints[name])
        if nested is not None:
            values[name] = _build_nested(nested, value or {}, f"{where}: {name}")
            continue
        leaf = Leaf((name,), hints[name], _field_option(cls, fields[name]))
        try:
            values[name] = coerce(leaf, value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: option {name} = {value!r}: {err}") from None
    return cls(**values)


def _build_nested(cls: type, value: Any, where: str) -> Any:
    """A nested configuration; a class's own ``from_dict`` (e.g. for older files) gets the coerced values."""
    if isinstance(value, cls) or not hasattr(cls, "from_dict"):
        return build(cls, value, where)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of options, got {type(value).__name__}")
    fields, hints = {f.name: f for f in dataclasses.fields(cls)}, _hints(cls)
    coerced = {}
    try:
        for name, v in value.items():
            f = fields.get(name)
            if f is None or _nested_class(hints[name]) is not None:
                coerced[name] = v  # left to the class's from_dict
            else:
                coerced[name] = coerce(Leaf((name,), hints[name], _field_option(cls, f)), v)
        return cls.from_dict(coerced)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def merge(base: Any, *layers: Mapping[str, Any], where: str = "config", kind: str = "") -> Any:
    """``base`` (a class: its defaults; or an instance) < ``layers[0]`` < ``layers[1]`` < …, as one instance."""
    cls = base if isinstance(base, type) else type(base)
    d: dict[str, Any] = {} if isinstance(base, type) else to_plain(base)
    for layer in layers:
        if not isinstance(layer, Mapping):
            raise ValueError(f"{where}: expected a mapping of options, got {type(layer).__name__}")
        d = deep_merge(d, layer)
    return build(cls, d, where, kind)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields given as flags, as a nested mapping (a flag not given is None in ``args``)."""
    out: dict[str, Any] = {}
    for leaf in leaves(cls):
        if leaf.flags and (value := getattr(args, leaf.dest, None)) is not None:
            set_path(out, leaf.path, value)
    return out


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, groups: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One flag per field of ``cls`` that has flags, in argument groups named by the options (made as
    needed, added to ``groups``); every default is None, so that a flag not given overrides nothing."""
    groups = {} if groups is None else groups
    for leaf in leaves(cls):
        if not leaf.flags:
            continue
        opt = leaf.option
        assert opt is not None
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group) if opt.group else parser
        kwargs: dict[str, Any] = {"help": opt.help or None}
        if opt.dest:
            kwargs["dest"] = opt.dest
        if _kinds(leaf.hint)[0] == {bool}:
            kwargs.update(action="store_const", const=opt.const)
        else:
            kwargs.update(type=_value_parser(leaf, for_flag=True), choices=opt.choices)
        groups[opt.group].add_argument(*leaf.flags, **kwargs)
    return groups


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = getattr(obj, key)
    return obj


def resume_merge(saved: Any, requested: Any) -> Any:
    """The configuration to resume a run saved with ``saved``: ``requested`` (a full instance, or a
    nested mapping of only the options stated) merged over it. Raises ValueError naming every option
    whose policy is FIXED (or that has none) and whose value differs, with both values."""
    merged = requested if isinstance(requested, type(saved)) else merge(saved, requested)
    refused = []
    for leaf in leaves(type(saved)):
        old, new = to_plain(_get(saved, leaf.path)), to_plain(_get(merged, leaf.path))
        if old != new and (leaf.option is None or leaf.option.resume == FIXED):
            refused.append(f"{leaf.describe()}: the run uses {old!r}, now {new!r}")
    if refused:
        raise ValueError(
            f"cannot change {'this option' if len(refused) == 1 else 'these options'} when resuming: "
            f"{'; '.join(refused)}; start a new run in another run directory (another --out) instead"
        )
    return merged
