"""Starting points for a network: weights files in the layouts they come in, loaded safely (tensors only, no
pickled code) and reported (what was loaded, what stayed initialised).

Layouts (:data:`LAYOUTS`); a file is read in the one that maps the most of its tensors onto the network:

- ``medseg checkpoint``: what ``medseg fit`` writes (``state_dict``, ``net.``-prefixed keys of the whole
  network) and what ``medseg pretrain`` writes (``net.swinViT.*``, the encoder, plus its pre-training heads);
- ``medseg CLIP checkpoint``: ``image_encoder.swinViT.*``, the Swin image tower of ``configs/clip_demo.yaml``
  with ``medseg.nets.SwinImageEncoder``;
- ``Swin UNETR authors' model_swinvit.pt`` (Tang et al., CVPR 2022, and their pre-training code):
  ``state_dict`` with ``module.``-prefixed keys of the Swin transformer alone (``module.patch_embed.proj.weight``,
  ``module.layers1.0.blocks.0.mlp.fc1.weight``, ``module.swin_vit.`` in a raw pre-training checkpoint) plus
  the ``rotation_head``, ``contrastive_head`` and ``conv`` heads, which nothing uses; mapped as MONAI's
  ``SwinUNETR.load_from`` maps them (``fc1``/``fc2`` are MONAI's ``linear1``/``linear2``);
- ``MONAI ssl_pretrained_weights.pth``: ``model`` with ``encoder.``-prefixed keys (``encoder.layers1.0.0.blocks...``),
  mapped by MONAI's own ``filter_swinunetr``;
- ``Swin UNETR state_dict``: MONAI's keys, bare or with DDP's ``module.`` / ``model.``.

A tensor whose name matches but whose shape differs is left initialised and reported (a new output layer),
except the layers that read the image when only their input channels differ and one side has one: the
1-channel CT encoders MONAI publishes then start a 4-channel MR network (weights repeated and divided by the
channel count, so a scan repeated over the channels gives the file's features), and the reverse (summed).
A file where most named tensors differ in shape (made for another ``feature_size``) is an error, not a partial
load that would leave the encoder random.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.networks.nets.swin_unetr import filter_swinunetr
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.encoders import encoder_prefix

# Tensors that read the input image: their input-channel axis may be adapted (see the module docstring)
INPUT_TENSORS = (
    "swinViT.patch_embed.proj.weight",
    "encoder1.layer.conv1.conv.weight",
    "encoder1.layer.conv3.conv.weight",
)


class WeightsError(MedsegError, ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or matching nothing in the network."""


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe payloads, RuntimeError for damaged zips ...
        raise WeightsError(f"{path}: {_load_failure(path, e)}") from None


