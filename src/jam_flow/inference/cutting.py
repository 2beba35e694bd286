"""Cutting long inputs into model windows and joining the windows' outputs (no model here).

Dimension legend: m motion frames (25 / s), s samples (24 kHz). Window bounds are motion frames; no masks.
The rules (where cuts go, which text each window speaks, the context's text, how seams are joined) are described in
:mod:`jam_flow.inference.windows`, which runs the model on these windows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jam_flow.errors import InputError
from jam_flow.flow.masking import MaskConfig

__all__ = [
    "BLOCK",
    "SEAM_FRAMES",
    "Window",
    "frame_energy_db",
    "round_block",
    "cut_at_pauses",
    "split_sentences",
    "distribute_text",
    "pack_sentences",
    "context_text",
    "max_given_frames",
    "smooth_seams",
    "crossfade",
]

BLOCK = 4  # motion frames per aligned block (0.16 s = 15 mel frames at 24 kHz / hop 256 / 25 fps)
SEAM_FRAMES = 5  # motion frames over which a seam's offset is faded out (0.2 s)
ENERGY_SMOOTHING = 5  # motion frames of the moving average over the energy before picking a pause


@dataclass(frozen=True)
class Window:
    """One model window: output motion frames ``[start, end)``, the ``context`` frames before ``start`` given."""

    start: int
    end: int
    context: int = 0
    text: str | None = None

    def seconds(self, fps: int) -> dict[str, Any]:
        return {
            "start": self.start / fps,
            "end": self.end / fps,
            "context": self.context / fps,
            "frames": [self.start, self.end],
            "context_frames": self.context,
            **({"text": self.text} if self.text is not None else {}),
        }


def frame_energy_db(wave: np.ndarray, sample_rate: int, fps: int, num_frames: int) -> np.ndarray:
    """Energy of each motion frame ``[m]`` in dB (mean square over the frame's samples; silence beyond the end)."""
    hop = sample_rate // fps
    padded = np.zeros(num_frames * hop, dtype=np.float64)
    used = min(padded.size, wave.size)
    padded[:used] = wave[:used]
    power = np.square(padded).reshape(num_frames, hop).mean(axis=1)
    return 10.0 * np.log10(power + 1e-10)


def round_block(frames: float) -> int:
    return int(frames) // BLOCK * BLOCK


def cut_at_pauses(energy_db: np.ndarray | None, num_frames: int, window_frames: int) -> list[tuple[int, int]]:
    """Contiguous ``[(start, end)]`` covering ``num_frames`` motion frames, each at most ``window_frames`` long.

    A window that does not reach the end is cut at the quietest frame (``ENERGY_SMOOTHING``-frame moving
    average; the latest on ties) among the block boundaries in its second half, leaving at least one block after
    it. Without ``energy_db`` every window has the full length."""
    if window_frames < 2 * BLOCK:
        raise InputError(f"--window-s: a window must hold at least {2 * BLOCK} motion frames")
    smooth = None
    if energy_db is not None:
        kernel = np.ones(ENERGY_SMOOTHING) / ENERGY_SMOOTHING
        smooth = np.convolve(np.pad(energy_db, ENERGY_SMOOTHING // 2, mode="edge"), kernel, mode="valid")
    bounds, start = [], 0
    while num_frames - start > window_frames:
        hi = min(start + round_block(window_frames), num_frames - BLOCK)
        lo = max(start + BLOCK, start + round_block(window_frames / 2))
        candidates = list(range(lo - lo % BLOCK, hi + 1, BLOCK)) if hi >= lo else [hi]
        candidates = [c for c in candidates if start < c <= hi] or [hi]
        if smooth is None:
            cut = candidates[-1]
        else:  # the frame just before the cut and the one after it: the quietest boundary
            score = [smooth[c - 1] + smooth[min(c, num_frames - 1)] for c in candidates]
            best = min(score)
            cut = [c for c, s in zip(candidates, score, strict=True) if s <= best + 1e-9][-1]
        bounds.append((start, cut))
        start = cut
    bounds.append((start, num_frames))
    return bounds


_SENTENCE = re.compile(r"(?<=[.!?;:。！？])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """The script's sentences (split after ``. ! ? ; :`` and at line breaks); empty pieces dropped."""
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def distribute_text(sentences: list[str], weights: list[float], where: str = "--text") -> list[str]:
    """Give every window a run of whole sentences so that each window's share of the characters follows its share
    of ``weights`` (its speech time). Raises ``InputError`` when a window would get no text."""
    k = len(weights)
    if len(sentences) < k:
        raise InputError(
            f"{where}: the text is empty for window {len(sentences) + 1} of {k}: it has {len(sentences)} "
            f"sentence(s) but the input needs {k} windows; split it into at least {k} sentences or raise --window-s"
        )
    if k == 1:
        return [" ".join(sentences)]
    chars = np.cumsum([len(s) for s in sentences], dtype=np.float64)
    chars /= chars[-1]
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(w > 0, w, 1e-6)
    target = np.cumsum(w)[:-1] / w.sum()
    cuts, prev = [], 0
    for i, t in enumerate(target):
        # sentence index after which window i ends: at least one sentence per remaining window
        lo, hi = prev + 1, len(sentences) - (k - 1 - i)
        best = min(range(lo, hi + 1), key=lambda j: (abs(chars[j - 1] - t), j))
        cuts.append(best)
        prev = best
    edges = [0, *cuts, len(sentences)]
    return [" ".join(sentences[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def pack_sentences(sentences: list[str], seconds: Callable[[str], float], window_s: float) -> list[str]:
    """Greedy packing of whole sentences into texts of at most ``window_s`` estimated seconds; a sentence longer
    than a window is split at word boundaries."""
    pieces: list[str] = []
    for sentence in sentences:
        if seconds(sentence) <= window_s:
            pieces.append(sentence)
            continue
        words, current = sentence.split(), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and seconds(trial) > window_s:
                pieces.append(current)
                current = word
            else:
                current = trial
        if current:
            pieces.append(current)
    texts, current = [], ""
    for piece in pieces:
        trial = f"{current} {piece}".strip()
        if current and seconds(trial) > window_s:
            texts.append(current)
            current = piece
        else:
            current = trial
    if current:
        texts.append(current)
    return texts


def context_text(text: str | None, fraction: float) -> str | None:
    """The suffix of ``text`` spoken in the last ``fraction`` of its window (by characters), from a word start."""
    if not text or fraction <= 0:
        return None
    cut = int(round(len(text) * (1.0 - min(fraction, 1.0))))
    while 0 < cut < len(text) and not text[cut - 1].isspace():
        cut += 1
    suffix = text[cut:].strip()
    return suffix or None


def max_given_frames(generated: int, masking: MaskConfig = MaskConfig()) -> int:
    """Most given frames beside ``generated`` ones for which the hidden span stays within training's span range
    (at least ``frac_min`` of the timeline), rounded down to whole blocks."""
    share = 1.0 - masking.frac_min
    if share <= 0:
        return 0
    return round_block(generated * share / masking.frac_min)


def smooth_seams(track: np.ndarray, seams: list[int], frames: int = SEAM_FRAMES) -> np.ndarray:
    """Remove the jump at each seam of ``track [m, ...]``: frame ``seam`` is moved onto the line through the two
    frames before it and the correction fades out linearly over ``frames`` frames."""
    out = np.array(track, dtype=np.float32, copy=True)
    for seam in seams:
        if seam < 2 or seam >= out.shape[0]:
            continue
        target = 2.0 * out[seam - 1] - out[seam - 2]
        delta = target - out[seam]
        for i in range(min(frames, out.shape[0] - seam)):
            out[seam + i] += delta * (1.0 - i / frames)
    return out


def crossfade(out: np.ndarray, piece: np.ndarray, offset: int, fade: int) -> None:
    """Write ``piece`` into ``out`` at ``offset``; the first ``fade`` samples blend linearly from what is there."""
    end = min(out.size, offset + piece.size)
    piece = piece[: end - offset]
    fade = min(fade, piece.size)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        out[offset : offset + fade] = (1.0 - ramp) * out[offset : offset + fade] + ramp * piece[:fade]
    out[offset + fade : end] = piece[fade:]
