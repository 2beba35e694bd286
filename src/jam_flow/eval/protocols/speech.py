"""Protocols ``tts`` (paper Table 2) and ``dubbing`` (Table 3), and the speech columns of ``ablation`` (Table 4).

Dimension legend: s samples (24 kHz generated speech), d speaker-embedding size. Masks: none.

``tts`` (docs/evaluation.md, "tts"): the F5-TTS cross-sentence list of LibriSpeech-PC test-clean
(``--list FILE``: one line per item, six tab-separated fields ``ref_utt, ref_dur, ref_text, gen_utt, gen_dur,
gen_text``; audio at ``--audio-root/<spk>/<chapter>/<utt>.flac`` as in LibriSpeech). Each item generates ``gen_text``
in the voice of the reference (``inference.tasks.tts``: reference mel + ``ref_text + gen_text``, F5's duration rule,
seed ``--seed + item index``). WER: the local ASR's transcript of the generated speech against ``gen_text``
(F5-TTS's mean of per-utterance WERs); SIM-o: cosine of speaker embeddings of the generated speech and the
*original* reference recording (F5-TTS's SIM-o).

``dubbing``: the ``--split`` (test) clips of a dataset (format v1; CelebV-Dub preprocessed with ``jam-flow
preprocess``). Each clip's own lip motion and transcript are given and its speech is generated
(``inference.tasks.dub``, paper case 3) with, by default (``--dub-reference same-speaker``), the voice of the next
clip of the same speaker in the split (none when the speaker has one clip), whose own lip motion is given under
its voice (the trained layout: one real clip, its motion given throughout, its speech after the reference hidden). WER against the transcript, spkSIM
against the clip's real speech, LSE-C / LSE-D of the clip's *original* video frames (``--videos DIR/<id>.mp4``) with
the generated speech: the video is fixed in dubbing, only the speech is new.

Ablation (speech part): the tts list with ``inference.tasks.text2av`` (speech and motion generated jointly, §5.4:
"WER and SIM-o are computed using both generated motion and audio"), WER and SIM-o as for tts.

Generation is per item (each has its own reference and length); the judges run once per item. Every item is
cached under ``OUT/<label>/<task>/<id>/`` (``audio.wav``, ``motion.npy`` for text2av, ``done.json``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.errors import InputError
from jam_flow.eval.protocols.common import ClipCache, ProtocolSettings, Ranks, clip_key
from jam_flow.eval.protocols.judges import Judges, MeanWER

__all__ = ["SpeechItem", "read_tts_list", "dubbing_items", "run_speech_part"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechItem:
    """One generation: ``text`` to speak, a reference voice (optional), given motion (dubbing), and what the
    speaker similarity compares against (``sim_ref``)."""

    id: str
    index: int
    text: str
    ref_audio: str | None
    ref_text: str | None
    sim_ref: str | None
    motion: str | None = None
    video: str | None = None
    ref_motion: str | None = None  # dubbing: the reference clip's own motion, given under its voice


def _librispeech_path(root: Path, utt: str) -> Path:
    parts = utt.split("-")
    if len(parts) == 3:
        return root / parts[0] / parts[1] / f"{utt}.flac"
    return root / utt  # a path relative to --audio-root (other lists)


def read_tts_list(settings: ProtocolSettings) -> list[SpeechItem]:
    """Parse ``--list`` (F5-TTS cross-sentence format); every referenced audio file must exist."""
    if settings.list_file is None or settings.audio_root is None:
        raise InputError(
            "--list/--audio-root: this protocol needs the F5-TTS cross-sentence list and the LibriSpeech "
            "test-clean directory"
        )
    path, root = Path(settings.list_file), Path(settings.audio_root)
    if not path.is_file():
        raise InputError(f"--list: {path} does not exist")
    items: list[SpeechItem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise InputError(
                f"--list: {path}:{lineno}: expected 6 tab-separated fields (ref_utt, ref_dur, ref_text, "
                f"gen_utt, gen_dur, gen_text), got {len(fields)}"
            )
        ref_utt, _, ref_text, gen_utt, _, gen_text = (f.strip() for f in fields)
        ref = _librispeech_path(root, ref_utt)
        if not ref.is_file():
            raise InputError(f"--list: {path}:{lineno}: reference audio {ref} does not exist")
        clip_id = gen_utt.replace("/", "__")
        if clip_id in seen:
            clip_id = f"{clip_id}__{lineno}"
        seen.add(clip_id)
        items.append(SpeechItem(clip_id, len(items), gen_text, str(ref), ref_text, str(ref)))
    if not items:
        raise InputError(f"--list: {path} holds no items")
    return items[: settings.max_clips] if settings.max_clips is not None else items


def dubbing_items(settings: ProtocolSettings) -> list[SpeechItem]:
    """The ``--split`` clips of ``--data.data_dir`` (see the module docstring)."""
    from jam_flow.data.format import read_manifest

    if settings.data_dir is None:
        raise InputError("--data.data_dir: the dubbing protocol needs a dataset (CelebV-Dub test split)")
    root = Path(settings.data_dir)
    records = [r for r in read_manifest(root, split=settings.split) if r.text.strip() and r.audio]
    if not records:
        raise InputError(
            f"--data.data_dir: {root} has no clips with text and audio in split {settings.split!r}"
        )
    if settings.max_clips is not None:
        records = records[: settings.max_clips]
    if settings.dub_reference not in ("same-speaker", "none"):
        raise InputError(f"--dub-reference: expected same-speaker or none, got {settings.dub_reference!r}")
    items = []
    for i, r in enumerate(records):
        same = [o for o in records if o.speaker == r.speaker]
        ref = same[(same.index(r) + 1) % len(same)] if len(same) > 1 else None
        if settings.dub_reference == "none":
            ref = None
        video = str(Path(settings.videos) / f"{r.id}.mp4") if settings.videos else None
        items.append(
            SpeechItem(
                id=r.id,
                index=i,
                text=r.text,
                ref_audio=str(root / ref.audio) if ref else None,
                ref_text=ref.text if ref else None,
                ref_motion=str(root / ref.features) if ref else None,
                sim_ref=str(root / r.audio),
                motion=str(root / r.features),
                video=video,
            )
        )
    return items


def _generate(task: str, settings: ProtocolSettings, bundle, item: SpeechItem, vocoder):
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.inference import tasks

    sampler = SamplerSettings(nfe=settings.nfe, cfg=settings.cfg)
    seed = settings.seed + item.index
    common = {"settings": sampler, "seed": seed, "vocoder": vocoder}
    if task == "tts":
        return tasks.tts(bundle, item.text, item.ref_audio, item.ref_text, **common)
    if task == "text2av":
        return tasks.text2av(bundle, item.text, item.ref_audio, item.ref_text, **common)
    return tasks.dub(
        bundle, item.motion, item.text, item.ref_audio, item.ref_text, ref_motion=item.ref_motion, **common
    )


def generate_items(
    task: str,
    settings: ProtocolSettings,
    bundle,
    ckpt: str,
    items: list[SpeechItem],
    cache: ClipCache,
    judges,
) -> tuple[int, int]:
    """Generate this rank's items that the cache lacks; returns (generated, reused)."""
    from jam_flow.data.audio import save_wav

    generated = 0
    vocoder = None
    for item in items:
        key = clip_key(settings, ckpt, {"task": task, **asdict(item)})
        if cache.done(item.id, key):
            continue
        vocoder = vocoder or judges.vocoder(bundle.mel)
        result = _generate(task, settings, bundle, item, vocoder)
        if not np.all(np.isfinite(result.wave)):
            raise InputError(f"{ckpt}: generated speech of {item.id} is not finite")
        d = cache.start(item.id)
        save_wav(d / "audio.wav", result.wave, result.sample_rate)
        if result.motion is not None and task == "text2av":
            np.save(d / "motion.npy", result.motion.astype(np.float32))
        cache.finish(item.id, key, {"seconds": round(result.wave.shape[0] / result.sample_rate, 3)})
        generated += 1
        log.info("%s: generated %s (%d done)", task, item.id, generated)
    return generated, len(items) - generated


