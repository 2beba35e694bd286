"""Phoneme -> viseme classes -> articulation track (opening, width, rounding) -> LivePortrait mouth keypoints.

Dimension legend: p phonemes, m motion frames (25 fps), km mouth keypoints (4: LP indices 14, 17, 19, 20 in
that order), 3 articulation parameters (opening, width, rounding).

The exact derivation is documented in docs/data.md ("Mouth keypoints"); evaluation measures lip sync against it.

1. Each eSpeak PHONEME event starts a segment that lasts until the next event (the last one until the end of
   the audio). Its mnemonic (stress marks stripped) gives a viseme class; vowels with several vowel letters
   (diphthongs such as ``aI``, ``oU``) are split into equal sub-segments, one per letter class.
2. Every class has a target ``T_c = (opening, width, rounding)`` and a dominance ``alpha_c`` per parameter.
3. Coarticulation (Cohen-Massaro dominance blending): segment s with centre ``c_s``, duration ``d_s`` has
   dominance ``D_s(t) = alpha_s * exp(-max(0, |t - c_s| - d_s / 2) / TAU)``; the parameter track is
   ``P(t) = sum_s D_s(t) T_s / sum_s D_s(t)``, evaluated at the motion frame times ``t_j = j / fps``.
   Bilabials dominate the opening (lips really close), so a /p/ between two vowels still closes.
4. ``mouth[j] = CLOSED + gain * (P_open A_OPEN + P_width A_WIDTH + P_round A_ROUND)`` (+ a speaker offset on
   non-opening components and tiny noise, see :mod:`jam_flow.data.synth.motion`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "VISEME_NAMES",
    "SIL",
    "BILABIAL",
    "LABIODENTAL",
    "DENTAL",
    "ALVEOLAR",
    "POSTALVEOLAR",
    "VELAR",
    "ROUND_APPROX",
    "OPEN_VOWEL",
    "MID_VOWEL",
    "CLOSE_VOWEL",
    "ROUND_VOWEL",
    "TARGETS",
    "DOMINANCE",
    "TAU",
    "STRESS_OPEN_GAIN",
    "CLOSED",
    "A_OPEN",
    "A_WIDTH",
    "A_ROUND",
    "classify",
    "segments_from_phonemes",
    "articulation_track",
    "mouth_from_articulation",
    "mouth_opening",
]

# viseme classes (stored as the third column of the per-clip ``phonemes`` array)
SIL, BILABIAL, LABIODENTAL, DENTAL, ALVEOLAR, POSTALVEOLAR, VELAR, ROUND_APPROX = range(8)
OPEN_VOWEL, MID_VOWEL, CLOSE_VOWEL, ROUND_VOWEL = range(8, 12)
VISEME_NAMES = (
    "silence",
    "bilabial",
    "labiodental",
    "dental",
    "alveolar",
    "postalveolar",
    "velar_glottal",
    "round_approximant",
    "open_vowel",
    "mid_vowel",
    "close_vowel",
    "round_vowel",
)

# targets (opening in [0, 1], width in [-1, 1]: + spread / - narrow, rounding in [0, 1])
TARGETS = np.array(
    [
        [0.00, 0.00, 0.00],  # silence: lips closed, relaxed
        [0.00, 0.00, 0.00],  # bilabial p b m: closure
        [0.12, 0.10, 0.00],  # labiodental f v: lower lip at the teeth
        [0.25, 0.20, 0.00],  # dental T D
        [0.25, 0.10, 0.00],  # alveolar t d n s z l
        [0.25, -0.20, 0.70],  # postalveolar S Z tS dZ: protruded, rounded
        [0.35, 0.00, 0.00],  # velar / glottal k g N h
        [0.15, -0.50, 0.90],  # w r: rounded approximants
        [1.00, 0.20, 0.00],  # open vowels a A V 0
        [0.60, 0.30, 0.00],  # mid vowels e E @ 3
        [0.30, 0.80, 0.00],  # close spread vowels i I (and j)
        [0.45, -0.60, 1.00],  # rounded vowels u U o O
    ],
    dtype=np.float64,
)

# dominance per parameter (opening, width, rounding): how strongly a segment holds its target
DOMINANCE = np.array(
    [
        [0.6, 0.6, 0.6],
        [10.0, 1.0, 0.3],
        [5.0, 1.0, 0.3],
        [1.5, 0.5, 0.3],
        [0.8, 0.3, 0.2],
        [1.0, 1.0, 2.0],
        [0.6, 0.3, 0.2],
        [1.5, 2.0, 3.0],
        [2.0, 1.0, 1.0],
        [1.5, 1.0, 1.0],
        [1.5, 2.0, 1.0],
        [1.5, 2.0, 2.5],
    ],
    dtype=np.float64,
)

TAU = 0.04  # s, decay of a segment's dominance outside its own interval
STRESS_OPEN_GAIN = 1.15  # opening target of a primary-stressed vowel (mnemonic starting with ')

_CONSONANTS = {
    "p": BILABIAL,
    "b": BILABIAL,
    "m": BILABIAL,
    "f": LABIODENTAL,
    "v": LABIODENTAL,
    "T": DENTAL,
    "D": DENTAL,
    "t": ALVEOLAR,
    "d": ALVEOLAR,
    "n": ALVEOLAR,
    "s": ALVEOLAR,
    "z": ALVEOLAR,
    "l": ALVEOLAR,
    "S": POSTALVEOLAR,
    "Z": POSTALVEOLAR,
    "tS": POSTALVEOLAR,
    "dZ": POSTALVEOLAR,
    "k": VELAR,
    "g": VELAR,
    "N": VELAR,
    "x": VELAR,
    "h": VELAR,
    "?": VELAR,
    "w": ROUND_APPROX,
    "r": ROUND_APPROX,
    "j": CLOSE_VOWEL,
}
_VOWEL_LETTERS = {
    "a": OPEN_VOWEL,
    "A": OPEN_VOWEL,
    "V": OPEN_VOWEL,
    "0": OPEN_VOWEL,
    "e": MID_VOWEL,
    "E": MID_VOWEL,
    "@": MID_VOWEL,
    "3": MID_VOWEL,
    "i": CLOSE_VOWEL,
    "I": CLOSE_VOWEL,
    "y": CLOSE_VOWEL,
    "u": ROUND_VOWEL,
    "U": ROUND_VOWEL,
    "o": ROUND_VOWEL,
    "O": ROUND_VOWEL,
}
_STRESS = "',%=\""
_MODIFIERS = "#-/;!:.^2"


def classify(name: str) -> tuple[list[int], bool]:
    """eSpeak mnemonic -> (viseme class per sub-segment, primary stress). Unknown consonants count as alveolar."""
    stressed = name.startswith("'")
    base = name.lstrip(_STRESS)
    if base == "" or base.startswith("_"):
        return [SIL], False
    if base.startswith("a#"):  # eSpeak's reduced "a" (as in "about") is a mid vowel
        return [MID_VOWEL], stressed
    core = "".join(ch for ch in base if ch not in _MODIFIERS)
    for key in (core, core.rstrip("LN") or core):
        if key in _CONSONANTS:
            return [_CONSONANTS[key]], False
    classes: list[int] = []
    for ch in core:
        cls = _VOWEL_LETTERS.get(ch)
        if cls is not None and (not classes or classes[-1] != cls):
            classes.append(cls)
    if not classes:
        return [_CONSONANTS.get(core[:1], ALVEOLAR)], False
    return classes, stressed


def segments_from_phonemes(
    names: list[str], starts_s: np.ndarray, end_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Phoneme onsets (seconds) -> ``(phonemes [p, 3], segments [q, 4])``.

    ``phonemes`` columns: start s, end s, viseme class of the first sub-segment (one row per PHONEME event).
    ``segments`` columns: start s, end s, viseme class, primary stress (0/1); a diphthong gives several rows."""
    starts_s = np.asarray(starts_s, np.float64)
    ends = np.append(starts_s[1:], end_s) if len(starts_s) else starts_s  # a phoneme lasts until the next
    phon_rows, seg_rows = [], []
    for name, a, b in zip(names, starts_s, ends, strict=True):
        b = max(b, a)
        classes, stressed = classify(name)
        phon_rows.append((a, b, classes[0]))
        step = (b - a) / len(classes)
        for k, cls in enumerate(classes):
            seg_rows.append((a + k * step, a + (k + 1) * step, cls, float(stressed)))
    phon = np.asarray(phon_rows, np.float64).reshape(-1, 3)
    segs = np.asarray(seg_rows, np.float64).reshape(-1, 4)
    return phon, segs


