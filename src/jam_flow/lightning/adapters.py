"""Glue between the training code and the networks: the ``JointDiT.forward`` interface for every stage, the
network's rebuild spec (class_path + init_args) and stage-1 -> stage-2 weight transfer.

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, dm mouth dims (12), dr rest dims
(51). Masks are **True = valid**.

Stage 1 motion (paper §4.5, appendix A): the Motion-DiT is trained alone with per-frame audio features
concatenated to its input: precomputed wav2vec2 / HuBERT features from the batch (``motion_audio_feats``,
``--data.audio_features wav2vec2``) or the mel averaged onto the motion grid (:func:`mel_per_motion_frame`): motion
frame ``j`` gets the mean of the mel frames ``i`` with ``audio_to_motion_frame(i) == j`` (3-4 frames at 24 kHz /
hop 256 / 25 fps), zeros past the audio.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.features import audio_to_motion_frame
from jam_flow.inference.bundle import AudioOnly, check_state_dict

__all__ = [
    "joint_interface",
    "net_spec",
    "mel_per_motion_frame",
    "load_motion_init",
    "build_net",
    "enable_activation_checkpointing",
    "load_audio_init",
    "read_weights",
]


def mel_per_motion_frame(
    mel: Tensor, audio_mask: Tensor, m: int, sample_rate: int = 24000, hop_length: int = 256, fps: int = 25
) -> Tensor:
    """``mel [b, n, c]`` -> ``[b, m, c]``: mean of the valid mel frames falling into each motion frame."""
    b, n, c = mel.shape
    idx = audio_to_motion_frame(torch.arange(n, device=mel.device), sample_rate, hop_length, fps).clamp(
        max=m - 1
    )
    w = audio_mask.to(mel.dtype)  # [b, n]
    out = torch.zeros(b, m, c, device=mel.device, dtype=mel.dtype)
    out.index_add_(1, idx, mel * w[..., None])
    count = torch.zeros(b, m, device=mel.device, dtype=mel.dtype)
    count.index_add_(1, idx, w)
    return out / count.clamp_min(1.0)[..., None]


def _as_bool(flag: bool | Tensor, like: Tensor) -> Tensor:
    """A Python bool or a ``[b]`` bool tensor as a ``[b]`` bool tensor on ``like``'s device."""
    if isinstance(flag, Tensor):
        return flag.to(device=like.device, dtype=torch.bool)
    return torch.full((like.shape[0],), bool(flag), dtype=torch.bool, device=like.device)


