"""Output safety of `jam-flow generate`: --out / --overwrite (whole output set, refuses foreign folders, checked before
any work), non-finite results fail with one line and write nothing, seeds and motion dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fixtures import tiny_meta, write_export, write_inputs

from jam_flow.cli import main
from jam_flow.errors import NonFiniteError
from jam_flow.inference.bundle import save_export
from jam_flow.inference.outputs import VOCODER_CAUSES, check_finite
from jam_flow.inference.testing import random_joint_net


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference_safety")
    return {"root": root, "export": write_export(root), **write_inputs(root)}


def _run(env, capsys, out, *args, ckpt=None) -> tuple[int, str]:
    capsys.readouterr()
    code = main(
        ["generate", "--ckpt", str(ckpt or env["export"]), "--out", str(out), "--nfe", "2", "--seed", "1"]
        + [str(a) for a in args]
    )
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("WARNING")]
    if code != 0:
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return code, (lines[0] if lines else "")


def _tree(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


TEXT2AV = ["--task", "text2av", "--text", "Hi there.", "--duration", "0.8"]
TTS = ["--task", "tts", "--text", "Hi.", "--ref-audio"]


def test_out_refuses_non_empty_and_overwrite_replaces_the_whole_set(env, capsys, tmp_path):
    out = tmp_path / "out"
    assert _run(env, capsys, out, *TEXT2AV)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["audio.wav", "motion.json", "motion.npy", "preview.mp4"]
    before = _tree(out)
    code, msg = _run(env, capsys, out, *TTS, env["ref"])
    assert code == 2 and msg.startswith("error: --out:") and "--overwrite" in msg
    assert _tree(out) == before
    # --overwrite: only the new task's files remain (no stale motion.npy of the earlier run)
    assert _run(env, capsys, out, *TTS, env["ref"], "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["audio.wav", "generation.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a failing run under --overwrite leaves the previous output untouched
    before = _tree(out)
    assert _run(
        env, capsys, out, "--task", "tts", "--text", "Hi.", "--ref-audio", env["silent"], "--overwrite"
    )[0]
    assert _tree(out) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_never_deletes_a_folder_generate_did_not_write(env, capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "audio.wav").write_bytes(b"my recording")
    (mine / "thesis.tex").write_text("keep")
    code, msg = _run(env, capsys, mine, *TEXT2AV, "--overwrite")
    assert code == 2 and "refusing to replace" in msg and "thesis.tex" in msg
    (mine / "thesis.tex").unlink()
    (mine / "motion.json").write_text('{"what": "my notes"}')
    code, msg = _run(env, capsys, mine, *TEXT2AV, "--overwrite")
    assert code == 2 and "motion.json" in msg
    assert (mine / "audio.wav").read_bytes() == b"my recording"


def test_out_paths_are_checked_before_any_work(env, capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    missing_ckpt = tmp_path / "no-such.ckpt"  # would fail too, but only once the work starts
    for out, piece in ((a_file / "sub", "not a directory"), (a_file, "not a directory")):
        code, msg = _run(env, capsys, out, *TEXT2AV, ckpt=missing_ckpt)
        assert code == 2 and msg.startswith("error: --out:") and piece in msg, msg
    if Path("/proc/self").exists():  # a folder nobody can create entries in
        code, msg = _run(env, capsys, "/proc/jam-flow-x", *TEXT2AV, ckpt=missing_ckpt)
        assert code == 2 and msg.startswith("error: --out:"), msg


def test_seed_range(env, capsys, tmp_path):
    for seed in (2**64, -1):
        code, msg = _run(env, capsys, tmp_path / "o", *TEXT2AV, "--seed", seed)
        assert code == 2 and msg.startswith("error: --seed"), msg
    assert not (tmp_path / "o").exists()


def test_non_finite_results_write_nothing(env, capsys, tmp_path):
    # an extreme guidance scale overflows the sampled mel
    out = tmp_path / "cfg"
    code, msg = _run(env, capsys, out, *TEXT2AV, "--cfg", "1e300")
    assert code == 2 and "--task text2av" in msg and "non-finite" in msg and "--cfg" in msg, msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # one NaN weight (a diverged run): the sampled streams are NaN
    meta = tiny_meta()
    net = random_joint_net(meta)
    with torch.no_grad():
        next(iter(net.parameters())).view(-1)[0] = float("nan")
    bad = save_export(tmp_path / "nan_export", net, meta)
    code, msg = _run(env, capsys, out, *TEXT2AV, ckpt=bad)
    assert code == 2 and "non-finite" in msg and "stream" in msg and "diverged" in msg, msg
    assert not out.exists()
    with pytest.raises(NonFiniteError, match="vocoded waveform.*--vocoder"):
        check_finite(np.array([0.0, np.inf], np.float32), "vocoded waveform", "tts", VOCODER_CAUSES)


def test_motion_dtypes_and_magnitudes_are_refused(env, capsys, tmp_path):
    exp = np.load(env["motion"])
    cases = {
        "int.npy": exp.astype(np.int32),
        "bool.npy": exp > 0,
        "huge.npy": exp * 1e20,
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
        code, msg = _run(env, capsys, tmp_path / "o", "--task", "motion2audio", "--motion", tmp_path / name)
        assert code == 2 and msg.startswith("error: --motion:"), msg
    assert not (tmp_path / "o").exists()
    np.save(tmp_path / "f64.npy", exp.astype(np.float64))  # converted to float32
    code, _ = _run(env, capsys, tmp_path / "o", "--task", "motion2audio", "--motion", tmp_path / "f64.npy")
    assert code == 0
