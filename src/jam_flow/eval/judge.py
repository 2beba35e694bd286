"""``jam-flow train-judge``: train the intelligibility judge (a small CTC recogniser, ``jam_flow.models.judge``) on
a dataset's train split, and score transcripts with CER / WER (torchmetrics).

Dimension legend: b batch, n mel frames, c mel channels (100), t judge frames. Masks are bool, True = valid.

    jam-flow train-judge --data.data_dir DIR --out judge/ [--steps 1500] [--frames-per-batch 4000] [--lr 2e-3]
                         [--max-minutes 20] [--seed 0]

Only the ``train`` split is read for training (on the synthetic recipe that corpus is built from the training
sentences only, so the judge has never heard a held-out sentence either). The ``val`` split's CER / WER is
measured at the end and stored in ``config.json`` (``info``). Light SpecAugment (two time masks and two frequency
masks per clip) keeps the judge from keying on exact spectral detail.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.models.judge import CHARSET, CTCJudge, JudgeConfig, judge_text, load_judge, save_judge

__all__ = ["error_rates", "train_judge", "main", "load_judge", "judge_text", "JudgeData"]

log = logging.getLogger(__name__)


def error_rates(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus-level CER and WER (torchmetrics: edit operations summed over clips / reference characters or words
    summed over clips), both sides normalised with ``judge_text``."""
    from torchmetrics.text import CharErrorRate, WordErrorRate

    if len(hypotheses) != len(references):
        raise InputError(f"transcripts: {len(hypotheses)} hypotheses for {len(references)} references")
    hyp = [judge_text(h) for h in hypotheses]
    ref = [judge_text(r) for r in references]
    if not any(ref):
        raise InputError("transcripts: every reference text is empty after normalisation")
    return {"cer": float(CharErrorRate()(hyp, ref)), "wer": float(WordErrorRate()(hyp, ref))}


class JudgeData:
    """The clips of one split in memory: ``mels`` (list of ``[n, c]``), ``targets`` (class ids), ``texts``."""

    def __init__(self, data_dir: str | Path, split: str, charset: str = CHARSET) -> None:
        from jam_flow.data.format import ClipError, load_clip, read_manifest

        self.data_dir = Path(data_dir)
        if not (self.data_dir / "manifest.jsonl").is_file():
            raise InputError(f"--data.data_dir: {self.data_dir} holds no manifest.jsonl (expected a dataset)")
        self.mels: list[Tensor] = []
        self.targets: list[list[int]] = []
        self.texts: list[str] = []
        self.skipped: list[str] = []
        for rec in read_manifest(self.data_dir, split=split):
            text = judge_text(rec.text, charset)
            try:
                mel = torch.from_numpy(load_clip(self.data_dir, rec)["mel"]).float()
            except ClipError as err:
                log.warning("train-judge: skipping clip %s (%s)", rec.id, err)
                self.skipped.append(rec.id)
                continue
            ids = [charset.index(ch) + 1 for ch in text]
            if not ids or (mel.shape[0] + 1) // 2 < 2 * len(ids):  # CTC needs room for the text (and blanks)
                self.skipped.append(rec.id)
                continue
            self.mels.append(mel)
            self.targets.append(ids)
            self.texts.append(text)

    def __len__(self) -> int:
        return len(self.mels)

    def batches(self, frames: int, generator: torch.Generator) -> list[list[int]]:
        """Length-sorted batches of at most ``frames`` padded mel frames, in a random order."""
        order = sorted(range(len(self)), key=lambda i: self.mels[i].shape[0])
        out: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            if cur and (len(cur) + 1) * self.mels[i].shape[0] > frames:
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        perm = torch.randperm(len(out), generator=generator).tolist()
        return [out[k] for k in perm]


def _pad(mels: list[Tensor]) -> tuple[Tensor, Tensor]:
    n = max(m.shape[0] for m in mels)
    x = torch.zeros(len(mels), n, mels[0].shape[-1])
    mask = torch.zeros(len(mels), n, dtype=torch.bool)
    for i, m in enumerate(mels):
        x[i, : m.shape[0]] = m
        mask[i, : m.shape[0]] = True
    return x, mask


def _spec_augment(x: Tensor, mask: Tensor, fill: Tensor, generator: torch.Generator) -> Tensor:
    """Two time masks (<= 8 frames) and two channel masks (<= 8 channels) per clip, filled with the mel mean."""
    x = x.clone()
    b, n, c = x.shape
    for i in range(b):
        length = int(mask[i].sum())
        for _ in range(2):
            w = int(torch.randint(0, 9, (1,), generator=generator))
            s = int(torch.randint(0, max(length - w, 1), (1,), generator=generator))
            x[i, s : s + w] = fill
            w = int(torch.randint(0, 9, (1,), generator=generator))
            s = int(torch.randint(0, c - w, (1,), generator=generator))
            x[i, :, s : s + w] = fill[s : s + w]
    return x


