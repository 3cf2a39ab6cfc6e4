"""Configs from YAML files and `key=value` overrides, checked key by key and type by type; back to YAML."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from reidkit.config.rules import RENAMED_CHOICES
from reidkit.config.sections import Config

MAX_CONFIG_BYTES = 1_000_000  # a config is a few KB; a larger file is not one
MAX_DEPTH = 16  # mapping/list levels (a config has three: section, term, key; plus lists)
MAX_INT_DIGITS = 18  # every count of a config fits; a longer digit string is a string (refused by its type)
from reidkit.errors import ConfigError
from reidkit.outputs import write_text


class ConfigLoader(yaml.SafeLoader):
    """YAML with plain scalars only: ints are ASCII decimal digits (`010` is ten, no `0x`, `0o`, `1_000` or
    `1:30`, which YAML 1.1 reads as 16, 8, 1000 and 90), floats are decimal with an optional exponent (`1e-4`
    too, which YAML 1.1 reads as a string; `.inf`/`.nan` are read, then refused as not finite), booleans are
    true/false (not yes/no/on/off). Anything else is a string, which the key's type then refuses."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in resolvers if tag not in (
        "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(rf"^[-+]?[0-9]{{1,{MAX_INT_DIGITS}}}$"),
                                   list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))
ConfigLoader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(loader.construct_scalar(node)))


def parse_yaml(text: str) -> Any:
    """`text` read as YAML with `ConfigLoader`'s plain scalars (raises yaml.YAMLError)."""
    return yaml.load(text, ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in RENAMED_CHOICES.get(tp, {}):
            raise ConfigError(f"{key}: {value!r} is now {RENAMED_CHOICES[tp][value]}")
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_check_value(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if _is_dataclass_type(tp):  # a list item such as one of data.train_sets
        try:
            return _from_dict(tp, value, f"{key}.")
        except ConfigError as error:  # the item's own checks name its keys data.<key>: name them key.<key>
            message = str(error)
            if key not in message:
                message = f"{key}.{message[5:]}" if message.startswith("data.") else f"{key}: {message}"
            raise ConfigError(message) from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {reprlib.repr(value)}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not allowed; use a finite number")
    return value


def _unknown_key(key: str, allowed: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    return ConfigError(f"unknown config key '{key}'{suggestion} (allowed: {', '.join(allowed)})")


def _from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(f"{prefix}{key}", names)
        if _is_dataclass_type(hints[key]):
            kwargs[key] = _from_dict(hints[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from nested plain values, checking every key and type."""
    return _from_dict(Config, values or {})


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.epochs=10")
    key, raw = text.split("=", 1)
    if raw.lstrip().startswith(("[", "{")):  # YAML flow style: [40, 70], [{dataset: synthetic, root: data/b}]
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"override '{text}': the value is not a list or mapping ({error})") from None
    elif raw in ("null", "None"):
        value = None
    else:  # a number, true/false or a quoted string as in a config file; bare words such as resnet18 are strings
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError:
            value = raw
        if not isinstance(value, (int, float, bool, str)):
            value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b.c=value`` of `overrides` in the nested dict `values` (returned; input unchanged)."""
    if not isinstance(values or {}, dict):
        raise ConfigError(f"config: expected a mapping of sections (data, model, ...), got {values!r}")
    values = yaml.safe_load(yaml.safe_dump(values or {}))
    for text in overrides:
        path, value = _parse_override(text)
        cls: type = Config
        node = values
        for depth, part in enumerate(path):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                raise _unknown_key(".".join(path[: depth + 1]), list(hints))
            if depth == len(path) - 1:
                if _is_dataclass_type(hints[part]):
                    raise ConfigError(f"override '{text}' names a section; set one of its keys instead")
                node[part] = value
            else:
                if not _is_dataclass_type(hints[part]):
                    raise ConfigError(f"override '{text}': '{part}' is not a section")
                cls = hints[part]
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{'.'.join(path[: depth + 1])}: expected a mapping of keys, got {node!r}")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply ``key=value`` overrides.

    Raises:
        ConfigError: missing or empty file, invalid YAML, a file or section that is not a mapping, unknown key,
            wrong type, a disallowed choice or an out-of-range value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        values = read_yaml(path, "see configs/ for examples")
        if values is None:
            raise ConfigError(f"config file {path} is empty; list the keys it changes (see configs/ for examples), "
                              "or leave out --config for the defaults")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, loss:, train:, "
                              f"eval:), got {type(values).__name__} {reprlib.repr(values)}")
    return config_from_dict(apply_overrides(values, overrides or []))


def read_yaml(path: Path, fix: str) -> Any:
    """The YAML document in the file `path` (None when it holds none).

    Raises:
        ConfigError: `path` is a folder, a device, pipe or socket, over 1 MB, not UTF-8, not valid YAML, or
            nested more than `MAX_DEPTH` levels; the message names the problem and ends with `fix`.
    """
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file; {fix}")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file (a device, pipe or socket); give a YAML file; "
                          f"{fix}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size:,} bytes, too large for a config (at most "
                          f"{MAX_CONFIG_BYTES:,}); {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position "
                          f"{error.start}); save it as UTF-8; {fix}") from error
    except OSError as error:
        raise ConfigError(f"cannot read config file {path} ({error.strerror or error}); {fix}") from error
    try:
        values = parse_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML ({where}{problem}); {fix}") from error
    except RecursionError as error:
        raise ConfigError(f"{path} nests too deeply to be a config (at most {MAX_DEPTH} levels); {fix}") from error
    if _depth(values) > MAX_DEPTH:
        raise ConfigError(f"{path} nests {_depth(values)} levels deep, more than a config's {MAX_DEPTH}; {fix}")
    return values


def _depth(values: Any) -> int:
    """Levels of nested mappings and lists in `values` (0 for a scalar); each node is visited once, so YAML
    aliases (shared or recursive nodes) cost nothing."""
    depth, level, seen = 0, [values], set()
    while True:
        containers = [node for node in level if isinstance(node, (dict, list)) and id(node) not in seen]
        if not containers:
            return depth
        seen.update(id(node) for node in containers)
        depth += 1
        level = [child for node in containers for child in (node.values() if isinstance(node, dict) else node)]


def save_config(config: Config, path: str | Path) -> None:
    """Write `config` as YAML with every field, so a run folder records exactly what ran."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

