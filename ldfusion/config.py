"""Typed configs from YAML: frozen dataclasses filled by ``yaml.safe_load``, overrides winning.

Any frozen dataclass tree works: nested dataclasses, ``tuple[X, ...]`` of dataclasses or
scalars, ``X | None``, ``Literal``-free plain scalars. Unknown keys and wrong types are
a ``ConfigError`` naming the dotted key, so a typo never passes silently.

Every float that passes through here must be finite: YAML spells NaN and infinity
(``.nan``, ``.inf``) and Python parses ``"nan"``, yet no setting means anything with them,
and a NaN compares false with everything, so range checks after it would pass it through.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ldfusion.errors import ConfigError
from ldfusion.paths import home_expanded, write_text_whole

C = TypeVar("C")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the
    last one silently, so a second ``model:`` block would drop the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` may override on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader's own check names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1's integers include forms nobody types as numbers: ``0111`` is octal 73, ``1:30``
# sexagesimal 90, ``1_000`` a thousand, ``0x1F`` 31, so a stream ``id: 0111`` became "73" and
# wrote 73.mp4. Only plain decimals are integers here; the rest stay text, which a text setting
# keeps as written and a number setting refuses by name.
_INT_TAG = "tag:yaml.org,2002:int"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def read_yaml(path: str | os.PathLike, what: str = "config file", error: type[ConfigError] = ConfigError) -> dict:
    """A YAML mapping from ``path`` (safe loading: plain data only); problems raise ``error`` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a YAML {what} (not UTF-8 text)") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def saved_mapping(path: str | os.PathLike) -> dict | None:
    """The mapping a YAML (or JSON, which YAML reads) file holds; None when it holds none or cannot
    be read. For telling a file a command saved from another of its name before replacing it."""
    try:
        return read_yaml(path)
    except (ConfigError, OSError):
        return None


def parse_overrides(items: list[str] | None) -> dict:
    """``["optim.lr=1e-4", "data.crop=128"]`` -> nested dict; values are parsed as YAML."""
    result: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if not raw.strip():  # YAML reads nothing as null: `--set run.out_dir=$UNSET` wrote into the current folder
            raise ConfigError(f"override {item!r} has no value (an unset shell variable?); write {key}=null to unset the key")
        try:
            value = _load_yaml(raw)
        except yaml.YAMLError:  # e.g. {stream}.mp4, a flow mapping cut short: the text as written
            value = raw  # (the setting's type check names it if text does not fit there)
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[leaf] = value
    return result


def apply_overrides(base: Any, extra: Any, where: str = "") -> Any:
    """Deep-merge ``extra`` (from ``parse_overrides``) into ``base``; the one override rule.

    Mappings merge key by key; a numeric key indexes into a list (``streams.0.id=x``), and an
    index past the list's end is a ``ConfigError``. Anything else is replaced.
    """
    if not isinstance(extra, dict) or not isinstance(base, (dict, list)):
        return extra
    if isinstance(base, list):
        merged_list = list(base)
        for key, value in extra.items():
            if not str(key).isdigit() or int(key) >= len(merged_list):
                raise ConfigError(f"override {where}{key}: {where.rstrip('.') or 'list'} has {len(merged_list)} item(s)")
            merged_list[int(key)] = apply_overrides(merged_list[int(key)], value, f"{where}{key}.")
        return merged_list
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = apply_overrides(merged.get(key), value, f"{where}{key}.")
    return merged


def load_config(cls: type[C], path: str | os.PathLike | None, overrides: list[str] | None = None, settings: dict | None = None) -> C:
    """Read ``path`` (YAML), apply ``key=value`` overrides (``apply_overrides``), then ``settings``
    (a command's own flags: typed values nested as in the config; they win), and check it once,
    so that an error names the values the command runs with."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a config is read from a YAML file's path (str or Path); got {type(path).__name__} (a dict goes to from_dict)")
    if isinstance(overrides, str):  # a string is a list of characters: 'r' must look like section.key=value
        raise TypeError(f"overrides are a list of 'section.key=value' strings; got the string {overrides!r} (put it in a list)")
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, parse_overrides(overrides))
    data = apply_overrides(data, settings or {})
    return from_dict(cls, data, where=str(path) if path else "config")


def unknown_keys(data: dict, known: Iterable[str]) -> list[str]:
    """The keys of ``data`` outside ``known``, as text and sorted: YAML keys need not be
    strings (``1:``, ``null:``, and ``on:``/``yes:``, which YAML 1.1 reads as true)."""
    known = set(known)
    return sorted(str(key) for key in data if key not in known)


def from_dict(cls: type[C], data: Any, where: str = "config") -> C:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = unknown_keys(data, fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(fields)}")
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    kwargs = {name: _expanded_if_path(name, _convert(hints[name], value, f"{where}.{name}")) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ validation
        raise ConfigError(f"{where}: {exc}") from None


# The configs' fields that name files or folders: a leading ~/ is the home folder there (as in a
# shell), and only there: a topic, a stream id or a prompt is kept as written.
PATH_FIELDS = frozenset({"path", "out_dir", "calibration", "weights", "teacher", "init", "pretrained", "model_config", "ir", "vi"})


def _expanded_if_path(name: str, value: Any) -> Any:
    return home_expanded(value) if name in PATH_FIELDS and isinstance(value, str) else value


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict/list/scalars (for YAML and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(item) for item in obj]
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    return obj


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as YAML, the whole file at once (``ldfusion.paths.write_text_whole``; errors name ``path``)."""
    write_text_whole(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def finite_float(value: Any, where: str, error: type[ConfigError] = ConfigError) -> float:
    """``value`` as a finite float (ints and numeric strings such as YAML's "1e-4" too), else ``error``."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
    elif isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise error(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise error(f"{where}: must be a finite number, got {value!r}")
    return number


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, item, f"{where}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(hint, value, where)


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        return finite_float(value, where)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # a plain decimal reads back as written (camera 0)
            return str(value)
        if isinstance(value, float):  # 0111.0 would be "111.0", .5 "0.5": not what was written
            raise ConfigError(f"{where}: expected text, got the number {value!r}; quote it if it is text")
        if isinstance(value, bool):  # YAML 1.1 reads true, yes, on, off as booleans
            raise ConfigError(f"{where}: expected text, got {str(value).lower()} (YAML reads yes/no/on/off/true/false so); quote it if it is text")
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {hint}")
