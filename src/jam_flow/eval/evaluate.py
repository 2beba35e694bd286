"""Generate on a held-out split and measure sync (the engine of ``jam-flow evaluate``; docs/evaluation.md).

Dimension legend: b batch (clips), n mel frames, c mel channels (100), m motion frames (25 / s), k keypoints (21).
Masks are bool, True = valid.

Signals per clip: the *mouth opening* (a scalar per motion frame computed from the LivePortrait ``exp``) and the
*speech envelope* (``signals.speech_envelope``: mean log mel power per motion frame through the exact frame
mapping). Mouth opening is ``jam_flow.data.synth.mouth_opening`` on the synthetic corpus (its exact ground-truth
articulation) and, on other data, the projection of the 12 mouth coordinates on their first principal component
over the evaluated reference clips, signed so that it correlates positively with the reference envelope.

Result sections (all plain floats): ``metrics`` (the task's metrics), ``shuffled`` (the same metrics on mismatched
pairs: clip ``i``'s generated stream against clip ``pi(i)``'s reference, ``pi`` a seeded derangement, cropped to the
common length), ``ground_truth`` (reference mouth vs reference speech: what the data itself scores).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from jam_flow.api.batch import EVAL_TASKS, generate_batch
from jam_flow.data.dataset import ClipDataset, collate_clips
from jam_flow.data.format import read_dataset_json, read_manifest
from jam_flow.errors import InputError
from jam_flow.eval.metrics import (
    AVOffset,
    ClipCorrelation,
    DurationError,
    LipSyncScores,
    MelDistance,
    MouthKeypointL2,
    SpeakerSimilarity,
)
from jam_flow.eval.signals import speech_envelope
from jam_flow.eval.speech import intelligibility_metrics, timing_metrics
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference.bundle import ModelBundle, load_bundle

__all__ = ["EvalSettings", "evaluate", "MouthOpening"]

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Everything ``jam-flow evaluate`` takes (see ``eval.cli`` for the flags)."""

    ckpt: str
    data_dir: str
    task: Literal["audio2motion", "motion2audio", "dub", "text2av", "tts"]
    split: str = "test"
    max_clips: int | None = None
    nfe: int = 32
    cfg: float = 2.0
    guidance: Literal["joint", "f5", "all"] = "joint"
    seed: int = 0
    batch_size: int = 8
    max_lag: int = 10
    use_rest: bool = False
    text2av_duration: Literal["reference", "text"] = "reference"
    mouth_opening: Literal["auto", "synth", "pca"] = "auto"
    device: str = "cpu"
    vocoder: str | None = None
    asr: str | None = None
    speaker_model: str | None = None
    speaker_sr: int = 16000
    syncnet: str | None = None
    videos: str | None = None
    lse_crop: str | None = None
    judge: str | None = None
    pocketsphinx: Literal["auto", "on", "off"] = "auto"


class MouthOpening:
    """Scalar mouth opening ``exp [..., k, 3] -> [...]`` (see the module docstring)."""

    def __init__(self, kind: str, mouth_indices: tuple[int, ...]) -> None:
        self.kind = kind
        self.idx = list(mouth_indices)
        self.mean: Tensor | None = None
        self.direction: Tensor | None = None

    def fit(self, ref_exp: list[Tensor], ref_env: list[Tensor]) -> None:
        """PCA on the reference mouth coordinates (``[m, k, 3]`` per clip); sign from the reference envelope."""
        if self.kind != "pca":
            return
        x = torch.cat([e[:, self.idx].reshape(e.shape[0], -1) for e in ref_exp]).double()  # [frames, 12]
        self.mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - self.mean, full_matrices=False)
        self.direction = v[0]
        opening = torch.cat([self(e)[: env.shape[0]] for e, env in zip(ref_exp, ref_env, strict=True)])
        env = torch.cat([env[: e.shape[0]] for e, env in zip(ref_exp, ref_env, strict=True)])
        if torch.corrcoef(torch.stack([opening.double(), env.double()]))[0, 1] < 0:
            self.direction = -self.direction

    def __call__(self, exp: Tensor) -> Tensor:
        if self.kind == "synth":
            from jam_flow.data.synth import mouth_opening

            return mouth_opening(exp.float())
        if self.mean is None:
            raise RuntimeError("MouthOpening(kind='pca') must be fitted on the reference clips first")
        flat = exp[..., self.idx, :].reshape(*exp.shape[:-2], -1).double()
        return ((flat - self.mean) @ self.direction).float()


