"""Offline face detection, LivePortrait-style square face crops, and soft paste-back into the full frame.

Dimension legend: H, W full-frame height / width in pixels; s crop side (256 for LivePortrait's networks);
S rendered face side (512 from the SPADE decoder). Images are RGB. Full frames are uint8 ``[H, W, 3]``;
crops and rendered faces are float32 ``[3, s, s]`` in [0, 1] (channels first, the layout the networks take).

Detectors (all run from local files, nothing is downloaded):
  * default: OpenCV's Haar frontal-face cascade shipped inside the ``opencv-python-headless`` wheel
    (``cv2.data.haarcascades``; Intel License Agreement, BSD-3 style). OpenCV 5 dropped these files, so the
    wheel must be ``<5``;
  * ``model_path="....onnx"``: OpenCV Zoo's YuNet face detector through ``cv2.FaceDetectorYN`` (MIT), more
    accurate on rotated / partly occluded faces;
  * ``model_path="....xml"``: any other Haar cascade file;
  * ``model_path="full-frame"``: the whole image is the face box (pre-cropped data such as HDTF crops, tests).

Affine matrices are OpenCV ``[2, 3]`` float64 maps between *pixel-centre* coordinates, as ``cv2.warpAffine``
uses them: ``M_c2o`` maps a crop pixel ``(x, y, 1)`` to the original frame, ``M_o2c`` is its inverse.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jam_flow.errors import InputError

__all__ = [
    "FULL_FRAME",
    "Box",
    "FaceDetector",
    "crop_face",
    "face_mask",
    "invert_affine",
    "paste_back",
    "rescale_crop_affine",
    "smooth_boxes",
    "warp_mask",
]

FULL_FRAME = "full-frame"
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), x1/y1 exclusive, in full-frame pixels


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError("face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'") from err
    return cv2


def _check_rgb(rgb: np.ndarray, what: str = "image") -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise InputError(f"{what}: expected an RGB uint8 array [H, W, 3], got shape {shape} dtype {dtype}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise InputError(f"{what}: image of shape {rgb.shape} is too small to hold a face")
    return np.ascontiguousarray(rgb)


class FaceDetector:
    """Finds faces in an RGB frame and returns their boxes, largest first.

    Args:
        model_path: ``None`` for OpenCV's bundled Haar frontal-face cascade; a YuNet ``.onnx`` file; another
            Haar cascade ``.xml``; or ``"full-frame"`` to treat the whole image as the face.
        score_threshold: minimum YuNet confidence (ignored by the Haar cascade).
        min_face_frac: smallest face side to report, as a fraction of the image's shorter side.
        haar_min_neighbors: Haar ``minNeighbors`` (higher = fewer false positives, more misses).
        detect_max_side: frames whose longer side exceeds this are downscaled for detection (speed); boxes
            are returned in full-resolution pixels. 0 disables the downscale.
    """

    def __init__(
        self,
        model_path: str | None = None,
        score_threshold: float = 0.6,
        min_face_frac: float = 0.05,
        haar_min_neighbors: int = 5,
        detect_max_side: int = 640,
    ) -> None:
        self.model_path = model_path
        self.score_threshold = float(score_threshold)
        self.min_face_frac = float(min_face_frac)
        self.haar_min_neighbors = int(haar_min_neighbors)
        self.detect_max_side = int(detect_max_side)
        self._cascade = None
        self._yunet = None
        if model_path == FULL_FRAME:
            self.kind = "full-frame"
            return
        cv2 = _cv2()
        if model_path is None:
            path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
            if not path.is_file():
                raise InputError(
                    f"OpenCV's Haar cascade {path} is missing (OpenCV >= 5 no longer ships it): "
                    "install 'opencv-python-headless>=4.8,<5' or pass a YuNet .onnx as the face model"
                )
        else:
            path = Path(model_path)
            if not path.is_file():
                raise InputError(
                    f"face detector model {model_path!r} not found (expected a YuNet .onnx file, a Haar "
                    f"cascade .xml, or {FULL_FRAME!r})"
                )
        if path.suffix.lower() == ".onnx":
            self.kind = "yunet"
            try:
                self._yunet = cv2.FaceDetectorYN.create(
                    str(path), "", (320, 320), self.score_threshold, 0.3, 5000
                )
            except cv2.error as err:
                raise InputError(
                    f"face detector model {path}: not a loadable YuNet ONNX file ({err})"
                ) from err
        elif path.suffix.lower() == ".xml":
            self.kind = "haar"
            self._cascade = cv2.CascadeClassifier(str(path))
            if self._cascade.empty():
                raise InputError(f"face detector model {path}: not a loadable Haar cascade .xml")
        else:
            raise InputError(
                f"face detector model {path}: expected a YuNet .onnx or a Haar cascade .xml (or {FULL_FRAME!r})"
            )

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """All faces in ``rgb`` (uint8 [H, W, 3]) as ``(x0, y0, x1, y1)`` boxes, largest area first."""
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if self.kind == "full-frame":
            return [(0.0, 0.0, float(w), float(h))]
        cv2 = _cv2()
        factor = 1.0
        if self.detect_max_side > 0 and max(h, w) > self.detect_max_side:
            factor = self.detect_max_side / max(h, w)
            rgb = cv2.resize(
                rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
            )
            h, w = rgb.shape[:2]
        min_side = max(8, int(round(self.min_face_frac * min(h, w))))
        boxes: list[Box] = []
        if self.kind == "haar":
            gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
            found = self._cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=self.haar_min_neighbors, minSize=(min_side, min_side)
            )
            for x, y, bw, bh in np.asarray(found).reshape(-1, 4):
                boxes.append((float(x), float(y), float(x + bw), float(y + bh)))
        else:
            self._yunet.setInputSize((w, h))
            _, faces = self._yunet.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            for row in np.zeros((0, 15)) if faces is None else faces:
                x, y, bw, bh, score = row[0], row[1], row[2], row[3], row[-1]
                if score >= self.score_threshold and min(bw, bh) >= min_side:
                    x0, y0 = max(0.0, float(x)), max(0.0, float(y))
                    boxes.append((x0, y0, min(float(w), float(x + bw)), min(float(h), float(y + bh))))
        if factor != 1.0:
            boxes = [tuple(v / factor for v in b) for b in boxes]
        boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return boxes

    def largest(self, rgb: np.ndarray, where: str) -> Box:
        """The largest face box; raises ``InputError("no face found in <where>")`` when there is none."""
        boxes = self.detect(rgb)
        if not boxes:
            raise InputError(
                f"no face found in {where} (detector: {self.kind}; try a larger / more frontal face, a YuNet "
                f"model via --face-model, or --face-model {FULL_FRAME} for an already cropped face)"
            )
        return boxes[0]


def smooth_boxes(boxes: list[Box], window: int = 5) -> list[Box]:
    """Temporal moving average of per-frame boxes (centred window, shrinking at the ends) against jitter."""
    if window <= 1 or len(boxes) <= 1:
        return [tuple(map(float, b)) for b in boxes]
    arr = np.asarray(boxes, dtype=np.float64)
    half = window // 2
    out = []
    for i in range(len(arr)):
        lo, hi = max(0, i - half), min(len(arr), i + half + 1)
        out.append(tuple(float(v) for v in arr[lo:hi].mean(axis=0)))
    return out


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a [2, 3] affine map."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a ∘ b`` for [2, 3] affine maps (apply ``b`` first)."""
    fa = np.vstack([a, [0.0, 0.0, 1.0]])
    fb = np.vstack([b, [0.0, 0.0, 1.0]])
    return (fa @ fb)[:2]


