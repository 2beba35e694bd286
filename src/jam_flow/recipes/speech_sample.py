"""A listenable sample of a speech model beside the ground truth (``docs/audio/``; docs/evaluation.md).

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
s samples (24 kHz).

    python -m jam_flow.recipes.speech_sample --ckpt CKPT --data-dir data/speech_world --out docs/audio \
        [--clips 8] [--name speech_world]

For the first ``--clips`` test clips (held-out word combinations): text2av from the clip's text alone (no
reference voice; the clip's duration, NFE 32, γ 2, the default guidance, seed 0), vocoded with the model's vocoder
(Griffin-Lim without one). Writes ``NAME_generated.wav`` (the generated sentences one after another, 0.3 s apart),
``NAME_ground_truth.wav`` (the corpus's own audio, same layout), ``NAME.png`` (ground-truth and generated mel,
and the mouth opening of both) and ``NAME.json`` (the texts, times and settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jam_flow.errors import ArgumentParser, InputError
from jam_flow.recipes.common import rel, run_cli, write_json

__all__ = ["main"]

GAP_S = 0.3


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m jam_flow.recipes.speech_sample", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="a joint checkpoint (.ckpt or export dir)")
    p.add_argument("--data-dir", default="data/speech_world", help="dataset whose test clips are spoken")
    p.add_argument("--out", default="docs/audio", help="output folder")
    p.add_argument("--name", default="speech_world", help="file name stem")
    p.add_argument(
        "--clips", type=int, default=8, help="test clips, one after another (default 8: about 10 s)"
    )
    p.add_argument("--nfe", type=int, default=32)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def _write_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    import soundfile as sf

    from jam_flow.atomic import atomic_file

    with atomic_file(path) as tmp:
        sf.write(str(tmp), np.clip(wave, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf
    import torch

    from jam_flow.api.model import JamFlow
    from jam_flow.data.format import load_clip, read_manifest
    from jam_flow.data.synth import mouth_opening

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.clips < 1:
        raise InputError(f"--clips: expected a positive number, got {args.clips}")
    data, out = Path(args.data_dir), Path(args.out)
    records = [r for r in read_manifest(data) if r.split == "test"][: args.clips]
    if not records:
        raise InputError(f"--data-dir: {data} has no test clips")
    torch.manual_seed(args.seed)
    jf = JamFlow.load(args.ckpt, device="cpu")
    sr, fps = None, None
    gen_w, ref_w, gen_mel, ref_mel, gen_open, ref_open, rows = [], [], [], [], [], [], []
    t = 0.0
    for rec in records:
        res = jf.text2av(text=rec.text, duration=rec.duration, nfe=args.nfe, cfg=args.cfg, seed=args.seed)
        sr, fps = res.sample_rate, res.fps
        wave, ref_sr = sf.read(str(data / rec.audio), dtype="float32")
        if ref_sr != sr:
            raise InputError(f"--data-dir: {rec.audio} is {ref_sr} Hz, the model writes {sr} Hz")
        clip = load_clip(data, rec, keys=("mel", "exp"))
        gen_w.append(res.wave)
        ref_w.append(wave)
        gen_mel.append(res.mel.numpy())
        ref_mel.append(clip["mel"])
        gen_open.append(mouth_opening(torch.from_numpy(res.motion).float()).numpy())
        ref_open.append(mouth_opening(torch.from_numpy(clip["exp"]).float()).numpy())
        rows.append(
            {"id": rec.id, "text": rec.text, "start_s": round(t, 3), "duration_s": round(rec.duration, 3)}
        )
        t += max(len(res.wave), len(wave)) / sr + GAP_S

    def joined(parts: list[np.ndarray], rate: float, axis_len: int | None = None) -> np.ndarray:
        """The parts placed at the rows' start times (``rate`` per second), zeros between."""
        total = int(round(t * rate)) + 1
        shape = (total,) if axis_len is None else (total, axis_len)
        outa = np.zeros(shape, np.float32) if axis_len is None else np.full(shape, -11.5, np.float32)
        for row, part in zip(rows, parts, strict=True):
            i = int(round(row["start_s"] * rate))
            outa[i : i + len(part)] = part[: total - i]
        return outa

    gen_wave, ref_wave = joined(gen_w, sr), joined(ref_w, sr)
    frame_rate = jf.bundle.mel.frame_rate
    n_mels = gen_mel[0].shape[1]
    gen_m, ref_m = joined(gen_mel, frame_rate, n_mels), joined(ref_mel, frame_rate, n_mels)
    gen_o, ref_o = joined(gen_open, fps), joined(ref_open, fps)
    for name, x in (("generated audio", gen_wave), ("generated mel", gen_m), ("generated mouth", gen_o)):
        if not np.isfinite(x).all():
            raise RuntimeError(f"the {name} holds NaN or inf")
    out.mkdir(parents=True, exist_ok=True)
    _write_wav(out / f"{args.name}_generated.wav", gen_wave, sr)
    _write_wav(out / f"{args.name}_ground_truth.wav", ref_wave, sr)

    fig, axes = plt.subplots(3, 1, figsize=(11, 6.5), sharex=True)
    extent = (0, len(ref_m) / frame_rate, 0, n_mels)
    lo, hi = np.percentile(np.concatenate(ref_mel), [2, 99.5])  # the ground truth's range, for both
    axes[0].imshow(ref_m.T, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=lo, vmax=hi)
    axes[0].set_title("ground truth (eSpeak NG): log-mel")
    axes[1].imshow(gen_m.T, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=lo, vmax=hi)
    axes[1].set_title("generated from the text alone (text2av): log-mel")
    times = np.arange(len(ref_o)) / fps
    axes[2].plot(times, ref_o, label="ground truth", color="0.4")
    axes[2].plot(times, gen_o, label="generated", color="tab:red")
    axes[2].set_title("mouth opening")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[2].set_xlabel("seconds")
    for ax in axes[:2]:
        ax.set_ylabel("mel bin")
        for row in rows:
            ax.text(row["start_s"], n_mels - 8, row["text"], color="white", fontsize=7, va="top")
    fig.tight_layout()
    png = out / f"{args.name}.png"
    from jam_flow.atomic import atomic_file

    with atomic_file(png) as tmp:
        fig.savefig(tmp, dpi=64, format="png")
    plt.close(fig)
    write_json(
        out / f"{args.name}.json",
        {
            "command": " ".join(["python -m jam_flow.recipes.speech_sample", *(argv or sys.argv[1:])]),
            "ckpt": rel(args.ckpt),
            "data_dir": rel(data),
            "task": "text2av (text alone, the clip's duration)",
            "nfe": args.nfe,
            "cfg": args.cfg,
            "seed": args.seed,
            "vocoder": "Griffin-Lim (the default without a local Vocos)",
            "clips": rows,
            "seconds": round(t, 2),
        },
    )
    print(json.dumps(rows, indent=1))
    print(f"wrote {out}/{args.name}_generated.wav, _ground_truth.wav, .png, .json ({t:.1f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
