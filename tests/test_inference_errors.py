"""Bad input to `jam-flow generate`: exit status 2 and one line naming the argument, no traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import yaml
from inference_fixtures import write_export, write_inputs

from jam_flow.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference_errors")
    files = write_inputs(root)
    return {"root": root, "export": write_export(root), **files}


def _fails(env, capsys, args, *expected, ckpt=None) -> str:
    capsys.readouterr()
    code = main(
        [
            "generate",
            "--ckpt",
            str(ckpt or env["export"]),
            "--out",
            str(env["root"] / "out"),
            "--nfe",
            "2",
            *map(str, args),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


def test_text_errors(env, capsys):
    _fails(env, capsys, ["--task", "text2av", "--text", "   "], "--text", "empty")
    _fails(env, capsys, ["--task", "text2av", "--text", "a" * 700], "--text", "too long")
    msg = _fails(
        env, capsys, ["--task", "text2av", "--text", "snow ☃ and ✈"], "--text", "not in the vocabulary"
    )
    assert "'☃'" in msg and "'✈'" in msg
    _fails(
        env,
        capsys,
        ["--task", "tts", "--text", "hello", "--ref-audio", env["ref"], "--ref-text", "vo☃ice"],
        "--ref-text",
        "'☃'",
    )
    _fails(env, capsys, ["--task", "tts", "--ref-audio", env["ref"]], "--text", "required")
    _fails(env, capsys, ["--task", "dub", "--motion", env["motion"]], "--text", "required")


def test_reference_audio_errors(env, capsys):
    _fails(
        env,
        capsys,
        ["--task", "tts", "--text", "hello", "--ref-audio", env["silent"]],
        "--ref-audio",
        "silent",
    )
    _fails(
        env,
        capsys,
        ["--task", "tts", "--text", "hello", "--ref-audio", env["root"] / "nope.wav"],
        "--ref-audio",
        "does not exist",
    )
    _fails(env, capsys, ["--task", "tts", "--text", "hello"], "--ref-audio", "required")
    sf.write(env["root"] / "long.wav", np.full(24000 * 16, 0.1, np.float32), 24000)
    _fails(
        env,
        capsys,
        ["--task", "tts", "--text", "hello", "--ref-audio", env["root"] / "long.wav"],
        "--ref-audio",
        "at most",
    )


def test_motion_errors(env, capsys):
    np.save(env["root"] / "flat.npy", np.zeros((10, 5), np.float32))
    _fails(
        env,
        capsys,
        ["--task", "motion2audio", "--motion", env["root"] / "flat.npy"],
        "--motion",
        "expected an array [m, 21, 3]",
        "(10, 5)",
    )
    sub = env["root"] / "fps30"
    sub.mkdir()
    np.save(sub / "motion.npy", np.zeros((20, 21, 3), np.float32))
    (sub / "motion.json").write_text(json.dumps({"fps": 30}))
    _fails(env, capsys, ["--task", "motion2audio", "--motion", sub / "motion.npy"], "--motion", "fps 30")
    np.save(env["root"] / "nan.npy", np.full((20, 21, 3), np.nan, np.float32))
    _fails(
        env, capsys, ["--task", "dub", "--text", "hi", "--motion", env["root"] / "nan.npy"], "--motion", "NaN"
    )
    np.save(env["root"] / "tiny.npy", np.zeros((2, 21, 3), np.float32))
    _fails(
        env,
        capsys,
        ["--task", "dub", "--text", "hi", "--motion", env["root"] / "tiny.npy"],
        "--motion",
        "0.08 s",
    )
    np.savez(env["root"] / "noexp.npz", mel=np.zeros((3, 100), np.float32))
    _fails(
        env,
        capsys,
        ["--task", "dub", "--text", "hi", "--motion", env["root"] / "noexp.npz"],
        "--motion",
        "'exp'",
    )
    (env["root"] / "m.txt").write_text("x")
    _fails(
        env, capsys, ["--task", "dub", "--text", "hi", "--motion", env["root"] / "m.txt"], "--motion", ".npy"
    )


def test_duration_and_sampler_errors(env, capsys):
    _fails(
        env, capsys, ["--task", "text2av", "--text", "hi", "--duration", "100"], "--duration", "out of range"
    )
    _fails(
        env, capsys, ["--task", "text2av", "--text", "hi", "--duration", "0.01"], "--duration", "out of range"
    )
    _fails(env, capsys, ["--task", "text2av", "--text", "hi", "--duration", "nan"], "--duration")
    _fails(
        env,
        capsys,
        ["--task", "text2av", "--text", "hi", "--method", "midpoint", "--nfe", "3"],
        "--nfe",
        "even",
    )
    _fails(env, capsys, ["--task", "text2av", "--text", "hi", "--cfg", "-1"], "--cfg")
    _fails(env, capsys, ["--task", "text2av", "--text", "hi", "--nfe", "many"], "--nfe")
    _fails(env, capsys, ["--task", "nonsense"], "--task")
    _fails(
        env,
        capsys,
        ["--task", "audio2motion", "--audio", env["speech"], "--duration", "2"],
        "--duration",
        "not used",
    )
    _fails(
        env,
        capsys,
        ["--task", "edit", "--audio", env["speech"], "--edit-start", "0.5", "--edit-end", "0.2"],
        "--edit-start/--edit-end",
    )
    _fails(
        env,
        capsys,
        [
            "--task",
            "edit",
            "--audio",
            env["speech"],
            "--edit-start",
            "0.1",
            "--edit-end",
            "0.2",
            "--edit-streams",
            "motion",
        ],
        "--motion",
        "needs",
    )
    _fails(env, capsys, ["--task", "audio2motion", "--audio", env["silent"].with_name("gone.wav")], "--audio")
    _fails(
        env, capsys, ["--task", "text2av", "--text", "hi", "--vocoder", env["root"] / "novocos"], "--vocoder"
    )
    (env["root"] / "face.png").write_bytes(b"\x89PNG")
    _fails(
        env,
        capsys,
        ["--task", "text2av", "--text", "hi", "--source", env["root"] / "face.png"],
        "--source / --liveportrait",
    )
    _fails(
        env,
        capsys,
        [
            "--task",
            "tts",
            "--text",
            "hi",
            "--ref-audio",
            env["ref"],
            "--source",
            env["root"] / "face.png",
            "--liveportrait",
            env["root"],
        ],
        "--source",
        "no motion",
    )


def test_checkpoint_errors(env, capsys, tmp_path):
    _fails(
        env,
        capsys,
        ["--task", "text2av", "--text", "hi"],
        "--ckpt",
        "does not exist",
        ckpt=tmp_path / "x.ckpt",
    )
    # wrong architecture in config.yaml: the weights no longer fit
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((env["export"] / "model.safetensors").read_bytes())
    cfg = yaml.safe_load((env["export"] / "config.yaml").read_text())
    cfg["model"]["init_args"]["audio"]["dim"] = 32
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    msg = _fails(
        env,
        capsys,
        ["--task", "text2av", "--text", "hi"],
        "config.yaml",
        "do not match",
        "wrong shapes",
        ckpt=bad,
    )
    assert str(bad) in msg
    cfg = yaml.safe_load((env["export"] / "config.yaml").read_text())
    cfg["model"]["init_args"]["audio"]["depth"] = 2
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    _fails(env, capsys, ["--task", "text2av", "--text", "hi"], "unexpected keys", ckpt=bad)
    cfg = yaml.safe_load((env["export"] / "config.yaml").read_text())
    cfg["format_version"] = 7
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    _fails(env, capsys, ["--task", "text2av", "--text", "hi"], "format_version 7", ckpt=bad)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    _fails(
        env, capsys, ["--task", "text2av", "--text", "hi"], "--ckpt", "junk.ckpt", ckpt=tmp_path / "junk.ckpt"
    )
    import torch

    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    _fails(env, capsys, ["--task", "text2av", "--text", "hi"], "no 'jam_flow'", ckpt=tmp_path / "plain.ckpt")


def test_any_rate_and_channel_count_is_accepted(env, capsys, tmp_path):
    sr = 8000
    t = np.arange(sr) / sr
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 200 * t), 0.1 * np.sin(2 * np.pi * 300 * t)], axis=1)
    sf.write(tmp_path / "ref8k.flac", stereo.astype(np.float32), sr)
    code = main(
        [
            "generate",
            "--ckpt",
            str(env["export"]),
            "--out",
            str(tmp_path / "o"),
            "--nfe",
            "2",
            "--cfg",
            "0",
            "--task",
            "tts",
            "--text",
            "hi",
            "--ref-audio",
            str(tmp_path / "ref8k.flac"),
            "--duration",
            "0.4",
        ]
    )
    assert code == 0 and (tmp_path / "o" / "audio.wav").is_file()
    assert "Griffin-Lim" in capsys.readouterr().err  # no --vocoder: the loud fallback warning


def test_edit_motion_must_match_the_audio(env, capsys):
    np.save(env["root"] / "m40.npy", np.zeros((40, 21, 3), np.float32))
    _fails(
        env,
        capsys,
        [
            "--task",
            "edit",
            "--audio",
            env["speech"],
            "--motion",
            env["root"] / "m40.npy",
            "--edit-start",
            "0.1",
            "--edit-end",
            "0.3",
        ],
        "--motion",
        "40 motion frames",
        "covers 21",
    )
