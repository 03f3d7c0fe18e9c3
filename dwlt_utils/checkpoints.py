"""Pre-trained ImageNet ResNet-50 sources (PROTOCOL.md section 2) and one safe loader for all their layouts.

`load_backbone_state` turns any of the four layouts below into a state dict of the architecture it is given
(`models.ARCHITECTURES`; each source names its own) that loads with `strict=True`; the layout is read from
the keys, never from the file name:

- `torchvision`: a plain state dict (`conv1.weight`, `layer1.0.downsample.0.weight`, `fc.weight`, ...);
- `dataparallel`: the same keys prefixed `module.`, possibly under `state_dict` beside `epoch`, `arch`,
  `best_prec1`, `optimizer` (Wong et al.);
- `robustness`: a robustness-library dill pickle with `module.model.*` (the weights), `module.attacker.model.*`
  (the same weights again) and input normalisers, under `model` (older files: `state_dict`) (Salman et al.);
- `normalized`: this project's `normalize.mean`, `normalize.std`, `model.*` (`models.build_model`).

Files are first read with `weights_only=True`, which never runs code from the file. A file that needs full
unpickling is read only when its SHA-256 is that of a registered source or the caller passes `trust=True`
(which a user grants a file by listing its SHA-256 in the weights folder's SHA256SUMS, `read_checksums`).
`save_backbone_state` writes the converted weights as plain tensors, so later loads never unpickle again.
All three sources expect inputs normalised with the ImageNet mean and std below.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill
import torch
import torch.nn as nn

from . import paths
from .errors import FileFormatError, InputError, MissingInputError, UntrustedFileError, check_choice
from .io import read_weights_only, save_torch, sha256_of, torch_format, unreadable, unsupported_global, write_json
from .models import ARCHITECTURES, Architecture, architecture
from .vocabulary import PRETRAININGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("torchvision", "dataparallel", "robustness", "normalized")
DEFAULT_EPS_255 = 4  # the ε of the paper's robust sources is not known [choice]


@dataclass(frozen=True)
class PretrainedSource:
    """One published checkpoint: where it comes from, what it is, how to check it, what it should score."""

    name: str  # a pre-training of `vocabulary.PRETRAININGS`
    arch: str  # its architecture in `models.ARCHITECTURES`
    variant: str  # human-readable threat model, e.g. "linf 4/255", "l2 3"
    description: str
    citation: str
    filename: str
    url: str | None  # direct download; None when only a web page (`page`) offers the file
    page: str  # where a person finds the file and its documentation
    sha256: str | None  # None: no published hash was found
    sha256_from: str | None  # where that hash is published
    norm: str | None  # "linf" | "l2"; None for standard training
    eps: float  # radius in [0, 1] pixel units; 0 for standard training
    layout: str  # one of LAYOUTS
    imagenet_top1: float | None  # published clean ImageNet top-1 (%), for sanity checks
    imagenet_top1_from: str | None = None

    @property
    def eps_255(self) -> float | None:
        return self.eps * 255 if self.norm == "linf" else None


_TV_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
_WONG_DRIVE = "https://drive.google.com/open?id=1W2zGHyxTPgHhWln1kpHK5h-HY9kwfKfl"
_WONG_README = "https://github.com/locuslab/fast_adversarial/tree/master/ImageNet"
_HF = "https://huggingface.co/madrylab/robust-imagenet-models"
# Each file's page at this commit shows its Git LFS SHA-256.
_HF_PAGES = f"{_HF}/blob/3f04ac96136001cfe402022100728124cbe3fac5"


def _wong(eps_255: int, top1: float | None) -> PretrainedSource:
    return PretrainedSource(
        name="fast_adv",
        arch="resnet50",
        variant=f"linf {eps_255}/255",
        description=f"ResNet-50 trained by FGSM with random start at ℓ∞ ε = {eps_255}/255 (Wong et al.); the "
        f"file is in the authors' Google Drive folder linked from {_WONG_README}",
        citation='E. Wong, L. Rice, J. Z. Kolter, "Fast is better than free: Revisiting adversarial training", '
        "ICLR 2020, arXiv:2001.03994",
        filename=f"imagenet_model_weights_{eps_255}px.pth.tar",
        url=None,
        page=_WONG_DRIVE,
        sha256=None,
        sha256_from=None,
        norm="linf",
        eps=eps_255 / 255,
        layout="dataparallel",
        imagenet_top1=top1,
        imagenet_top1_from=None if top1 is None else "https://github.com/locuslab/fast_adversarial (README)",
    )


def _salman(norm: str, eps: float, sha256: str | None, top1: float) -> PretrainedSource:
    linf = norm == "linf"
    filename = f"resnet50_linf_eps{eps:.1f}.ckpt" if linf else f"resnet50_l2_eps{eps:g}.ckpt"
    radius = f"{eps:g}/255" if linf else f"{eps:g}"
    return PretrainedSource(
        name="adv",
        arch="resnet50",
        variant=f"{norm} {radius}",
        description=f"ResNet-50 trained by PGD adversarial training at {'ℓ∞' if linf else 'ℓ2'} ε = {radius} "
        "(Salman et al., robustness library)",
        citation='H. Salman, A. Ilyas, L. Engstrom, A. Kapoor, A. Madry, "Do adversarially robust ImageNet '
        'models transfer better?", NeurIPS 2020, arXiv:2007.08489',
        filename=filename,
        url=f"{_HF}/resolve/main/{filename}",
        page=_HF,
        sha256=sha256,
        sha256_from=None if sha256 is None else f"{_HF_PAGES}/{filename}",
        norm=norm,
        eps=eps / 255 if linf else eps,
        layout="robustness",
        imagenet_top1=top1,
        imagenet_top1_from=f"{_HF} (model card)",
    )


SOURCES: tuple[PretrainedSource, ...] = (
    PretrainedSource(
        name="standard",
        arch="resnet50",
        variant="IMAGENET1K_V1",
        description="torchvision ResNet-50 V1 weights (ResNet50_Weights.IMAGENET1K_V1, not the V2 weights)",
        citation='K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016',
        filename="resnet50-0676ba61.pth",
        url=_TV_URL,
        page="https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html",
        sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
        sha256_from="torchvision checks the prefix 0676ba61 named in the file name; the full digest is the one "
        "several independent public projects record for that download",
        norm=None,
        eps=0.0,
        layout="torchvision",
        imagenet_top1=76.13,
        imagenet_top1_from="torchvision ResNet50_Weights.IMAGENET1K_V1",
    ),
    _wong(2, 60.90),
    _wong(4, None),
    _salman("linf", 0.5, "9612d8096ef5378b4a32746072f72fedcb02c7ff4b747bc7163274f7ec2f0fd8", 73.73),
    _salman("linf", 1.0, None, 72.05),
    _salman("linf", 2.0, "59f28de783a049cb4d91ba1c0a09c314db2cc4bb1e859566e023f842b02772ac", 69.10),
    _salman("linf", 4.0, "9e62216975c111b8081481533b6142dec34be69abe5d90b54d7f860015c263db", 63.86),
    _salman("linf", 8.0, "b907957f8e3ce209816813d8811c682e965a1b0f48455def828d35a4cc2953dc", 54.53),
    _salman("l2", 0, "72d4a99582db5d7fa86c3fd2a089f0bfd6a10f69d635bca51f6ad72ac6b458f0", 75.80),
    _salman("l2", 0.01, "53d7a7c09d2733b113e255ac9fc578091f44adb8d00eee274c0e71dd1f4dc41e", 75.68),
    _salman("l2", 0.03, "e375df3bf07bf1360c04b0aff5cc19bb215e850b1af713327c87cf0353a5598f", 75.76),
    _salman("l2", 0.05, "e09d8763fcf825542f07389a1904adf15930451b8661a0de209c3bc39828c2ea", 75.59),
    _salman("l2", 0.1, "3298f8cf689e514d096df883ab491a11ee32c3b8d456d674add29d7b50721a43", 74.78),
    _salman("l2", 0.25, None, 74.14),
    _salman("l2", 0.5, "a5fc6fcc54946b73af7bd74289b0003cc9d2744fa0ff55c1a3d9fb2bce8fbd30", 73.16),
    _salman("l2", 1, "09f5273a568830ae23caf9162a06f4831a920293e0da1801aa182289052dcf90", 70.43),
    _salman("l2", 3, "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d", 62.83),
    _salman("l2", 5, "c50db4bbd9a61bc0e0a33290e1f07a79080e16489aa5ada869efc88306f497be", 56.13),
)


def get_source(
    name: str, eps_255: float | None = None, *, norm: str = "linf", eps_l2: float | None = None
) -> PretrainedSource:
    """The registered source `name` at ℓ∞ ε = eps_255/255 (default 4/255), or at ℓ2 ε = eps_l2 with norm="l2"."""
    check_choice("pre-trained source", name, PRETRAININGS)
    candidates = [s for s in SOURCES if s.name == name]
    if candidates[0].norm is None:
        if eps_255 or eps_l2:
            raise InputError(f"Source {name!r} is not adversarially trained, so it takes no ε; leave it unset.")
        return candidates[0]
    if norm not in ("linf", "l2") or (eps_l2 if norm == "linf" else eps_255) is not None:
        raise InputError(f"For source {name!r} give norm='linf' with eps_255, or norm='l2' with eps_l2.")
    wanted = (DEFAULT_EPS_255 if eps_255 is None else eps_255) / 255 if norm == "linf" else eps_l2
    for source in candidates:
        if wanted is not None and source.norm == norm and math.isclose(source.eps, wanted, abs_tol=1e-9):
            return source
    given = f"eps_255={eps_255}" if norm == "linf" else f"eps_l2={eps_l2}"
    accepted = ", ".join(s.variant for s in candidates)
    raise InputError(f"No {name!r} checkpoint for norm={norm!r}, {given}; accepted: {accepted}.")


def source_for_sha256(sha256: str) -> PretrainedSource | None:
    return next((s for s in SOURCES if s.sha256 == sha256), None)


_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def read_checksums(path: Path) -> dict[str, str]:
    """File name → SHA-256 from a listing in `sha256sum`'s format (one `<64 hex digits>  <file name>` per line,
    `*` before the name allowed, `#` comments and blank lines skipped); {} when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUMS_LINE.fullmatch(line.rstrip())
        if match is None:
            raise FileFormatError(
                f"Line {number} of {path} is not '<64 hex digits>  <file name>' (what `sha256sum FILE` prints): "
                f"{line[:80]!r}."
            )
        sums[Path(match[2]).name] = match[1].lower()
    return sums


