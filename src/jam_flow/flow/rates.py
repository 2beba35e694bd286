"""Measured rates of the conditioning dropout: each condition's marginal drop rate and each guidance configuration's
rate within its layout (paper appendix A; docs/training.md "Conditioning dropout and guidance").

Dimension legend: b samples drawn. Switches are ``[b]`` bool (``drop_*`` True = dropped, ``*_sees_*`` True = joint
attention on); masks elsewhere mean True = valid.

Layouts are the scenarios of :class:`~jam_flow.flow.masking.MaskConfig` (``both``: text2av, ``motion``:
audio2motion, ``audio``: dub / motion2audio) and ``motion_absent`` (a hidden audio stream whose joint attention is
off: how a JointDiT runs plain ``tts``). Guidance configurations, each as the sampler feeds its unconditional
prediction (:func:`jam_flow.flow.guidance.unconditional_flags`):

* ``joint``: the joint attention of every hidden branch off (other conditions as drawn);
* ``joint_cond``: the same with every condition of a hidden stream kept (reference mel, text, masked motion), the
  exact unconditional input of ``--guidance joint`` next to a conditional pass that has them all;
* ``f5``: hidden audio without reference mel and text, hidden motion without masked motion and e_rest, joint on;
* ``tts``: (``motion_absent`` only) reference mel and text dropped: the unconditional input of ``tts`` guidance.

``python -m jam_flow.flow.rates configs/stage2.yaml`` prints the table for a training config.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from jam_flow.errors import InputError
from jam_flow.flow.masking import (
    AUDIO_ONLY,
    BOTH,
    MOTION_ONLY,
    DropoutConfig,
    MaskConfig,
    sample_dropout,
    sample_scenarios,
)

__all__ = ["MARGINALS", "measure_dropout_rates", "rates_table", "main"]

# condition -> its drop switch (True = dropped)
MARGINALS = {
    "text": "drop_text",
    "cond_audio": "drop_audio_cond",
    "cond_motion": "drop_motion_cond",
    "rest_motion": "drop_rest",
}


def measure_dropout_rates(
    dropout: DropoutConfig, masking: MaskConfig, samples: int = 200_000, seed: int = 0
) -> dict[str, Any]:
    """``{"marginal": {condition: rate}, "guidance": {layout: {configuration: rate}}, "layout_share": {...}}``
    from ``samples`` draws of :func:`~jam_flow.flow.masking.sample_dropout` (vectorised, one call)."""
    g = torch.Generator().manual_seed(seed)
    scen = sample_scenarios(samples, masking, g)
    a_hid, m_hid = scen != MOTION_ONLY, scen != AUDIO_ONLY
    f = sample_dropout(samples, dropout, g, a_hid, m_hid)
    a_off = a_hid & ~f.audio_sees_motion
    joint_off = (~a_hid | ~f.audio_sees_motion) & (~m_hid | ~f.motion_sees_audio)
    joint_on = f.audio_sees_motion & f.motion_sees_audio
    marginal = {name: f.__dict__[sw].double().mean().item() for name, sw in MARGINALS.items()}
    marginal["joint_attention"] = (~f.audio_sees_motion | ~f.motion_sees_audio).double().mean().item()
    audio_kept = ~a_hid | (~f.drop_audio_cond & ~f.drop_text)
    motion_kept = ~m_hid | ~f.drop_motion_cond
    f5 = (
        joint_on
        & (~a_hid | (f.drop_audio_cond & f.drop_text))
        & (~m_hid | (f.drop_motion_cond & f.drop_rest))
    )

    def rate(event: torch.Tensor, within: torch.Tensor) -> float:
        return (event & within).double().sum().item() / max(int(within.sum()), 1)

    guidance: dict[str, dict[str, float]] = {}
    share: dict[str, float] = {}
    for name, code in (("both", BOTH), ("motion", MOTION_ONLY), ("audio", AUDIO_ONLY)):
        within = scen == code
        share[name] = within.double().mean().item()
        guidance[name] = {
            "joint": rate(joint_off, within),
            "joint_cond": rate(joint_off & audio_kept & motion_kept, within),
            "f5": rate(f5, within),
        }
    share["motion_absent"] = a_off.double().mean().item()
    guidance["motion_absent"] = {"tts": rate(f.drop_audio_cond & f.drop_text, a_off)}
    return {"samples": samples, "marginal": marginal, "guidance": guidance, "layout_share": share}


def rates_table(measured: dict[str, Any]) -> str:
    """Markdown tables of :func:`measure_dropout_rates`."""
    m = measured["marginal"]
    lines = ["| condition | marginal drop rate |", "|---|---|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in m.items()]
    lines += ["", "| layout (share of samples) | configuration | rate within the layout |", "|---|---|---|"]
    for layout, confs in measured["guidance"].items():
        for conf, v in confs.items():
            lines.append(f"| {layout} ({measured['layout_share'][layout]:.3f}) | `{conf}` | {v:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import yaml

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise InputError("usage: python -m jam_flow.flow.rates CONFIG.yaml")
    path = Path(args[0])
    try:
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        dropout = DropoutConfig(**(model.get("dropout") or {}))
        masking = MaskConfig(**(model.get("masking") or {}))
    except (OSError, yaml.YAMLError, TypeError, ValueError) as err:
        raise InputError(
            f"{path}: expected a training config with model.dropout / model.masking ({err})"
        ) from err
    print(rates_table(measure_dropout_rates(dropout, masking)))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
