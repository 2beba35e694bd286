"""Argument checks shared by the network ``forward`` methods; bad input raises :class:`jam_flow.errors.InputError`.

Dimension legend: b batch, L frames of one stream. Masks mean True = valid and must be prefix masks
(frames ``< len`` valid, then padding), the only kind a variable-length batch produces.

The checks never synchronise an accelerator: types, shapes and dtypes are host metadata; the one check that reads
tensor values (a mask is a prefix mask) runs on CPU tensors, and on a GPU only with ``JAM_FLOW_DEBUG_CHECKS=1``
(batches from :func:`jam_flow.data.dataset.collate_clips` and the inference tasks build prefix masks by
construction, on the host).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.nn.masks import lengths_to_mask

__all__ = [
    "check_frames",
    "check_mask",
    "check_flag",
    "as_time",
    "check_backend",
    "constructor_args",
    "DEBUG_CHECKS",
]

# value checks on accelerator tensors (each one waits for the device): off unless asked for
DEBUG_CHECKS = os.environ.get("JAM_FLOW_DEBUG_CHECKS", "") not in ("", "0")


def constructor_args(init, scope: dict) -> dict:
    """The arguments of ``init`` (a constructor) taken from ``scope`` (its ``locals()``), as a plain dict."""
    import inspect

    names = [n for n in inspect.signature(init).parameters if n != "self"]
    return {n: scope[n] for n in names}


def check_backend(owner: str, name: str, joint: bool = False) -> None:
    """``name`` must be ``"auto"`` or a registered attention backend (self-attention; also joint if ``joint``)."""
    from jam_flow.nn.attention import BACKENDS, SELF_BACKENDS

    tables = (SELF_BACKENDS, BACKENDS) if joint else (SELF_BACKENDS,)
    known = sorted(set.intersection(*(set(t) for t in tables)))
    if name != "auto" and name not in known:
        raise InputError(f"{owner}: attention_backend must be 'auto' or one of {known}, got {name!r}")


def check_frames(name: str, x: Tensor, batch: int | None, length: int | None, channels: int) -> None:
    """``x`` must be a float ``[batch, length, channels]`` tensor (None = any size)."""
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{name}: expected a float tensor [b, frames, {channels}], got {got}")
    want = (batch, length, channels)
    if any(w is not None and w != g for w, g in zip(want, x.shape, strict=True)):
        shown = tuple("*" if w is None else w for w in want)
        raise InputError(f"{name}: expected shape {shown}, got {tuple(x.shape)}")


def check_mask(name: str, mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """Validate a ``[batch, length]`` prefix mask; returns the valid lengths ``[b]`` (None when ``mask`` is None).

    The prefix check reads the mask's values, so it runs only where that costs no device sync (CPU tensors) or
    with :data:`DEBUG_CHECKS`."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (batch, length):
        got = (mask.dtype, tuple(mask.shape)) if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(
            f"{name}: expected a bool tensor of shape ({batch}, {length}) (True = valid), got {got}"
        )
    lens = mask.sum(dim=1)
    if (mask.device.type == "cpu" or DEBUG_CHECKS) and not torch.equal(mask, lengths_to_mask(lens, length)):
        raise InputError(f"{name}: must be a prefix mask (valid frames first, then padding)")
    return lens


def check_flag(name: str, flag: bool | Tensor, batch: int) -> None:
    """A per-sample switch is a Python bool or a ``[batch]`` bool tensor."""
    if isinstance(flag, Tensor):
        if flag.dtype != torch.bool or tuple(flag.shape) != (batch,):
            raise InputError(
                f"{name}: expected a bool or a bool tensor of shape ({batch},), got "
                f"{flag.dtype} {tuple(flag.shape)}"
            )
    elif not isinstance(flag, bool):
        raise InputError(f"{name}: expected a bool or a [b] bool tensor, got {type(flag).__name__}")


def as_time(name: str, time: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """Flow time as ``[b]`` in ``like``'s dtype: a Python number or 0-d tensor is repeated (F5-TTS)."""
    if not isinstance(time, Tensor):
        return torch.full((batch,), float(time), dtype=like.dtype, device=like.device)
    if time.ndim == 0:
        time = time.repeat(batch)
    if tuple(time.shape) != (batch,):
        raise InputError(f"{name}: expected a scalar or shape ({batch},), got {tuple(time.shape)}")
    return time.to(device=like.device, dtype=like.dtype)
