"""Strict loading of LivePortrait's published checkpoints from a local directory (never downloads).

Published layout (``KwaiVGI/LivePortrait`` ``pretrained_weights/liveportrait``)::

    WEIGHTS_DIR/base_models/appearance_feature_extractor.pth   -> AppearanceFeatureExtractor (F)
    WEIGHTS_DIR/base_models/motion_extractor.pth               -> MotionExtractor (M)
    WEIGHTS_DIR/base_models/warping_module.pth                 -> WarpingNetwork (W)
    WEIGHTS_DIR/base_models/spade_generator.pth                -> SPADEDecoder (G)
    WEIGHTS_DIR/retargeting_models/stitching_retargeting_module.pth
        {"retarget_shoulder": stitching MLP, "retarget_mouth": lip MLP, "retarget_eye": eye MLP}

The same five files lying flat in ``WEIGHTS_DIR`` are accepted too. Each file is a plain state dict (keys may
carry a DataParallel ``module.`` prefix, which is stripped); loading is strict and every mismatch is reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.appearance import AppearanceFeatureExtractor
from jam_flow.liveportrait.motion_extractor import MotionExtractor
from jam_flow.liveportrait.pipeline import LivePortraitModels
from jam_flow.liveportrait.spade import SPADEDecoder
from jam_flow.liveportrait.stitching import StitchingRetargetingModule
from jam_flow.liveportrait.warping import WarpingNetwork

__all__ = [
    "STITCHING_KEYS",
    "WEIGHT_FILES",
    "load_liveportrait",
    "load_motion_extractor",
    "load_state_dict_strict",
    "read_checkpoint",
    "resolve_weight_files",
]

# network name -> path relative to the weights directory (published layout)
WEIGHT_FILES: dict[str, str] = {
    "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
    "motion_extractor": "base_models/motion_extractor.pth",
    "warping_module": "base_models/warping_module.pth",
    "spade_generator": "base_models/spade_generator.pth",
    "stitching_retargeting_module": "retargeting_models/stitching_retargeting_module.pth",
}

# sub-network -> key inside stitching_retargeting_module.pth
STITCHING_KEYS: dict[str, str] = StitchingRetargetingModule.CHECKPOINT_KEYS

# network name -> class built with LivePortrait's models.yaml defaults
_NETWORKS: dict[str, type[nn.Module]] = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEDecoder,
}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, object]:
    """``torch.load`` a checkpoint onto the CPU (tensors only, no pickled code); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: LivePortrait weight file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle ...
        raise InputError(f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    return dict(obj)


def _strip_module_prefix(state: Mapping[str, object]) -> dict[str, object]:
    """Drop the ``module.`` prefix DataParallel training leaves on every key."""
    return {
        (key[len("module.") :] if key.startswith("module.") else key): value for key, value in state.items()
    }


def load_state_dict_strict(module: nn.Module, state: Mapping[str, object], source: str) -> None:
    """Load ``state`` into ``module`` strictly; on any mismatch raise ``InputError`` listing every problem.

    ``source`` names the file (and entry) in messages. Missing keys, unexpected keys, non-tensor values and
    shape mismatches are all listed.
    """
    state = _strip_module_prefix(state)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    not_tensor = sorted(k for k in set(state) & set(expected) if not isinstance(state[k], Tensor))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"  # type: ignore[union-attr]
        for k in set(state) & set(expected)
        if k not in not_tensor and tuple(state[k].shape) != tuple(expected[k].shape)  # type: ignore[union-attr]
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if not_tensor:
        problems.append(f"non-tensor values: {', '.join(not_tensor)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
    if problems:
        raise InputError(f"{source}: does not match {type(module).__name__}: " + " | ".join(problems))
    module.load_state_dict(state, strict=True)  # type: ignore[arg-type]


def load_motion_extractor(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> MotionExtractor:
    """Build LivePortrait's ``MotionExtractor`` and load ``motion_extractor.pth`` strictly; eval mode on ``device``.

    ``path`` may be the ``.pth`` file itself or a LivePortrait weights directory (published or flat layout).
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_weight_files(path, names=("motion_extractor",))["motion_extractor"]
    model = MotionExtractor()
    load_state_dict_strict(model, read_checkpoint(path), str(path))
    return model.to(device).eval()


def resolve_weight_files(
    weights_dir: str | os.PathLike[str], names: tuple[str, ...] = tuple(WEIGHT_FILES)
) -> dict[str, Path]:
    """Find each named weight file in ``weights_dir`` (published layout first, then flat).

    Raises ``InputError`` listing every missing file at once.
    """
    root = Path(weights_dir)
    if not root.is_dir():
        raise InputError(
            f"LivePortrait weights directory {root}: not a directory (expected pretrained_weights/liveportrait)"
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        rel = WEIGHT_FILES[name]
        for candidate in (root / rel, root / Path(rel).name):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(rel)
    if missing:
        raise InputError(
            f"LivePortrait weights directory {root}: missing weight files: {', '.join(missing)} "
            "(published layout base_models/ + retargeting_models/, or the files flat in the directory)"
        )
    return found


def load_liveportrait(
    weights_dir: str | os.PathLike[str], device: str | torch.device = "cpu", half: bool = False
) -> LivePortraitModels:
    """Load all five LivePortrait networks strictly from ``weights_dir`` (published or flat layout).

    Missing files are all listed in one ``InputError``; so are mismatching keys / shapes per file.
    ``half`` enables autocast (see ``LivePortraitModels``). Networks are returned in eval mode on ``device``.
    """
    files = resolve_weight_files(weights_dir)
    stitching = StitchingRetargetingModule()  # smallest file first: a bad checkpoint fails fast
    path = files["stitching_retargeting_module"]
    for part, state in stitching.split_checkpoint(read_checkpoint(path), str(path)).items():
        load_state_dict_strict(getattr(stitching, part), state, f"{path} [{STITCHING_KEYS[part]}]")
    nets: dict[str, nn.Module] = {}
    for name, cls in _NETWORKS.items():
        nets[name] = cls()
        load_state_dict_strict(nets[name], read_checkpoint(files[name]), str(files[name]))
    return LivePortraitModels(
        F=nets["appearance_feature_extractor"],  # type: ignore[arg-type]
        M=nets["motion_extractor"],  # type: ignore[arg-type]
        W=nets["warping_module"],  # type: ignore[arg-type]
        G=nets["spade_generator"],  # type: ignore[arg-type]
        S=stitching,
        device=device,
        half=half,
    )