def _published_at(path: Path) -> str | None:
    """Where a file of this name is published, when the registry knows the name."""
    source = next((s for s in SOURCES if s.filename == path.name), None)
    return source and (source.url or source.page)


def _download_hint(path: Path) -> str:
    return f"from {_published_at(path) or 'where you got it'}"


def _read(path: Path, fmt: str, sha256: str, trusted: bool) -> tuple[Any, bool]:
    """The unpickled object, and whether full unpickling was needed."""
    try:
        return read_weights_only(path), False
    except Exception as err:  # torch raises many types here; each becomes one sentence naming the file
        if not trusted:
            needs_globals = unsupported_global(err)
            if needs_globals is None:
                raise unreadable(path, fmt, err, f"download or copy it again {_download_hint(path)}") from err
            raise UntrustedFileError(
                f"{path} needs full unpickling (it names the Python object {needs_globals}), which can "
                f"run code from the file, and its SHA-256 {sha256} is not in the registry of known pre-trained "
                "checkpoints; pass trust=True only for a file from a source you trust."
            ) from err
    try:  # trusted: dill's unpickler reads plain pickles too, and robustness-library files need it
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=dill), True
    except Exception as err:
        raise unreadable(path, fmt, err, f"download or copy it again {_download_hint(path)}") from err


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"


