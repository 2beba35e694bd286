"""``jam-flow evaluate``: generate on a held-out split and write sync / audio metrics as JSON (+ TensorBoard).

Argument handling only; the evaluation is ``eval.evaluate``.

    jam-flow evaluate --ckpt CKPT --data.data_dir DIR --task audio2motion|motion2audio|dub|text2av|tts --out FILE.json
        [--split test] [--max-clips N] [--nfe 32] [--cfg 2.0] [--guidance joint] [--seed 0] [--tb-dir DIR] ...
    jam-flow evaluate --protocol talking-head|tts|dubbing|ablation ...   (eval.protocols.cli)
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from jam_flow.api.batch import EVAL_TASKS
from jam_flow.atomic import atomic_file, check_out_file
from jam_flow.errors import ArgumentParser, InputError
from jam_flow.eval.evaluate import EvalSettings, evaluate

__all__ = ["main", "build_parser", "write_tensorboard"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow evaluate",
        description="Generate on a held-out split for one task and report lip-sync / audio metrics "
        "(docs/evaluation.md). The paper's tables: `jam-flow evaluate --protocol "
        "talking-head|tts|dubbing|ablation --help`.",
    )
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt from `jam-flow fit` or an export directory")
    p.add_argument("--data.data_dir", dest="data_dir", required=True, help="dataset directory (format v1)")
    p.add_argument("--task", required=True, choices=EVAL_TASKS, help="what to generate")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="manifest split (default test)"
    )
    p.add_argument("--max-clips", type=int, default=None, help="evaluate the first N clips of the split")
    p.add_argument(
        "--nfe", type=int, default=32, help="network evaluations per sample (default 32, as the paper)"
    )
    p.add_argument(
        "--cfg", type=float, default=2.0, help="classifier-free guidance scale (default 2, as the paper)"
    )
    p.add_argument(
        "--guidance",
        choices=("joint", "f5", "all"),
        default="joint",
        help="what the unconditional prediction drops (as `jam-flow generate --guidance`; default joint)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise and shuffled-pairs seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="clips generated together (default 8)")
    p.add_argument(
        "--max-lag", type=int, default=10, help="A/V offset search range in motion frames (default 10)"
    )
    p.add_argument(
        "--rest-motion",
        action="store_true",
        help="audio2motion: give the clip's own e_rest (the paper's V2V clue) instead of dropping it",
    )
    p.add_argument(
        "--text2av-duration",
        choices=("reference", "text"),
        default="reference",
        help="text2av length: the reference clip's, or the chars-per-second rule of `generate`",
    )
    p.add_argument(
        "--mouth-opening",
        choices=("auto", "synth", "pca"),
        default="auto",
        help="mouth-opening signal: synth (synthetic corpus), pca (first principal component), auto",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--tb-dir", default=None, help="also write the numbers as TensorBoard scalars here")
    p.add_argument("--vocoder", default=None, help="local Vocos directory for WER / speaker similarity audio")
    p.add_argument("--asr", default=None, help="local transformers ASR directory (Whisper or CTC) -> WER")
    p.add_argument(
        "--speaker-model",
        default=None,
        help="TorchScript file or transformers x-vector directory -> speaker similarity",
    )
    p.add_argument(
        "--speaker-sr", type=int, default=16000, help="sample rate the TorchScript speaker model expects"
    )
    p.add_argument("--syncnet", default=None, help="syncnet_v2.model -> LSE-C / LSE-D (needs --videos)")
    p.add_argument(
        "--videos", default=None, help="directory of <clip id>.mp4 + <clip id>.wav renders for LSE"
    )
    p.add_argument(
        "--lse-crop", default=None, help="face box x0,y0,x1,y1 in the videos (default: whole frame)"
    )
    p.add_argument(
        "--judge",
        default=None,
        help="judge directory from `jam-flow train-judge` -> cer, wer (+ *_ground_truth) of the generated speech",
    )
    p.add_argument(
        "--pocketsphinx",
        choices=("auto", "on", "off"),
        default="auto",
        help="with --judge: also pocketsphinx WER on the vocoded speech (auto: when the package is installed)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def write_tensorboard(result: dict, tb_dir: str | Path) -> None:
    """Scalars ``eval/<task>/<name>``, ``eval/<task>/shuffled/<name>`` and ``eval/<task>/ground_truth/<name>``."""
    from torch.utils.tensorboard import SummaryWriter

    task = result["task"]
    with SummaryWriter(str(tb_dir)) as writer:
        for section, prefix in (
            ("metrics", ""),
            ("shuffled", "shuffled/"),
            ("ground_truth", "ground_truth/"),
        ):
            for name, value in result[section].items():
                if value is not None:
                    writer.add_scalar(f"eval/{task}/{prefix}{name}", value, 0)


def main(argv: list[str]) -> int:
    if any(a == "--protocol" or a.startswith("--protocol=") for a in argv):  # the paper's tables
        from jam_flow.eval.protocols.cli import main as protocol_main

        return protocol_main(argv)
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.max_clips is not None and args.max_clips < 2:
        raise InputError(
            f"--max-clips: expected at least 2 clips (for the shuffled baseline), got {args.max_clips}"
        )
    if args.max_lag < 0:
        raise InputError(f"--max-lag: expected a non-negative number of frames, got {args.max_lag}")
    settings = EvalSettings(
        ckpt=args.ckpt,
        data_dir=args.data_dir,
        task=args.task,
        split=args.split,
        max_clips=args.max_clips,
        nfe=args.nfe,
        cfg=args.cfg,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        max_lag=args.max_lag,
        use_rest=args.rest_motion,
        text2av_duration=args.text2av_duration,
        mouth_opening=args.mouth_opening,
        device=args.device,
        vocoder=args.vocoder,
        asr=args.asr,
        speaker_model=args.speaker_model,
        speaker_sr=args.speaker_sr,
        syncnet=args.syncnet,
        videos=args.videos,
        lse_crop=args.lse_crop,
        judge=args.judge,
        pocketsphinx=args.pocketsphinx,
    )
    out = check_out_file(args.out)  # before the evaluation, not after it
    result = evaluate(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.tb_dir is not None:
        write_tensorboard(result, args.tb_dir)
    summary = ", ".join(f"{k}={v:.3f}" for k, v in result["metrics"].items() if isinstance(v, float))
    print(f"{result['task']} on {result['clips']} clips: {summary}")
    print(f"wrote {out}")
    return 0
