"""Flow-loss probes of a trained model (issue 16): does the audio flow use the text?

Dimension legend: b batch (clips), n mel frames, c mel channels, m motion frames, dm mouth dims, dr e_rest dims,
nt text tokens. Masks are bool, True = valid.

:func:`text_use` scores the audio flow-matching loss (the training objective: ``FlowObjective``'s masked MSE of the
predicted velocity against ``x1 - x0``) in the ``text2av`` layout (audio and mouth generated from noise, no
reference, e_rest dropped) on held-out clips, at fixed times ``t``, with the same noise under three texts:

* ``loss_own_text``: each clip's own text;
* ``loss_no_text``: the text dropped (the input the model learns with ``dropout.text`` and guidance);
* ``loss_other_text``: another clip's text (clip ``i`` gets clip ``(i + 1) mod N``'s, a derangement).

``text_gain = loss_other_text - loss_own_text`` is positive only when the prediction depends on *which* words are
given; 0 means the model ignores the text, whatever its loss. It moves long before the judge's CER does (the CER
needs the words to come out whole), so the speech recipe's learning curve shows when text alignment begins.
``text_gain_rel`` is the same gain over ``loss_own_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from jam_flow.data.dataset import collate_clips
from jam_flow.errors import InputError
from jam_flow.flow.objective import interpolate, masked_mse
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.outputs import check_finite

__all__ = ["text_use", "PROBE_TIMES"]

PROBE_TIMES = (0.2, 0.5, 0.8)


@torch.no_grad()
def text_use(
    bundle: ModelBundle,
    items: Sequence[dict[str, Any]],
    times: Sequence[float] = PROBE_TIMES,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """The audio flow loss with each clip's own text, no text and another clip's text (module docstring).

    ``items`` are ``ClipDataset`` items (``mel``, ``exp``, ``text``); at least 2. The noise comes from one CPU
    generator seeded with ``seed``, so a call is reproducible and the three texts see the same noise."""
    if len(items) < 2:
        raise InputError(
            f"text_use: expected at least 2 clips (one's text is another's wrong text), got {len(items)}"
        )
    if batch_size < 1 or not times or not all(0.0 <= float(t) < 1.0 for t in times):
        raise InputError(f"text_use: expected batch_size >= 1 and times in [0, 1), got {batch_size}, {times}")
    net = bundle.joint_net("text2av")
    dev = bundle.device
    count = len(items)
    generator = torch.Generator().manual_seed(seed)
    sums = {"own": 0.0, "none": 0.0, "other": 0.0}
    total_frames = 0
    for start in range(0, count, batch_size):
        idx = list(range(start, min(start + batch_size, count)))
        batch = collate_clips([items[i] for i in idx])
        other = pad_sequence(
            [items[(i + 1) % count]["text"] for i in idx], batch_first=True, padding_value=-1
        )
        mel = bundle.mel_to_model(batch["mel"].float()).to(dev)  # [b, n, c]
        audio_mask = batch["audio_mask"].to(dev)
        b = mel.shape[0]
        mouth = rest = motion_mask = None
        if bundle.has_motion:
            mouth, rest = (x.to(dev) for x in bundle.normalise_motion(batch["exp"]))  # [b, m, dm], [b, m, dr]
            motion_mask = batch["motion_mask"].to(dev)
        for t in times:
            time = torch.full((b,), float(t), device=dev)
            x0 = torch.randn(mel.shape, generator=generator).to(dev)
            kwargs: dict[str, Any] = {
                "audio_x": interpolate(x0, mel, time),
                "audio_cond": torch.zeros_like(mel),
                "time": time,
                "audio_mask": audio_mask,
            }
            if mouth is not None:
                y0 = torch.randn(mouth.shape, generator=generator).to(dev)
                kwargs.update(
                    motion_x=interpolate(y0, mouth, time),
                    motion_cond=torch.zeros_like(mouth),
                    motion_rest=torch.zeros_like(rest),
                    motion_mask=motion_mask,
                    motion_time=time,
                    drop_rest=True,
                )
            for name, text, drop in (
                ("own", batch["text"], False),
                ("none", batch["text"], True),
                ("other", other, False),
            ):
                v, _ = net(text=text.to(dev), drop_text=drop, **kwargs)
                loss, frames = masked_mse(v, mel - x0, audio_mask)
                sums[name] += float(loss) * frames
            total_frames += frames
    own, none, other_loss = (sums[k] / total_frames for k in ("own", "none", "other"))
    check_finite([own, none, other_loss], "probe losses", "text2av")
    return {
        "loss_own_text": own,
        "loss_no_text": none,
        "loss_other_text": other_loss,
        "text_gain": other_loss - own,
        "text_gain_rel": (other_loss - own) / own if own > 0 else 0.0,
        "clips": count,
        "times": [float(t) for t in times],
        "seed": seed,
    }