def articulation_track(segments: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Dominance-blended (opening, width, rounding) at ``times [m]`` -> ``[m, 3]``. Times outside every segment
    blend toward the nearest segments; with no segment at all the mouth stays closed."""
    times = np.asarray(times, np.float64)
    if len(segments) == 0:
        return np.zeros((len(times), 3))
    start, end, cls = segments[:, 0], segments[:, 1], segments[:, 2].astype(int)
    stressed = segments[:, 3] > 0
    targets = TARGETS[cls].copy()  # [q, 3]
    targets[stressed, 0] = np.minimum(targets[stressed, 0] * STRESS_OPEN_GAIN, 1.0)
    centre, half = (start + end) / 2, (end - start) / 2
    dist = np.maximum(np.abs(times[:, None] - centre[None, :]) - half[None, :], 0.0)  # [m, q]
    weight = np.exp(-dist / TAU)[:, :, None] * DOMINANCE[cls][None, :, :]  # [m, q, 3]
    total = weight.sum(axis=1)
    return (weight * targets[None]).sum(axis=1) / np.maximum(total, 1e-300)


# LivePortrait mouth expression (keypoints 14, 17, 19, 20; columns x, y, z). CLOSED follows LP's closed-mouth
# reference lip_array.pkl on these keypoints; the directions follow LP's lip sliders (liveportrait-notes §A2):
# (19,y), (19,z), (17,y) open the mouth; (20,y), (20,z), (14,y) spread it; (14,y), (17,z) round it.
CLOSED = np.array([[0.0, -0.0018, 0.0], [0.0, -0.0012, 0.0], [0.0, -0.0151, -0.0026], [0.0, 0.0056, 0.0027]])
A_OPEN = np.array([[0.0, 0.0, 0.0], [0.0, -0.008, 0.0], [0.0, 0.050, 0.006], [0.0, 0.0, 0.0]])
A_WIDTH = np.array([[0.0, -0.008, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -0.012, -0.008]])
A_ROUND = np.array([[0.0, 0.012, 0.0], [0.0, 0.0, -0.006], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
_MOUTH_KP = (14, 17, 19, 20)


def mouth_from_articulation(track: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """``[m, 3]`` (opening, width, rounding) -> mouth expression ``[m, 4, 3]`` (no speaker offset, no noise)."""
    o, w, r = track[:, 0, None, None], track[:, 1, None, None], track[:, 2, None, None]
    return CLOSED[None] + gain * (o * A_OPEN[None] + w * A_WIDTH[None] + r * A_ROUND[None])


def mouth_opening(exp_or_mouth):
    """Scalar mouth opening per frame: the projection of ``mouth - CLOSED`` on ``A_OPEN`` divided by
    ``|A_OPEN|^2``. Accepts ``exp [..., 21, 3]``, ``mouth [..., 4, 3]`` or flattened ``[..., 12]`` (numpy or torch)
    and returns ``[...]``. For the synthetic corpus it equals ``gain * opening`` up to the tiny frame noise:
    0 for closed lips, about 1 for an open vowel."""
    x = exp_or_mouth
    shape = tuple(x.shape)
    if shape[-2:] == (21, 3):
        x = x[..., list(_MOUTH_KP), :]
    elif shape[-1:] == (12,):
        x = x.reshape(*shape[:-1], 4, 3)
    elif shape[-2:] != (4, 3):
        raise ValueError(f"mouth_opening: expected [..., 21, 3], [..., 4, 3] or [..., 12], got {shape}")
    direction = A_OPEN / float((A_OPEN**2).sum())
    if isinstance(x, np.ndarray):
        return ((x - CLOSED) * direction).sum(axis=(-1, -2))
    import torch

    closed = torch.as_tensor(CLOSED, dtype=x.dtype, device=x.device)
    d = torch.as_tensor(direction, dtype=x.dtype, device=x.device)
    return ((x - closed) * d).sum(dim=(-1, -2))
