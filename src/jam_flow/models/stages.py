"""Training stages (paper §4.5) and the networks behind one interface: the :class:`Stage` enum, the
``JointDiT.forward`` keyword interface for every stage (:func:`joint_interface`) and the stage-1 -> stage-2 weight
transfer (:func:`load_audio_init`, :func:`load_motion_init`). Dispatch is on the network's type.

Dimension legend: b batch, n mel frames, c mel channels, m motion frames, dm mouth dims (12), dr rest dims (51).
Masks are **True = valid**.

Stage 1 motion (paper §4.5, appendix A): the Motion-DiT is trained alone with per-frame audio features
concatenated to its input: precomputed wav2vec2 / HuBERT features from the batch (``motion_audio_feats``,
``--data.audio_features wav2vec2``) or the mel averaged onto the motion grid (:func:`mel_per_motion_frame`): motion
frame ``j`` gets the mean of the mel frames ``i`` with ``audio_to_motion_frame(i) == j`` (3-4 frames at 24 kHz /
hop 256 / 25 fps), zeros past the audio.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.features import MelSettings, audio_to_motion_frame
from jam_flow.models.audio_dit import AudioDiT
from jam_flow.models.checkpoint import load_f5tts_checkpoint
from jam_flow.models.format import check_state_dict, read_model_file
from jam_flow.models.joint_dit import JointDiT
from jam_flow.models.motion_dit import MotionDiT

__all__ = [
    "Stage",
    "AudioOnly",
    "MotionOnly",
    "joint_interface",
    "mel_per_motion_frame",
    "load_audio_init",
    "load_motion_init",
]


class Stage(str, enum.Enum):
    """A training stage (paper §4.5). Members compare equal to their config strings (``stage: stage2``)."""

    stage1_motion = "stage1_motion"  # Motion-DiT alone, per-frame mel features in place of wav2vec2
    stage1_audio = "stage1_audio"  # F5-TTS fine-tune, audio stream only
    stage2 = "stage2"  # joint training with the modality scenarios

    def __str__(self) -> str:
        return self.value

    @property
    def has_motion(self) -> bool:
        """Whether the batches' motion stream is used (all but stage 1 audio)."""
        return self is not Stage.stage1_audio


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


class AudioOnly:
    """An F5-style ``AudioDiT`` behind ``JointDiT.forward``'s keyword interface: returns ``(audio velocity, None)``
    and ignores the motion arguments (stage 1 audio training; inference of a stage-1 audio model)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(
        self,
        audio_x,
        audio_cond,
        text,
        time,
        audio_mask=None,
        drop_audio_cond=False,
        drop_text=False,
        text_emb=None,
        **_: Any,
    ) -> tuple[Tensor, None]:
        v = self.net(
            audio_x,
            audio_cond,
            text,
            time,
            mask=audio_mask,
            drop_audio_cond=drop_audio_cond,
            drop_text=drop_text,
            text_emb=text_emb,
        )
        return v, None

    def text_features(self, text, n, audio_mask=None, drop_text=False) -> Tensor:
        """The network's text embedding (:meth:`AudioDiT.text_features`), for a sampler's once-per-sample cache."""
        return self.net.text_features(text, n, audio_mask, drop_text)


class MotionOnly:
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


def joint_interface(net: nn.Module, stage: Stage | str) -> Callable[..., tuple[Tensor | None, Tensor | None]]:
    """A callable with ``JointDiT.forward``'s keyword interface for ``net`` in ``stage``: a ``JointDiT`` as it is
    (stage 2 / stage 1 audio), its motion branch or a ``MotionDiT`` fed with per-frame mel (stage 1 motion), an
    ``AudioDiT`` audio only (stage 1 audio). Plain callables, so the network is not registered twice."""
    stage = Stage(stage)
    if stage is Stage.stage1_motion:
        motion = net.motion if isinstance(net, JointDiT) else net
        if not isinstance(motion, MotionDiT):
            raise InputError(f"stage1_motion needs a MotionDiT (or a JointDiT), got {type(net).__name__}")
        if not motion.audio_feat_dim:
            raise InputError(
                "stage1_motion feeds audio features per motion frame: build the MotionDiT with audio_feat_dim "
                f"{MelSettings().n_mels} (--data.audio_features mel) or the wav2vec2 width (e.g. 768), got 0"
            )
        return MotionOnly(motion)
    if isinstance(net, JointDiT):
        return net.__call__
    if stage is Stage.stage1_audio and isinstance(net, AudioDiT):
        return AudioOnly(net)
    raise InputError(f"{stage} needs a JointDiT, got {type(net).__name__}")


def _branch_weights(path: str | Path, what: str, branch: str) -> dict[str, Tensor]:
    """The EMA weights of a jam-flow ``.ckpt`` / export; a JointDiT's are cut to ``branch`` (``audio``/``motion``)."""
    model_file = read_model_file(path, what)
    state = model_file.state
    if str(model_file.meta["model"]["class_path"]).endswith(".JointDiT"):
        prefix = f"{branch}."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_motion_init(net: nn.Module, path: str) -> None:
    """Load a Motion-DiT (a stage-1 MotionDiT or a JointDiT's motion branch; ``.ckpt`` from ``jam-flow fit`` or an
    export directory; EMA weights) into ``net.motion`` (a JointDiT) or ``net`` (a MotionDiT).

    Stage 1 feeds per-frame audio features that stage 2 drops (paper §4.5); they are the trailing input columns
    of ``input_embed.proj``, so those columns are cut: the stage-2 branch starts as the stage-1 model with its audio
    features dropped (a case it was trained on through the conditioning dropout)."""
    state = _branch_weights(path, "--model.init_motion_from", "motion")
    target = net.motion if isinstance(net, JointDiT) else net
    key = "input_embed.proj.weight"
    own, got = target.state_dict().get(key), state.get(key)
    if own is not None and got is not None and got.shape[0] == own.shape[0] and got.shape[1] > own.shape[1]:
        state = {**state, key: got[:, : own.shape[1]]}  # drop the stage-1 audio-feature columns
    check_state_dict(target, state, f"--model.init_motion_from {Path(path)}: the stage-1 Motion-DiT")
    with torch.no_grad():
        target.load_state_dict(state, strict=True)


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
        load_f5tts_checkpoint(net, p)
        return
    state = _branch_weights(p, "--model.init_audio_from", "audio")
    target = net.audio if isinstance(net, JointDiT) else net
    check_state_dict(target, state, f"--model.init_audio_from {p}")
    with torch.no_grad():
        target.load_state_dict(state, strict=True)
