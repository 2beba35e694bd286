"""The learnability canary's toy corpus: text that fully determines the mel (dataset format v1).

Dimension legend: n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21).

Each of ``TOKENS`` (24 letters) has a fixed spectral template (a smooth random log-mel spectrum) and a fixed
duration (4-11 mel frames). A clip's text is a random string of 3-8 tokens; its mel is the concatenation of the
tokens' templates held for their durations, plus a little noise. So the text is the *only* thing that tells which
spectrum comes when: a text path that works makes the flow loss with the clip's own text clearly lower than with
another clip's, within a few hundred steps (``python -m jam_flow.recipes.canary``, ``make canary``). The motion
arrays are a still face (zeros plus a tiny noise), present only because the format requires them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jam_flow.data.format import ClipRecord, write_clip, write_dataset
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames

__all__ = ["TOKENS", "token_table", "build_canary_corpus"]

TOKENS = "abcdefghijklmnopqrstuvwx"  # 24 tokens, all in the bundled character vocabulary
TABLE_SEED = 1234  # the token table is part of the task: fixed, whatever the corpus seed


def token_table(n_mels: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(templates [len(TOKENS), c], durations [len(TOKENS)] in mel frames)``, the same on every call."""
    rng = np.random.default_rng(TABLE_SEED)
    raw = rng.standard_normal((len(TOKENS), n_mels + 8))
    kernel = np.hanning(9) / np.hanning(9).sum()
    smooth = np.stack([np.convolve(r, kernel, mode="valid") for r in raw])[:, :n_mels]  # [t, c]
    smooth = smooth / smooth.std(axis=1, keepdims=True)
    templates = -5.0 + 2.0 * smooth  # natural-log mel levels around the corpus's typical range
    durations = rng.integers(4, 12, size=len(TOKENS))
    return templates.astype(np.float32), durations


def build_canary_corpus(
    out: str | Path, n_train: int = 400, n_val: int = 24, seed: int = 0, noise: float = 0.1
) -> list[ClipRecord]:
    """Write the toy corpus into the (empty or new) folder ``out`` and return its records."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mel_s, mot_s = MelSettings(), MotionSettings()
    templates, durations = token_table(mel_s.n_mels)
    rng = np.random.default_rng(seed)
    records = []
    for i, split in enumerate(["train"] * n_train + ["val"] * n_val):
        ids = rng.integers(0, len(TOKENS), size=int(rng.integers(3, 9)))
        mel = np.concatenate([np.repeat(templates[t][None], durations[t], axis=0) for t in ids])  # [n, c]
        mel = mel + noise * rng.standard_normal(mel.shape)
        n = mel.shape[0]
        duration = (n - 1) * mel_s.hop_length / mel_s.sample_rate  # exactly n mel frames of audio
        m = num_motion_frames(duration, mot_s.fps)
        k = mot_s.num_kp
        arrays = {
            "mel": mel,
            "exp": 1e-3 * rng.standard_normal((m, k, 3)),
            "pitch": np.zeros(m),
            "yaw": np.zeros(m),
            "roll": np.zeros(m),
            "scale": np.ones((m, 1)),
            "t": np.zeros((m, 3)),
            "kp": np.zeros((m, k, 3)),
        }
        rec = ClipRecord(
            id=f"canary{i:04d}",
            split=split,
            speaker="canary",
            duration=duration,
            n_mel=n,
            n_motion=m,
            text="".join(TOKENS[t] for t in ids),
            features="",
        )
        records.append(write_clip(out, rec, arrays))
    write_dataset(out, records, mel_s, mot_s, "canary")
    return records