def _pad(signals: list[Tensor]) -> tuple[Tensor, Tensor]:
    """List of 1-D signals -> ``([b, t], mask [b, t])``."""
    t = max(s.shape[0] for s in signals)
    out = torch.zeros(len(signals), t)
    mask = torch.zeros(len(signals), t, dtype=torch.bool)
    for i, s in enumerate(signals):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def _derangement(count: int, seed: int) -> list[int]:
    """A seeded permutation without fixed points: a random order, each clip paired with the next one in it."""
    if count < 2:
        raise InputError(f"--max-clips: the shuffled baseline needs at least 2 clips, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    pi = np.empty(count, dtype=np.int64)
    pi[order] = np.roll(order, -1)
    return pi.tolist()


def _offset_section(metric: AVOffset, prefix: str = "") -> dict[str, float]:
    out = metric.compute()
    return {
        f"{prefix}offset_frames": out["offset_frames"],
        f"{prefix}offset_mean_abs": out["mean_abs_offset"],
        f"{prefix}offset_within_one": out["within_one_frame"],
        f"{prefix}av_peak_corr": out["peak_corr"],
        f"{prefix}av_corr_at_zero": out["corr_at_zero"],
    }


def _load_items(settings: EvalSettings, bundle: ModelBundle) -> tuple[list[dict[str, Any]], list[str], str]:
    data_dir = Path(settings.data_dir)
    info = read_dataset_json(data_dir)
    if info.mel != bundle.mel or info.motion != bundle.motion:
        raise InputError(
            f"--data.data_dir: {data_dir} uses mel {info.mel} / motion {info.motion}, but the model was "
            f"trained with mel {bundle.mel} / motion {bundle.motion}"
        )
    records = read_manifest(data_dir, split=settings.split)
    if not records:
        raise InputError(f"--split: {data_dir} has no clips in split {settings.split!r}")
    if settings.max_clips is not None:
        if settings.max_clips < 2:
            raise InputError(
                f"--max-clips: expected at least 2 clips (for the shuffled baseline), got {settings.max_clips}"
            )
        records = records[: settings.max_clips]
    dataset = ClipDataset(data_dir, records, bundle.vocab, bundle.mel, bundle.motion)
    items, skipped = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if item is None or "error" in item:
            skipped.append(records[i].id)
            log.warning(
                "evaluate: skipping clip %s (%s)", records[i].id, (item or {}).get("error", "unreadable")
            )
            continue
        items.append(item)
    return items, skipped, info.source


def evaluate(settings: EvalSettings) -> dict[str, Any]:
    """Run the evaluation; returns the JSON-ready result (see the module docstring)."""
    if settings.task not in EVAL_TASKS:
        raise InputError(f"--task: expected one of {', '.join(EVAL_TASKS)}, got {settings.task!r}")
    if settings.batch_size < 1:
        raise InputError(f"--batch-size: expected a positive number of clips, got {settings.batch_size}")
    if settings.judge is not None and settings.task == "audio2motion":
        raise InputError("--judge: task audio2motion generates no speech (use dub, motion2audio or text2av)")
    if settings.videos is not None and settings.syncnet is None:
        raise InputError("--videos: LSE needs --syncnet PATH (the syncnet_v2.model checkpoint)")
    try:
        sampler = SamplerSettings(nfe=settings.nfe, cfg=settings.cfg, guidance=settings.guidance)
    except ValueError as err:
        raise InputError(f"--nfe/--cfg/--guidance: {err}") from err
    started = time.perf_counter()
    bundle = load_bundle(settings.ckpt, settings.device)
    items, skipped, source = _load_items(settings, bundle)
    if len(items) < 2:
        raise InputError(
            f"--data.data_dir: only {len(items)} readable clip(s) in split {settings.split!r}; need >= 2"
        )
    kind = settings.mouth_opening
    if kind == "auto":
        kind = "synth" if source == "synth" else "pca"
    opening = MouthOpening(kind, bundle.motion.mouth_indices)

    # generation, in batches of similar length
    order = sorted(range(len(items)), key=lambda i: items[i]["mel"].shape[0])
    generator = torch.Generator().manual_seed(settings.seed)
    # tts: clip i speaks after clip voice_of[i]'s audio (its reference voice; another derangement than the
    # shuffled baseline's)
    voice_of = _derangement(len(items), settings.seed + 1) if settings.task == "tts" else None
    per_clip: list[dict[str, Any]] = [{} for _ in items]
    nfe_used = 0
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        batch = collate_clips([items[i] for i in chunk])
        gen = generate_batch(
            bundle,
            batch,
            settings.task,
            sampler,
            generator,
            use_rest=settings.use_rest,
            duration=settings.text2av_duration,
            reference=collate_clips([items[voice_of[i]] for i in chunk]) if voice_of else None,
        )
        nfe_used = max(nfe_used, gen.nfe)
        ref_env, ref_env_mask = speech_envelope(batch["mel"], batch["audio_mask"], bundle.mel, bundle.motion)
        gen_env, gen_env_mask = speech_envelope(gen.mel, gen.audio_mask, bundle.mel, bundle.motion)
        for j, i in enumerate(chunk):
            m_ref, m_gen = int(batch["motion_mask"][j].sum()), int(gen.motion_mask[j].sum())
            n_ref, n_gen = int(batch["audio_mask"][j].sum()), int(gen.audio_mask[j].sum())
            per_clip[i] = {
                "ref_exp": batch["exp"][j, :m_ref],
                "gen_exp": gen.exp[j, :m_gen],
                "ref_mel": batch["mel"][j, :n_ref],
                "gen_mel": gen.mel[j, :n_gen],
                "ref_env": ref_env[j, : int(ref_env_mask[j].sum())],
                "gen_env": gen_env[j, : int(gen_env_mask[j].sum())],
            }
        log.info("evaluate: %d / %d clips", min(start + settings.batch_size, len(order)), len(order))
    opening.fit([c["ref_exp"] for c in per_clip], [c["ref_env"] for c in per_clip])
    for c in per_clip:
        c["ref_open"], c["gen_open"] = opening(c["ref_exp"]), opening(c["gen_exp"])
    pi = _derangement(len(per_clip), settings.seed)

    def padded(key: str, perm: list[int] | None = None) -> tuple[Tensor, Tensor]:
        idx = perm if perm is not None else range(len(per_clip))
        return _pad([per_clip[i][key] for i in idx])

    lag = settings.max_lag
    metrics: dict[str, float] = {}
    shuffled: dict[str, float] = {}

    def corr(a: str, b: str, perm_a: list[int] | None = None) -> float:
        metric = ClipCorrelation()
        (x, mx), (y, my) = padded(a, perm_a), padded(b)
        metric.update(x, y, mx, my)
        return float(metric.compute())

    def offset(open_key: str, env_key: str, perm_open=None, perm_env=None) -> dict[str, float]:
        metric = AVOffset(max_lag=lag)
        (x, mx), (y, my) = padded(open_key, perm_open), padded(env_key, perm_env)
        metric.update(x, y, mx, my)
        return _offset_section(metric)

    ground_truth = offset("ref_open", "ref_env")
    if settings.task in ("audio2motion", "text2av"):
        l2 = MouthKeypointL2()
        idx = list(bundle.motion.mouth_indices)
        for c in per_clip:
            t = min(c["gen_exp"].shape[0], c["ref_exp"].shape[0])
            l2.update(c["gen_exp"][None, :t, idx], c["ref_exp"][None, :t, idx])
        metrics["mouth_kp_l2"] = float(l2.compute())
        metrics["mouth_open_corr"] = corr("gen_open", "ref_open")
        shuffled["mouth_open_corr"] = corr("gen_open", "ref_open", pi)
        env_key = "ref_env" if settings.task == "audio2motion" else "gen_env"
        metrics.update(offset("gen_open", env_key))
        shuffled.update(offset("gen_open", env_key, perm_open=pi))
    if settings.task in ("motion2audio", "dub", "text2av", "tts"):
        metrics["envelope_corr"] = corr("gen_env", "ref_env")
        shuffled["envelope_corr"] = corr("gen_env", "ref_env", pi)
        mel = MelDistance()
        dur = DurationError(frame_rate=bundle.mel.frame_rate)
        for c in per_clip:
            mel.update(c["gen_mel"][None], c["ref_mel"][None])
            dur.update(torch.tensor([c["gen_mel"].shape[0]]), torch.tensor([c["ref_mel"].shape[0]]))
        metrics.update(mel.compute())
        metrics.update({f"duration_{k}": v for k, v in dur.compute().items()})
        if settings.task in ("motion2audio", "dub"):
            metrics.update(offset("ref_open", "gen_env"))
            shuffled.update(offset("ref_open", "gen_env", perm_env=pi))
            metrics.update(timing_metrics(per_clip, lag))
        metrics.update(
            intelligibility_metrics(
                settings.judge,
                [item["transcript"] for item in items],
                per_clip,
                bundle.mel,
                settings.vocoder,
                settings.pocketsphinx if settings.judge is not None else "off",
                settings.device,
            )
        )

    external = _external_metrics(settings, bundle, items, per_clip)
    metrics.update(external)
    result = {
        "task": settings.task,
        "clips": len(per_clip),
        "skipped_clips": skipped,
        "mouth_opening": kind,
        "nfe_used": nfe_used,
        "settings": asdict(settings),
        "metrics": metrics,
        "shuffled": shuffled,
        "ground_truth": ground_truth,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    return _finite(result)


def _finite(obj: Any) -> Any:
    """NaN / inf -> None so the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _external_metrics(
    settings: EvalSettings, bundle: ModelBundle, items: list[dict[str, Any]], per_clip: list[dict[str, Any]]
) -> dict[str, float]:
    """WER, speaker similarity and LSE when their models are given (generated speech is vocoded for WER / SIM)."""
    out: dict[str, float] = {}
    speech_task = settings.task in ("motion2audio", "dub", "text2av", "tts")
    if (settings.asr or settings.speaker_model) and speech_task:
        from torchmetrics.text import WordErrorRate

        from jam_flow.data.vocoder import load_vocoder
        from jam_flow.eval.external import load_asr, load_speaker_model, normalise_text

        vocoder = load_vocoder(settings.vocoder, bundle.mel, settings.device)
        asr = load_asr(settings.asr, settings.device)
        spk = load_speaker_model(settings.speaker_model, settings.speaker_sr, settings.device)
        wer, sim = WordErrorRate(), SpeakerSimilarity()
        sr = bundle.mel.sample_rate
        for item, c in zip(items, per_clip, strict=True):
            gen_wave = vocoder.decode(c["gen_mel"]).numpy()
            if asr is not None:
                reference = normalise_text(item["transcript"])
                wer.update([normalise_text(asr.transcribe(gen_wave, sr))], [reference])
            if spk is not None:
                ref_wave = vocoder.decode(
                    c["ref_mel"]
                ).numpy()  # same vocoder on both sides: a fair comparison
                sim.update(spk.embed(gen_wave, sr)[None], spk.embed(ref_wave, sr)[None])
        if asr is not None:
            out["wer_asr" if settings.judge is not None else "wer"] = float(wer.compute())
        if spk is not None:
            out["speaker_sim"] = float(sim.compute())
    elif settings.asr or settings.speaker_model:
        raise InputError(
            f"--asr/--speaker-model: task {settings.task} generates no speech (use motion2audio or text2av)"
        )
    if settings.syncnet is not None:
        out.update(_lse(settings, items))
    return out


def _lse(settings: EvalSettings, items: list[dict[str, Any]]) -> dict[str, float]:
    """LSE-C / LSE-D over ``--videos DIR/<clip id>.mp4`` + ``<clip id>.wav`` (rendered with ``jam-flow render``
    from this task's outputs; for audio2motion the wav is the clip's own audio)."""
    from jam_flow.eval.syncnet import load_syncnet, lse_from_files, parse_crop

    if settings.videos is None:
        raise InputError("--syncnet: LSE needs --videos DIR holding <clip id>.mp4 and <clip id>.wav renders")
    net = load_syncnet(settings.syncnet, settings.device)
    crop = parse_crop(settings.lse_crop)
    lse = LipSyncScores()
    videos = Path(settings.videos)
    for item in items:
        mp4, wav = videos / f"{item['id']}.mp4", videos / f"{item['id']}.wav"
        if not mp4.is_file() or not wav.is_file():
            raise InputError(f"--videos: {videos} has no {mp4.name} + {wav.name} for clip {item['id']!r}")
        s = lse_from_files(net, mp4, wav, crop)
        lse.update(torch.tensor([s.dist]), torch.tensor([s.conf]), torch.tensor([s.offset]))
    res = lse.compute()
    return {"lse_c": res["lse_c"], "lse_d": res["lse_d"], "lse_offset_frames": res["offset_frames"]}
