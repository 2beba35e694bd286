"""Crop / paste-back geometry: the crop's affine map, identity round trips, renders at another resolution,
the feathered mask and box smoothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jam_flow.errors import InputError
from jam_flow.liveportrait.face import (
    crop_face,
    face_mask,
    invert_affine,
    paste_back,
    rescale_crop_affine,
    smooth_boxes,
    warp_mask,
)


def _smooth_image(h: int = 300, w: int = 400) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [127 + 100 * np.sin(xx / 37.0), 127 + 100 * np.cos(yy / 23.0), 40 + 0.25 * (xx + yy)], axis=-1
    ).astype(np.uint8)


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    p = img.astype(np.float64)
    return (
        p[y0, x0] * (1 - fx) * (1 - fy) + p[y0, x0 + 1] * fx * (1 - fy)
        + p[y0 + 1, x0] * (1 - fx) * fy + p[y0 + 1, x0 + 1] * fx * fy
    )  # fmt: skip


def test_crop_at_unit_scale_is_an_exact_window():
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    # box 100 px, scale 2.3 -> 230 px square; centre (150, 130) -> window x 35..265, y 15..245
    crop, m_c2o = crop_face(img, (100, 80, 200, 180), size=230, scale=2.3, vy_ratio=0.0)
    assert crop.shape == (3, 230, 230) and crop.dtype == np.float32
    np.testing.assert_allclose(m_c2o, [[1, 0, 35], [0, 1, 15]], atol=1e-9)
    np.testing.assert_array_equal(
        np.rint(crop * 255).astype(np.uint8).transpose(1, 2, 0), img[15:245, 35:265]
    )


def test_vy_ratio_moves_the_window_up():
    img = _smooth_image()
    _, m0 = crop_face(img, (150, 100, 250, 200), size=256, vy_ratio=0.0)
    _, m1 = crop_face(img, (150, 100, 250, 200), size=256, vy_ratio=-0.125)
    side = 2.3 * 100
    assert m1[1, 2] - m0[1, 2] == pytest.approx(-0.125 * side)
    assert m1[0, 2] == pytest.approx(m0[0, 2])


@pytest.mark.parametrize("box", [(150, 100, 200, 150), (120, 60, 230, 170), (20, 20, 380, 280)])
def test_m_c2o_maps_crop_pixels_onto_the_frame(box):
    """Small, medium and large faces (the last goes through the area-resize path)."""
    img = _smooth_image()
    crop, m_c2o = crop_face(img, box, size=256)
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(200):
        x, y = rng.uniform(8, 248, size=2)
        ox, oy = m_c2o @ np.array([x, y, 1.0])
        if not (3 <= ox < img.shape[1] - 4 and 3 <= oy < img.shape[0] - 4):
            continue
        got = _bilinear(np.ascontiguousarray(crop.transpose(1, 2, 0)) * 255, x, y)
        np.testing.assert_allclose(got, _bilinear(img, ox, oy), atol=6)
        checked += 1
    assert checked > 20


def test_crop_then_paste_of_identity_returns_the_original():
    img = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop, m_c2o = crop_face(img, (100, 80, 200, 180), size=230, vy_ratio=0.0)
    out = paste_back(img, crop, m_c2o)
    np.testing.assert_array_equal(out, img)  # unit scale: exact everywhere (mask or not, same pixels)
    # a visibly different face only changes the pixels under the mask
    out = paste_back(img, np.zeros_like(crop), m_c2o)
    inside = warp_mask(m_c2o, 230, img.shape[:2])[..., 0]
    assert np.array_equal(out[inside == 0], img[inside == 0])
    assert np.all(out[inside > 0.999] == 0)


def test_paste_of_a_512_render_of_the_crop_restores_the_region():
    img = _smooth_image()
    for box in [(120, 60, 230, 170), (150, 100, 200, 150), (20, 20, 380, 280)]:
        crop, m_c2o = crop_face(img, box, size=256)
        render = np.stack([cv2.resize(c, (512, 512), interpolation=cv2.INTER_LINEAR) for c in crop])
        out = paste_back(img, render, m_c2o, crop_size=256)
        mask = warp_mask(rescale_crop_affine(m_c2o, 256, 512), 512, img.shape[:2])[..., 0]
        keep = mask > 0.999
        keep[:5], keep[-5:], keep[:, :5], keep[:, -5:] = False, False, False, False  # black-border bleed
        assert keep.sum() > 1000
        assert np.abs(out.astype(int) - img)[keep].max() <= 3


def test_rescale_crop_affine_pixel_centres():
    m = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]])
    m2 = rescale_crop_affine(m, 256, 512)
    # pixel centre x in the 512 render covers the same frame point as (x + 0.5) / 2 - 0.5 in the crop
    for x in (0.0, 100.0, 511.0):
        assert m2 @ [x, x, 1] == pytest.approx(m @ [(x + 0.5) / 2 - 0.5, (x + 0.5) / 2 - 0.5, 1])
    np.testing.assert_allclose(invert_affine(invert_affine(m)), m)


def test_face_mask_shape_and_values():
    mask = face_mask(100, feather=0.2, margin=0.05)
    assert mask.shape == (100, 100) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert mask[0, 50] == 0.0 and mask[50, 50] == 1.0 and 0.0 < mask[10, 50] < 1.0
    np.testing.assert_allclose(mask, mask.T)
    with pytest.raises(InputError):
        face_mask(100, feather=0.5)


def test_bad_crop_arguments():
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(InputError, match="x1 > x0"):
        crop_face(img, (10, 10, 5, 20))
    with pytest.raises(InputError, match="RGB uint8"):
        crop_face(img.astype(np.float32), (0, 0, 10, 10))
    with pytest.raises(InputError, match="paste_back face"):
        paste_back(img, np.zeros((3, 8, 9), np.float32), np.eye(2, 3))


def test_smooth_boxes():
    boxes = [(0.0, 0.0, 10.0, 10.0)] * 4
    assert smooth_boxes(boxes, 3) == boxes
    jitter = [(0.0, 0, 10, 10), (3.0, 0, 13, 10), (0.0, 0, 10, 10)]
    assert smooth_boxes(jitter, 3)[1] == pytest.approx((1.0, 0.0, 11.0, 10.0))
    assert smooth_boxes(jitter, 1) == [tuple(map(float, b)) for b in jitter]
