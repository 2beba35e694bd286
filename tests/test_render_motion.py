"""Renderer inputs and keypoint assembly: motion files, expression mixing (absolute / relative / e_rest),
the length check, ping-pong extension, video decoding at the motion frame rate, and the muxed mp4."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from jam_flow.errors import InputError
from jam_flow.features import MotionSettings
from jam_flow.render import render_talking_head
from jam_flow.render.animate import _video_boxes, assemble_expression, check_lengths, pingpong_indices
from jam_flow.render.io import VideoWriter, load_motion, read_audio, read_image, read_video_frames

MOUTH = MotionSettings().mouth_indices


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_load_motion_directory_with_metadata(tmp_path):
    exp = np.random.default_rng(0).normal(size=(7, 21, 3)).astype(np.float32)
    np.save(tmp_path / "motion.npy", exp)
    (tmp_path / "motion.json").write_text(
        json.dumps({"fps": 25, "mouth_indices": [6, 12], "has_rest": False})
    )
    track = load_motion(tmp_path)
    assert track.num_frames == 7 and track.fps == 25.0
    assert track.mouth_indices == (6, 12) and track.has_rest is False
    np.testing.assert_array_equal(track.exp, exp)


def test_load_motion_mouth_only_npy_and_rest_inference(tmp_path):
    mouth = np.random.default_rng(1).normal(size=(4, 12)).astype(np.float32)
    np.save(tmp_path / "mouth.npy", mouth)
    track = load_motion(tmp_path / "mouth.npy")
    assert track.exp.shape == (4, 21, 3) and not track.has_rest
    np.testing.assert_array_equal(track.exp[:, list(MOUTH)].reshape(4, 12), mouth)
    assert np.all(track.exp[:, [i for i in range(21) if i not in MOUTH]] == 0)
    full = np.zeros((4, 21, 3), np.float32)
    full[:, list(MOUTH)] = 1.0
    np.save(tmp_path / "zero_rest.npy", full)
    assert load_motion(tmp_path / "zero_rest.npy").has_rest is False  # an all-zero rest carries nothing
    full[:, 0, 0] = 0.5
    np.save(tmp_path / "with_rest.npy", full)
    assert load_motion(tmp_path / "with_rest.npy").has_rest is True


def test_load_motion_dataset_clip(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"motion": {"fps": 30, "mouth_indices": [14, 17]}}))
    np.savez(clips / "a.npz", exp=np.ones((3, 21, 3), np.float32), mel=np.zeros((5, 100), np.float32))
    track = load_motion(clips / "a.npz")
    assert track.has_rest and track.fps == 30.0 and track.mouth_indices == (14, 17)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: np.save(p / "m.npy", np.zeros((10, 5), np.float32)), r"got shape \(10, 5\)"),
        (lambda p: np.save(p / "m.npy", np.zeros((10, 21, 3), np.int32)), "float array"),
        (lambda p: np.save(p / "m.npy", np.full((2, 21, 3), np.nan, np.float32)), "NaN"),
        (lambda p: np.savez(p / "m.npz", mel=np.zeros(3)), "no 'exp' array"),
        (lambda p: (p / "m.txt").write_text("x"), "expected a directory, a .npy"),
        (lambda p: (p / "m.npy").write_bytes(b"garbage"), "cannot read as a .npy"),
    ],
)
def test_load_motion_bad_files(tmp_path, setup, match):
    setup(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(InputError, match=match) as info:
        load_motion(path)
    assert str(path) in str(info.value)


def test_load_motion_bad_directory_and_metadata(tmp_path):
    with pytest.raises(InputError, match="no motion.npy"):
        load_motion(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_motion(tmp_path / "nope")
    np.save(tmp_path / "motion.npy", np.zeros((2, 21, 3), np.float32))
    (tmp_path / "motion.json").write_text(json.dumps({"fps": -1}))
    with pytest.raises(InputError, match="'fps' must be a positive number"):
        load_motion(tmp_path)
    (tmp_path / "motion.json").write_text(json.dumps({"mouth_indices": [14, 40]}))
    with pytest.raises(InputError, match=r"mouth_indices must be distinct indices in \[0, 21\)"):
        load_motion(tmp_path)


def test_assemble_expression_absolute_relative_and_rest():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(1, 21, 3, generator=g)
    motion = torch.randn(3, 21, 3, generator=g)
    mouth = list(MOUTH)
    rest = [i for i in range(21) if i not in MOUTH]
    ref = src[0]

    absolute = assemble_expression(src, motion, motion[0], ref, MOUTH, relative=False, rest_from_motion=False)
    assert absolute.shape == (3, 21, 3)
    _close(absolute[:, mouth], motion[:, mouth])
    _close(absolute[:, rest], src[:, rest].expand(3, -1, -1))

    relative = assemble_expression(src, motion, motion[0], ref, MOUTH, relative=True, rest_from_motion=False)
    _close(relative[0], src[0])  # the first frame is the source itself
    _close(relative[2, mouth], src[0, mouth] + motion[2, mouth] - motion[0, mouth])

    with_rest = assemble_expression(src, motion, motion[0], ref, MOUTH, relative=False, rest_from_motion=True)
    _close(with_rest[:, rest], src[0, rest] + motion[:, rest] - motion[0, rest])
    _close(with_rest[:, mouth], motion[:, mouth])

    # video: per-frame source expressions stay per frame outside the mouth
    frames = torch.randn(3, 21, 3, generator=g)
    video = assemble_expression(
        frames, motion, motion[0], frames[0], MOUTH, relative=False, rest_from_motion=False
    )
    _close(video[:, rest], frames[:, rest])
    assert src.shape == (1, 21, 3)  # inputs are not modified in place


def test_check_lengths_tolerance_and_message():
    check_lengths(5, 25, 4800, 24000, "m", "a.wav")  # 0.2 s = 5 frames
    check_lengths(6, 25, 4800, 24000, "m", "a.wav")  # within one frame
    check_lengths(4, 25, 4800, 24000, "m", "a.wav")
    with pytest.raises(InputError) as info:
        check_lengths(7, 25, 4800, 24000, "gen/", "a.wav")
    msg = str(info.value)
    assert "7 frames" in msg and "0.280 s" in msg and "0.200 s" in msg and "5 frames" in msg
    assert "gen/" in msg and "a.wav" in msg


def test_pingpong_indices():
    assert pingpong_indices(3, 8) == [0, 1, 2, 1, 0, 1, 2, 1]
    assert pingpong_indices(1, 3) == [0, 0, 0]
    assert pingpong_indices(5, 3) == [0, 1, 2]


def test_writer_and_video_reader_resample(tmp_path):
    wave = np.random.default_rng(0).uniform(-0.3, 0.3, 24000 // 5).astype(np.float32)
    path = tmp_path / "v.mp4"
    writer = VideoWriter(path, 25, 65, 48, audio=wave, sample_rate=24000, crf=0)
    for i in range(5):
        writer.write(np.full((48, 65, 3), 40 * i + 20, np.uint8))
    with pytest.raises(InputError, match="differs from the video size"):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.close()
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert float(c.streams.audio[0].duration * c.streams.audio[0].time_base) == pytest.approx(
            0.2, abs=0.01
        )
    frames, native = read_video_frames(path, 100, 25)
    assert native == pytest.approx(25) and len(frames) == 5 and frames[0].shape == (48, 66, 3)
    levels = [int(f[10, 10, 0]) for f in frames]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 100
    doubled, _ = read_video_frames(path, 100, 50)  # 50 fps: every frame twice
    assert [int(f[10, 10, 0]) for f in doubled] == [v for v in levels for _ in range(2)]
    assert len(read_video_frames(path, 3, 25)[0]) == 3  # stops at max_frames


def test_readers_name_the_path(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(InputError, match="x.jpg"):
        read_image(bad)
    with pytest.raises(InputError, match="no such image"):
        read_image(tmp_path / "none.png")
    with pytest.raises(InputError, match=r"--source .*x\.jpg"):
        read_video_frames(bad, 5, 25)
    with pytest.raises(InputError, match="none.wav"):
        read_audio(tmp_path / "none.wav")
    noise = tmp_path / "n.wav"
    noise.write_bytes(b"RIFF....WAVE")
    with pytest.raises(InputError, match="n.wav"):
        read_audio(noise)


class _ScriptedDetector:
    """Returns a fixed box per frame (None = no face), keyed by the frame's fill value."""

    def __init__(self, boxes: dict[int, tuple[float, float, float, float] | None]) -> None:
        self.boxes = boxes

    def detect(self, rgb: np.ndarray) -> list:
        box = self.boxes[int(rgb[0, 0, 0])]
        return [] if box is None else [box]


