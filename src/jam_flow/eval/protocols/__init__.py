"""The paper's evaluation protocols, one per table (``jam-flow evaluate --protocol NAME``; docs/evaluation.md).

=============  ========  ============================================================  ==========================
protocol       table     data / generation                                              metrics (paper order)
=============  ========  ============================================================  ==========================
talking-head   1         ``--videos`` cut in 20 s chunks; audio -> motion; LivePortrait  FID, FVD, LSE-C, LSE-D
                         render from each chunk's first frame
tts            2         F5-TTS cross-sentence list (``--list``, ``--audio-root``)      WER, SIM-o
dubbing        3         dataset test split: motion + text -> speech                    LSE-C, LSE-D, WER, spkSIM
ablation       4         one row per ``--ckpt``: talking-head part + text2av on the list FID, LSE-C, LSE-D, WER,
                                                                                        SIM-o
=============  ========  ============================================================  ==========================

Each checkpoint is one row, its clips cached under ``OUT/<label>/chunks/`` (video) and ``OUT/<label>/<task>/``
(speech: tts, text2av or dub); results go to ``OUT/result.json`` and
``OUT/table.md``. With ``--devices N`` every rank (Lightning Fabric, DDP) takes every N-th clip and torchmetrics
reduces the metric states; rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from jam_flow.errors import InputError
from jam_flow.eval.protocols.common import (
    PROTOCOL_METRICS,
    ClipCache,
    ProtocolSettings,
    Ranks,
    select_metrics,
)

__all__ = ["PROTOCOLS", "ProtocolSettings", "run_protocol"]

log = logging.getLogger(__name__)

PROTOCOLS = tuple(PROTOCOL_METRICS)
VIDEO_METRICS = ("fid", "fvd", "lse_c", "lse_d")


def _labels(settings: ProtocolSettings) -> list[str]:
    if settings.labels:
        if len(settings.labels) != len(settings.ckpt):
            raise InputError(
                f"--labels: got {len(settings.labels)} labels for {len(settings.ckpt)} checkpoints"
            )
        labels = list(settings.labels)
    elif len(settings.ckpt) == 1:
        labels = ["ours"]
    else:
        labels = [Path(c).stem if Path(c).is_file() else Path(c).name for c in settings.ckpt]
    if len(set(labels)) != len(labels):
        raise InputError(f"--labels: labels must differ per checkpoint, got {labels}")
    bad = [label for label in labels if not label or "/" in label or label.startswith(".")]
    if bad:
        raise InputError(f"--labels: {bad} cannot name a directory")
    return labels


def run_protocol(settings: ProtocolSettings) -> dict[str, Any] | None:
    """Run a protocol; returns the result (rank 0) or None (other ranks). See the module docstring."""
    from jam_flow.eval.protocols.judges import Judges
    from jam_flow.eval.protocols.report import write_outputs
    from jam_flow.eval.protocols.speech import dubbing_items, read_tts_list, run_speech_part
    from jam_flow.eval.protocols.talking_head import modes_of, plan_chunks, run_video_part
    from jam_flow.inference.bundle import load_bundle
    from jam_flow.models.format import check_model_file

    if settings.protocol not in PROTOCOLS:
        raise InputError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {settings.protocol!r}")
    if not settings.ckpt:
        raise InputError("--ckpt: give at least one checkpoint")
    for ckpt in settings.ckpt:  # every checkpoint's fields and class path, before hours of work on the first
        check_model_file(ckpt, "--ckpt")
    if settings.batch_size < 1 or settings.judge_batch < 1 or settings.frame_stride < 1:
        raise InputError("--batch-size / --judge-batch / --frame-stride: expected positive integers")
    metrics = select_metrics(settings)
    labels = _labels(settings)
    video = [m for m in metrics if m in VIDEO_METRICS]
    speech = [m for m in metrics if m not in VIDEO_METRICS]
    chunks, items, speech_task = [], [], None
    modes = modes_of(settings) if settings.protocol in ("talking-head", "ablation") else ("i2v",)
    if settings.protocol in ("talking-head", "ablation") and video:
        if settings.liveportrait is None:
            raise InputError(
                "--liveportrait: rendering for FID / FVD / LSE needs the LivePortrait weights dir"
            )
        chunks = plan_chunks(settings)
    if settings.protocol in ("tts", "ablation") and speech:
        items = read_tts_list(settings)
        speech_task = "tts" if settings.protocol == "tts" else "text2av"
    if settings.protocol == "dubbing":
        items, speech_task = dubbing_items(settings), "dub"
        if settings.videos is None and ("lse_c" in metrics or "lse_d" in metrics):
            raise InputError(
                "--videos: LSE in the dubbing protocol needs the original videos DIR/<clip id>.mp4"
            )
    started = time.perf_counter()
    ranks = Ranks(settings.accelerator, settings.devices)
    judges = Judges(settings, metrics, ranks.device)
    rows = []
    for ckpt, label in zip(settings.ckpt, labels, strict=True):
        bundle = load_bundle(ckpt, ranks.device, stage1_motion=settings.protocol == "talking-head")
        root = Path(settings.out) / label
        speech_part: dict[str, Any] | None = None
        for mode in modes if chunks else (None,):
            name = f"{label} ({mode.upper()})" if chunks and len(modes) > 1 else label
            row: dict[str, Any] = {"label": name, "metrics": {}, "parts": {}}
            if chunks:
                cache = ClipCache(root / ("chunks" if mode == "i2v" else f"chunks_{mode}"))
                part = run_video_part(
                    settings, tuple(video), bundle, ckpt, cache, judges, ranks, chunks, mode
                )
                row["metrics"].update(part.pop("metrics"))
                row["parts"]["video"] = part
            if items:
                if speech_part is None:  # one speech evaluation per checkpoint, shared by its mode rows
                    sub = tuple(m for m in metrics if m in speech or settings.protocol == "dubbing")
                    cache = ClipCache(root / speech_task)
                    speech_part = run_speech_part(
                        speech_task, settings, sub, bundle, ckpt, cache, judges, ranks, items
                    )
                row["metrics"].update(speech_part["metrics"])
                row["parts"][speech_task] = {k: v for k, v in speech_part.items() if k != "metrics"}
            row["metrics"] = {m: row["metrics"][m] for m in metrics if m in row["metrics"]}
            rows.append(row)
            log.info("%s: %s %s", settings.protocol, name, row["metrics"])
    if ranks.rank != 0:
        return None
    payload = settings.to_json()
    payload["wall_s"] = round(time.perf_counter() - started, 2)
    result = write_outputs(settings.out, settings.protocol, rows, payload, settings.compare_paper)
    return result
