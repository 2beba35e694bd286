"""Output writers: motion.npy/json layout and the keypoint preview mp4 (video + AAC audio, right duration)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from jam_flow.errors import InputError
from jam_flow.inference.outputs import MOUTH_COLOUR, NEUTRAL_KP, draw_keypoints, write_motion, write_preview


def test_write_motion_layout(tmp_path):
    exp = np.random.default_rng(0).normal(size=(30, 21, 3)).astype(np.float32)
    npy, js = write_motion(tmp_path, exp, {"fps": 25, "task": "text2av", "seed": 3})
    assert np.array_equal(np.load(npy), exp)
    info = json.loads(js.read_text())
    assert info["num_frames"] == 30 and info["fps"] == 25 and info["task"] == "text2av" and info["seed"] == 3
    with pytest.raises(InputError, match="exp"):
        write_motion(tmp_path, exp[:, :, :2], {})


def test_draw_keypoints_highlights_mouth():
    pts = NEUTRAL_KP[None, :, :2].repeat(2, axis=0)
    frames = draw_keypoints(pts, (14, 17, 19, 20), size=64)
    assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    mouth_px = np.all(frames[0] == np.array(MOUTH_COLOUR, dtype=np.uint8), axis=-1)
    assert mouth_px.any()
    # mouth pixels sit in the lower half of the face (image y points down)
    assert np.nonzero(mouth_px)[0].mean() > 32


def test_preview_has_video_and_audio_of_the_right_duration(tmp_path):
    m, fps, sr = 50, 25, 24000
    exp = np.random.default_rng(1).normal(scale=0.02, size=(m, 21, 3)).astype(np.float32)
    wave = (0.2 * np.sin(np.arange(2 * sr) / sr * 2 * np.pi * 220)).astype(np.float32)
    path = write_preview(tmp_path / "preview.mp4", exp, wave, sr, fps, (14, 17, 19, 20), size=64)
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        frames = sum(1 for _ in c.decode(video))
    assert frames == m
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
        rate = c.streams.audio[0].rate
    assert rate == sr
    assert abs(samples / sr - 2.0) < 0.1  # AAC priming may add up to one frame (1024 samples)
    with pytest.raises(InputError, match="canonical keypoints"):
        write_preview(tmp_path / "bad.mp4", exp, wave, sr, fps, (14, 17, 19, 20), kp=np.zeros((5, 3)))