def _load_failure(path: Path, error: Exception) -> str:
    """What a failed ``torch.load(weights_only=True)`` means for the user, without torch's advice to load
    unsafely (medseg never does)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK" and not zipfile.is_zipfile(path):
        return "damaged or truncated: its zip archive has no end (copy it again, or use another checkpoint)"
    if head != b"PK" and not head.startswith(b"\x80"):  # neither torch's zip nor a (legacy) pickle
        return "not a PyTorch weights file (neither a zip archive nor a pickle): damaged, or another format"
    text = str(error)
    if isinstance(error, EOFError) or "zip archive" in text:
        return f"damaged or truncated, cannot be read ({type(error).__name__}): copy it again, or use another"
    if isinstance(error, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)|(Unsupported operand \d+)", text)
        what = f" ({found.group(1) or found.group(2)})" if found else ""
        return (
            f"refused to load: it holds pickled Python objects or instructions{what}, not only tensors, and medseg "
            "loads weights only (torch.load weights_only=True), never pickled code. If you trust the file, save "
            "it again with tensors, numbers, strings and plain containers only"
        )
    return f"cannot be read ({type(error).__name__}: {text.splitlines()[0] if text else ''})"


def extract_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    """The tensors of a weights file as they are named there: a bare state_dict, or the one under
    ``state_dict`` (Lightning, the Swin UNETR authors), ``model`` (MONAI's ssl weights) or ``net``."""
    for key in ("state_dict", "model", "net"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {name: value for name, value in obj.items() if isinstance(value, torch.Tensor)}


# ------------------------------------------------------------------------------------------ layouts


def _strip(*prefixes: str) -> Callable[[str], str]:
    def rename(key: str) -> str:
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        return key

    return rename


def _medseg(key: str) -> str | None:
    return key.removeprefix("net.") if key.startswith("net.") else None


def _clip(key: str) -> str | None:
    return key.removeprefix("image_encoder.") if key.startswith("image_encoder.") else None


def _authors(key: str) -> str | None:
    key = _strip("module.", "swin_vit.", "swinViT.")(key)
    if not key.startswith(("patch_embed.", "layers")):
        return None  # rotation_head, contrastive_head, conv: the pre-training heads
    return "swinViT." + key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def _monai_ssl(key: str) -> str | None:
    mapped = filter_swinunetr(key, None)
    return mapped[0] if mapped else None


LAYOUTS: dict[str, Callable[[str], str | None]] = {
    "medseg checkpoint": _medseg,
    "medseg CLIP checkpoint": _clip,
    "Swin UNETR authors' model_swinvit.pt": _authors,
    "MONAI ssl_pretrained_weights.pth (filter_swinunetr)": _monai_ssl,
    "Swin UNETR state_dict": _strip("module.", "model."),
}


def _adapt(name: str, value: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """``value`` shaped for the network's ``own`` tensor, and how it was adapted (None: as it is); (None, None)
    when it does not fit."""
    if value.shape == own.shape:
        return value, None
    same_but_inputs = value.ndim == own.ndim >= 2 and value.shape[:1] + value.shape[2:] == own.shape[:1] + own.shape[2:]
    if name not in INPUT_TENSORS or not same_but_inputs:
        return None, None
    file_in, own_in = value.shape[1], own.shape[1]
    if file_in == 1:
        return value.repeat(
            1, own_in, *[1] * (value.ndim - 2)
        ) / own_in, f"1 input channel -> {own_in}: repeated, / {own_in}"
    if own_in == 1:
        return value.sum(1, keepdim=True), f"{file_in} input channels -> 1: summed"
    return None, None


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the layout it read the file in and the network tensors it set."""

    path: Path
    layout: str
    loaded: list[str]  # network keys set from the file
    initialised: list[str]  # network keys left as they were
    unused: list[str]  # file keys that set nothing (pre-training heads, other networks' parts)
    adapted: dict[str, str] = field(default_factory=dict)  # network key -> how its input channels were adapted
    mismatched: dict[str, str] = field(default_factory=dict)  # network key -> "file [..], network [..]"

    def encoder(self) -> tuple[str, int, int] | None:
        """``(prefix, loaded, total)`` for the network's encoder (``swinViT.``, ``vit.``), None without one."""
        prefix = encoder_prefix(self.loaded + self.initialised)
        if prefix is None:
            return None
        loaded = sum(k.startswith(prefix) for k in self.loaded)
        return prefix, loaded, loaded + sum(k.startswith(prefix) for k in self.initialised)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.initialised)
        lines = [f"pretrained: {self.path} ({self.layout}): loaded {len(self.loaded)} of {total} network tensors"]
        encoder = self.encoder()
        if encoder:
            prefix, loaded, n = encoder
            state = "complete" if loaded == n else f"{n - loaded} left initialised"
            lines[0] += f"; encoder {prefix.rstrip('.')} {loaded} of {n} ({state})"
        if self.initialised:
            lines.append(f"  initialised as built: {len(self.initialised)}, e.g. {_some(self.initialised)}")
        if self.unused:
            lines.append(f"  not used from the file: {len(self.unused)}, e.g. {_some(self.unused)}")
        lines += [f"  adapted: {k} ({how})" for k, how in self.adapted.items()]
        lines += [f"  shape differs, left initialised: {k} ({shapes})" for k, shapes in self.mismatched.items()]
        return "\n".join(lines)


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _read_as(layout: str, weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict:
    """Network key -> (file key, tensor) for every file tensor ``layout`` names a network tensor with."""
    rename, mapped = LAYOUTS[layout], {}
    for key, value in weights.items():
        name = rename(key)
        if name is not None and name in own and name not in mapped:
            mapped[name] = (key, value)
    return mapped


def load_pretrained(net: nn.Module, path: str | Path, strict: bool = False) -> LoadReport:
    """Load what ``path`` holds for ``net``, in the layout that matches most of it (module docstring).

    Raises:
        WeightsError: the file is unreadable or unsafe, no tensor of it fits the network (the message names
            the file, the layouts tried and examples of both sides' names), or ``strict`` and a network
            tensor stays initialised.
    """
    path = Path(path)
    weights = extract_state_dict(safe_load(path))
    own = net.state_dict()
    candidates = {layout: _read_as(layout, weights, own) for layout in LAYOUTS}
    fits = {
        layout: sum(_adapt(name, value, own[name])[0] is not None for name, (_, value) in mapped.items())
        for layout, mapped in candidates.items()
    }
    layout = max(fits, key=fits.get)  # the first of equals: LAYOUTS is ordered from the most specific
    if not fits[layout]:
        raise WeightsError(
            f"{path}: no tensor matches {type(net).__name__} in any layout medseg reads ({'; '.join(LAYOUTS)}): "
            f"the file has {len(weights)} tensors, e.g. {_some(list(weights)) or 'none'}; the network expects "
            f"e.g. {_some(list(own))}"
        )
    loaded, adapted, mismatched = {}, {}, {}
    for name, (_, value) in candidates[layout].items():
        fitted, how = _adapt(name, value, own[name])
        if fitted is None:
            mismatched[name] = f"file {list(value.shape)}, network {list(own[name].shape)}"
            continue
        loaded[name] = fitted.to(own[name].dtype)
        if how:
            adapted[name] = how
    if len(mismatched) > len(loaded):
        name, shapes = next(iter(mismatched.items()))
        raise WeightsError(
            f"{path}: {len(mismatched)} of the {len(mismatched) + len(loaded)} tensors it names for "
            f"{type(net).__name__} ({layout}) have another shape, e.g. {name}: {shapes}; it was made for a "
            "network of another size (feature_size, channels, depths): build the network as the file's was"
        )
    used = {key for name, (key, _) in candidates[layout].items() if name in loaded}
    report = LoadReport(
        path=path,
        layout=layout,
        loaded=list(loaded),
        initialised=[k for k in own if k not in loaded],
        unused=[k for k in weights if k not in used],
        adapted=adapted,
        mismatched=mismatched,
    )
    if strict and report.initialised:
        raise WeightsError(
            f"{path}: {len(report.initialised)} network tensors missing, e.g. {_some(report.initialised)}"
        )
    net.load_state_dict(loaded, strict=False)
    return report
