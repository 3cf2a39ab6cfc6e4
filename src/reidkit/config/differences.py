"""Differences between two configs, key by dotted key (resume checks, run comparisons)."""

from __future__ import annotations

from reidkit.config.sections import Config


def flatten(values: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} → {"a.b": 1}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts, as 'key: old -> new'.

    A key missing from `saved` whose current value is its default is no difference: the key was added
    to reidkit after `saved` was written, and the default keeps the behaviour `saved` was trained with.
    """
    old, new, defaults = flatten(saved), flatten(current), flatten(Config().to_dict())
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and not (key not in old and key in defaults and new[key] == defaults[key])]
