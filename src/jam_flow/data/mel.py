"""Log-mel features exactly as F5-TTS ("vocos" mel type) and Vocos compute them (paper appendix A).

Dimension legend: b batch, s audio samples, n mel frames (1 + s // hop), c mel channels (100), f STFT bins.

Recipe (identical to ``torchaudio.transforms.MelSpectrogram(sample_rate=24000, n_fft=1024, win_length=1024,
hop_length=256, n_mels=100, power=1, center=True, normalized=False, norm=None)`` followed by
``log(clamp(x, 1e-5))``): a centred STFT with reflect padding and a periodic Hann window, the magnitude
(power 1), an HTK mel filterbank without area normalisation, then the natural log of the clamped value.
Outputs are frames-major (``[b, n, c]``), the layout the dataset stores and the networks consume.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.features import MelSettings

__all__ = ["MelSpectrogram", "log_mel", "mel_filterbank"]


def mel_filterbank(settings: MelSettings = MelSettings()) -> Tensor:
    """The HTK mel filterbank without area normalisation, ``[f, c]`` (``f = n_fft // 2 + 1``)."""
    f_max = settings.f_max if settings.f_max is not None else settings.sample_rate / 2
    return AF.melscale_fbanks(
        n_freqs=settings.n_fft // 2 + 1,
        f_min=settings.f_min,
        f_max=f_max,
        n_mels=settings.n_mels,
        sample_rate=settings.sample_rate,
        norm=None,
        mel_scale="htk",
    )


class MelSpectrogram(nn.Module):
    """Waveform ``[b, s]`` (or ``[s]``) at ``settings.sample_rate`` -> natural-log mel ``[b, n, c]`` (or ``[n, c]``)."""

    def __init__(self, settings: MelSettings = MelSettings()) -> None:
        super().__init__()
        self.settings = settings
        self.register_buffer("fbank", mel_filterbank(settings), persistent=False)  # [f, c]
        self.register_buffer(
            "window", torch.hann_window(settings.win_length, periodic=True), persistent=False
        )

    def magnitude_mel(self, wave: Tensor) -> Tensor:
        """Linear-magnitude mel ``[b, n, c]`` (before the log) for a ``[b, s]`` float waveform."""
        s = self.settings
        spec = torch.stft(
            wave,
            n_fft=s.n_fft,
            hop_length=s.hop_length,
            win_length=s.win_length,
            window=self.window.to(wave.dtype),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [b, f, n]
        mag = spec.abs()
        return torch.matmul(mag.transpose(1, 2), self.fbank.to(mag.dtype))  # [b, n, c]

    def forward(self, wave: Tensor) -> Tensor:
        squeeze = wave.dim() == 1
        if wave.dim() == 3 and wave.shape[1] == 1:  # [b, 1, s] as F5-TTS accepts it
            wave = wave[:, 0]
        if wave.dim() == 1:
            wave = wave[None]
        if wave.dim() != 2:
            raise InputError(
                f"wave: expected a waveform [samples] or [batch, samples], got shape {tuple(wave.shape)}"
            )
        if wave.shape[-1] <= self.settings.n_fft // 2:
            raise InputError(
                f"wave: need more than {self.settings.n_fft // 2} samples for a centred STFT "
                f"(reflect padding), got {wave.shape[-1]}"
            )
        if not wave.is_floating_point():
            wave = wave.float()
        mel = self.magnitude_mel(wave)
        out = torch.log(torch.clamp(mel, min=self.settings.log_clamp))
        return out[0] if squeeze else out


_CACHE: dict[tuple, MelSpectrogram] = {}


def log_mel(wave: Tensor | np.ndarray, settings: MelSettings = MelSettings()) -> Tensor:
    """Functional form of :class:`MelSpectrogram`: ``[b, s]`` -> ``[b, n, c]``, ``[s]`` -> ``[n, c]`` (float32 on
    the input's device; numpy input gives a CPU tensor). ``n == settings.num_frames(s) == 1 + s // hop``."""
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    key = tuple(sorted(settings.to_dict().items()))
    module = _CACHE.get(key)
    if module is None:
        module = _CACHE[key] = MelSpectrogram(settings)
    module = module.to(wave.device)
    with torch.no_grad():
        return module(wave)
