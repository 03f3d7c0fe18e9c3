"""Typed configuration and its canonical hash: the identity of a run.

A run's identity is the hash of its non-default settings in canonical JSON (sorted keys, no spaces), so
adding a field with a default never renames old runs. The seed is not part of it: replicates of one
configuration live side by side (`paths.run_dir`). Every run directory holds the full configuration
(`write_config`), so a reader never needs the hash function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from . import io
from .errors import InputError


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and paths as JSON-ready dicts, lists and strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"Configurations hold finite numbers only; got {value}.")
    return value


def non_defaults(config: Any) -> dict[str, Any]:
    """The fields of a dataclass that differ from their defaults (nested dataclasses compared field by field)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(default) and type(value) is type(default):
            nested = non_defaults(value) if value != default else {}
            if nested:
                out[f.name] = nested
        elif default is dataclasses.MISSING or to_plain(value) != to_plain(default):
            out[f.name] = to_plain(value)
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"))


def config_hash(config: Any, length: int = 12) -> str:
    """Short SHA-256 of the class name and the non-default settings."""
    payload = canonical_json({"kind": type(config).__name__, "settings": non_defaults(config)})
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def write_config(path: Path, config: Any, **extra: Any) -> Path:
    """Write the full configuration (all fields, defaults included) and its hash to `path` (a JSON file)."""
    payload = {
        "kind": type(config).__name__,
        "config_hash": config_hash(config),
        "config": to_plain(config),
        "non_defaults": non_defaults(config),
        **to_plain(extra),
    }
    return io.write_json(Path(path), payload)
