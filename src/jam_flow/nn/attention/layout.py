"""The joint layout of one batch: lengths, window, cross-modal switches and frame ratio (paper §4.4, Algorithm 2).

Dimension legend: b batch, n audio frames, m motion frames. Masks mean True = valid.

A :class:`JointLayout` is built and checked once per forward (``JointDiT.forward``, or once per call of the
public :func:`jam_flow.nn.attention.joint_attention`) and handed to every joint layer and backend unchanged, so
no backend repeats the argument checks. The checks in :meth:`JointLayout.build` read shapes only (no device
sync); the value checks that would synchronise an accelerator run only when asked (``check_values=True``).
The frame map ``f(i) = (i * num) // den`` uses the reduced fraction ``num / den = hop * fps / sample_rate``
(:func:`jam_flow.features.frame_ratio`); exact integers, no rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from jam_flow.features import frame_ratio
from jam_flow.nn.masks import as_batch_flags

__all__ = ["JointLayout", "check_window", "with_unwindowed_motion"]


def check_window(window: int | None) -> None:
    """A window is ``None`` (structural masks off) or an int ``>= 0`` (half-width in motion frames)."""
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")


@dataclass(frozen=True, eq=False)  # tensors inside: identity, not element-wise, comparison
class JointLayout:
    """Everything about a joint-attention batch except the projections: ``[b]`` lengths and switches on the
    inputs' device, the frame counts ``n`` / ``m``, the motion window and the frame ratio ``num / den``.

    ``window_with_alpha``: the motion -> motion window holds only for samples whose ``motion_sees_audio`` is on
    (Algorithm 2 line 4: no window when alpha_2 = 0); False keeps the window for every sample (models trained
    before that rule). :meth:`unwindowed_motion` says which samples lose the window.

    ``host``: the lengths and switches as Python tuples ``(audio_lens, motion_lens, audio_sees_motion,
    motion_sees_audio)`` when they live on the CPU (the CPU decomposition keys its plan caches on them; reading
    a CPU tensor costs no device sync); None on an accelerator, where no backend needs them.
    """

    audio_lens: Tensor
    motion_lens: Tensor
    n: int
    m: int
    window: int | None
    audio_sees_motion: Tensor
    motion_sees_audio: Tensor
    num: int
    den: int
    window_with_alpha: bool = True
    host: tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...], tuple[bool, ...]] | None = None

    @classmethod
    def build(
        cls,
        audio_lens: Tensor,
        motion_lens: Tensor,
        n: int,
        m: int,
        window: int | None,
        audio_sees_motion: bool | Tensor = True,
        motion_sees_audio: bool | Tensor = True,
        sample_rate: int = 24000,
        hop_length: int = 256,
        fps: int = 25,
        device: torch.device | str | None = None,
        check_values: bool = False,
        window_with_alpha: bool = True,
    ) -> JointLayout:
        """Check the arguments (shapes only) and move the ``[b]`` tensors to ``device`` (default: the lengths').

        ``check_values``: also check ``0 <= audio_lens <= n`` and ``0 <= motion_lens <= m`` (reads the values:
        a device sync on an accelerator; a debugging aid).
        """
        check_window(window)
        audio_lens = torch.as_tensor(audio_lens, device=device)
        motion_lens = torch.as_tensor(motion_lens, device=audio_lens.device)
        if audio_lens.ndim != 1 or motion_lens.shape != audio_lens.shape:
            raise ValueError(
                f"audio_lens and motion_lens must both have shape [b], got {tuple(audio_lens.shape)} and "
                f"{tuple(motion_lens.shape)}"
            )
        b, dev = audio_lens.shape[0], audio_lens.device
        a_sees = as_batch_flags(audio_sees_motion, b, dev)
        m_sees = as_batch_flags(motion_sees_audio, b, dev)
        host = None
        if dev.type == "cpu":
            host = tuple(tuple(t.tolist()) for t in (audio_lens, motion_lens, a_sees, m_sees))
        num, den = frame_ratio(sample_rate, hop_length, fps)
        layout = cls(
            audio_lens, motion_lens, n, m, window, a_sees, m_sees, num, den, bool(window_with_alpha), host
        )
        if check_values:
            layout.check_values()
        return layout

    @property
    def batch(self) -> int:
        return self.audio_lens.shape[0]

    def with_window(self, window: int | None) -> JointLayout:
        """The same batch with another motion window (for layers with their own window)."""
        check_window(window)
        return dataclasses.replace(self, window=window)

    def unwindowed_motion(self) -> Tensor | None:
        """``[b]`` bool: samples whose motion queries attend every valid motion key although the layout has a
        window (``motion_sees_audio`` off with ``window_with_alpha``); None when no sample can be one (no window,
        the rule off, or, on the CPU, every switch on)."""
        if self.window is None or not self.window_with_alpha:
            return None
        if self.host is not None and all(self.host[3]):
            return None
        return ~self.motion_sees_audio

    def host_values(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...], tuple[bool, ...]]:
        """``host``, read from the device when the layout lives on an accelerator (a sync)."""
        if self.host is not None:
            return self.host
        ts = (self.audio_lens, self.motion_lens, self.audio_sees_motion, self.motion_sees_audio)
        return tuple(tuple(t.tolist()) for t in ts)

    def check_values(self) -> None:
        """Lengths inside ``[0, n]`` / ``[0, m]`` (reads the values; see :meth:`build`)."""
        for name, lens, size in (
            ("audio_lens", self.audio_lens, self.n),
            ("motion_lens", self.motion_lens, self.m),
        ):
            if lens.numel() and not bool(((lens >= 0) & (lens <= size)).all()):
                raise ValueError(f"{name} must lie in [0, {size}], got {lens.tolist()}")


def with_unwindowed_motion(
    layout: JointLayout, out_m: Tensor, q_m: Tensor, k_m: Tensor, v_m: Tensor, single: Callable[..., Tensor]
) -> Tensor:
    """``out_m [b, h, m, d]`` with the rows of :meth:`JointLayout.unwindowed_motion` samples replaced by attention
    over every valid motion key (``single(q, k, v, lens, None)``, the implementation's own one-stream attention):
    their motion -> audio block is off, so that is all they attend (Algorithm 2 line 4 with alpha_2 = 0).

    For implementations that compute the window from indices. On the CPU only the affected samples are recomputed;
    on an accelerator every sample is, and a ``where`` picks (no device sync)."""
    off = layout.unwindowed_motion()
    if off is None or layout.m == 0:
        return out_m
    if layout.host is not None:
        idx = torch.tensor([i for i, on in enumerate(layout.host[3]) if not on], device=out_m.device)
        sub = single(q_m[idx], k_m[idx], v_m[idx], layout.motion_lens[idx], None)
        return out_m.index_copy(0, idx, sub.to(out_m.dtype))
    full = single(q_m, k_m, v_m, layout.motion_lens, None)
    return torch.where(off.to(out_m.device)[:, None, None, None], full.to(out_m.dtype), out_m)
