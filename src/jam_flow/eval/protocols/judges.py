"""The judge networks of a protocol run, loaded once per process from local paths (``ProtocolSettings``) and only
when a selected metric needs them.

Dimension legend: d embedding size; waveforms are float32 ``[s]``. Masks: none.

Speech metrics: ``MeanWER`` is F5-TTS's WER (the mean over utterances of each utterance's word error rate, after
``eval.external.normalise_text`` on both sides; F5 lower-cases and strips punctuation the same way);
``SpeakerSimilarity`` (``eval.metrics``) is the mean cosine of speaker embeddings (SIM-o / spkSIM).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from jam_flow.eval.protocols.common import ProtocolSettings

__all__ = ["Judges", "MeanWER"]


class MeanWER(Metric):
    """``update(hypotheses, references)`` (lists of normalised strings); ``compute()`` = mean per-utterance WER."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("wer_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        from torchmetrics.functional.text import word_error_rate

        for hyp, ref in zip(hypotheses, references, strict=True):
            self.wer_sum += float(word_error_rate(hyp, ref)) if ref.split() else float(bool(hyp.split()))
            self.count += 1

    def compute(self) -> torch.Tensor:
        return (self.wer_sum / self.count.clamp_min(1)).float()


class Judges:
    """Lazily loaded judges for ``metrics`` on ``device``."""

    def __init__(self, settings: ProtocolSettings, metrics: tuple[str, ...], device: Any) -> None:
        self.s = settings
        self.metrics = metrics
        self.device = device
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    # metrics with their networks (a fresh metric per row: rows are separate checkpoints)
    def fid(self):
        from jam_flow.eval.video_metrics import FID

        if "fid" not in self.metrics:
            return None
        return FID(self.s.inception, feature=self.s.fid_feature).to(self.device)

    def fvd(self):
        from jam_flow.eval.video_metrics import FVD

        if "fvd" not in self.metrics:
            return None
        return FVD(self.s.i3d).to(self.device)

    def syncnet(self):
        from jam_flow.eval.syncnet import load_syncnet

        return self._get("syncnet", lambda: load_syncnet(self.s.syncnet, self.device))

    def asr(self):
        from jam_flow.eval.external import load_asr

        return self._get("asr", lambda: load_asr(self.s.asr, str(self.device)))

    def speaker(self):
        from jam_flow.eval.external import load_speaker_model

        return self._get(
            "speaker", lambda: load_speaker_model(self.s.speaker_model, self.s.speaker_sr, str(self.device))
        )

    def vocoder(self, mel_settings):
        from jam_flow.data.vocoder import load_vocoder

        return self._get("vocoder", lambda: load_vocoder(self.s.vocoder, mel_settings, self.device))

    def liveportrait(self):
        from jam_flow.errors import InputError
        from jam_flow.liveportrait import load_liveportrait

        if self.s.liveportrait is None:
            raise InputError(
                "--liveportrait: rendering the generated motion needs the LivePortrait weights directory"
            )
        return self._get("liveportrait", lambda: load_liveportrait(self.s.liveportrait, device=self.device))

    # speech scoring helpers
    def embed(self, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
        return self.speaker().embed(wave, sample_rate)[None]

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        from jam_flow.eval.external import normalise_text

        return normalise_text(self.asr().transcribe(wave, sample_rate))
