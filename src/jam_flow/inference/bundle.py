"""A trained model ready for inference: network (EMA weights, eval mode) + its dataset metadata + normaliser.

Dimension legend: m motion frames, k keypoints (21), n mel frames, c mel channels (100), dm mouth dims (12),
dr rest dims (51).

The file format (a Lightning ``.ckpt`` or an export directory, docs/CONVENTIONS.md "Checkpoints and exported
models") is read by :mod:`jam_flow.models.format`; normalisation is :class:`jam_flow.data.meta.Normaliser`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jam_flow.data.meta import DataMeta, DatasetStats, Normaliser
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import FrameClock, MelSettings, MotionSettings
from jam_flow.models import AudioDiT, JointDiT, MotionDiT
from jam_flow.models.configs import with_legacy_defaults
from jam_flow.models.format import (
    FORMAT_VERSION,
    META_FIELDS,
    build_checked_model,
    model_class,
    read_model_file,
    text_num_embeds,
    write_export,
)
from jam_flow.models.stages import AudioOnly, MotionOnly

__all__ = ["FORMAT_VERSION", "ModelBundle", "load_bundle", "save_export"]


@dataclass
class ModelBundle:
    """An inference-ready model. ``model`` is in eval mode on ``device``."""

    model: nn.Module
    data: DataMeta
    normaliser: Normaliser
    source: Path
    config: dict = field(default_factory=dict)

    @property
    def mel(self) -> MelSettings:
        return self.data.mel

    @property
    def motion(self) -> MotionSettings:
        return self.data.motion

    @property
    def clock(self) -> FrameClock:
        """The mel <-> motion frame mapping of this model's settings."""
        return FrameClock.of(self.data.mel, self.data.motion)

    @property
    def stats(self) -> DatasetStats | None:
        return self.data.stats

    @property
    def vocab(self) -> Vocab:
        return self.data.vocab

    @property
    def normalize_mel(self) -> bool:
        return self.normaliser.normalize_mel

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_motion(self) -> bool:
        """False for a stage-1 audio checkpoint (``AudioDiT``): only ``tts`` can run on it."""
        return not isinstance(self.model, AudioDiT)

    @property
    def stage1_motion(self) -> bool:
        """True for a stage-1 Motion-DiT (``MotionDiT``; loaded with ``load_bundle(..., stage1_motion=True)``): it
        runs ``audio2motion`` only, with per-frame audio features (:meth:`joint_net`)."""
        return isinstance(self.model, MotionDiT)

    def joint_net(
        self, task: str, audio_feats: Tensor | None = None
    ) -> Callable[..., tuple[Tensor, Tensor | None]]:
        """The network behind the ``JointDiT.forward`` interface the sampler calls; an ``AudioDiT`` is adapted
        (audio only), a stage-1 ``MotionDiT`` too (``audio2motion`` with ``audio_feats [b, m, d]``, the wav2vec2
        features of ``jam-flow audio-features``; None: the mel per motion frame, for a model trained on those).
        ``task`` names what needs it, for the error when a task meets a model that cannot run it."""
        if self.stage1_motion:
            if task != "audio2motion":
                raise InputError(
                    f"--task {task}: {self.source} is a stage-1 Motion-DiT; it runs audio2motion only"
                )
            if audio_feats is None and self.model.audio_feat_dim != self.mel.n_mels:
                raise InputError(
                    f"{self.source}: this stage-1 Motion-DiT takes {self.model.audio_feat_dim}-wide audio features "
                    "(wav2vec2: give --audio-features-model)"
                )
            if audio_feats is not None and audio_feats.shape[-1] != self.model.audio_feat_dim:
                raise InputError(
                    f"--audio-features-model: {audio_feats.shape[-1]}-wide features, but {self.source} takes "
                    f"{self.model.audio_feat_dim}"
                )
            clock = self.data.mel
            net = MotionOnly(self.model, clock.sample_rate, clock.hop_length, self.data.motion.fps)

            def stage1(**kw: Any) -> tuple[Tensor, Tensor]:
                feats = audio_feats
                if (
                    feats is not None and feats.shape[0] != kw["motion_x"].shape[0]
                ):  # the guided batch is doubled
                    feats = feats.repeat(kw["motion_x"].shape[0] // feats.shape[0], 1, 1)
                return net(**kw, motion_audio_feats=feats)

            return stage1
        if self.has_motion:
            return self.model
        net = AudioOnly(self.model)

        def audio_only(audio_x, audio_cond, text, time, motion_x=None, **kw: Any) -> tuple[Tensor, None]:
            if motion_x is not None:
                raise InputError(
                    f"--task {task}: {self.source} is an audio-only (stage-1) model; use --task tts"
                )
            return net(audio_x, audio_cond, text, time, **kw)

        audio_only.text_features = net.text_features  # the sampler's text-embedding cache
        return audio_only

    # normalisation (jam_flow.data.meta.Normaliser) ------------------------------------------------------------------
    def neutral_exp(self) -> np.ndarray:
        """The neutral expression ``[k, 3]``: the training-set mean (zeros without stats)."""
        return self.normaliser.neutral_exp().cpu().numpy().copy()

    def normalise_motion(self, exp: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """``exp [..., m, k, 3]`` (raw LivePortrait) -> ``(mouth [..., m, dm], rest [..., m, dr])`` in model space."""
        exp = torch.as_tensor(
            np.asarray(exp, dtype=np.float32) if isinstance(exp, np.ndarray) else exp
        ).float()
        return self.normaliser.motion_to_model(exp)

    def denormalise_motion(self, mouth: Tensor, rest: Tensor | None = None) -> Tensor:
        """``(mouth [..., m, dm], rest [..., m, dr] or None)`` in model space -> raw ``exp [..., m, k, 3]``.

        Without ``rest`` the non-mouth keypoints are the neutral expression (dataset mean)."""
        return self.normaliser.motion_from_model(mouth, rest)

    def mel_to_model(self, mel: Tensor) -> Tensor:
        """Natural-log mel ``[..., n, c]`` -> the network's mel space (standardised when ``normalize_mel``)."""
        return self.normaliser.mel_to_model(mel)

    def mel_from_model(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`mel_to_model`."""
        return self.normaliser.mel_from_model(x)


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu", stage1_motion: bool = False
) -> ModelBundle:
    """Read a Lightning ``.ckpt`` (its ``ckpt["jam_flow"]`` block, EMA weights) or an export directory; the network
    (a JointDiT, or an AudioDiT for ``tts``; with ``stage1_motion`` also a stage-1 MotionDiT, for evaluation with
    its audio features) is rebuilt and loaded strictly."""
    found = read_model_file(path, "--ckpt")
    meta, where = found.meta, found.where
    data = DataMeta.from_dict(meta, where)
    embeds = text_num_embeds(meta["model"].get("init_args"))
    if embeds is not None and len(data.vocab) > embeds:
        raise InputError(
            f"{where}: the vocabulary has {len(data.vocab)} tokens but the model embeds only {embeds} "
            f"(model.init_args text_num_embeds)"
        )
    # model.class_path is one of jam-flow's networks (read_model_file checked it); keys the checkpoint predates
    # take their old behaviour, and the config (what an export writes) records them
    spec = with_legacy_defaults(meta["model"])
    allowed = (JointDiT, AudioDiT, MotionDiT) if stage1_motion else (JointDiT, AudioDiT)
    if not issubclass(model_class(spec["class_path"], where), allowed):
        raise InputError(
            f"{where}: model.class_path is {spec['class_path']}; generation needs a JointDiT (stage 2), or an "
            f"AudioDiT for --task tts (a stage-1 Motion-DiT needs audio features it cannot get here: evaluate it "
            f"with jam-flow evaluate --protocol talking-head --audio-features-model DIR)"
        )
    if not isinstance(meta["normalize_mel"], bool):
        raise InputError(
            f"{where}: field 'normalize_mel' must be true or false, got {meta['normalize_mel']!r}"
        )
    model = build_checked_model(spec, found.state, where)
    model.load_state_dict(found.state, strict=True)
    model.to(device).eval()
    normaliser = Normaliser(data.motion, data.stats, bool(meta["normalize_mel"]), where).to(device)
    config = {k: meta[k] for k in META_FIELDS}
    config["model"] = spec
    return ModelBundle(model=model, data=data, normaliser=normaliser, source=found.source, config=config)


def save_export(out_dir: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write an export directory of ``model`` (its state dict, meant to be the EMA weights) and ``meta`` (the
    ``ckpt["jam_flow"]`` fields): :func:`jam_flow.models.format.write_export`. Returns ``out_dir``."""
    return write_export(out_dir, model.state_dict(), meta)
