"""Mel features vs the torchaudio reference, audio I/O, and the character vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from jam_flow.data.audio import load_audio, save_wav
from jam_flow.data.mel import MelSpectrogram, log_mel
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings
from jam_flow.models.configs import BUNDLED_VOCAB_SIZE


def _reference(wave: torch.Tensor) -> torch.Tensor:
    spec = torchaudio.transforms.MelSpectrogram(
        sample_rate=24000,
        n_fft=1024,
        win_length=1024,
        hop_length=256,
        n_mels=100,
        power=1,
        center=True,
        normalized=False,
        norm=None,
    )(wave)
    return spec.clamp(min=1e-5).log().transpose(-1, -2)


@pytest.mark.parametrize("samples", [24000, 24001, 30000 + 255, 2048])
def test_mel_matches_torchaudio_reference(samples):
    gen = torch.Generator().manual_seed(samples)
    t = torch.arange(samples) / 24000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(samples, generator=gen)
    wave = torch.stack([wave, 0.5 * wave.flip(0)])
    out = log_mel(wave)
    ref = _reference(wave)
    assert out.shape == (2, 1 + samples // 256, 100) == ref.shape
    assert out.shape[1] == MelSettings().num_frames(samples)
    assert (out - ref).abs().max().item() <= 1e-4
    single = MelSpectrogram()(wave[0])
    assert single.shape == (1 + samples // 256, 100)
    assert torch.allclose(single, out[0])


def test_mel_accepts_numpy_and_clamps_silence():
    out = log_mel(np.zeros(5000, np.float32))
    assert out.shape == (1 + 5000 // 256, 100)
    assert torch.allclose(out, torch.full_like(out, float(np.log(1e-5))))
    with pytest.raises(InputError, match="samples"):
        log_mel(torch.zeros(100))


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).astype(np.float32)
    sf.write(tmp_path / "a.flac", stereo, sr)
    wave = load_audio(tmp_path / "a.flac", 24000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 24000) <= 1
    assert abs(np.abs(wave[1000:-1000]).max() - 0.25) < 0.01  # downmix halves the left channel

    pcm = (np.sin(np.linspace(0, 100, 4800)) * 10000).astype(np.int16)
    save_wav(tmp_path / "b.wav", pcm, 24000)
    back = load_audio(tmp_path / "b.wav", 24000)
    np.testing.assert_array_equal(back, pcm.astype(np.float32) / 32768)


def test_load_audio_from_video_container(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "tone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        t = np.arange(48000) / 48000
        data = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        frame.sample_rate = 48000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    wave = load_audio(path, 24000)
    assert abs(len(wave) - 24000) < 2048  # codec priming/padding
    rms = float(np.sqrt((wave[4000:20000] ** 2).mean()))
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.02  # a lossy codec keeps the level of a steady tone


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty.wav.*empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.ogg").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(InputError, match="junk.ogg"):
        load_audio(tmp_path / "junk.ogg")


def test_default_vocab_layout_and_encoding():
    vocab = Vocab.default()
    assert vocab.to_list()[0] == " "
    for ch in "azAZ09.,?!'-":
        assert ch in vocab
    ids = vocab.encode("Hi, you!")
    assert vocab.decode(ids + [-1, -1]) == "Hi, you!"
    assert len(vocab) == len(set(vocab.to_list()))
    assert Vocab.from_list(vocab.to_list()) == vocab
    assert len(vocab) == BUNDLED_VOCAB_SIZE  # the models layer's copy of the size (tiny_joint_config default)


def test_vocab_unknown_characters_are_named():
    with pytest.raises(InputError) as err:
        Vocab.default().encode("caf\u00e9 \u4f60\u4f60")
    msg = str(err.value)
    assert "U+00E9" in msg and "U+4F60" in msg and msg.count("U+4F60") == 1


def test_vocab_file_round_trip_and_errors(tmp_path):
    vocab = Vocab.from_list([" ", "a", "b", "ni3"])
    path = vocab.save(tmp_path / "vocab.txt")
    assert path.read_text() == " \na\nb\nni3\n"
    assert Vocab.from_file(path) == vocab
    (tmp_path / "dup.txt").write_text(" \na\na\n")
    with pytest.raises(InputError, match="dup.txt.*'a'.*twice"):
        Vocab.from_file(tmp_path / "dup.txt")
    (tmp_path / "hole.txt").write_text(" \n\nb\n")
    with pytest.raises(InputError, match="hole.txt:2"):
        Vocab.from_file(tmp_path / "hole.txt")
    with pytest.raises(InputError, match="nope.txt"):
        Vocab.from_file(tmp_path / "nope.txt")