def _unknown_layout(path: Path, arch: Architecture, found: list[str] | str) -> FileFormatError:
    """`found`: the offending keys, or what the file holds instead of a dict."""
    if isinstance(found, list):
        names = ", ".join(repr(k) for k in found[:3])
        found = f"{len(found)} key{'s' if len(found) != 1 else ''} such as {names}" if found else "no keys"
    return FileFormatError(
        f"{path} has an unknown key layout (found {found}); expected a {arch.name} state dict "
        f"({', '.join(arch.example_keys)}, ...), the same prefixed 'module.', a "
        "robustness-library checkpoint (module.model.*, module.attacker.model.*, module.normalizer.*) or a "
        "dwlt model (normalize.mean, normalize.std, model.*), each possibly under a 'state_dict' or 'model' entry."
    )


def _state_dict_in(
    obj: Any, path: Path, arch: Architecture
) -> tuple[dict[str, torch.Tensor], str | None, dict[str, Any]]:
    """The tensor dict, the entry that held it (None: the top level), and the other entries."""
    if _is_tensor_dict(obj):
        return dict(obj), None, {}
    if isinstance(obj, Mapping):
        for entry in ("state_dict", "model"):
            if _is_tensor_dict(obj.get(entry)):
                extras = {str(k): _json_value(v) for k, v in obj.items() if k != entry}
                return dict(obj[entry]), entry, extras
        raise _unknown_layout(path, arch, [str(k) for k in obj])
    raise _unknown_layout(path, arch, f"a {type(obj).__name__}, not a dict")