def evaluate_judge(model: CTCJudge, data: JudgeData, batch: int = 16) -> dict[str, float]:
    """CER / WER of the judge on ``data`` (its own ground-truth mels)."""
    model.eval()
    hyps: list[str] = []
    for start in range(0, len(data), batch):
        hyps += model.transcribe(data.mels[start : start + batch])
    return error_rates(hyps, data.texts)


def train_judge(
    data_dir: str | Path,
    out_dir: str | Path,
    steps: int = 1500,
    frames_per_batch: int = 4000,
    lr: float = 2e-3,
    seed: int = 0,
    max_minutes: float | None = None,
    config: JudgeConfig = JudgeConfig(),
    log_every: int = 50,
) -> dict[str, Any]:
    """Train a judge on ``data_dir``'s train split and save it in ``out_dir``; returns the saved ``info``."""
    from jam_flow.data.format import read_stats

    if steps < 1 or frames_per_batch < 1 or lr <= 0:
        raise InputError("--steps / --frames-per-batch / --lr: expected positive values")
    started = time.perf_counter()
    torch.manual_seed(seed)
    train = JudgeData(data_dir, "train", config.charset)
    if len(train) == 0:
        raise InputError(f"--data.data_dir: {data_dir} has no usable clip in its train split")
    val = JudgeData(data_dir, "val", config.charset)
    model = CTCJudge(config)
    stats = read_stats(Path(data_dir))
    model.mel_mean.copy_(torch.as_tensor(stats["mel_mean"], dtype=torch.float32))
    model.mel_std.copy_(torch.as_tensor(stats["mel_std"], dtype=torch.float32).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(100, steps // 10)

    def factor(step: int) -> float:  # linear warm-up, then cosine down to 10 %
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    gen = torch.Generator().manual_seed(seed)
    step, epoch, losses = 0, 0, []
    while step < steps:
        for idx in train.batches(frames_per_batch, gen):
            model.train()
            x, mask = _pad([train.mels[i] for i in idx])
            x = _spec_augment(x, mask, model.mel_mean, gen)
            log_probs, lengths = model(x, mask)
            targets = torch.cat([torch.tensor(train.targets[i]) for i in idx])
            target_lengths = torch.tensor([len(train.targets[i]) for i in idx])
            loss = ctc(log_probs.transpose(0, 1), targets, lengths, target_lengths)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % log_every == 0:
                log.info("train-judge: step %d, ctc loss %.3f", step, sum(losses[-log_every:]) / log_every)
            if step >= steps or (
                max_minutes is not None and time.perf_counter() - started > 60 * max_minutes
            ):
                break
        epoch += 1
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            break
    info: dict[str, Any] = {
        "data_dir": str(data_dir),
        "train_clips": len(train),
        "skipped_clips": len(train.skipped),
        "steps": step,
        "epochs": epoch,
        "first_ctc_loss": sum(losses[:log_every]) / max(len(losses[:log_every]), 1),
        "final_ctc_loss": sum(losses[-log_every:]) / max(len(losses[-log_every:]), 1),
        "frames_per_batch": frames_per_batch,
        "lr": lr,
        "seed": seed,
        "train_wall_s": round(time.perf_counter() - started, 1),
    }
    if len(val):
        info.update({f"val_{k}": v for k, v in evaluate_judge(model, val).items()})
        info["val_clips"] = len(val)
    save_judge(out_dir, model, info)
    return info


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jam-flow train-judge",
        description="Train the intelligibility judge (a small CTC recogniser, log-mel -> characters) on a "
        "dataset's train split; writes model.safetensors + config.json (docs/evaluation.md).",
    )
    p.add_argument("--data.data_dir", dest="data_dir", required=True, help="dataset directory (format v1)")
    p.add_argument("--out", required=True, help="output directory (model.safetensors + config.json)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    p.add_argument("--frames-per-batch", type=int, default=4000, help="padded mel frames per batch")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW; default 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and masks")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--channels", type=int, default=JudgeConfig.channels, help="conv width (default 128)")
    p.add_argument("--conv-blocks", type=int, default=JudgeConfig.conv_blocks, help="residual conv blocks")
    p.add_argument(
        "--rnn-hidden", type=int, default=JudgeConfig.rnn_hidden, help="GRU size per direction (0: none)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.channels < 1 or args.conv_blocks < 1 or args.rnn_hidden < 0:
        raise InputError("--channels / --conv-blocks: expected positive sizes; --rnn-hidden: >= 0")
    info = train_judge(
        args.data_dir,
        args.out,
        steps=args.steps,
        frames_per_batch=args.frames_per_batch,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        config=JudgeConfig(channels=args.channels, conv_blocks=args.conv_blocks, rnn_hidden=args.rnn_hidden),
    )
    val = f", val CER {info['val_cer']:.3f} / WER {info['val_wer']:.3f}" if "val_cer" in info else ""
    print(f"train-judge: {info['steps']} steps in {info['train_wall_s']:.0f} s{val}; wrote {args.out}")
    return 0
