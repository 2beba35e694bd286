"""Vocoder loading (a small random Vocos in the published directory layout) and the Griffin-Lim fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from jam_flow.data.vocoder import GriffinLimVocoder, VocosVocoder, load_vocoder, load_vocos
from jam_flow.errors import InputError
from jam_flow.features import MelSettings
from jam_flow.inference.testing import vocos_config, write_random_vocos


def test_vocos_loads_strictly_from_local_dir(tmp_path):
    reference = write_random_vocos(tmp_path / "vocos", vocos_config())
    vocoder = load_vocoder(tmp_path / "vocos", MelSettings())
    assert isinstance(vocoder, VocosVocoder) and vocoder.sample_rate == 24000
    mel = torch.randn(20, 100) * 0.5 - 4
    wave = vocoder.decode(mel)
    assert wave.shape == (256 * 19,)
    with torch.inference_mode():
        expected = reference.decode(mel.T[None])[0]
    assert torch.allclose(wave, expected, atol=1e-6)
    batch = vocoder.decode(mel[None].repeat(2, 1, 1))
    assert batch.shape == (2, 256 * 19)


def test_vocos_weight_mismatch_and_missing_files(tmp_path):
    write_random_vocos(tmp_path / "bad", vocos_config(16), weights_config=vocos_config(8))
    with pytest.raises(InputError, match="does not match"):
        load_vocos(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.yaml"):
        load_vocos(tmp_path / "empty")
    with pytest.raises(InputError, match="not a directory"):
        load_vocos(tmp_path / "nowhere")


def test_griffin_lim_fallback_warns_loudly(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        vocoder = load_vocoder(None, MelSettings())
    assert isinstance(vocoder, GriffinLimVocoder)
    assert "Griffin-Lim" in capsys.readouterr().err
    assert any("Griffin-Lim" in r.message for r in caplog.records)
    # a pure tone survives the round trip mel -> Griffin-Lim: its energy stays at the same frequency
    from jam_flow.data.mel import log_mel

    sr, f0 = 24000, 440.0
    t = torch.arange(sr // 2) / sr
    tone = 0.3 * torch.sin(2 * torch.pi * f0 * t)
    wave = vocoder.decode(log_mel(tone))
    assert wave.shape == (256 * (log_mel(tone).shape[0] - 1),)
    spec = torch.fft.rfft(wave).abs()
    peak_hz = float(spec.argmax()) * sr / wave.shape[0]
    assert abs(peak_hz - f0) < 15
