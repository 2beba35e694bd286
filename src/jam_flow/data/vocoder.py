"""Mel -> waveform: Vocos 24 kHz from a local directory, or a loudly-announced Griffin-Lim fallback.

Dimension legend: b batch, n mel frames, c mel channels (100), s samples (``hop * (n - 1)`` for both vocoders).

Vocos is read from a directory in the published ``charactr/vocos-mel-24khz`` layout: ``config.yaml`` (the
``feature_extractor`` / ``backbone`` / ``head`` sections with ``class_path`` + ``init_args``) and
``pytorch_model.bin`` (a plain state dict). Each section's ``class_path`` must be one of :data:`VOCOS_CLASSES`
(compared as a string before anything is imported, so the file cannot name another class); the parts are built from
that table and loaded strictly; nothing is ever fetched from a hub. Input is the F5-TTS natural-log mel, exactly
what Vocos was trained on.

Griffin-Lim (fallback, for smoke tests only): ``exp(log-mel)`` is a magnitude mel (power 1); the linear magnitude
is recovered by a non-negative least-squares-ish inverse of the HTK filterbank (pseudo-inverse, clamped at 0), then
``torchaudio.functional.griffinlim`` estimates the phase. It sounds metallic; a warning says so on stderr and in
the log every time it is chosen.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from jam_flow.data.mel import mel_filterbank
from jam_flow.errors import InputError
from jam_flow.features import MelSettings

__all__ = ["Vocoder", "VocosVocoder", "GriffinLimVocoder", "load_vocoder", "load_vocos", "VOCOS_CLASSES"]

log = logging.getLogger(__name__)

GRIFFIN_LIM_WARNING = (
    "no --vocoder directory given: using the Griffin-Lim fallback, which sounds metallic and is meant for smoke "
    "tests only. Pass --vocoder DIR with a local Vocos 24 kHz model (config.yaml + pytorch_model.bin, e.g. "
    "charactr/vocos-mel-24khz) for real audio."
)


# the classes a Vocos config.yaml section may name (Vocos' mel feature extractor, backbones and heads)
VOCOS_CLASSES: dict[str, tuple[str, ...]] = {
    "feature_extractor": ("vocos.feature_extractors.MelSpectrogramFeatures",),
    "backbone": ("vocos.models.VocosBackbone", "vocos.models.VocosResNetBackbone"),
    "head": ("vocos.heads.ISTFTHead", "vocos.heads.IMDCTSymExpHead", "vocos.heads.IMDCTCosHead"),
}


def _vocos_spec(cfg_path: Path, config: Any, section: str) -> tuple[str, dict[str, Any]]:
    """``(class_path, init_args)`` of one section of a Vocos ``config.yaml``; the class path must be one of
    :data:`VOCOS_CLASSES` (a string comparison: nothing is imported here)."""
    spec = config.get(section) if isinstance(config, dict) else None
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise InputError(f"--vocoder: {cfg_path} has no '{section}' section with a class_path")
    class_path, init_args = spec["class_path"], spec.get("init_args") or {}
    if class_path not in VOCOS_CLASSES[section]:
        raise InputError(
            f"--vocoder: {cfg_path}: {section}.class_path is {class_path!r}, not one of "
            f"{', '.join(VOCOS_CLASSES[section])}; refusing to import or build a class named by a file"
        )
    if not isinstance(init_args, dict):
        raise InputError(f"--vocoder: {cfg_path}: {section}.init_args must be a mapping")
    return class_path, init_args


def _build_vocos(cfg_path: Path) -> nn.Module:
    """Vocos from ``config.yaml``: every section checked (:func:`_vocos_spec`) before any part is built."""
    import yaml
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import IMDCTCosHead, IMDCTSymExpHead, ISTFTHead
    from vocos.models import VocosBackbone, VocosResNetBackbone

    classes = {
        f"{c.__module__}.{c.__name__}": c
        for c in (
            MelSpectrogramFeatures,
            VocosBackbone,
            VocosResNetBackbone,
            ISTFTHead,
            IMDCTSymExpHead,
            IMDCTCosHead,
        )
    }
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"--vocoder: {cfg_path} is not valid YAML text ({first})") from err
    specs = {section: _vocos_spec(cfg_path, config, section) for section in VOCOS_CLASSES}
    try:
        return Vocos(**{section: classes[path](**args) for section, (path, args) in specs.items()})
    except Exception as err:  # noqa: BLE001 - any failure to build is a bad config file
        raise InputError(
            f"--vocoder: cannot build Vocos from {cfg_path} ({type(err).__name__}: {err})"
        ) from err


class Vocoder(nn.Module):
    """Common interface: ``decode(log_mel [n, c] or [b, n, c]) -> wave [s] or [b, s]`` (float32, CPU)."""

    name = "vocoder"
    sample_rate = 24000

    def _decode(self, mel: Tensor) -> Tensor:  # [b, n, c] -> [b, s]
        raise TypeError(f"{type(self).__name__} must implement _decode")

    @torch.no_grad()
    def decode(self, mel: Tensor) -> Tensor:
        squeeze = mel.dim() == 2
        batch = mel[None] if squeeze else mel
        if batch.dim() != 3:
            raise InputError(f"vocoder: expected a mel [n, c] or [b, n, c], got shape {tuple(mel.shape)}")
        wave = self._decode(batch.float()).float().cpu()
        return wave[0] if squeeze else wave


class VocosVocoder(Vocoder):
    name = "vocos"

    def __init__(self, vocos: nn.Module, sample_rate: int = 24000) -> None:
        super().__init__()
        self.vocos = vocos.eval()
        self.sample_rate = sample_rate

    def _decode(self, mel: Tensor) -> Tensor:
        device = next(self.vocos.parameters()).device
        # Vocos.decode runs under inference_mode; clone so callers get a normal tensor
        return self.vocos.decode(mel.transpose(1, 2).to(device)).clone()


class GriffinLimVocoder(Vocoder):
    name = "griffin-lim"

    def __init__(self, settings: MelSettings = MelSettings(), n_iter: int = 32) -> None:
        super().__init__()
        self.settings = settings
        self.sample_rate = settings.sample_rate
        fbank = mel_filterbank(settings)  # [f, c]
        self.register_buffer("inverse", torch.linalg.pinv(fbank), persistent=False)  # [c, f]
        self.n_iter = n_iter
        self.register_buffer(
            "window", torch.hann_window(settings.win_length, periodic=True), persistent=False
        )

    def _decode(self, mel: Tensor) -> Tensor:
        mag_mel = torch.exp(mel.cpu())  # [b, n, c]
        linear = torch.matmul(mag_mel, self.inverse).clamp_min(0.0)  # [b, n, f]
        n = mel.shape[1]
        s = self.settings
        # torchaudio's Griffin-Lim (the functional form, to set the output length); zero initial phase keeps it
        # deterministic
        return AF.griffinlim(
            linear.transpose(1, 2).contiguous(),
            window=self.window,
            n_fft=s.n_fft,
            hop_length=s.hop_length,
            win_length=s.win_length,
            power=1.0,
            n_iter=self.n_iter,
            momentum=0.99,
            length=s.hop_length * (n - 1),
            rand_init=False,
        )


def load_vocos(path: str | Path, device: str | torch.device = "cpu") -> VocosVocoder:
    """Build Vocos from ``path/config.yaml`` and load ``path/pytorch_model.bin`` strictly (no hub access)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"--vocoder: {path} is not a directory (expected config.yaml + pytorch_model.bin)")
    cfg, weights = path / "config.yaml", path / "pytorch_model.bin"
    for p in (cfg, weights):
        if not p.is_file():
            raise InputError(
                f"--vocoder: {path} has no {p.name} (expected the charactr/vocos-mel-24khz layout)"
            )
    vocos = _build_vocos(cfg)
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--vocoder: cannot read {weights} ({type(err).__name__}: {err})") from err
    try:
        vocos.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InputError(f"--vocoder: {weights} does not match {cfg} ({' '.join(first[:3])})") from err
    # the feature extractor is MelSpectrogramFeatures (VOCOS_CLASSES), which knows its rate
    sample_rate = int(vocos.feature_extractor.mel_spec.sample_rate)
    return VocosVocoder(vocos.to(device), sample_rate=sample_rate)


def load_vocoder(
    path: str | Path | None, settings: MelSettings = MelSettings(), device: str | torch.device = "cpu"
) -> Vocoder:
    """Vocos from ``path``; with ``path=None`` the Griffin-Lim fallback, announced on the log and on stderr."""
    if path is not None:
        vocoder = load_vocos(path, device)
        if vocoder.sample_rate != settings.sample_rate:
            raise InputError(
                f"--vocoder: {path} is a {vocoder.sample_rate} Hz model but the checkpoint uses "
                f"{settings.sample_rate} Hz mels"
            )
        return vocoder
    log.warning(GRIFFIN_LIM_WARNING)
    print(f"WARNING: {GRIFFIN_LIM_WARNING}", file=sys.stderr)
    return GriffinLimVocoder(settings)
