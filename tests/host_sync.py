"""What would make the host wait for a CUDA device, caught on a CPU.

On a CPU nothing waits, so the check is by kind of call. `DeviceWaits` follows, inside its block, which
tensors live on the host (made without a device, or computed from host tensors only: a loader's shuffle, a
batch's labels before they move) and treats every other tensor as the device's. It records:
- a read of a device tensor's values by the host: `.item()`, `.tolist()`, `bool(t)`, `int(t)`, `float(t)`,
  `.numpy()`, `.cpu()`, and ops whose output size depends on the values (`nonzero`, boolean-mask indexing,
  `masked_select`, `unique`, ...);
- a tensor made from Python data on the device (`torch.tensor(3, device=d)`, `torch.as_tensor(h, device=d)`):
  on CUDA a blocking copy, the stream synchronised;
- a host tensor moved to the device without `non_blocking=True`: also a blocking copy.
The CUDA-side check (`torch.cuda.set_sync_debug_mode("error")`, tests/gpu) runs the same steps on a GPU.
"""

from __future__ import annotations

import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# Calls that read a device tensor's values back to the host, by their Python name.
READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "__array__",
    "__repr__",
    "__format__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "equal",
    "allclose",
    "is_nonzero",
    "repeat_interleave",
    "bincount",
    "histc",
}
FROM_PYTHON_DATA = {"tensor", "as_tensor", "asarray", "new_tensor"}
MOVES = {"to", "cuda"}


def _tensors(*trees) -> list[torch.Tensor]:
    return [leaf for tree in trees for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _names_a_device(args: tuple, kwargs: dict) -> bool:
    """Whether `.to(...)` / `.cuda(...)` is asked to move to a device (not only to change the dtype)."""
    if kwargs.get("device") is not None:
        return True
    return any(isinstance(a, (str, torch.device)) or isinstance(a, torch.Tensor) for a in args[1:])


class DeviceWaits(TorchFunctionMode):
    """Records, in order, every call inside the block that would make the host wait for a CUDA device."""

    def __init__(self):
        super().__init__()
        self.waits: list[str] = []
        # By id: a set would compare tensors with ==. Entries go when their tensor does, so ids never clash.
        self._host: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def _on_device(self, tensor: torch.Tensor) -> bool:
        return id(tensor) not in self._host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = _tensors(args, kwargs)
        wait = self._wait(name, args, kwargs, inputs)
        if wait:
            self.waits.append(wait)
        result = func(*args, **kwargs)
        if self._stays_on_host(name, args, kwargs, inputs):
            for tensor in _tensors(result):
                self._host[id(tensor)] = tensor
        else:
            for tensor in _tensors(result):
                self._host.pop(id(tensor), None)
        return result

    def _wait(self, name: str, args: tuple, kwargs: dict, inputs: list[torch.Tensor]) -> str | None:
        if name in READS and any(self._on_device(t) for t in inputs):
            return name
        if name == "__getitem__" and any(
            self._on_device(t) and t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1:])
        ):
            return "boolean-mask indexing"
        if name in FROM_PYTHON_DATA and kwargs.get("device") is not None and not inputs:
            return f"{name} from Python data onto the device"
        moved = inputs[:1]
        if name in MOVES and moved and not self._on_device(moved[0]) and _names_a_device(args, kwargs):
            if not kwargs.get("non_blocking", False):
                return f"blocking {name} to the device"
        return None

    def _stays_on_host(self, name: str, args: tuple, kwargs: dict, inputs: list[torch.Tensor]) -> bool:
        """A result lives on the host when nothing moves it to the device and all of its inputs live there."""
        if kwargs.get("device") is not None:
            return False
        if name in MOVES and _names_a_device(args, kwargs):
            return False
        return all(not self._on_device(t) for t in inputs)