def _resize_affine(src: int, dst: int) -> np.ndarray:
    """Pixel-centre map of a ``src`` -> ``dst`` square resize: ``x' = (x + 0.5) * dst / src - 0.5``."""
    r = dst / src
    return np.array([[r, 0.0, 0.5 * r - 0.5], [0.0, r, 0.5 * r - 0.5]], dtype=np.float64)


def rescale_crop_affine(m_c2o: np.ndarray, crop_size: int, new_size: int) -> np.ndarray:
    """``M_c2o`` of a ``crop_size`` crop re-expressed for the same region rendered at ``new_size`` pixels."""
    return _compose(np.asarray(m_c2o, dtype=np.float64), _resize_affine(new_size, crop_size))


def crop_face(
    rgb: np.ndarray,
    box: Box,
    size: int = 256,
    scale: float = 2.3,
    vy_ratio: float = -0.125,
    vx_ratio: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """LivePortrait-style square crop around a face box (no roll correction: boxes carry no landmarks).

    The square's side is ``scale * max(box w, box h)``; its centre is the box centre moved by
    ``(vx_ratio, vy_ratio) * side`` (negative vy = up, to include the forehead and hair, as LivePortrait does).
    Pixels outside the frame are black. Large downscales go through an area resize (no aliasing).

    Returns:
        crop: float32 ``[3, size, size]`` in [0, 1].
        m_c2o: float64 ``[2, 3]`` mapping crop pixels to frame pixels.
    """
    cv2 = _cv2()
    rgb = _check_rgb(rgb)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"face box {box}: expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    if size < 8:
        raise InputError(f"crop size must be >= 8 pixels, got {size}")
    side = scale * max(x1 - x0, y1 - y0)
    cx = 0.5 * (x0 + x1) + vx_ratio * side
    cy = 0.5 * (y0 + y1) + vy_ratio * side
    # Continuous square [cx - side/2, cx + side/2) -> [0, n) with pixel centres at +0.5.
    n = size if side <= 2 * size else int(math.ceil(side))  # warp at ~native resolution, then area-resize
    r = n / side
    m_o2n = np.array(
        [[r, 0.0, n / 2 - r * cx + 0.5 * r - 0.5], [0.0, r, n / 2 - r * cy + 0.5 * r - 0.5]], dtype=np.float64
    )
    img = cv2.warpAffine(
        rgb, m_o2n, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    m_o2c = m_o2n
    if n != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        m_o2c = _compose(_resize_affine(n, size), m_o2n)
    crop = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return crop, invert_affine(m_o2c)


def face_mask(size: int, feather: float = 0.12, margin: float = 0.02) -> np.ndarray:
    """Soft paste mask over a ``size`` crop, float32 [size, size]: 1 inside, a smooth (cosine) ramp of
    ``feather * size`` pixels down to 0 at ``margin * size`` from each edge."""
    if not (0.0 <= margin < 0.5 and 0.0 <= feather and margin + feather < 0.5):
        raise InputError(
            f"paste mask: need 0 <= margin, 0 <= feather, margin + feather < 0.5, got {margin}, {feather}"
        )
    pos = (np.arange(size, dtype=np.float64) + 0.5) / size
    dist = np.minimum(pos, 1.0 - pos)  # distance to the nearest edge, in crop fractions
    if feather > 0:
        t = np.clip((dist - margin) / feather, 0.0, 1.0)
        ramp = 0.5 - 0.5 * np.cos(np.pi * t)
    else:
        ramp = (dist >= margin).astype(np.float64)
    return np.outer(ramp, ramp).astype(np.float32)


def paste_back(
    frame: np.ndarray,
    face_img: np.ndarray,
    m_c2o: np.ndarray,
    feather: float = 0.12,
    crop_size: int | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Warp a rendered face back into ``frame`` and blend it in with a feathered mask.

    Args:
        frame: uint8 ``[H, W, 3]`` original frame (not modified).
        face_img: float ``[3, S, S]`` in [0, 1] (e.g. the decoder's 512 output) or uint8 ``[S, S, 3]``.
        m_c2o: the crop->frame map returned by :func:`crop_face`.
        feather: ramp width of the soft mask, as a fraction of the crop side.
        crop_size: side of the crop ``m_c2o`` was made for, when ``face_img`` has another size
            (e.g. 256 for a 512 render); ``None`` means the same size as ``face_img``.
        mask: optional precomputed float32 ``[H, W, 1]`` blend mask in frame space (see ``warp_mask``).

    Returns:
        uint8 ``[H, W, 3]``: ``mask * warp(face) + (1 - mask) * frame``.
    """
    cv2 = _cv2()
    frame = _check_rgb(frame, "paste_back frame")
    face = np.asarray(face_img)
    if face.ndim == 3 and face.shape[0] == 3 and face.shape[1] == face.shape[2]:
        face = np.clip(face.transpose(1, 2, 0).astype(np.float32), 0.0, 1.0) * 255.0
    elif face.ndim == 3 and face.shape[2] == 3 and face.shape[0] == face.shape[1] and face.dtype == np.uint8:
        face = face.astype(np.float32)
    else:
        raise InputError(
            f"paste_back face: expected float [3, S, S] in [0, 1] or uint8 [S, S, 3], got {face.shape} {face.dtype}"
        )
    s = face.shape[0]
    m = np.asarray(m_c2o, dtype=np.float64)
    if crop_size is not None and crop_size != s:
        m = rescale_crop_affine(m, crop_size, s)
    h, w = frame.shape[:2]
    warped = cv2.warpAffine(
        face, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    if mask is None:
        mask = warp_mask(m, s, (h, w), feather)
    out = mask * warped + (1.0 - mask) * frame.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warp_mask(m_c2o: np.ndarray, size: int, frame_hw: tuple[int, int], feather: float = 0.12) -> np.ndarray:
    """The feathered crop mask warped into frame space, float32 ``[H, W, 1]`` (0 outside the crop)."""
    cv2 = _cv2()
    h, w = frame_hw
    warped = cv2.warpAffine(
        face_mask(size, feather),
        np.asarray(m_c2o, dtype=np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped[..., None]
