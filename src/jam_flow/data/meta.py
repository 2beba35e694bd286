"""What a model takes from its dataset, typed: :class:`DatasetStats` (``stats.json``), :class:`DataMeta` (mel and
motion settings, stats, vocabulary: the data fields of ``ckpt["jam_flow"]``) and :class:`Normaliser`, the one
mel + motion standardisation used by training, inference and evaluation.

Dimension legend: c mel channels (100), k keypoints (21), m motion frames, n mel frames, dm mouth dims (12),
dr rest dims (51). No masks.

Motion: the network sees ``(exp - exp_mean) / max(exp_std, STD_FLOOR)`` (train-split stats per keypoint
coordinate; identity without stats), split into the mouth keypoints ``[m, 4*3]`` and the rest ``[m, 17*3]``,
flattened keypoint-major. Mel: standardised the same way only when the model was trained with ``normalize_mel``
(F5-TTS does not). ``STD_FLOOR`` (1e-5) is the one std floor: ``stats.json`` is written with it and every reader
applies it again, so stats written with the old 1e-6 floor normalise exactly as before (their values below 1e-5
were already raised to 1e-5 at every use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jam_flow.data.text import Vocab, check_text_units
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings

__all__ = ["STD_FLOOR", "DatasetStats", "DataMeta", "Normaliser"]

STD_FLOOR = 1e-5  # a component that never moves is not scaled up (and never divides by zero)


@dataclass(frozen=True)
class DatasetStats:
    """Train-split statistics as stored (float32, std not floored): ``mel_mean`` / ``mel_std`` ``[c]``,
    ``exp_mean`` / ``exp_std`` ``[k, 3]``."""

    mel_mean: np.ndarray
    mel_std: np.ndarray
    exp_mean: np.ndarray
    exp_std: np.ndarray

    @classmethod
    def from_dict(cls, obj: Any, where: str, num_kp: int | None = None) -> DatasetStats:
        """From the ``stats.json`` layout ``{"mel": {"mean", "std"}, "motion": {"exp_mean", "exp_std"}}``."""
        try:
            mel, motion = obj["mel"], obj["motion"]
            arrays = [
                np.asarray(v, np.float32)
                for v in (mel["mean"], mel["std"], motion["exp_mean"], motion["exp_std"])
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"{where}: 'stats' must hold mel.mean/std and motion.exp_mean/exp_std ({err})"
            ) from err
        if num_kp is not None:
            arrays[2], arrays[3] = (a.reshape(num_kp, 3) if a.size == num_kp * 3 else a for a in arrays[2:])
        return cls(*arrays)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mel": {"mean": self.mel_mean.tolist(), "std": self.mel_std.tolist()},
            "motion": {"exp_mean": self.exp_mean.tolist(), "exp_std": self.exp_std.tolist()},
        }


@dataclass(frozen=True)
class DataMeta:
    """The data side of a model: feature settings, dataset statistics (None: identity normalisation) and the text
    vocabulary (with its text units). Written into ``ckpt["jam_flow"]`` / ``config.yaml`` by :meth:`to_dict`."""

    mel: MelSettings
    motion: MotionSettings
    stats: DatasetStats | None
    vocab: Vocab

    @classmethod
    def from_dict(cls, meta: Any, where: str) -> DataMeta:
        """From the ``mel``, ``motion``, ``stats``, ``vocab`` and ``text_units`` (default ``char``) fields (a
        checkpoint's block or a DataModule's)."""
        settings = []
        for name, kind in (("mel", MelSettings), ("motion", MotionSettings)):
            obj = meta[name]
            if not isinstance(obj, dict):
                raise InputError(f"{where}: field {name!r} must be a mapping, got {type(obj).__name__}")
            try:
                settings.append(kind(**obj))
            except TypeError as err:  # an unknown or missing field
                raise InputError(f"{where}: bad 'mel' / 'motion' settings ({name}: {err})") from err
            except ValueError as err:  # the settings check every field's type and range, naming it
                raise InputError(f"{where}: field {name}.{err}") from err
        mel, motion = settings
        stats = None if meta["stats"] is None else DatasetStats.from_dict(meta["stats"], where, motion.num_kp)
        vocab = meta["vocab"]
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise InputError(f"{where}: field 'vocab' must be a list of strings (tokens)")
        # models written before text units existed are character models
        units = check_text_units(meta.get("text_units", "char"), f"{where}: field 'text_units'")
        return cls(mel, motion, stats, Vocab.from_list(vocab, units=units))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mel": self.mel.to_dict(),
            "motion": self.motion.to_dict(),
            "stats": None if self.stats is None else self.stats.to_dict(),
            "vocab": self.vocab.to_list(),
            "text_units": self.vocab.units,
        }


class Normaliser(nn.Module):
    """Raw features <-> the network's space (see the module docstring). Its statistics are non-persistent buffers:
    they follow the module's device and never enter a state dict. Inputs on another device are handled."""

    def __init__(
        self, motion: MotionSettings, stats: DatasetStats | None, normalize_mel: bool, where: str = "model"
    ) -> None:
        super().__init__()
        k = motion.num_kp
        self.mouth_indices = list(motion.mouth_indices)
        self.rest_indices = list(motion.rest_indices)
        self.normalize_mel = bool(normalize_mel)
        if normalize_mel and stats is None:
            raise InputError(f"{where}: normalize_mel is true but there are no mel stats (stats.json)")
        if stats is None:
            exp_mean, exp_std = torch.zeros(k, 3), torch.ones(k, 3)
            mel_mean, mel_std = torch.zeros(0), torch.ones(0)
        else:
            exp_mean = torch.as_tensor(stats.exp_mean, dtype=torch.float32).reshape(k, 3)
            exp_std = torch.as_tensor(stats.exp_std, dtype=torch.float32).reshape(k, 3).clamp_min(STD_FLOOR)
            mel_mean = torch.as_tensor(stats.mel_mean, dtype=torch.float32)
            mel_std = torch.as_tensor(stats.mel_std, dtype=torch.float32).clamp_min(STD_FLOOR)
        self.register_buffer("exp_mean", exp_mean, persistent=False)
        self.register_buffer("exp_std", exp_std, persistent=False)
        self.register_buffer("mel_mean", mel_mean, persistent=False)
        self.register_buffer("mel_std", mel_std, persistent=False)

    # motion ------------------------------------------------------------------------------------------------------
    def neutral_exp(self) -> Tensor:
        """The neutral expression ``[k, 3]``: the training-set mean (zeros without stats)."""
        return self.exp_mean

    def motion_to_model(self, exp: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``exp [..., m, k, 3]`` -> ``(mouth [..., m, dm], rest [..., m, dr])`` in model space."""
        z = (exp - self.exp_mean.to(exp.device)) / self.exp_std.to(exp.device)
        return z[..., self.mouth_indices, :].flatten(-2), z[..., self.rest_indices, :].flatten(-2)

    def motion_from_model(self, mouth: Tensor, rest: Tensor | None = None) -> Tensor:
        """``(mouth [..., m, dm], rest [..., m, dr] or None)`` -> raw ``exp [..., m, k, 3]``; without ``rest`` the
        other keypoints are the neutral expression."""
        mean, std = self.exp_mean.to(mouth.device), self.exp_std.to(mouth.device)
        lead = mouth.shape[:-1]
        z = torch.zeros(*lead, mean.shape[0], 3, device=mouth.device, dtype=torch.float32)
        z[..., self.mouth_indices, :] = mouth.float().reshape(*lead, -1, 3)
        if rest is not None:
            z[..., self.rest_indices, :] = rest.float().reshape(*lead, -1, 3)
        return z * std + mean

    def mouth_from_model(self, mouth: Tensor) -> Tensor:
        """Model-space ``mouth [..., m, dm]`` -> raw mouth keypoints ``[..., m, len(mouth_indices), 3]``."""
        z = mouth.float().reshape(*mouth.shape[:-1], -1, 3)
        idx = self.mouth_indices
        return z * self.exp_std[idx].to(z.device) + self.exp_mean[idx].to(z.device)

    # mel ---------------------------------------------------------------------------------------------------------
    def mel_to_model(self, mel: Tensor) -> Tensor:
        """Natural-log mel ``[..., n, c]`` -> the network's mel space (standardised when ``normalize_mel``)."""
        if not self.normalize_mel:
            return mel
        return (mel - self.mel_mean.to(mel.device)) / self.mel_std.to(mel.device)

    def mel_from_model(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`mel_to_model`."""
        if not self.normalize_mel:
            return x
        return x * self.mel_std.to(x.device) + self.mel_mean.to(x.device)