def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class _Direct:
    """A network that already has the joint interface (a plain callable, so it is not registered twice as a
    submodule of the LightningModule)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        return self.net(**kwargs)


class _MotionOnly:
    """A ``MotionDiT`` (or a ``JointDiT``'s motion branch) behind the joint interface, fed with per-frame audio
    features (stage 1 motion). The audio stream is never generated here: its velocity is zero."""

    def __init__(
        self, net: nn.Module, sample_rate: int = 24000, hop_length: int = 256, fps: int = 25
    ) -> None:
        self.net = net
        self.sample_rate, self.hop_length, self.fps = sample_rate, hop_length, fps

    def __call__(
        self,
        audio_x,
        audio_cond,
        text,
        time,
        motion_x=None,
        motion_cond=None,
        motion_rest=None,
        audio_mask=None,
        motion_mask=None,
        motion_time=None,
        drop_audio_cond=False,
        drop_motion_cond=False,
        drop_rest=False,
        motion_sees_audio=True,
        motion_audio_feats=None,
        **_: Any,
    ) -> tuple[Tensor, Tensor]:
        if audio_mask is None:
            audio_mask = torch.ones(audio_x.shape[:2], dtype=torch.bool, device=audio_x.device)
        # the audio stream is fully given in stage 1 (time 1: audio_x is the clean mel); its "conditioning
        # dropout" and the motion branch's joint-attention switch (guidance mode "joint") drop the per-frame audio
        # features, the stage-1 stand-in for f_audio
        feats = motion_audio_feats  # precomputed wav2vec2 features, else the mel per motion frame
        if feats is None:
            feats = mel_per_motion_frame(
                audio_x, audio_mask, motion_x.shape[1], self.sample_rate, self.hop_length, self.fps
            )
        v = self.net(
            motion_x,
            motion_cond,
            motion_rest,
            motion_time if motion_time is not None else time,
            mask=motion_mask,
            audio_feats=feats,
            drop_motion_cond=drop_motion_cond,
            drop_rest=drop_rest,
            drop_audio_feats=_as_bool(drop_audio_cond, motion_x) | ~_as_bool(motion_sees_audio, motion_x),
        )
        return torch.zeros_like(audio_x), v  # the audio stream is never generated in stage 1 motion


def joint_interface(net: nn.Module, stage: str) -> Callable[..., tuple[Tensor | None, Tensor | None]]:
    """A callable with ``JointDiT.forward``'s keyword interface for ``net`` in ``stage``."""
    if stage == "stage1_motion":
        motion = getattr(net, "motion", None) if hasattr(net, "audio") else net
        if motion is None or not _accepts(motion.forward, "audio_feats"):
            raise InputError(f"stage1_motion needs a MotionDiT, got {type(net).__name__}")
        if not getattr(motion, "audio_feat_dim", 0):
            raise InputError(
                "stage1_motion feeds audio features per motion frame: build the MotionDiT with audio_feat_dim "
                "100 (--data.audio_features mel) or the wav2vec2 width (e.g. 768), got 0"
            )
        return _MotionOnly(motion)
    if _accepts(net.forward, "motion_x"):
        return _Direct(net)
    if stage == "stage1_audio":
        return AudioOnly(net)  # stage 1 audio: an F5-style AudioDiT
    raise InputError(
        f"{stage} needs a JointDiT (a network with the joint forward interface), got {type(net).__name__}"
    )


def net_spec(net: nn.Module, hint: dict | None = None, strict: bool = True) -> dict | None:
    """``{"class_path", "init_args"}`` that rebuilds ``net``: the CLI's config when given, else the network's own
    record of its constructor arguments (``net.init_args``)."""
    cls = type(net)
    import jam_flow.models as models

    public = f"jam_flow.models.{cls.__name__}" if getattr(models, cls.__name__, None) is cls else None
    class_path = public or f"{cls.__module__}.{cls.__qualname__}"
    if hint is not None:
        hinted = str(hint["class_path"]).rsplit(".", 1)[-1]
        own = getattr(net, "init_args", None)
        if hinted == cls.__name__:
            init_args = dict(hint.get("init_args") or {})
            if (
                isinstance(own, dict) and "motion_window_layers" in own
            ):  # always record the key (old ckpts lack it)
                init_args.setdefault("motion_window_layers", own["motion_window_layers"])
            return {"class_path": class_path, "init_args": init_args}
    own = getattr(net, "init_args", None)
    if isinstance(own, dict):
        return {"class_path": class_path, "init_args": dict(own)}
    if strict:
        raise InputError(
            f"cannot record how to rebuild {cls.__name__}: build it through the CLI config "
            "(model.net.class_path/init_args) or give it an 'init_args' dict"
        )
    return None


def read_weights(path: str | Path, what: str) -> tuple[str, dict[str, Tensor]]:
    """``(model class_path, EMA state dict)`` of a jam-flow ``.ckpt`` or export directory (any network class)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        cfg, weights = p / "config.yaml", p / "model.safetensors"
        if not (cfg.is_file() and weights.is_file()):
            raise InputError(f"{what}: {p} is not an export directory (config.yaml + model.safetensors)")
        from safetensors.torch import load_file

        meta = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        return str(meta["model"]["class_path"]), load_file(str(weights))
    from jam_flow.models.format import read_torch_file

    ckpt = read_torch_file(p, what)
    meta = ckpt.get("jam_flow") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "ema_state_dict" not in meta:
        raise InputError(f"{what}: {p} is not a jam-flow checkpoint (no ckpt['jam_flow']['ema_state_dict'])")
    return str(meta["model"]["class_path"]), meta["ema_state_dict"]


def load_motion_init(net: nn.Module, path: str) -> None:
    """Load a Motion-DiT (a stage-1 MotionDiT or a JointDiT's motion branch; ``.ckpt`` from ``jam-flow fit`` or an
    export directory; EMA weights) into ``net.motion`` (a JointDiT) or ``net`` (a MotionDiT).

    Stage 1 feeds per-frame audio features that stage 2 drops (paper §4.5); they are the trailing input columns
    of ``input_embed.proj``, so those columns are cut: the stage-2 branch starts as the stage-1 model with its audio
    features dropped (a case it was trained on through the conditioning dropout)."""
    class_path, state = read_weights(path, "--model.init_motion_from")
    if class_path.endswith(".JointDiT"):
        state = {k[len("motion.") :]: v for k, v in state.items() if k.startswith("motion.")}
    target = net.motion if hasattr(net, "audio") and hasattr(net, "motion") else net
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    out: dict[str, Tensor] = {}
    wrong = []
    for key, value in own.items():
        if key not in state:
            continue
        got = state[key]
        if got.shape == value.shape:
            out[key] = got
        elif (
            key == "input_embed.proj.weight"
            and got.shape[0] == value.shape[0]
            and got.shape[1] > value.shape[1]
        ):
            out[key] = got[:, : value.shape[1]]
        else:
            wrong.append(f"{key} {tuple(got.shape)} vs {tuple(value.shape)}")
    if missing or wrong:
        raise InputError(
            f"--model.init_motion_from {Path(path)}: the stage-1 Motion-DiT does not fit this network "
            f"(missing {missing[:5]}, wrong shapes {wrong[:5]})"
        )
    with torch.no_grad():
        target.load_state_dict(out, strict=True)


def load_audio_init(net: nn.Module, path: str) -> None:
    """Initialise the Audio-DiT (``net.audio`` of a JointDiT, or an AudioDiT ``net``) from ``path``: an F5-TTS
    checkpoint (``.pt`` / ``.safetensors``, through ``load_f5tts_checkpoint``) or a jam-flow model (a ``.ckpt`` of
    ``jam-flow fit`` or an export directory, e.g. a ``stage1_audio`` fine-tune; EMA weights, strict)."""
    p = Path(path)
    if not p.exists():
        raise InputError(
            f"--model.init_audio_from: {p} does not exist (expected an F5-TTS checkpoint, a jam-flow "
            ".ckpt or an export directory)"
        )
    if not (p.is_dir() or p.suffix == ".ckpt"):
        from jam_flow.models import load_f5tts_checkpoint

        load_f5tts_checkpoint(net, p)
        return
    class_path, state = read_weights(p, "--model.init_audio_from")
    if class_path.endswith(".JointDiT"):
        state = {k[len("audio.") :]: v for k, v in state.items() if k.startswith("audio.")}
    target = getattr(net, "audio", net)
    check_state_dict(target, state, f"--model.init_audio_from {p}")
    with torch.no_grad():
        target.load_state_dict(state, strict=True)


def build_net(class_path: str, init_args: dict[str, Any]) -> nn.Module:
    """Instantiate a network from ``class_path`` + ``init_args`` and remember them on it (``net.init_args``), so a
    module built outside the CLI can still write the rebuild spec into its checkpoints."""
    import importlib

    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(f"model class_path {class_path!r} cannot be imported ({err})") from err
    net = cls(**init_args)
    net.init_args = dict(init_args)
    return net


def enable_activation_checkpointing(net: nn.Module) -> bool:
    """Switch on ``checkpoint_activations`` wherever the network (or a branch of it) has that switch; returns
    whether any was found. Read-only properties (JointDiT derives its flag from its branches) are skipped."""
    found = False
    for mod in net.modules():
        if isinstance(getattr(type(mod), "checkpoint_activations", None), property):
            continue
        if hasattr(mod, "checkpoint_activations"):
            mod.checkpoint_activations = True
            found = True
    return found