# Layouts that wrap the backbone under `model.`: (prefixes of the keys dropped, keys of the input normaliser).
_WRAPPED = {
    "robustness": (("attacker.", "normalizer."), ("normalizer.new_mean", "normalizer.new_std")),
    "normalized": (("normalize.",), ("normalize.mean", "normalize.std")),
}


def _convert(
    sd: dict[str, torch.Tensor], path: Path, arch: Architecture
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Backbone weights from one of LAYOUTS, with what was dropped and the input normaliser recorded."""
    module_prefix = all(k.startswith("module.") for k in sd)
    if module_prefix:
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if any(k.startswith("attacker.") for k in sd):
        layout = "robustness"
    elif "normalize.mean" in sd:
        layout = "normalized"
    else:
        layout = "dataparallel" if module_prefix else "torchvision"
    dropped_prefixes, norm_keys = _WRAPPED.get(layout, ((), ()))
    kept = [k for k in sd if not k.startswith(dropped_prefixes)]
    if dropped_prefixes:
        strays = [k for k in kept if not k.startswith("model.")]
        if strays:
            raise _unknown_layout(path, arch, strays)
        weights = {k[len("model.") :]: sd[k] for k in kept}
    else:
        weights = {k: sd[k] for k in kept}
    if layout == "robustness":
        attacker = {k[len("attacker.model.") :]: v for k, v in sd.items() if k.startswith("attacker.model.")}
        differing = [
            k
            for k in sorted(set(weights) | set(attacker))
            if k not in weights or k not in attacker or not torch.equal(weights[k], attacker[k])
        ]
        if differing:
            raise FileFormatError(
                f"{path} is a robustness-library checkpoint whose attacker copy of the weights differs from the "
                f"model weights (first at {differing[0]!r}), so it is not a consistent checkpoint; download it "
                f"again {_download_hint(path)}."
            )
    # A backbone key starts with one of the architecture's top-level modules; its first prunable weight and
    # its classifier's must be there.
    modules = {key.split(".")[0] for key in arch.state_keys}
    strays = [k for k in weights if k.split(".")[0] not in modules or "." not in k]
    required = (arch.example_keys[0], arch.classifier_weight)
    absent = " or ".join(repr(k) for k in required if k not in weights)
    if strays or absent:
        raise _unknown_layout(path, arch, strays or f"{len(weights)} backbone keys but no {absent}")
    # BatchNorm fills a missing counter with 0 when loading; doing it here gives every caller the full key set.
    added = [f"{k[: -len('running_mean')]}num_batches_tracked" for k in weights if k.endswith(".running_mean")]
    added = [k for k in added if k not in weights]
    weights.update({k: torch.tensor(0, dtype=torch.long) for k in added})
    normalization = None
    if norm_keys and all(k in sd for k in norm_keys):
        normalization = {"mean": sd[norm_keys[0]].flatten().tolist(), "std": sd[norm_keys[1]].flatten().tolist()}
    meta = {
        "layout": layout,
        "module_prefix": module_prefix,
        "dropped_keys": [("module." if module_prefix else "") + k for k in sd if k.startswith(dropped_prefixes)],
        "added_keys": added,
        "normalization": normalization,
    }
    return weights, meta


def load_backbone_state(
    path: str | Path, arch: str, *, trust: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict of the architecture named `arch` from a checkpoint in any of LAYOUTS, and a JSON-ready
    record of the file.

    Full unpickling (which can run code from the file) happens only when the file's SHA-256 is registered in
    SOURCES or `trust=True`; otherwise such a file raises UntrustedFileError before any of it is unpickled.
    """
    record = architecture(arch)
    path = Path(path)
    if not path.is_file():
        url = _published_at(path)
        raise MissingInputError(
            f"{path} does not exist or is not a file; "
            + (
                f"download it from {url} and put it there."
                if url
                else "check the path (dwlt_utils.checkpoints.SOURCES lists where each pre-trained model is published)."
            )
        )
    fmt = torch_format(path, f"download it again {_download_hint(path)}")
    sha256 = sha256_of(path)
    source = source_for_sha256(sha256)
    obj, unpickled = _read(path, fmt, sha256, trusted=trust or source is not None)
    sd, container, extras = _state_dict_in(obj, path, record)
    weights, conversion = _convert(sd, path, record)
    meta = {
        "file": str(path),
        "sha256": sha256,
        "source": None
        if source is None
        else {
            "name": source.name,
            "variant": source.variant,
            "filename": source.filename,
            "imagenet_top1": source.imagenet_top1,
        },
        "format": fmt,
        "full_unpickling": unpickled,
        "container": container,
        "extras": extras,
        **conversion,
    }
    return weights, meta


def load_pretrained_backbone(
    arch: str, path: str | Path, *, num_classes: int | None = None, trust: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """`models.build_backbone(arch, ...)` with the checkpoint's weights loaded strictly.

    The classifier size comes from the checkpoint's classifier weight unless `num_classes` is given.
    """
    record = architecture(arch)
    state, meta = load_backbone_state(path, arch, trust=trust)
    classes = record.classes_in(state) if num_classes is None else num_classes
    net = record.build(classes)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [
        f"{len(keys)} {what} such as {keys[0]!r}"
        for keys, what in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (reshaped, "keys of another shape"),
        )
        if keys
    ]
    if reshaped:
        problems[-1] += f" (file {list(state[reshaped[0]].shape)}, model {list(expected[reshaped[0]].shape)})"
    if problems:
        raise FileFormatError(
            f"{path} does not fit architecture {arch!r} with {classes} classes ({'; '.join(problems)}); give "
            f"the architecture the checkpoint was trained as (accepted: {', '.join(ARCHITECTURES)})."
        )
    net.load_state_dict(state, strict=True)
    return net, {**meta, "arch": arch, "num_classes": classes}


def save_backbone_state(path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write converted weights as plain CPU tensors (readable with weights_only=True) and `meta` beside them."""
    path = Path(path)
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InputError(f"Cannot save {path}: entry {not_tensors[0]!r} of the state dict is not a tensor.")
    save_torch(path, {k: v.detach().cpu() for k, v in state_dict.items()})
    # The file's own hash lets a later reader tell that it is still the file written.
    write_json(paths.sidecar_file(path), {**meta, "backbone_sha256": sha256_of(path)})
    return path