def test_video_boxes_fill_gaps_and_smooth():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(5)]
    det = _ScriptedDetector({0: None, 1: (10, 10, 20, 20), 2: None, 3: (30, 10, 40, 20), 4: None})
    boxes = _video_boxes(det, frames, "clip.mp4", window=1)
    assert boxes == [(10, 10, 20, 20), (10, 10, 20, 20), (20, 10, 30, 20), (30, 10, 40, 20), (30, 10, 40, 20)]
    smoothed = _video_boxes(det, frames, "clip.mp4", window=3)
    assert smoothed[2] == pytest.approx((20, 10, 30, 20)) and smoothed[0] == pytest.approx((10, 10, 20, 20))
    with pytest.raises(InputError, match=r"no face found in clip.mp4 \(in none of its 5 frames\)"):
        _video_boxes(_ScriptedDetector(dict.fromkeys(range(5))), frames, "clip.mp4", window=3)


def test_render_video_without_a_face_fails_before_loading_weights(tmp_path):
    src = tmp_path / "flat.mp4"
    writer = VideoWriter(src, 25, 160, 160)
    for _ in range(3):
        writer.write(np.full((160, 160, 3), 128, np.uint8))
    writer.close()
    np.save(tmp_path / "m.npy", np.zeros((3, 21, 3), np.float32))
    sf.write(tmp_path / "a.wav", np.zeros(2880, np.float32), 24000)  # 0.12 s = 3 frames
    with pytest.raises(InputError, match=f"no face found in {src}"):
        render_talking_head(
            src, tmp_path / "m.npy", tmp_path / "a.wav", tmp_path / "no_weights", tmp_path / "o.mp4"
        )
    assert not (tmp_path / "o.mp4").exists()
