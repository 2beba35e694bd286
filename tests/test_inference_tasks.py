"""Every `jam-flow generate` task on a tiny random JointDiT (export dir -> CLI and Python API): files, shapes and the
timeline rules (duration, exact known regions, motion<->mel frame mapping)."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from inference_fixtures import tiny_meta, tiny_net, write_export, write_inputs, write_vocos

from jam_flow.cli import main
from jam_flow.data.vocoder import load_vocos
from jam_flow.features import audio_to_motion_frame
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference import tasks
from jam_flow.inference.bundle import load_bundle

FAST = SamplerSettings(nfe=2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    files = write_inputs(root)
    return {"root": root, "export": write_export(root), "vocos": write_vocos(root), **files}


@pytest.fixture(scope="module")
def bundle(env):
    return load_bundle(env["export"])


@pytest.fixture(scope="module")
def vocoder(env):
    return load_vocos(env["vocos"])


def _generate(env, out, *args) -> int:
    return main(
        [
            "generate",
            "--ckpt",
            str(env["export"]),
            "--out",
            str(out),
            "--nfe",
            "2",
            "--seed",
            "3",
            "--vocoder",
            str(env["vocos"]),
            *map(str, args),
        ]
    )


def _frames(wave_path) -> int:
    return sf.info(str(wave_path)).frames


CLI_CASES = {
    "tts": lambda e: ["--text", "Hi there.", "--ref-audio", e["ref"], "--ref-text", "A voice."],
    "text2av": lambda e: ["--text", "Hi there.", "--duration", "0.8"],
    "audio2motion": lambda e: ["--audio", e["speech"]],
    "dub": lambda e: ["--motion", e["clip"], "--text", "New words"],
    "motion2audio": lambda e: ["--motion", e["motion"]],
    "edit": lambda e: [
        "--audio",
        e["speech"],
        "--motion",
        e["motion"],
        "--edit-start",
        "0.2",
        "--edit-end",
        "0.6",
    ],
}


def test_cli_guidance_mode_reaches_the_record(env, tmp_path):
    out = tmp_path / "f5"
    assert (
        _generate(env, out, "--task", "audio2motion", "--guidance", "f5", *CLI_CASES["audio2motion"](env))
        == 0
    )
    info = json.loads((out / "motion.json").read_text())
    assert info["guidance"] == info["guidance_used"] == "f5"


@pytest.mark.parametrize("task", list(CLI_CASES))
def test_cli_task_writes_its_files(env, task, tmp_path, capsys):
    out = tmp_path / task
    assert _generate(env, out, "--task", task, *CLI_CASES[task](env)) == 0
    assert (out / "audio.wav").is_file() and sf.info(str(out / "audio.wav")).samplerate == 24000
    if task == "tts":
        assert not (out / "motion.npy").exists() and not (out / "preview.mp4").exists()
        # no motion stream: guidance "joint" (the default) falls back to F5-TTS's and the record says so
        record = json.loads((out / "generation.json").read_text())
        assert record["guidance"] == "joint" and record["guidance_used"] == "f5" and record["seed"] == 3
        return
    motion = np.load(out / "motion.npy")
    info = json.loads((out / "motion.json").read_text())
    assert info["guidance"] == info["guidance_used"] == "joint"
    assert motion.ndim == 3 and motion.shape[1:] == (21, 3) and motion.dtype == np.float32
    assert info["fps"] == 25 and info["num_frames"] == motion.shape[0] and info["task"] == task
    assert info["seed"] == 3 and info["nfe"] == 2 and info["mouth_indices"] == [14, 17, 19, 20]
    assert info["sources"]["ckpt"] == str(env["export"])
    assert info["has_rest"] == (task in ("dub", "motion2audio", "edit"))  # a real e_rest track, else neutral
    # audio and motion cover the same time (within one motion frame)
    seconds = _frames(out / "audio.wav") / 24000
    assert abs(seconds - motion.shape[0] / 25) <= 0.05
    with av.open(str(out / "preview.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        assert abs(c.duration / 1e6 - seconds) < 0.1


def test_tts_duration_rule_and_loudness(bundle, env, vocoder):
    r = tasks.tts(
        bundle, "Hello there, friend.", env["ref"], "A voice.", settings=FAST, seed=0, vocoder=vocoder
    )
    ref = tasks.load_reference(env["ref"], bundle)
    ref_len = ref.mel.shape[0]  # F5: nw // hop
    expected = int(ref_len / len(b"A voice.") * len(b"Hello there, friend."))
    assert r.mel.shape == (expected, 100)
    assert r.wave.shape == (256 * (expected - 1),)
    assert ref.rms < tasks.TARGET_RMS  # the quiet reference was scaled to 0.1 RMS ...
    assert math.isclose(
        float(np.sqrt(np.mean(ref.wave.astype(np.float64) ** 2))), tasks.TARGET_RMS, rel_tol=1e-3
    )
    # ... and the stereo 44.1 kHz file was downmixed + resampled rather than rejected
    assert ref.wave.ndim == 1
    # with no reference text: the chars-per-second rule
    r2 = tasks.tts(bundle, "Hello there, friend.", env["ref"], settings=FAST, seed=0, vocoder=vocoder)
    assert r2.mel.shape[0] == round(len(b"Hello there, friend.") / tasks.CHARS_PER_SECOND * 24000 / 256)
    # a very short text with no reference still gets the 0.3 s minimum
    r3 = tasks.text2av(bundle, "Hi", settings=FAST, seed=0, vocoder=vocoder)
    assert r3.mel.shape[0] == math.ceil(tasks.MIN_SECONDS * 24000 / 256)


def test_text2av_with_reference_aligns_streams(bundle, env, vocoder):
    r = tasks.text2av(bundle, "Hello there.", env["ref"], "A voice.", settings=FAST, seed=1, vocoder=vocoder)
    n = r.mel.shape[0]
    assert r.motion.shape == (audio_to_motion_frame(n - 1) + 1, 21, 3)
    # no e_rest given -> the non-mouth keypoints are the neutral expression (training mean)
    rest = list(bundle.motion.rest_indices)
    assert np.allclose(r.motion[:, rest], bundle.neutral_exp()[rest][None], atol=1e-6)
    again = tasks.text2av(
        bundle, "Hello there.", env["ref"], "A voice.", settings=FAST, seed=1, vocoder=vocoder
    )
    assert torch.equal(r.mel, again.mel) and np.array_equal(r.motion, again.motion)


def test_dub_keeps_motion_and_times_speech_to_it(bundle, env, vocoder):
    exp = np.load(env["motion"])
    r = tasks.dub(bundle, env["motion"], "New words", settings=FAST, seed=2, vocoder=vocoder)
    m = exp.shape[0]
    n = math.ceil(m * 24000 / (256 * 25))
    assert r.mel.shape == (n, 100) and audio_to_motion_frame(n - 1) + 1 == m
    assert np.array_equal(r.motion, exp)
    # with a reference voice the motion is still returned unchanged and the speech covers it exactly
    r2 = tasks.dub(
        bundle, env["motion"], "New words", env["ref"], "A voice.", settings=FAST, seed=2, vocoder=vocoder
    )
    assert r2.mel.shape == (n, 100) and np.array_equal(r2.motion, exp)
    m2a = tasks.motion2audio(bundle, env["clip"], settings=FAST, seed=2, vocoder=vocoder)
    assert m2a.mel.shape == (n, 100) and m2a.kp is not None and m2a.meta["task"] == "motion2audio"


def test_audio2motion_rest_track_comes_back_exactly(bundle, env):
    exp = np.load(env["motion"])
    r = tasks.audio2motion(bundle, env["speech"], settings=FAST, seed=0)
    n = 1 + 19200 // 256
    m = audio_to_motion_frame(n - 1) + 1  # 21: the dataset's ceil(0.8 * 25) = 20 plus the loader's one frame
    assert r.mel.shape == (n, 100) and r.motion.shape == (m, 21, 3) and r.wave.shape == (19200,)
    r = tasks.audio2motion(bundle, env["speech"], rest_motion=env["motion"], settings=FAST, seed=0)
    rest = list(bundle.motion.rest_indices)
    padded = np.concatenate([exp, exp[-1:]])  # one frame short: the last frame is repeated
    assert np.array_equal(r.motion[:, rest], padded[:, rest])
    from jam_flow.errors import InputError

    np.save(env["root"] / "short.npy", exp[:15])
    with pytest.raises(InputError, match="--motion: 15 motion frames, but the audio needs 21"):
        tasks.audio2motion(
            bundle, env["speech"], rest_motion=env["root"] / "short.npy", settings=FAST, seed=0
        )


def test_edit_keeps_everything_outside_the_span(bundle, env, vocoder):
    wave = sf.read(str(env["speech"]), dtype="float32")[0]
    full = np.load(env["motion"])
    full = np.concatenate([full, full[-1:]])  # 21 frames for 0.8 s
    r = tasks.edit(
        bundle,
        env["speech"],
        0.4,
        0.6,
        motion=env["motion"],
        streams="both",
        settings=FAST,
        seed=0,
        vocoder=vocoder,
    )
    s0, s1 = math.floor(0.4 * 93.75) * 256, math.ceil(0.6 * 93.75) * 256
    assert r.wave.shape == wave.shape
    assert np.array_equal(r.wave[:s0], wave[:s0]) and np.array_equal(r.wave[s1:], wave[s1:])
    assert not np.allclose(r.wave[s0 + 300 : s1 - 300], wave[s0 + 300 : s1 - 300])
    assert r.motion.shape == full.shape
    assert np.array_equal(r.motion[:10], full[:10]) and np.array_equal(r.motion[15:], full[15:])
    mouth = list(bundle.motion.mouth_indices)
    rest = list(bundle.motion.rest_indices)
    assert not np.allclose(r.motion[10:15][:, mouth], full[10:15][:, mouth])
    assert np.array_equal(r.motion[:, rest], full[:, rest])
    # motion-only edit: the audio is the input, untouched
    r2 = tasks.edit(
        bundle, env["speech"], 0.4, 0.6, motion=env["motion"], streams="motion", settings=FAST, seed=0
    )
    assert np.array_equal(r2.wave, wave)


def test_lightning_checkpoint_loads_like_the_export(bundle, env, tmp_path):
    meta = tiny_meta()
    net = tiny_net(meta)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "jam_flow": {**meta, "ema_state_dict": net.state_dict()}}, ckpt)
    from_ckpt = load_bundle(ckpt)
    assert not from_ckpt.model.training
    for (k, a), (k2, b) in zip(
        from_ckpt.model.state_dict().items(), bundle.model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    mouth, rest = from_ckpt.normalise_motion(np.load(env["motion"]))
    assert mouth.shape == (20, 12) and rest.shape == (20, 51)
    assert torch.allclose(
        from_ckpt.denormalise_motion(mouth, rest), torch.from_numpy(np.load(env["motion"])), atol=1e-6
    )


def test_stage1_audio_checkpoint_runs_tts_only(env, vocoder, tmp_path):
    from jam_flow.errors import InputError
    from jam_flow.models import AudioDiT

    meta = tiny_meta()
    audio_args = dict(meta["model"]["init_args"]["audio"])
    torch.manual_seed(0)
    net = AudioDiT(**audio_args)
    meta["model"] = {"class_path": "jam_flow.models.AudioDiT", "init_args": audio_args}
    ckpt = tmp_path / "audio.ckpt"
    torch.save({"jam_flow": {**meta, "ema_state_dict": net.state_dict()}}, ckpt)
    audio_bundle = load_bundle(ckpt)
    assert not audio_bundle.has_motion
    r = tasks.tts(audio_bundle, "Hi there.", env["ref"], "A voice.", settings=FAST, seed=0, vocoder=vocoder)
    assert r.motion is None and r.wave.ndim == 1
    with pytest.raises(InputError, match="audio-only"):
        tasks.text2av(audio_bundle, "Hi there.", settings=FAST, seed=0, vocoder=vocoder)
    # a stage-1 Motion-DiT cannot generate anything here
    meta["model"] = {
        "class_path": "jam_flow.models.MotionDiT",
        "init_args": {"dim": 32, "depth": 1, "heads": 2},
    }
    torch.save({"jam_flow": {**meta, "ema_state_dict": {}}}, tmp_path / "motion.ckpt")
    with pytest.raises(InputError, match="MotionDiT"):
        load_bundle(tmp_path / "motion.ckpt")
