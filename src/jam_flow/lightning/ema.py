"""Exponential moving average of network weights with ema-pytorch's schedule (the one F5-TTS trains with).

No tensor dimensions of its own: it mirrors every parameter and buffer of the wrapped network.

Semantics (ema-pytorch ``EMA``, defaults as F5-TTS uses them):

* ``update()`` is called once per optimizer step. An internal counter ``step`` starts at 0 and is incremented on
  every call. The first call copies the online weights (``initted``); later calls do nothing unless
  ``step % update_every == 0`` (the value *before* incrementing);
* while ``step <= update_after_step`` an update is a plain copy of the online weights;
* afterwards ``ema = decay * ema + (1 - decay) * online`` for floating-point parameters and buffers with
  ``decay = clamp(1 - (1 + e / inv_gamma) ** -power, min_value, beta)``, ``e = step - update_after_step - 1``
  counted after the increment (decay 0 while ``e <= 0``); integer tensors are copied.

The EMA copy is an ``nn.Module`` child (``ema.model``), so its weights and counters travel in Lightning's
``state_dict`` and come back on resume; its parameters never require gradients and the optimizer never sees them.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """EMA of ``net``'s weights.

    Args:
        net: the online network (not registered as a child: only the EMA copy is).
        beta: largest decay (ema-pytorch default 0.9999).
        update_after_step: plain copies until this many update calls (default 100).
        update_every: update on every n-th call (default 10).
        inv_gamma: warm-up scale of the decay schedule (default 1.0).
        power: warm-up exponent of the decay schedule (default 2/3).
        min_value: smallest decay (default 0).
    """

    def __init__(
        self,
        net: nn.Module,
        beta: float = 0.9999,
        update_after_step: int = 100,
        update_every: int = 10,
        inv_gamma: float = 1.0,
        power: float = 2.0 / 3.0,
        min_value: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ema.beta: expected a value in [0, 1], got {beta}")
        if update_every < 1:
            raise ValueError(f"ema.update_every: expected >= 1, got {update_every}")
        self.beta = beta
        self.update_after_step = update_after_step
        self.update_every = update_every
        self.inv_gamma = inv_gamma
        self.power = power
        self.min_value = min_value
        self.model = copy.deepcopy(net)
        self.model.requires_grad_(False)
        self.model.eval()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("initted", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True) -> EMA:
        """The EMA copy always stays in eval mode (no dropout when it is used for validation)."""
        super().train(mode)
        self.model.eval()
        return self

    def current_decay(self) -> float:
        epoch = max(int(self.step) - self.update_after_step - 1, 0)
        if epoch <= 0:
            return 0.0
        value = 1.0 - (1.0 + epoch / self.inv_gamma) ** (-self.power)
        return float(min(max(value, self.min_value), self.beta))

    @torch.no_grad()
    def copy_from(self, net: nn.Module) -> None:
        for ema_t, t in _paired_tensors(self.model, net):
            ema_t.copy_(t.detach())

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One ema-pytorch ``update()`` call against the online network ``net``."""
        step = int(self.step)
        self.step += 1
        if not bool(self.initted):
            self.copy_from(net)
            self.initted.fill_(True)
            return
        if step % self.update_every != 0:
            return
        if step <= self.update_after_step:
            self.copy_from(net)
            return
        weight = 1.0 - self.current_decay()
        for ema_t, t in _paired_tensors(self.model, net):
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(t.detach().to(ema_t.dtype), weight)
            else:
                ema_t.copy_(t.detach())

    def weights(self) -> dict[str, Tensor]:
        """The EMA network's state dict (keys exactly as the online network's ``state_dict()``)."""
        return self.model.state_dict()


def _paired_tensors(dst: nn.Module, src: nn.Module):
    src_params = dict(src.named_parameters())
    src_buffers = dict(src.named_buffers())
    for name, t in dst.named_parameters():
        yield t, src_params[name]
    for name, t in dst.named_buffers():
        yield t, src_buffers[name]
