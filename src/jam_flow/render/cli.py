"""``jam-flow render``: animate a face image or video with generated motion and mux the speech.

Argument parsing only: every option maps 1:1 onto ``render_talking_head``.
"""

from __future__ import annotations

import argparse
import logging

from jam_flow.errors import ArgumentParser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow render",
        description="Render a talking head with LivePortrait: the source's face with the generated mouth motion, "
        "pasted back into the frame, as an H.264 mp4 with the audio (AAC).",
    )
    p.add_argument(
        "--source", required=True, help="face image (png/jpg) or video (mp4: video-to-video dubbing)"
    )
    p.add_argument(
        "--motion",
        required=True,
        help="generated motion: a directory with motion.npy + motion.json, a .npy [m, 21, 3], or a dataset .npz",
    )
    p.add_argument(
        "--audio", required=True, help="speech to mux (wav); must last as long as the motion (+-1 frame)"
    )
    p.add_argument(
        "--weights",
        required=True,
        help="LivePortrait weights dir (pretrained_weights/liveportrait layout or flat)",
    )
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per network call (default: 8)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--relative",
        dest="relative",
        action="store_true",
        help="mouth = source mouth + (motion_t - motion_0), LivePortrait's relative driving",
    )
    mode.add_argument(
        "--absolute",
        dest="relative",
        action="store_false",
        help="mouth = the generated e_mouth itself (default; the generator's output is an absolute expression)",
    )
    p.set_defaults(relative=False)
    p.add_argument(
        "--no-stitching", dest="stitching", action="store_false", help="skip LivePortrait's stitching"
    )
    p.add_argument(
        "--no-motion-rest",
        dest="use_motion_rest",
        action="store_false",
        help="image source: keep the source's non-mouth expression even when the motion has an e_rest track",
    )
    p.add_argument(
        "--face-model",
        default=None,
        help="face detector: a YuNet .onnx, a Haar .xml, or 'full-frame' (default: OpenCV's bundled Haar cascade)",
    )
    p.add_argument("--crop-scale", type=float, default=2.3, help="crop side / face box side (default 2.3)")
    p.add_argument(
        "--crop-vy", type=float, default=-0.125, help="crop centre shift / crop side, - = up (-0.125)"
    )
    p.add_argument(
        "--box-smoothing", type=int, default=5, help="video: face-box moving-average window (frames)"
    )
    p.add_argument("--feather", type=float, default=0.12, help="paste-back mask soft edge / crop side (0.12)")
    p.add_argument(
        "--half", action="store_true", help="fp16 autocast of the networks on CUDA (no effect on CPU)"
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=256,
        help="network input side (256 for the published LivePortrait weights)",
    )
    p.add_argument("--crf", type=int, default=18, help="H.264 constant rate factor (default 18)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from jam_flow.render.animate import render_talking_head

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    result = render_talking_head(
        source=args.source,
        motion=args.motion,
        audio=args.audio,
        weights_dir=args.weights,
        out_path=args.out,
        device=args.device,
        batch_size=args.batch_size,
        relative=args.relative,
        stitching=args.stitching,
        use_motion_rest=args.use_motion_rest,
        face_model=args.face_model,
        crop_scale=args.crop_scale,
        crop_vy=args.crop_vy,
        box_smoothing=args.box_smoothing,
        feather=args.feather,
        half=args.half,
        crf=args.crf,
        crop_size=args.crop_size,
    )
    if not args.quiet:
        print(
            f"wrote {result.path}: {result.num_frames} frames at {result.fps:g} fps, "
            f"{result.audio_seconds:.2f} s audio ({result.frames_per_second:.2f} frames/s rendering)"
        )
    return 0
