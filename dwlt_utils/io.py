"""Atomic writes and safe reads: a killed run leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch


def atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save through a temporary file; the object must hold tensors and plain containers only."""
    return atomic_write(path, lambda f: torch.save(obj, f), "wb")


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load restricted to tensors and plain containers: no code from the file ever runs."""
    return torch.load(path, map_location=map_location, weights_only=True)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why `url`'s host cannot be reached within `timeout` seconds, or None when it answers.

    torchvision's and torch.hub's downloads have no timeout: without a network they would hang rather
    than fail, so every download first asks this."""
    parts = urlparse(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host} did not answer ({err})"
    return None


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on `lock_path` (created if absent): other processes asking for it wait."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
