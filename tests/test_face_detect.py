"""Face detection: the full-frame mode, OpenCV's Haar cascade on a real photograph (matplotlib's bundled
public-domain portrait of Grace Hopper) and on face-free images, downscaled detection, and argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jam_flow.errors import InputError
from jam_flow.liveportrait.face import FULL_FRAME, FaceDetector


def _portrait() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if not path.is_file():
        pytest.skip("matplotlib's sample portrait is not installed")
    return np.asarray(Image.open(path).convert("RGB"))


def test_full_frame_is_the_whole_image():
    img = np.zeros((37, 51, 3), np.uint8)
    assert FaceDetector(FULL_FRAME).detect(img) == [(0.0, 0.0, 51.0, 37.0)]


def test_haar_finds_the_face_in_a_portrait():
    img = _portrait()  # 512 x 600, one face roughly in the middle of the upper half
    boxes = FaceDetector().detect(img)
    assert len(boxes) >= 1
    x0, y0, x1, y1 = boxes[0]
    assert all(isinstance(v, float) for v in boxes[0])
    w, h = x1 - x0, y1 - y0
    assert 0.8 < w / h < 1.25 and 120 < w < 350  # a face-sized square-ish box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 180 < cx < 340 and 150 < cy < 300
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)


def test_detection_on_a_downscaled_copy_returns_full_resolution_boxes():
    img = _portrait()
    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.BILINEAR))
    small_box = FaceDetector(detect_max_side=0).detect(img)[0]
    big_box = FaceDetector(detect_max_side=640).detect(big)[0]  # detects at ~640 px, reports at 1200 px
    assert np.allclose(np.asarray(big_box) / 2, small_box, atol=25)


def test_haar_no_face_in_flat_or_noise_images():
    det = FaceDetector()
    flat = np.full((200, 240, 3), 127, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    assert det.detect(flat) == [] and det.detect(noise) == []
    with pytest.raises(InputError, match="no face found in frame.png"):
        det.largest(flat, "frame.png")


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="not found"):
        FaceDetector(str(tmp_path / "missing.onnx"))
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="YuNet .onnx or a Haar cascade .xml"):
        FaceDetector(str(other))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="YuNet"):
        FaceDetector(str(broken))
    det = FaceDetector(FULL_FRAME)
    with pytest.raises(InputError, match=r"RGB uint8 array \[H, W, 3\]"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))
