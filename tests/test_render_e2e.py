"""End-to-end ``jam-flow render``: image (I2V) and video (V2V) sources -> mp4 with the right video / audio length,
and every bad-input case. The default tests use small LivePortrait networks of the real architecture (the
published sizes take ~40 s per frame on 2 CPU cores); the slow test runs the published sizes on random weights."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import jam_flow.liveportrait as lp
from jam_flow.cli import main as cli_main
from jam_flow.liveportrait.loading import resolve_weight_files
from jam_flow.liveportrait.testing import tiny_models
from jam_flow.render import render_talking_head
from jam_flow.render.io import VideoWriter

SR = 24000
FPS = 25


@pytest.fixture
def tiny_loader(monkeypatch):
    """``load_liveportrait`` that still checks the weight files (missing ones are listed) but builds tiny nets."""
    calls = []

    def load(weights_dir, device="cpu", half=False):
        resolve_weight_files(weights_dir)
        calls.append(Path(weights_dir))
        return tiny_models().to(device)

    monkeypatch.setattr(lp, "load_liveportrait", load)
    return calls


def _weights_dir(root: Path) -> Path:
    """A directory with all five weight file names (content irrelevant for the tiny loader)."""
    for rel in (
        "base_models/appearance_feature_extractor.pth",
        "base_models/motion_extractor.pth",
        "base_models/warping_module.pth",
        "base_models/spade_generator.pth",
        "retargeting_models/stitching_retargeting_module.pth",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def _face_image(path: Path, h: int = 150, w: int = 133) -> Path:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _motion_dir(path: Path, m: int, seed: int = 0, has_rest: bool | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    exp = np.random.default_rng(seed).normal(0, 0.02, (m, 21, 3)).astype(np.float32)
    np.save(path / "motion.npy", exp)
    meta = {"fps": FPS, "mouth_indices": [14, 17, 19, 20]}
    if has_rest is not None:
        meta["has_rest"] = has_rest
    (path / "motion.json").write_text(json.dumps(meta))
    return path


def _wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(round(seconds * SR))) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(video=0))
        return {
            "frames": n,
            "size": (v.width, v.height),
            "fps": float(v.average_rate),
            "codec": v.codec_context.name,
            "audio_codec": a.codec_context.name,
            "audio_seconds": float(a.duration * a.time_base),
        }


def _run(capsys, *args: object) -> tuple[int, str]:
    rc = cli_main(["render", *map(str, args)])
    return rc, capsys.readouterr().err


def _args(tmp_path: Path, frames: int = 5, seconds: float = 0.2, **override: object) -> list[object]:
    """``jam-flow render`` arguments for a valid tiny job; ``override`` replaces options (``face_model=...``)."""
    opts: dict[str, object] = {
        "source": _face_image(tmp_path / "face.png"),
        "motion": _motion_dir(tmp_path / "gen", frames),
        "audio": _wav(tmp_path / "a.wav", seconds),
        "weights": _weights_dir(tmp_path / "lp"),
        "out": tmp_path / "out" / "talk.mp4",
        "face_model": "full-frame",
        "crop_size": 128,
    }
    opts.update(override)
    argv: list[object] = []
    for key, value in opts.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", value]
    return argv


def test_render_cli_image_to_mp4(tmp_path, tiny_loader, capsys):
    args = _args(tmp_path, batch_size=3)
    rc, err = _run(capsys, *args)
    assert rc == 0, err
    assert tiny_loader == [tmp_path / "lp"]
    info = _probe(tmp_path / "out" / "talk.mp4")
    assert info["frames"] == 5
    assert info["size"] == (134, 150)  # odd width padded to even for yuv420p
    assert info["fps"] == pytest.approx(25.0)
    assert info["codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(0.2, abs=0.01)


def test_render_video_source_v2v(tmp_path):
    """V2V: a 2-frame source video is extended (ping-pong) to the 3-frame motion; each frame is re-rendered."""
    src = tmp_path / "src.mp4"
    writer = VideoWriter(src, FPS, 96, 112)
    for i in range(2):
        writer.write(np.full((112, 96, 3), 60 + 50 * i, dtype=np.uint8))
    writer.close()
    out = tmp_path / "dub.mp4"
    result = render_talking_head(
        src,
        _motion_dir(tmp_path / "gen", 3),
        _wav(tmp_path / "a.wav", 0.12),
        None,
        out,
        batch_size=2,
        face_model="full-frame",
        crop_size=128,
        models=tiny_models(),
    )
    assert result.num_frames == 3 and result.path == out
    info = _probe(out)
    assert info["frames"] == 3 and info["size"] == (96, 112)
    assert info["audio_seconds"] == pytest.approx(0.12, abs=0.01)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_image_names_path(tmp_path, tiny_loader, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    rc, err = _run(capsys, *_args(tmp_path, source=bad))
    assert rc == 2 and str(bad) in err and "cannot read the image" in err
    assert not (tmp_path / "out" / "talk.mp4").exists()


def test_no_face_found(tmp_path, tiny_loader, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(blank)
    rc, err = _run(capsys, *_args(tmp_path, source=blank, face_model=None))  # the default Haar detector
    assert rc == 2 and f"no face found in {blank}" in err
    assert tiny_loader == []  # failed before loading any weights


def test_motion_audio_length_mismatch(tmp_path, tiny_loader, capsys):
    rc, err = _run(capsys, *_args(tmp_path, frames=5, seconds=0.4))
    assert rc == 2
    assert "5 frames" in err and "0.200 s" in err  # motion: frames and seconds
    assert "0.400 s" in err and "10 frames" in err  # audio: seconds and frames


def test_missing_weight_files_listed(tmp_path, capsys):
    """The real loader: a weights dir without the files lists all five."""
    weights = tmp_path / "empty_lp"
    (weights / "base_models").mkdir(parents=True)
    rc, err = _run(capsys, *_args(tmp_path, weights=weights))
    assert rc == 2
    for name in (
        "appearance_feature_extractor.pth",
        "motion_extractor.pth",
        "warping_module.pth",
        "spade_generator.pth",
        "stitching_retargeting_module.pth",
    ):
        assert name in err


def test_bad_motion_audio_and_arguments(tmp_path, tiny_loader, capsys):
    bad = tmp_path / "m.npy"
    np.save(bad, np.zeros((10, 5), np.float32))
    rc, err = _run(capsys, *_args(tmp_path, motion=bad))
    assert rc == 2 and str(bad) in err and "(10, 5)" in err
    rc, err = _run(capsys, *_args(tmp_path, audio=tmp_path / "missing.wav"))
    assert rc == 2 and "missing.wav" in err
    rc, err = _run(capsys, *_args(tmp_path, batch_size=0))
    assert rc == 2 and "--batch-size" in err
    rc, err = _run(capsys, "--source", "x.png")
    assert rc == 2 and "--motion" in err


@pytest.mark.slow
def test_render_cli_published_sizes_random_weights(tmp_path, capsys):
    """The published architectures on random weights through the real loader (~40-200 s per frame on the
    shared 2-core machine)."""
    from jam_flow.liveportrait.testing import write_random_weights

    weights = tmp_path / "published"
    write_random_weights(weights, seed=0)
    args = _args(
        tmp_path, frames=2, seconds=0.08, source=_face_image(tmp_path / "f.png", 300, 260), weights=weights,
        crop_size=256, batch_size=2,
    )  # fmt: skip
    rc, err = _run(capsys, *args)
    assert rc == 0, err
    info = _probe(tmp_path / "out" / "talk.mp4")
    assert info["frames"] == 2 and info["size"] == (260, 300)
    assert info["audio_seconds"] == pytest.approx(0.08, abs=0.01)


def test_generate_with_source_renders_the_generated_clip(tmp_path, monkeypatch):
    """`jam-flow generate --source IMAGE --liveportrait DIR`: the generated motion + speech are handed to the real
    renderer (toy-width networks, full-frame face box, 128 px crop) and come back as a talking-head mp4 whose video
    and audio match the generated clip's length."""
    from inference_fixtures import write_export

    import jam_flow.render as render_pkg

    calls = []

    def render_small(source, motion, audio, weights_dir, out_path, device="cpu"):
        calls.append((Path(source), Path(motion), Path(audio), Path(weights_dir)))
        return render_talking_head(
            source,
            motion,
            audio,
            None,
            out_path,
            device=device,
            face_model="full-frame",
            crop_size=128,
            models=tiny_models(),
        )

    monkeypatch.setattr(render_pkg, "render_talking_head", render_small)
    out = tmp_path / "gen"
    argv = [
        "generate", "--task", "text2av", "--ckpt", str(write_export(tmp_path)), "--out", str(out),
        "--text", "Hi.", "--duration", "0.4", "--nfe", "2", "--seed", "0",
        "--source", str(_face_image(tmp_path / "face.png")), "--liveportrait", str(_weights_dir(tmp_path / "lp")),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    # the renderer reads the generated files from the temporary sibling folder that then becomes --out
    [(source, motion, audio, weights)] = calls
    assert (source, weights) == (tmp_path / "face.png", tmp_path / "lp")
    assert (motion.name, audio.name) == ("motion.npy", "audio.wav") and motion.parent == audio.parent
    assert motion.parent.parent == tmp_path and motion.parent.name.startswith(".gen.tmp-")
    m = np.load(out / "motion.npy").shape[0]
    info = _probe(out / "talking_head.mp4")
    assert info["frames"] == m
    assert info["audio_seconds"] == pytest.approx(sf.info(str(out / "audio.wav")).duration, abs=0.03)
