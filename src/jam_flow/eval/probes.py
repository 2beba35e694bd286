"""Flow-loss probes of a trained model: does the audio flow use the text?

Dimension legend: b batch (clips), n mel frames, c mel channels, m motion frames, dm mouth dims, dr e_rest dims,
nt text tokens. Masks are bool, True = valid.

:func:`text_use` runs the probe of :mod:`jam_flow.flow.probe` (the same computation as the ``val/text_gain`` metric
logged during training) on a model bundle and held-out clips: the audio flow-matching loss in the ``text2av``
layout (audio and mouth from noise, no reference, e_rest dropped, every other dropout off) with the same times and
noise under three texts:

* ``loss_own_text``: each clip's own text;
* ``loss_no_text``: the text dropped (the input the model learns with ``dropout.text`` and guidance);
* ``loss_other_text``: another clip's text (clip ``i`` gets clip ``(i + 1) mod N``'s, a derangement).

``text_gain = loss_other_text - loss_own_text`` is positive only when the prediction depends on *which* words are
given; 0 means the model ignores the text, whatever its loss. It moves long before the judge's CER does (the CER
needs the words to come out whole), so the speech recipe's learning curve shows when text alignment begins.
``text_gain_rel`` is the same gain over ``loss_own_text``; ``bins`` holds the same numbers per flow-time bin
(t < 0.3, 0.3-0.7, > 0.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from jam_flow.data.dataset import collate_clips
from jam_flow.errors import InputError
from jam_flow.flow.objective import FlowBatch
from jam_flow.flow.probe import TIME_BINS, TextUseSums, text_use_batch
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.outputs import check_finite

__all__ = ["text_use"]


@torch.no_grad()
def text_use(
    bundle: ModelBundle,
    items: Sequence[dict[str, Any]],
    per_bin: int = 2,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """The audio flow loss with each clip's own text, no text and another clip's text (module docstring).

    ``items`` are ``ClipDataset`` items (``mel``, ``exp``, ``text``); at least 2. ``per_bin`` times per clip and
    flow-time bin. The times and noise come from one CPU generator seeded with ``seed``, so a call is reproducible
    and the three texts see the same draws."""
    if len(items) < 2:
        raise InputError(
            f"text_use: expected at least 2 clips (one's text is another's wrong text), got {len(items)}"
        )
    if batch_size < 1 or per_bin < 1:
        raise InputError(f"text_use: expected batch_size >= 1 and per_bin >= 1, got {batch_size}, {per_bin}")
    net = bundle.joint_net("text2av")
    dev = bundle.device
    count = len(items)
    generator = torch.Generator().manual_seed(seed)
    sums = TextUseSums()
    for start in range(0, count, batch_size):
        idx = list(range(start, min(start + batch_size, count)))
        batch = collate_clips([items[i] for i in idx])
        other = pad_sequence(
            [items[(i + 1) % count]["text"] for i in idx], batch_first=True, padding_value=-1
        )
        mouth = rest = motion_mask = None
        if bundle.has_motion:
            mouth, rest = (x.to(dev) for x in bundle.normalise_motion(batch["exp"]))  # [b, m, dm], [b, m, dr]
            motion_mask = batch["motion_mask"].to(dev)
        fb = FlowBatch(
            audio=bundle.mel_to_model(batch["mel"].float()).to(dev),  # [b, n, c]
            audio_mask=batch["audio_mask"].to(dev),
            text=batch["text"],
            motion=mouth,
            motion_rest=rest,
            motion_mask=motion_mask,
        )
        text_use_batch(net, fb, other, generator, sums, per_bin=per_bin)
    out = sums.result()
    check_finite(
        [out["loss_own_text"], out["loss_no_text"], out["loss_other_text"]], "probe losses", "text2av"
    )
    return {**out, "per_bin": per_bin, "time_bins": [list(b) for b in TIME_BINS], "seed": seed}
