"""``jam-flow evaluate --protocol``: FID / FVD on random weights in the published formats, the paper-number file,
and every protocol end to end on tiny generated data.

Shared module fixtures: one tiny random JointDiT export, a tiny Vocos, random judges (Inception state dict, scripted
I3D, syncnet_v2 state dict, TorchScript speaker model), two 1.2 s test videos, a LibriSpeech-layout TTS list and a
3-clip dubbing dataset. LivePortrait is the toy-width network set of the render tests (same code paths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jam_flow.errors import InputError
from jam_flow.eval.metrics import FID, FVD
from jam_flow.eval.video_metrics import video_windows

SR = 24000
FPS = 25


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    from jam_flow.eval.testing import (
        write_random_ctc_asr,
        write_random_i3d,
        write_random_inception,
        write_random_speaker,
        write_random_syncnet,
    )

    root = tmp_path_factory.mktemp("judges")
    return {
        "inception": write_random_inception(root / "weights-inception.pth"),
        "i3d": write_random_i3d(root / "i3d_torchscript.pt", size=32),
        "syncnet": write_random_syncnet(root / "syncnet_v2.model"),
        "speaker": write_random_speaker(root / "speaker.pt"),
        "asr": write_random_ctc_asr(root / "asr"),
    }


def _images(n: int, seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x.float() + sigma * torch.randn(x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def test_fid_self_zero_and_monotone_in_noise(judges):
    fid = FID(judges["inception"], feature=64, reset_real_features=False)
    real = _images(4, 0)
    fid.update(real, real=True)
    values = []
    for sigma in (0.0, 25.0, 80.0):
        fid.reset()  # keeps the real statistics
        fid.update(_noisy(real, sigma, 1), real=False)
        values.append(float(fid.compute()))
    assert abs(values[0]) < 1e-6 * max(1.0, values[2])
    assert values[0] < values[1] < values[2], values


def test_fvd_self_zero_monotone_and_windows(judges):
    fvd = FVD(judges["i3d"], reset_real_features=False)
    frames = _images(48, 2, size=32)
    clips = video_windows(frames.reshape(48, 3, 32, 32))  # [3, 16, 3, 32, 32]
    assert clips.shape == (3, 16, 3, 32, 32)
    fvd.update(clips, real=True)
    values = []
    for sigma in (0.0, 30.0, 90.0):
        fvd.reset()
        fvd.update(_noisy(clips, sigma, 3), real=False)
        values.append(float(fvd.compute()))
    assert abs(values[0]) < 1e-4 * values[2]  # rank-deficient covariances: float64 round-off only
    assert values[0] < values[1] < values[2], values


def test_fid_fvd_refuse_bad_files_and_inputs(tmp_path, judges):
    with pytest.raises(InputError, match="--inception"):
        FID(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="--inception"):
        FID(tmp_path / "bad.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="InceptionV3"):
        FID(tmp_path / "other.pth")
    with pytest.raises(InputError, match="--i3d"):
        FVD(judges["inception"])  # a state dict, not TorchScript
    fid = FID(judges["inception"], feature=64)
    with pytest.raises(InputError, match="uint8"):
        fid.update(torch.rand(2, 3, 8, 8), real=True)


def test_paper_results_parse_and_table():
    from jam_flow.eval.protocols.report import load_paper_results, markdown_table

    data = load_paper_results()["tables"]
    assert set(data) == {"table1", "table2", "table3", "table4"}
    assert data["table1"]["rows"][-1]["values"]["fvd"] == 25.07  # Ours (V2V)
    assert [c["metric"] for c in data["table4"]["columns"]] == ["fid", "lse_c", "lse_d", "wer", "sim_o"]
    assert len(data["table4"]["rows"]) == 5
    md = markdown_table(
        "tts", [{"label": "ours", "metrics": {"wer": 0.05, "sim_o": 0.5}}], compare_paper=True
    )
    lines = md.splitlines()
    assert lines[2] == "| Method | WER ↓ | SIM-o ↑ |"
    assert "| F5-TTS (paper) | 2.42% | 0.660 |" in lines
    assert lines[-1] == "| ours (this run) | 5.00% | 0.500 |"


# ------------------------------------------------------------------------------------------------ tiny data
def _tone(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.2 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _write_video(path: Path, seconds: float, seed: int, size: int = 48) -> Path:
    from jam_flow.render.io import VideoWriter

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3)).astype(np.float32)
    writer = VideoWriter(path, FPS, size, size, audio=_tone(seconds, 180 + 40 * seed), sample_rate=SR)
    for j in range(int(round(seconds * FPS))):
        frame = np.roll(base, j, axis=1) * (0.8 + 0.2 * np.sin(j / 3))
        writer.write(frame.clip(0, 255).astype(np.uint8))
    writer.close()
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, judges):
    from inference_fixtures import tiny_meta, write_vocos

    from jam_flow.data.format import (
        ClipRecord,
        DatasetInfo,
        compute_stats,
        write_clip,
        write_dataset_json,
        write_manifest,
        write_stats,
    )
    from jam_flow.features import MelSettings, MotionSettings, num_motion_frames
    from jam_flow.inference.testing import write_random_export

    root = tmp_path_factory.mktemp("protocols")
    export = write_random_export(root / "export", tiny_meta())
    vocos = write_vocos(root)
    videos = root / "videos"
    _write_video(videos / "WRA_person0_000.mp4", 0.64, 0)
    # LibriSpeech layout + F5 list
    libri = root / "librispeech"
    utts = ["1089-134686-0000", "1089-134686-0001", "2300-131720-0000"]
    for k, utt in enumerate(utts):
        spk, chapter, _ = utt.split("-")
        (libri / spk / chapter).mkdir(parents=True, exist_ok=True)
        sf.write(libri / spk / chapter / f"{utt}.flac", _tone(0.8, 150 + 30 * k, 16000), 16000)
    lines = [
        f"{utts[0]}\t0.8\tHello there.\t{utts[1]}\t1.0\tA short line.",
        f"{utts[1]}\t0.8\tAnother one.\t{utts[2]}\t1.0\tGood day to you.",
    ]
    (root / "list.lst").write_text("\n".join(lines) + "\n")
    # dubbing dataset (format v1 with audio) + original videos DIR/<id>.mp4
    data, dub_videos = root / "dub", root / "dub_videos"
    mel_s, motion_s = MelSettings(), MotionSettings()
    rng = np.random.default_rng(0)
    records = []
    for i, text in enumerate(["hello there", "lips and sound", "one more line"]):
        wave = (32767 * _tone(0.72, 200 + 20 * i)).astype(np.int16)
        n = 1 + wave.size // mel_s.hop_length
        duration = wave.size / SR
        m = num_motion_frames(duration)
        rec = ClipRecord(f"clip{i}", "test", f"spk{i % 2}", duration, n, m, text, "")
        arrays = {
            "mel": rng.normal(-4, 2, (n, 100)),
            "exp": rng.normal(0, 0.02, (m, 21, 3)),
            "pitch": np.zeros(m),
            "yaw": np.zeros(m),
            "roll": np.zeros(m),
            "scale": np.ones((m, 1)),
            "t": np.zeros((m, 3)),
            "kp": rng.normal(0, 0.1, (m, 21, 3)),
        }
        records.append(write_clip(data, rec, arrays, audio=wave))
        _write_video(dub_videos / f"clip{i}.mp4", duration, 5 + i)
    write_manifest(data, records)
    write_dataset_json(data, DatasetInfo(mel=mel_s, motion=motion_s, num_clips=len(records), source="folder"))
    write_stats(data, compute_stats(data, records))
    return {
        "root": root,
        "export": export,
        "vocos": vocos,
        "videos": videos,
        "libri": libri,
        "list": root / "list.lst",
        "data": data,
        "dub_videos": dub_videos,
        **{k: str(v) for k, v in judges.items()},
    }


@pytest.fixture
def tiny_liveportrait(monkeypatch, tmp_path):
    """LivePortrait at toy widths (the render tests' networks): ``--liveportrait`` still names a directory."""
    from test_render_e2e import tiny_models

    import jam_flow.liveportrait as lp

    monkeypatch.setattr(
        lp, "load_liveportrait", lambda path, device="cpu", half=False: tiny_models().to(device)
    )
    (tmp_path / "lp").mkdir()
    return tmp_path / "lp"


def _evaluate(*args) -> int:
    from jam_flow.cli import main as cli_main

    return cli_main(["evaluate", *map(str, args)])


def _common(world, out: Path) -> list:
    return [
        "--ckpt",
        world["export"],
        "--out",
        out,
        "--nfe",
        "2",
        "--accelerator",
        "cpu",
        "--vocoder",
        world["vocos"],
    ]


def _video_args(world, lp: Path) -> list:
    return [
        "--videos", world["videos"], "--chunk-seconds", "0.32", "--min-chunk-seconds", "0.24",
        "--liveportrait", lp, "--face-model", "full-frame", "--render-crop-size", "128",
        "--inception", world["inception"], "--fid-feature", "64", "--frame-stride", "5",
        "--i3d", world["i3d"], "--fvd-frames", "8", "--syncnet", world["syncnet"],
    ]  # fmt: skip


def test_talking_head_end_to_end_and_resume(world, tiny_liveportrait, capsys):
    """The earlier variant (--mode i2v --clue none: mouth only, from the first frame): one row, resumable."""
    out = world["root"] / "th"
    args = [*_common(world, out), "--protocol", "talking-head", *_video_args(world, tiny_liveportrait)]
    args += ["--mode", "i2v", "--clue", "none"]
    assert _evaluate(*args, "--compare-paper") == 0
    result = json.loads((out / "result.json").read_text())
    row = result["rows"][0]
    assert result["protocol"] == "talking-head" and result["columns"] == ["fid", "fvd", "lse_c", "lse_d"]
    assert list(row["metrics"]) == ["fid", "fvd", "lse_c", "lse_d"]
    assert all(np.isfinite(v) for v in row["metrics"].values())
    # 0.64 s = 2 chunks of 8 frames
    assert row["parts"]["video"] == {"clips": 2, "generated": 2, "reused": 0, "mode": "i2v", "clue": "none"}
    chunk = out / "ours" / "chunks" / "WRA_person0_000__001"
    assert np.load(chunk / "motion.npy").shape == (8, 21, 3)
    table = (out / "table.md").read_text()
    assert "| Ours (V2V) (paper) | 11.633 | 25.070 | 8.086 | 7.181 |" in table
    assert "| ours (this run) |" in table
    assert not any(str(world["root"]) in json.dumps(v) for v in result["settings"].values())
    # a restart reuses the finished chunks and redoes a lost one
    (chunk / "done.json").unlink()
    assert _evaluate(*args, "--metrics", "fid,fvd") == 0
    again = json.loads((out / "result.json").read_text())["rows"][0]
    assert again["parts"]["video"]["generated"] == 1 and again["parts"]["video"]["reused"] == 1
    assert list(again["metrics"]) == ["fid", "fvd"]
    assert capsys.readouterr().out.count("wrote") == 2


def test_talking_head_i2v_and_v2v_with_the_e_rest_clue(world, tiny_liveportrait):
    """Table 1 as §5.2 runs it (the defaults): the chunk's own non-mouth keypoints are the model's e_rest and drive
    the render; one row per mode; V2V warps the chunk's own frames."""
    from jam_flow.features import MotionSettings

    out = world["root"] / "th_both"
    args = [*_common(world, out), "--protocol", "talking-head", *_video_args(world, tiny_liveportrait)]
    assert _evaluate(*args, "--compare-paper") == 0
    result = json.loads((out / "result.json").read_text())
    assert [r["label"] for r in result["rows"]] == ["ours (I2V)", "ours (V2V)"]
    for row, mode in zip(result["rows"], ("i2v", "v2v"), strict=True):
        assert list(row["metrics"]) == ["fid", "fvd", "lse_c", "lse_d"]
        assert all(np.isfinite(v) for v in row["metrics"].values())
        assert row["parts"]["video"] == {
            "clips": 2,
            "generated": 2,
            "reused": 0,
            "mode": mode,
            "clue": "e_rest",
        }
    mouth = list(MotionSettings().mouth_indices)
    rest = [i for i in range(21) if i not in mouth]
    for sub in ("chunks", "chunks_v2v"):
        d = out / "ours" / sub / "WRA_person0_000__001"
        clue, motion = np.load(d / "clue.npy"), np.load(d / "motion.npy")
        assert clue.shape == motion.shape == (8, 21, 3)
        np.testing.assert_allclose(motion[:, rest], clue[:, rest], atol=1e-4)  # e_rest given: the clue itself
        assert not np.allclose(motion[:, mouth], clue[:, mouth])  # the mouth is generated
        assert (d / "render.mp4").is_file()
    assert (out / "ours" / "chunks_v2v" / "WRA_person0_000__001" / "source.mp4").is_file()
    assert (out / "ours" / "chunks" / "WRA_person0_000__001" / "source.png").is_file()
    assert "| ours (V2V) (this run) |" in (out / "table.md").read_text()
    # --mode v2v alone reuses the V2V chunks
    assert _evaluate(*args, "--mode", "v2v") == 0
    again = json.loads((out / "result.json").read_text())["rows"]
    assert [r["label"] for r in again] == ["ours"] and again[0]["parts"]["video"]["reused"] == 2


def test_a_stage1_motion_dit_is_the_ours_stage1_row(world, tiny_liveportrait, tmp_path, capsys):
    """A stage-1 Motion-DiT checkpoint is evaluated on Table 1 with the wav2vec2 features of each chunk's speech
    (the directory jam-flow audio-features used); without that directory a wav2vec2-feature model is refused."""
    transformers = pytest.importorskip("transformers")
    from inference_fixtures import tiny_meta

    from jam_flow.inference.bundle import save_export
    from jam_flow.models import MotionDiT

    w2v = tmp_path / "w2v"
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    transformers.Wav2Vec2Model(cfg).save_pretrained(str(w2v))
    net = MotionDiT(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2, audio_feat_dim=16, window=2)
    with torch.no_grad():
        for prm in net.parameters():  # adaLN-zero init would hide the features
            prm.copy_(torch.randn_like(prm) * 0.1)
    meta = tiny_meta()
    meta["model"] = {"class_path": "jam_flow.models.MotionDiT", "init_args": dict(net.init_args)}
    stage1 = save_export(tmp_path / "stage1", net, meta)
    out = tmp_path / "th_stage1"
    args = ["--ckpt", stage1, "--labels", "Ours-Stage1", "--out", out, "--nfe", "2", "--accelerator", "cpu"]
    args += ["--protocol", "talking-head", *_video_args(world, tiny_liveportrait), "--mode", "i2v"]
    args += ["--metrics", "fid,lse_c"]
    assert _evaluate(*args) == 2
    assert "--audio-features-model" in capsys.readouterr().err
    assert _evaluate(*args, "--audio-features-model", w2v) == 0
    row = json.loads((out / "result.json").read_text())["rows"][0]
    assert row["label"] == "Ours-Stage1" and all(np.isfinite(v) for v in row["metrics"].values())
    motion = np.load(out / "Ours-Stage1" / "chunks" / "WRA_person0_000__000" / "motion.npy")
    assert motion.shape == (8, 21, 3) and np.isfinite(motion).all()


def test_tts_end_to_end(world):
    out = world["root"] / "tts"
    args = [
        *_common(world, out),
        "--protocol",
        "tts",
        "--list",
        world["list"],
        "--audio-root",
        world["libri"],
    ]
    assert _evaluate(*args, "--speaker-model", world["speaker"], "--asr", world["asr"]) == 0
    row = json.loads((out / "result.json").read_text())["rows"][0]
    assert list(row["metrics"]) == ["wer", "sim_o"] and -1.0 <= row["metrics"]["sim_o"] <= 1.0
    assert row["metrics"]["wer"] >= 0.0
    assert row["parts"]["tts"] == {"clips": 2, "generated": 2, "reused": 0}
    assert (out / "ours" / "tts" / "2300-131720-0000" / "audio.wav").is_file()


def test_dubbing_end_to_end(world):
    out = world["root"] / "dub"
    args = [*_common(world, out), "--protocol", "dubbing", "--data.data_dir", world["data"]]
    args += [
        "--videos",
        world["dub_videos"],
        "--syncnet",
        world["syncnet"],
        "--speaker-model",
        world["speaker"],
    ]
    assert _evaluate(*args, "--asr", world["asr"]) == 0
    row = json.loads((out / "result.json").read_text())["rows"][0]
    assert list(row["metrics"]) == ["lse_c", "lse_d", "wer", "spk_sim"]
    assert row["parts"]["dub"]["clips"] == 3
    wave, sr = sf.read(out / "ours" / "dub" / "clip1" / "audio.wav")
    assert sr == SR and abs(wave.size / SR - 0.72) < 0.05  # the speech follows the given motion's length


def test_dubbing_cuts_clips_into_non_overlapping_chunks(world):
    """Appendix A: clips longer than the chunk length are cut into non-overlapping chunks (20 s in the paper; 0.32 s
    here): each chunk dubs its own motion frames with its share of the words, LSE on its span of the video."""
    from jam_flow.eval.protocols.common import ProtocolSettings
    from jam_flow.eval.protocols.speech import dubbing_items

    out = world["root"] / "dub_chunks"
    settings = ProtocolSettings("dubbing", [str(world["export"])], str(out), data_dir=str(world["data"]))
    settings.chunk_seconds, settings.min_chunk_seconds = 0.32, 0.24
    items = dubbing_items(settings)
    # 0.72 s = 18 frames -> [0, 8) and [8, 16); the 2-frame rest is shorter than the 6-frame minimum
    assert [(i.id, i.start, i.frames) for i in items[:2]] == [("clip0__000", 0, 8), ("clip0__001", 8, 8)]
    assert [i.text for i in items[:2]] == ["hello", "there"]
    args = [*_common(world, out), "--protocol", "dubbing", "--data.data_dir", world["data"]]
    args += ["--videos", world["dub_videos"], "--syncnet", world["syncnet"], "--chunk-seconds", "0.32"]
    args += ["--min-chunk-seconds", "0.24", "--metrics", "lse_c,lse_d"]
    assert _evaluate(*args) == 0
    row = json.loads((out / "result.json").read_text())["rows"][0]
    assert row["parts"]["dub"]["clips"] == len(items) and all(np.isfinite(v) for v in row["metrics"].values())
    wave, sr = sf.read(out / "ours" / "dub" / "clip0__001" / "audio.wav")
    assert abs(wave.size / sr - 0.32) < 0.05  # the chunk's 8 motion frames fix its speech length
    np.testing.assert_array_equal(
        np.load(out / "inputs" / "clip0__001.npy"),
        np.load(world["data"] / "clips" / "clip0.npz")["exp"][8:16],
    )
    assert (out / "inputs" / "clip0__001.mp4").is_file()


def _ablation(world, out: Path, lp: Path | None, metrics: str) -> dict:
    args = [
        "--protocol",
        "ablation",
        "--ckpt",
        world["export"],
        world["export"],
        "--labels",
        "half-mask-trained",
    ]
    args += ["other", "--out", out, "--nfe", "2", "--accelerator", "cpu", "--vocoder", world["vocos"]]
    args += [*(_video_args(world, lp) if lp else []), "--max-clips", "2", "--asr", world["asr"]]
    args += ["--list", world["list"], "--audio-root", world["libri"], "--speaker-model", world["speaker"]]
    assert _evaluate(*args, "--metrics", metrics, "--compare-paper") == 0
    result = json.loads((out / "result.json").read_text())
    assert [r["label"] for r in result["rows"]] == ["half-mask-trained", "other"]
    assert "| 11 (Half), mask, Audio-DiT trained (paper) | 5.662 | 6.45" in (out / "table.md").read_text()
    return result


def test_ablation_speech_columns(world):
    result = _ablation(world, world["root"] / "abl_speech", None, "wer,sim_o")
    for row in result["rows"]:
        assert list(row["metrics"]) == ["wer", "sim_o"] and set(row["parts"]) == {"text2av"}
    a, b = (r["metrics"] for r in result["rows"])
    assert a == pytest.approx(b)  # same weights, same seeds


@pytest.mark.slow
def test_ablation_all_columns(world, tiny_liveportrait):
    out = world["root"] / "abl"
    result = _ablation(world, out, tiny_liveportrait, "fid,lse_c,lse_d,wer,sim_o")
    for row in result["rows"]:
        assert list(row["metrics"]) == ["fid", "lse_c", "lse_d", "wer", "sim_o"]
        assert set(row["parts"]) == {"video", "text2av"}
    # same weights, same seed: both rows agree
    a, b = (r["metrics"] for r in result["rows"])
    assert a == pytest.approx(b)
    assert (out / "other" / "text2av" / "1089-134686-0001" / "motion.npy").is_file()


def test_missing_judges_and_bad_arguments(world, capsys):
    out = world["root"] / "bad"
    base = _common(world, out)
    rc = _evaluate(*base, "--protocol", "talking-head", "--videos", world["videos"], "--liveportrait", out)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: missing judge weights")
    for flag in ("--inception", "--i3d", "--syncnet"):
        assert flag in err
    rc = _evaluate(*base, "--protocol", "tts", "--list", world["list"], "--audio-root", world["libri"])
    err = capsys.readouterr().err
    assert rc == 2 and "--asr" in err and "--speaker-model" in err
    rc = _evaluate(*base, "--protocol", "tts", "--metrics", "fid")
    assert rc == 2 and "not part of protocol tts" in capsys.readouterr().err
    rc = _evaluate(
        *base, "--protocol", "dubbing", "--metrics", "spk_sim", "--speaker-model", world["speaker"]
    )
    assert rc == 2 and "--data.data_dir" in capsys.readouterr().err
    (out / "x.lst").parent.mkdir(parents=True, exist_ok=True)
    (out / "x.lst").write_text("only\tthree\tfields\n")
    args = [
        "--protocol",
        "tts",
        "--list",
        out / "x.lst",
        "--audio-root",
        world["libri"],
        "--metrics",
        "sim_o",
    ]
    rc = _evaluate(*base, *args, "--speaker-model", world["speaker"])
    assert rc == 2 and "x.lst:1: expected 6 tab-separated fields" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_reduce_to_the_single_process_result(world):
    """``--devices 2`` on the CPU (Lightning Fabric, DDP over gloo): each rank takes every other item and
    torchmetrics reduces the states, so the metrics equal a one-process run's."""
    import os
    import subprocess
    import sys

    base = ["--protocol", "tts", "--ckpt", world["export"], "--nfe", "2", "--accelerator", "cpu"]
    base += ["--vocoder", world["vocos"], "--list", world["list"], "--audio-root", world["libri"]]
    base += ["--speaker-model", world["speaker"], "--metrics", "sim_o"]
    results = []
    for devices in (1, 2):
        out = world["root"] / f"ddp{devices}"
        cmd = [sys.executable, "-m", "jam_flow.cli", "evaluate", *map(str, base), "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run([*cmd, "--devices", str(devices)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads((out / "result.json").read_text())["rows"][0])
    assert results[1]["parts"]["tts"] == {"clips": 2, "generated": 2, "reused": 0}
    assert results[1]["metrics"]["sim_o"] == pytest.approx(results[0]["metrics"]["sim_o"], abs=1e-5)
