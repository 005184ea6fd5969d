"""One definition per setting: the machinery behind the typed settings dataclasses of every job kind.

A setting is a dataclass field declared with :func:`setting` (default, bounds, choices, one line of help); nested
dataclasses make sections. The *wire key* of a setting is its field name, dotted through sections
(``mesh.resolution``). From that one declaration come:

- :func:`settings_from_dict`: a settings object from a mapping of wire keys (the service's job settings, the CLI's
  flags), every value type-checked, finite and within its bounds;
- :func:`check_bounds`: the bounds check every ``validate()`` starts with; its errors name the wire key;
- :func:`describe`: the defaults and bounds the service sends in ``welcome`` (see blender_addon/core/protocol.py);
- :func:`add_setting_arguments` / :func:`overrides_from_args`: the command-line flags ``--KEY VALUE``.

Sequences (``tuple[float, float]``, ``tuple[int, ...]``) are JSON lists on the wire, or comma-separated text
(``"15,60"``) on the command line and in the add-on's text fields.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.errors import SettingsError

MAX_KEY_SHOWN = 60  # characters of an unknown key quoted back in an error (the key comes from the network)
_BOOL_TEXT = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def setting(default: Any, *, min: float | None = None, max: float | None = None,  # min/max/help: the bounds' names
            choices: tuple | list | None = None, help: str = "") -> Any:
    """A dataclass field that is a setting: its default, inclusive bounds (numbers, and each item of a sequence),
    the allowed choices of a text setting, and a short help text (shown in Blender and by ``--help``)."""
    metadata = {"min": min, "max": max, "choices": tuple(choices) if choices else None, "help": help}
    return dataclasses.field(default=default, metadata=metadata)


def section(factory) -> Any:
    """A dataclass field holding a nested settings dataclass (its fields' keys are prefixed with the name)."""
    return dataclasses.field(default_factory=factory)


@dataclass(frozen=True)
class SettingSpec:
    """What one setting is, read from its dataclass field."""

    key: str  # the wire key, e.g. "mesh.resolution"
    path: tuple[str, ...]  # attribute path, e.g. ("mesh", "resolution")
    type: type  # int, float, bool or str (of each item, for a sequence)
    optional: bool  # None is allowed (meaning: decided elsewhere, e.g. the model's own camera encoding)
    length: int | None  # None: a single value; -1: a sequence of any length; n: exactly n items
    min: float | None
    max: float | None
    choices: tuple | None
    help: str

    def wire_type(self) -> str:
        if self.length is not None:
            return "str"  # comma-separated text; a JSON list is accepted too
        if self.choices:
            return "choice"
        return self.type.__name__


def _resolve(annotation) -> tuple[type, bool, int | None]:
    """(item type, optional, length) of a field's annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"a setting must have one type, not {annotation}")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], optional, -1
        if len(set(args)) != 1:
            raise TypeError(f"a sequence setting must hold one type, not {annotation}")
        return args[0], optional, len(args)
    if annotation not in (int, float, bool, str):
        raise TypeError(f"a setting must be int, float, bool, str or a tuple of them, not {annotation}")
    return annotation, optional, None


@functools.cache
def setting_specs(cls: type) -> dict[str, SettingSpec]:
    """Every setting of the dataclass ``cls`` (sections flattened), by wire key, in declaration order."""
    specs: dict[str, SettingSpec] = {}
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        annotation = hints[item.name]
        if dataclasses.is_dataclass(annotation):
            for key, spec in setting_specs(annotation).items():
                specs[f"{item.name}.{key}"] = dataclasses.replace(spec, key=f"{item.name}.{key}",
                                                                  path=(item.name, *spec.path))
            continue
        kind, optional, length = _resolve(annotation)
        meta = item.metadata
        specs[item.name] = SettingSpec(item.name, (item.name,), kind, optional, length, meta.get("min"),
                                       meta.get("max"), meta.get("choices"), meta.get("help", ""))
    return specs


def shown_key(key: Any) -> str:
    """A key as quoted in an error message: bounded, since keys come from the network."""
    text = str(key)
    return repr(text if len(text) <= MAX_KEY_SHOWN else text[:MAX_KEY_SHOWN] + "...")


def get_value(settings: Any, spec: SettingSpec) -> Any:
    value = settings
    for name in spec.path:
        value = getattr(value, name)
    return value


def _set_value(settings: Any, spec: SettingSpec, value: Any) -> None:
    target = settings
    for name in spec.path[:-1]:
        target = getattr(target, name)
    setattr(target, spec.path[-1], value)


def _coerce_item(spec: SettingSpec, value: Any) -> Any:
    """One value of the setting's item type, from JSON (or command-line text); SettingsError naming the key."""
    kind, key = spec.type, spec.key
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise SettingsError(f"setting '{key}' must be true or false")
    if kind is str:
        if isinstance(value, str):
            return value
        raise SettingsError(f"setting '{key}' must be text")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingsError(f"setting '{key}' must be a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int and text.lstrip("+-").isdigit() and len(text) < 40 else float(text)
        except ValueError:
            raise SettingsError(f"setting '{key}' must be a number, not {shown_key(text)}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"setting '{key}' must be a finite number")
    if kind is int:
        if isinstance(value, float):
            if value != int(value):
                raise SettingsError(f"setting '{key}' must be a whole number")
            value = int(value)
        return value  # a huge int stays exact here; check_bounds refuses it without converting
    try:
        return float(value)
    except OverflowError:
        raise SettingsError(f"setting '{key}' must be a finite number (got a {len(str(value))}-digit number)") \
            from None


def coerce(spec: SettingSpec, value: Any) -> Any:
    """The value of ``spec`` from JSON or text: None (if optional), a single value, or a tuple of items."""
    if value is None or (spec.optional and isinstance(value, str) and value.strip().lower() in ("", "none")):
        if spec.optional:
            return None
        raise SettingsError(f"setting '{spec.key}' needs a value")
    if spec.length is None:
        return _coerce_item(spec, value)
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()] if value.strip() else []
    if not isinstance(value, (list, tuple)):
        raise SettingsError(f"setting '{spec.key}' must be a list (or comma-separated text)")
    if len(value) > 64:
        raise SettingsError(f"setting '{spec.key}' has {len(value)} items; at most 64")
    if spec.length > 0 and len(value) != spec.length:
        raise SettingsError(f"setting '{spec.key}' needs {spec.length} values (got {len(value)})")
    return tuple(_coerce_item(spec, item) for item in value)


def check_bounds(settings: Any) -> None:
    """SettingsError naming the first setting of ``settings`` whose value is of the wrong type, not finite, out of
    its bounds or not one of its choices. Every settings dataclass's ``validate()`` starts with this."""
    for spec in setting_specs(type(settings)).values():
        check_value(spec, get_value(settings, spec))


def check_value(spec: SettingSpec, value: Any) -> None:
    """SettingsError naming ``spec.key`` unless ``value`` is of its type, finite, within its bounds and choices."""
    if value is None and spec.optional:
        return
    if spec.length is not None:
        if not isinstance(value, tuple) or (spec.length > 0 and len(value) != spec.length):
            count = spec.length if spec.length > 0 else "a list of"
            raise SettingsError(f"setting '{spec.key}' must be {count} values")
        for item in value:
            _check_item(spec, item)
    else:
        _check_item(spec, value)


def _check_item(spec: SettingSpec, item: Any) -> None:
    key = spec.key
    if spec.type is float:
        ok = isinstance(item, (int, float)) and not isinstance(item, bool)
    else:
        ok = isinstance(item, spec.type) and (spec.type is bool or not isinstance(item, bool))
    if not ok:
        raise SettingsError(f"setting '{key}' must be {spec.type.__name__}")
    if isinstance(item, float) and not math.isfinite(item):
        raise SettingsError(f"setting '{key}' must be a finite number")
    if spec.min is not None and item < spec.min or spec.max is not None and item > spec.max:
        shown = item if len(str(item)) <= 24 else f"a {len(str(item))}-digit number"
        raise SettingsError(f"setting '{key}' must be between {_number(spec.min)} and {_number(spec.max)} "
                            f"(got {shown})")
    if spec.choices and item not in spec.choices:
        raise SettingsError(f"setting '{key}' must be one of {', '.join(map(str, spec.choices))} "
                            f"(got {shown_key(item)})")


def _number(bound: float | None) -> str:
    return "-inf" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


def settings_from_dict(base: Any, values: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> Any:
    """A copy of the settings object ``base`` with ``values`` (wire key -> JSON value, or command-line text) applied,
    validated (its ``validate()``, or only the bounds). Unknown keys are refused, except those in ``ignore``."""
    if not isinstance(values, Mapping):
        raise SettingsError("settings must be an object of 'name': value")
    specs = setting_specs(type(base))
    unknown = [key for key in values if key not in specs and key not in ignore]
    if unknown:
        names = ", ".join(shown_key(key) for key in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise SettingsError(f"unknown setting {names}")
    result = copy.deepcopy(base)
    for key, value in values.items():
        if key in specs:
            _set_value(result, specs[key], coerce(specs[key], value))
    validate = getattr(result, "validate", None)
    if validate is not None:
        validate()
    else:
        check_bounds(result)
    return result


def _json_value(spec: SettingSpec, value: Any) -> Any:
    if spec.length is not None and value is not None:
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    return value


def describe(defaults: Any) -> dict[str, dict]:
    """``{wire_key: {"type", "default", "min", "max", "choices", "help"}}`` of a settings object, its values as the
    defaults: what ``welcome`` carries so that a client shows them and sends only what the user changed."""
    described = {}
    for key, spec in setting_specs(type(defaults)).items():
        entry = {"type": spec.wire_type(), "default": _json_value(spec, get_value(defaults, spec)),
                 "min": spec.min, "max": spec.max, "choices": list(spec.choices) if spec.choices else None,
                 "help": spec.help}
        if spec.length is not None:
            entry["help"] = (entry["help"] + " " if entry["help"] else "") + (
                f"({spec.length} comma-separated {spec.type.__name__} values)" if spec.length > 0
                else f"(comma-separated {spec.type.__name__} values)")
        described[key] = entry
    return described


def add_setting_arguments(parser, defaults: Any, *, skip: tuple[str, ...] = (), aliases: Mapping[str, tuple] = {},
                          title: str | None = None, dest_prefix: str = "set:") -> None:
    """One ``--KEY VALUE`` flag per setting of ``defaults`` (``--mesh.resolution 384``; ``_`` may be written ``-``),
    each with its default and bounds in the help. Parsed values are collected by :func:`overrides_from_args`."""
    group = parser.add_argument_group(title) if title else parser
    for key, spec in setting_specs(type(defaults)).items():
        if key in skip:
            continue
        flags = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else []) + list(aliases.get(key, ()))
        default = _json_value(spec, get_value(defaults, spec))
        bounds = f", {_number(spec.min)}..{_number(spec.max)}" if spec.min is not None or spec.max is not None else ""
        choices = f", one of {'/'.join(spec.choices)}" if spec.choices else ""
        text = f"{spec.help} (default {default}{bounds}{choices})".strip().replace("%", "%%")
        extra = {"nargs": "?", "const": "true"} if spec.type is bool and spec.length is None else {}
        group.add_argument(*flags, dest=f"{dest_prefix}{key}", metavar="VALUE" if not extra else "BOOL", default=None,
                           help=text, **extra)


def overrides_from_args(args: argparse.Namespace, dest_prefix: str = "set:") -> dict[str, Any]:
    """The settings given on the command line (wire key -> text), for :func:`settings_from_dict`."""
    return {key[len(dest_prefix):]: value for key, value in vars(args).items()
            if key.startswith(dest_prefix) and value is not None}
