"""``jam-flow evaluate --protocol talking-head|tts|dubbing|ablation``: argument handling (docs/evaluation.md).

Argument parsing only; the protocols are ``eval.protocols``.

    jam-flow evaluate --protocol NAME --ckpt CKPT [CKPT ...] --out DIR [--metrics fid,lse_c] [--compare-paper]
        [data: --videos DIR | --list FILE --audio-root DIR | --data.data_dir DIR] [judges: --inception PATH
        --i3d PATH --syncnet PATH --asr DIR --speaker-model PATH --vocoder DIR --liveportrait DIR]
        [--devices N --accelerator auto|cpu|gpu]
"""

from __future__ import annotations

import argparse
import logging

from jam_flow.errors import ArgumentParser, InputError
from jam_flow.eval.protocols.common import PROTOCOL_METRICS, ProtocolSettings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow evaluate --protocol",
        description="Run one of the paper's evaluation protocols (Tables 1-4) and write OUT/result.json + "
        "OUT/table.md (docs/evaluation.md).",
    )
    p.add_argument("--protocol", required=True, choices=tuple(PROTOCOL_METRICS), help="which table")
    p.add_argument("--ckpt", required=True, nargs="+", help="checkpoint(s) or export dir(s): one row each")
    p.add_argument("--labels", nargs="+", default=None, help="row names (default: ours / checkpoint names)")
    p.add_argument("--out", required=True, help="output directory (result.json, table.md, per-clip cache)")
    p.add_argument("--metrics", default=None, help="comma-separated subset, e.g. fid,lse_c (default: all)")
    p.add_argument("--compare-paper", action="store_true", help="put the paper's rows beside ours")
    g = p.add_argument_group("data")
    g.add_argument("--videos", default=None, help="talking-head/ablation: test videos; dubbing: DIR/<id>.mp4")
    g.add_argument("--list", dest="list_file", default=None, help="tts/ablation: F5-TTS cross-sentence list")
    g.add_argument("--audio-root", default=None, help="tts/ablation: LibriSpeech test-clean root")
    g.add_argument("--data.data_dir", dest="data_dir", default=None, help="dubbing: dataset (format v1)")
    g.add_argument("--split", default="test", choices=("train", "val", "test"), help="dubbing split")
    g.add_argument("--max-clips", type=int, default=None, help="only the first N clips / chunks / items")
    g.add_argument("--chunk-seconds", type=float, default=20.0, help="talking-head chunk length (20 s)")
    g.add_argument("--min-chunk-seconds", type=float, default=2.0, help="shortest trailing chunk kept (2 s)")
    g.add_argument(
        "--mode",
        choices=("i2v", "v2v", "both"),
        default=None,
        help="talking-head rendering: I2V (first frame), V2V (the chunk's frames) or both rows (default: both; "
        "ablation: i2v)",
    )
    g.add_argument(
        "--clue",
        choices=("e_rest", "none"),
        default="e_rest",
        help="talking-head: give the model the chunk's own non-mouth keypoints (the paper's e_rest clue) or "
        "none (mouth only)",
    )
    g.add_argument(
        "--audio-features-model",
        default=None,
        help="talking-head with a stage-1 Motion-DiT (the Ours-Stage1 row): the local wav2vec2 / HuBERT directory "
        "its features came from (jam-flow audio-features); without it a mel-feature stage-1 model runs",
    )
    g.add_argument(
        "--audio-features-layer", type=int, default=-1, help="its hidden state (default -1: the last layer)"
    )
    g.add_argument(
        "--dub-reference",
        choices=("same-speaker", "none"),
        default="same-speaker",
        help="dubbing voice: another clip of the same speaker, or no reference",
    )
    g = p.add_argument_group("sampling")
    g.add_argument("--nfe", type=int, default=32, help="network evaluations per sample (paper: 32)")
    g.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale (paper: 2)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    g.add_argument("--batch-size", type=int, default=8, help="talking-head chunks per sampler call")
    g = p.add_argument_group("judges (local files only)")
    g.add_argument("--inception", default=None, help="FID: weights-inception-2015-12-05-6726825d.pth")
    g.add_argument("--fid-feature", type=int, default=2048, help="Inception feature for FID (2048)")
    g.add_argument("--frame-stride", type=int, default=1, help="FID on every N-th frame (default 1)")
    g.add_argument("--fvd-frames", type=int, default=16, help="frames per FVD clip (16: FVD_16)")
    g.add_argument("--i3d", default=None, help="FVD: i3d_torchscript.pt (StyleGAN-V)")
    g.add_argument("--syncnet", default=None, help="LSE-C / LSE-D: syncnet_v2.model")
    g.add_argument("--lse-crop", default=None, help="face box x0,y0,x1,y1 for SyncNet (default: whole frame)")
    g.add_argument("--asr", default=None, help="WER: local transformers Whisper (or CTC) directory")
    g.add_argument("--speaker-model", default=None, help="SIM-o / spkSIM: TorchScript or x-vector dir")
    g.add_argument("--speaker-sr", type=int, default=16000, help="sample rate of a TorchScript speaker model")
    g.add_argument("--vocoder", default=None, help="Vocos directory (default: Griffin-Lim, announced)")
    g.add_argument("--liveportrait", default=None, help="LivePortrait weights dir (rendering)")
    g.add_argument("--face-model", default=None, help="render face detector (default Haar; full-frame)")
    g.add_argument("--render-crop-size", type=int, default=256, help="LivePortrait crop (256)")
    g.add_argument("--judge-batch", type=int, default=16, help="frames / clips per judge call (16)")
    g = p.add_argument_group("processes")
    g.add_argument("--devices", type=int, default=1, help="processes / GPUs (Lightning Fabric, DDP)")
    g.add_argument("--accelerator", default="auto", help="auto | cpu | gpu (Lightning names)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str]) -> int:
    from jam_flow.eval.protocols import run_protocol

    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.max_clips is not None and args.max_clips < 1:
        raise InputError(f"--max-clips: expected a positive number, got {args.max_clips}")
    if args.fvd_frames < 2:
        raise InputError(f"--fvd-frames: expected at least 2 frames, got {args.fvd_frames}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    extra = {"face_model": args.face_model, "fvd_frames": args.fvd_frames}
    skip = {"verbose", "metrics", "face_model", "fvd_frames"}
    fields = {k: v for k, v in vars(args).items() if k not in skip}
    settings = ProtocolSettings(metrics=metrics, extra=extra, **fields)
    result = run_protocol(settings)
    if result is None:  # not rank 0
        return 0
    for row in result["rows"]:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items() if v is not None)
        print(f"{settings.protocol} {row['label']}: {summary}")
    print(f"wrote {settings.out}/result.json and {settings.out}/table.md")
    return 0
