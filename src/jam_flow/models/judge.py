"""The intelligibility judge's network: a small CTC character recogniser over log-mel.

Dimension legend: b batch, n mel frames (93.75 / s), c mel channels (100), t judge frames (``ceil(n / 2)``),
v output classes (blank + characters). Masks are bool, True = valid.

The judge is trained by ``jam-flow train-judge`` (``jam_flow.eval.judge``) on the synthetic corpus's train split
only, and never by the generative model: it scores generated speech (CER / WER) in ``jam-flow evaluate`` and as
``val/cer`` during training. It lives here (a plain ``nn.Module``, layer 2) so that both the evaluation layer and the
Lightning validation callback can load it.

Design (chosen for minutes of CPU training on clean synthetic speech): per-channel standardised log-mel ->
a stride-2 Conv1d (46.9 judge frames per second, enough for CTC at ~20 characters per second) -> residual Conv1d
blocks with dilations 1, 2, 4, 1, 2, ... (five blocks see +-0.43 s) -> optionally one bidirectional GRU
(``rnn_hidden > 0``; off by default: on a CPU it costs ~10x the convolutions) -> a linear layer onto
``blank + charset``. Greedy CTC decoding.

Saved as ``DIR/model.safetensors`` (the state dict, including the mel statistics) + ``DIR/config.json`` (the
constructor arguments and training facts). No pickles.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError

__all__ = ["JudgeConfig", "CTCJudge", "judge_text", "save_judge", "load_judge", "CHARSET"]

CHARSET = " abcdefghijklmnopqrstuvwxyz'"
_NOT_IN_CHARSET = re.compile(r"[^a-z' ]+")


def judge_text(text: str, charset: str = CHARSET) -> str:
    """The text a judge is scored on: lower case, characters outside ``charset`` become spaces, spaces collapsed."""
    text = text.lower()
    if charset == CHARSET:
        text = _NOT_IN_CHARSET.sub(" ", text)
    else:
        text = "".join(ch if ch in charset else " " for ch in text)
    return " ".join(text.split())


@dataclass
class JudgeConfig:
    """Constructor arguments of :class:`CTCJudge` (stored in ``config.json``)."""

    n_mels: int = 100
    channels: int = 128
    conv_blocks: int = 5
    kernel: int = 5
    rnn_hidden: int = 0
    charset: str = CHARSET


class CTCJudge(nn.Module):
    """``forward(mel [b, n, c], mask [b, n]) -> (log_probs [b, t, v], lengths [b])``; class 0 is the CTC blank,
    class ``i + 1`` is ``charset[i]``."""

    def __init__(self, config: JudgeConfig = JudgeConfig()) -> None:
        super().__init__()
        self.config = config
        c, k = config.channels, config.kernel
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        self.front = nn.Conv1d(config.n_mels, c, k, stride=2, padding=k // 2)
        dilations = [2 ** (i % 3) for i in range(config.conv_blocks)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, c), nn.Conv1d(c, c, k, padding=d * (k // 2), dilation=d), nn.GELU())
            for d in dilations
        )
        h = config.rnn_hidden
        self.rnn = nn.GRU(c, h, batch_first=True, bidirectional=True) if h > 0 else None
        self.out = nn.Linear(2 * h if h > 0 else c, len(config.charset) + 1)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return (lengths + 1) // 2  # the stride-2 front end (kernel 5, padding 2)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, n, _ = mel.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=mel.device)
        x = (mel - self.mel_mean) / self.mel_std
        x = (x * mask[..., None]).transpose(1, 2)  # [b, c, n], padding zeroed
        x = torch.nn.functional.gelu(self.front(x))  # [b, ch, t]
        lengths = self.output_lengths(mask.sum(1))
        valid = (torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None])[:, None]  # [b, 1, t]
        for block in self.blocks:
            x = (x + block(x)) * valid
        y = x.transpose(1, 2)  # [b, t, ch]
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                y, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
            )
            y, _ = self.rnn(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[-1])
        return self.out(y).log_softmax(-1), lengths

    def encode(self, text: str) -> list[int]:
        """Normalised text -> class ids (``charset`` index + 1)."""
        return [self.config.charset.index(ch) + 1 for ch in judge_text(text, self.config.charset)]

    @torch.no_grad()
    def transcribe(self, mel: list[Tensor] | Tensor, mask: Tensor | None = None) -> list[str]:
        """Greedy CTC transcripts of a list of ``[n, c]`` mels (or a padded ``[b, n, c]`` batch + mask)."""
        if isinstance(mel, list):
            if not mel:
                return []
            n = max(m.shape[0] for m in mel)
            batch = torch.zeros(len(mel), n, mel[0].shape[-1])
            mask = torch.zeros(len(mel), n, dtype=torch.bool)
            for i, m in enumerate(mel):
                batch[i, : m.shape[0]] = m
                mask[i, : m.shape[0]] = True
            mel = batch
        dev = self.mel_mean.device
        log_probs, lengths = self(mel.float().to(dev), None if mask is None else mask.to(dev))
        best = log_probs.argmax(-1).cpu()
        texts = []
        for row, length in zip(best, lengths.cpu(), strict=True):
            ids = torch.unique_consecutive(row[: int(length)]).tolist()
            texts.append(" ".join("".join(self.config.charset[i - 1] for i in ids if i > 0).split()))
        return texts


def save_judge(out_dir: str | Path, model: CTCJudge, info: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (``{"format": "jam-flow-judge", "version": 1, "model": ...,
    "info": ...}``) into ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, value in state.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"judge weight {name} holds NaN/inf; not saved")
    save_file(state, str(out / "model.safetensors"))
    meta = {"format": "jam-flow-judge", "version": 1, "model": asdict(model.config), "info": info or {}}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> CTCJudge:
    """Load a judge directory written by :func:`save_judge` (strictly; eval mode)."""
    path = Path(path)
    cfg_path, weights = path / "config.json", path / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise InputError(
            f"--judge: {path} is not a judge directory (expected config.json + model.safetensors from "
            "`jam-flow train-judge`)"
        )
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"--judge: {cfg_path} is not valid JSON ({err})") from err
    if meta.get("format") != "jam-flow-judge" or meta.get("version") != 1:
        raise InputError(f"--judge: {cfg_path} is not a version-1 jam-flow judge config")
    from safetensors.torch import load_file

    try:
        model = CTCJudge(JudgeConfig(**meta["model"]))
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (TypeError, RuntimeError, KeyError) as err:
        raise InputError(f"--judge: {path} does not match its config.json ({err})") from err
    return model.to(device).eval()