def speech_metrics(
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    items: list[SpeechItem],
    cache: ClipCache,
    judges: Judges,
) -> dict[str, float]:
    """WER, SIM-o / spkSIM and (dubbing) LSE over this rank's items, reduced over all ranks."""
    import torch

    from jam_flow.data.audio import load_audio
    from jam_flow.eval.external import normalise_text
    from jam_flow.eval.metrics import LipSyncScores, SpeakerSimilarity

    wer = MeanWER().to(judges.device) if "wer" in metrics else None
    sim_key = "sim_o" if "sim_o" in metrics else "spk_sim" if "spk_sim" in metrics else None
    sim = SpeakerSimilarity().to(judges.device) if sim_key else None
    lse = LipSyncScores().to(judges.device) if ("lse_c" in metrics or "lse_d" in metrics) else None
    if lse is not None:
        from jam_flow.eval.syncnet import lse_from_files, parse_crop

        net, crop = judges.syncnet(), parse_crop(settings.lse_crop)
    for item in items:
        wav = cache.dir(item.id) / "audio.wav"
        if wer is not None or sim is not None:
            wave = load_audio(wav, 24000)
        if wer is not None:
            wer.update([judges.transcribe(wave, 24000)], [normalise_text(item.text)])
        if sim is not None:
            rate = judges.speaker().sample_rate
            ref = load_audio(item.sim_ref, rate)
            sim.update(judges.embed(wave, 24000), judges.embed(ref, rate))
        if lse is not None:
            if item.video is None:
                raise InputError(
                    "--videos: LSE in the dubbing protocol needs the original videos DIR/<id>.mp4"
                )
            if not Path(item.video).is_file():
                raise InputError(f"--videos: {item.video} does not exist (original video of clip {item.id})")
            s = lse_from_files(net, item.video, wav, crop)
            lse.update(torch.tensor([s.dist]), torch.tensor([s.conf]), torch.tensor([s.offset]))
    out: dict[str, float] = {}
    if lse is not None:
        res = lse.compute()
        out.update({k: res[k] for k in ("lse_c", "lse_d") if k in metrics})
    if wer is not None:
        out["wer"] = float(wer.compute())
    if sim is not None:
        out[sim_key] = float(sim.compute())
    return out


def run_speech_part(
    task: str,
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    bundle,
    ckpt: str,
    cache: ClipCache,
    judges: Judges,
    ranks: Ranks,
    items: list[SpeechItem],
) -> dict[str, Any]:
    """Generate + score ``task`` (tts, text2av or dub) for one checkpoint; returns metrics and clip counts."""
    return ranks.run(
        items,
        lambda mine: generate_items(task, settings, bundle, ckpt, mine, cache, judges),
        lambda mine: speech_metrics(settings, metrics, mine, cache, judges),
    )
