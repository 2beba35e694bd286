"""The text-use probe's core: does the audio flow's prediction depend on *which* words it is given?

Dimension legend: b batch (clips), n mel frames, c mel channels, m motion frames, dm mouth dims, dr e_rest dims,
nt text tokens. Masks are bool, True = valid.

On one batch of clean data (model space, a :class:`~jam_flow.flow.objective.FlowBatch`), the audio flow-matching
loss (the training objective's masked MSE of the predicted velocity against ``x1 - x0``) is scored in the
``text2av`` layout (audio, and mouth when there is a motion stream, generated entirely from noise; no reference;
e_rest dropped; every other conditioning dropout off) under three texts with **the same times and noise**:

* ``own``: each clip's own text;
* ``none``: the text dropped (``drop_text``, the input guidance extrapolates from);
* ``other``: another clip's text (the caller's ``other_text``, e.g. a rotation of the batch: a derangement).

Times are stratified per flow-time bin (:data:`TIME_BINS`: t < 0.3, 0.3 <= t < 0.7, t >= 0.7): each clip gets
``per_bin`` uniform times inside every bin, drawn with the noise from one CPU generator, so a call with a fixed
seed is reproducible. ``text_gain = loss_other - loss_own`` (0 when the prediction ignores the text) and
``text_gain_rel = text_gain / loss_own`` are reported per bin and overall. The text matters most at high noise
(small t), where the mel is not yet visible in ``x_t``; near t = 1 the input already shows the answer.

Callers: the ``val/text_gain`` metric of :class:`jam_flow.lightning.module.JAMFlowModule` and
:func:`jam_flow.eval.probes.text_use` (a trained model on held-out clips).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jam_flow.flow.objective import FlowBatch, interpolate, masked_mse

__all__ = ["TIME_BINS", "TEXTS", "TextUseSums", "text_use_batch", "rotate_text"]

# (name, lowest t, highest t) of each flow-time bin; x_t = (1 - t) x0 + t x1, so small t = mostly noise
TIME_BINS: tuple[tuple[str, float, float], ...] = (
    ("t0.0-0.3", 0.0, 0.3),
    ("t0.3-0.7", 0.3, 0.7),
    ("t0.7-1.0", 0.7, 1.0),
)
TEXTS = ("own", "none", "other")


@dataclass
class TextUseSums:
    """Frame-weighted loss sums per time bin and text (add batches, then :meth:`result`)."""

    loss: dict[str, dict[str, float]] = field(
        default_factory=lambda: {name: dict.fromkeys(TEXTS, 0.0) for name, _, _ in TIME_BINS}
    )
    frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys((n for n, _, _ in TIME_BINS), 0))
    clips: int = 0

    @staticmethod
    def _summary(own: float, none: float, other: float) -> dict[str, float]:
        gain = other - own
        return {
            "loss_own_text": own,
            "loss_no_text": none,
            "loss_other_text": other,
            "text_gain": gain,
            "text_gain_rel": gain / own if own > 0 else 0.0,
        }

    def to_tensor(self) -> Tensor:
        """The sums as one float64 vector (per bin: the three losses and the frames; then the clips), so that
        ranks can add them with one all-reduce (:meth:`from_tensor` reads it back)."""
        vals = [
            v for name, _, _ in TIME_BINS for v in (*(self.loss[name][k] for k in TEXTS), self.frames[name])
        ]
        return torch.tensor([*vals, self.clips], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, vec: Tensor) -> TextUseSums:
        """The inverse of :meth:`to_tensor` (for example after summing it over ranks)."""
        vals = [float(v) for v in vec.detach().cpu().tolist()]
        sums, i = cls(), 0
        for name, _, _ in TIME_BINS:
            for k in TEXTS:
                sums.loss[name][k] = vals[i]
                i += 1
            sums.frames[name] = round(vals[i])
            i += 1
        sums.clips = round(vals[i])
        return sums

    def result(self) -> dict[str, Any]:
        """Overall and per-bin losses and gains (the keys of :meth:`_summary`), ``bins`` keyed by bin name."""
        total = sum(self.frames.values())
        if total == 0:
            raise ValueError("text-use probe: no valid frame was scored")
        bins = {
            name: self._summary(*(self.loss[name][k] / max(self.frames[name], 1) for k in TEXTS))
            for name, _, _ in TIME_BINS
        }
        overall = self._summary(*(sum(self.loss[n][k] for n in self.loss) / total for k in TEXTS))
        return {**overall, "bins": bins, "clips": self.clips}


def rotate_text(text: Tensor) -> Tensor:
    """``text [b, nt]`` with clip ``i`` given clip ``(i + 1) mod b``'s row (another clip's text for ``b >= 2``)."""
    return torch.roll(text, shifts=-1, dims=0)


@torch.no_grad()
def text_use_batch(
    net: Callable[..., tuple[Tensor | None, Tensor | None]],
    batch: FlowBatch,
    other_text: Tensor,
    generator: torch.Generator,
    sums: TextUseSums | None = None,
    per_bin: int = 1,
) -> TextUseSums:
    """Add one batch's probe losses to ``sums`` (a new one when None) and return it (module docstring).

    ``net`` has the ``JointDiT.forward`` interface; ``other_text [b, nt']`` (pad -1) is each clip's wrong text.
    Draws from the CPU ``generator``, per bin and repeat: the times ``[b]``, the audio noise, the motion noise."""
    sums = TextUseSums() if sums is None else sums
    mel, audio_mask = batch.audio, batch.audio_mask  # [b, n, c], [b, n]
    dev, b = mel.device, mel.shape[0]
    if other_text.shape[0] != b:
        raise ValueError(f"text-use probe: other_text has {other_text.shape[0]} rows for {b} clips")
    sums.clips += b
    mouth = batch.motion
    for name, lo, hi in TIME_BINS:
        for _ in range(per_bin):
            time = (lo + (hi - lo) * torch.rand(b, generator=generator)).to(dev)
            x0 = torch.randn(mel.shape, generator=generator).to(device=dev, dtype=mel.dtype)
            kwargs: dict[str, Any] = {
                "audio_x": interpolate(x0, mel, time),
                "audio_cond": torch.zeros_like(mel),
                "time": time,
                "audio_mask": audio_mask,
                "drop_audio_cond": False,
            }
            if mouth is not None:
                y0 = torch.randn(mouth.shape, generator=generator).to(device=dev, dtype=mouth.dtype)
                rest = batch.motion_rest
                kwargs.update(
                    motion_x=interpolate(y0, mouth, time),
                    motion_cond=torch.zeros_like(mouth),
                    motion_rest=torch.zeros(*mouth.shape[:2], rest.shape[-1], device=dev, dtype=mouth.dtype)
                    if rest is not None
                    else None,
                    motion_mask=batch.motion_mask,
                    motion_time=time,
                    drop_motion_cond=False,
                    drop_rest=True,  # text2av has no e_rest track
                )
            frames = 0
            for text_name, text, drop in (
                ("own", batch.text, False),
                ("none", batch.text, True),
                ("other", other_text, False),
            ):
                v, _ = net(text=text.to(dev), drop_text=drop, **kwargs)
                loss, frames = masked_mse(v, mel - x0, audio_mask)
                sums.loss[name][text_name] += float(loss) * frames
            sums.frames[name] += frames
    return sums
