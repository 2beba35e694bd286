"""What a JAM-Flow task returns: :class:`GenerationResult` (CPU arrays) and its generation record.

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
s samples (24 kHz). No masks here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jam_flow.atomic import replace_dir
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.outputs import check_finite, outputs_owned, write_motion, write_preview, write_wav

__all__ = ["GenerationResult", "Used", "generation_record", "new_result"]


@dataclass
class GenerationResult:
    """What a task produced (CPU arrays). ``motion`` is raw LivePortrait ``exp`` (not normalised)."""

    task: str
    sample_rate: int
    fps: int
    mouth_indices: tuple[int, ...]
    mel: torch.Tensor | None = None  # [n, c] natural-log mel of the output speech
    wave: np.ndarray | None = None  # [s] float32
    motion: np.ndarray | None = None  # [m, k, 3]
    kp: np.ndarray | None = None  # canonical keypoints [k, 3] or [m, k, 3] for the preview, when known
    has_rest: bool = (
        False  # True: the non-mouth keypoints are a real e_rest track; False: the neutral expression
    )
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def audio(self) -> torch.Tensor | None:
        """The output speech ``[s]`` float32 at :attr:`sample_rate` as a tensor (None when there is none)."""
        return None if self.wave is None else torch.from_numpy(np.ascontiguousarray(self.wave))

    def save(self, out_dir: str | Path, preview: bool = True, overwrite: bool = False) -> dict[str, Path]:
        """Write what ``jam-flow generate`` writes into ``out_dir``, atomically: the files are written into a
        temporary sibling folder that replaces ``out_dir`` only when the whole set is complete
        (:func:`jam_flow.atomic.replace_dir`). ``out_dir`` must be absent or empty, or with ``overwrite`` hold an
        earlier output set (nothing else). Returns ``{name: path}`` of the files in ``out_dir``."""
        out_dir = Path(out_dir)
        with replace_dir(out_dir, overwrite, outputs_owned, arg="out_dir") as tmp:
            written = self.write(tmp, preview)
        return {name: out_dir / path.relative_to(tmp) for name, path in written.items()}

    def write(self, out_dir: str | Path, preview: bool = True) -> dict[str, Path]:
        """Write ``audio.wav``, ``motion.npy`` + ``motion.json`` and ``preview.mp4`` (when both streams exist) into
        ``out_dir`` as it is (not atomic: for a folder being assembled, e.g. the temporary folder of
        :meth:`save`); without motion the generation record (seed, sampler, guidance) goes to ``generation.json``.

        Raises :class:`~jam_flow.errors.NonFiniteError` before writing anything when a stream holds NaN/inf."""
        if self.wave is not None:
            check_finite(self.wave, "speech (audio.wav)", self.task)
        if self.motion is not None:
            check_finite(self.motion, "motion (motion.npy)", self.task)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        if self.wave is not None:
            paths["audio"] = write_wav(out_dir / "audio.wav", self.wave, self.sample_rate)
        if self.motion is None:  # no motion.json to carry the generation record (tts, audio-only edit)
            record = out_dir / "generation.json"
            record.write_text(json.dumps({"task": self.task, **self.meta}, indent=2) + "\n", encoding="utf-8")
            paths["generation"] = record
        else:
            meta = {
                "fps": self.fps,
                "mouth_indices": list(self.mouth_indices),
                "has_rest": self.has_rest,
                **self.meta,
            }
            paths["motion"], paths["motion_json"] = write_motion(out_dir, self.motion, meta)
        if preview and self.wave is not None and self.motion is not None:
            paths["preview"] = write_preview(
                out_dir / "preview.mp4",
                self.motion,
                self.wave,
                self.sample_rate,
                self.fps,
                self.mouth_indices,
                kp=self.kp,
            )
        return paths


@dataclass(frozen=True)
class Used:
    """What the sampler actually did: network evaluations and the guidance mode (None: unguided)."""

    nfe: int
    guidance: str | None


def generation_record(
    task: str, seed: int, settings: SamplerSettings, used: Used, **sources: Any
) -> dict[str, Any]:
    """The generation record (``motion.json`` / ``generation.json``). ``guidance`` is the mode asked for,
    ``guidance_used`` the one applied: ``"joint"`` falls back to ``"f5"`` without a motion stream (plain TTS),
    and an unguided run (every scale 0) records None."""
    return {
        "task": task,
        "seed": seed,
        "nfe": settings.nfe,
        "nfe_used": used.nfe,
        "method": settings.method,
        "sway_coef": settings.sway_coef,
        "cfg": settings.cfg,
        "audio_cfg": settings.audio_scale,
        "motion_cfg": settings.motion_scale,
        "guidance": settings.guidance,
        "guidance_used": used.guidance,
        "sources": {k: _source(v) for k, v in sources.items() if v is not None},
    }


def _source(value: Any) -> Any:
    """A source for the record: a path as text, a string or number as it is, an in-memory array as ``<array>``."""
    if isinstance(value, Path):
        return str(value)
    return value if isinstance(value, (str, int, float, bool)) else "<array>"


def new_result(bundle: ModelBundle, task: str, **kw: Any) -> GenerationResult:
    return GenerationResult(
        task=task,
        sample_rate=bundle.mel.sample_rate,
        fps=bundle.motion.fps,
        mouth_indices=bundle.motion.mouth_indices,
        **kw,
    )
