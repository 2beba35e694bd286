"""Speech metrics of ``jam-flow evaluate``: intelligibility (the judge's CER / WER, pocketsphinx WER) and
the timing of generated speech against the given motion (``dub`` / ``motion2audio``).

Dimension legend: b batch (clips), n mel frames, c mel channels (100), m motion frames (25 / s), s samples.
Masks are bool, True = valid.

Every intelligibility number comes with its ceiling, the same recogniser on the clip's ground truth, under the
same conditions (``*_ground_truth``):

* ``cer`` / ``wer``: the judge (``jam-flow train-judge``) on the generated log-mel itself: no vocoder in the loop;
* ``cer_vocoded`` / ``wer_vocoded`` (with ``--vocoder``): the generated mel vocoded, the waveform analysed back to
  log-mel (``jam_flow.data.mel.log_mel``, the corpus's own features), then judged; the ground truth goes through
  the same vocoder;
* ``wer_pocketsphinx`` (when the optional ``pocketsphinx`` package is installed; its wheel ships the CMU US-English
  acoustic model, language model and dictionary, used offline): an external recogniser nobody here trained, on the
  vocoded waveform resampled to 16 kHz; ground truth through the same vocoder.

Timing (``timing_metrics``), per clip with the A/V offset estimator of ``AVOffset`` (``signals.lagged_pearson`` /
``best_lag`` of mouth opening vs speech envelope): ``offset_vs_ground_truth_within_one`` is the fraction of clips
whose generated-speech offset lies within one frame of the same clip's ground-truth offset (the synthetic data's
mouth follows the sound by about one frame, so this measures "lands on the lips like the original speech"), and
``envelope_lag_frames`` is the lag that best aligns the generated envelope with the ground-truth envelope (the
shift of the generated timing; ideal 0).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.eval.judge import error_rates
from jam_flow.eval.signals import best_lag, crop_pair, lagged_pearson

__all__ = [
    "timing_metrics",
    "per_clip_lags",
    "intelligibility_metrics",
    "PocketSphinx",
    "pocketsphinx_available",
]

log = logging.getLogger(__name__)


def _pad(signals: list[Tensor]) -> tuple[Tensor, Tensor]:
    t = max(s.shape[0] for s in signals)
    out = torch.zeros(len(signals), t)
    mask = torch.zeros(len(signals), t, dtype=torch.bool)
    for i, s in enumerate(signals):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def per_clip_lags(
    x: list[Tensor], y: list[Tensor], max_lag: int, min_frames: int = 4
) -> tuple[Tensor, Tensor, Tensor]:
    """Best lag of ``x[j + lag]`` against ``y[j]`` per clip (1-D signals on the motion clock).

    Returns ``(lags [b] int64, usable [b] bool, curve [l])``: ``usable`` is False for a clip too short to correlate;
    ``curve`` is the correlation per lag averaged over the usable clips (lag ``k - max_lag`` at index ``k``)."""
    (xs, mx), (ys, my) = _pad(x), _pad(y)
    xs, ys, mask = crop_pair(xs, ys, mx, my)
    corr, defined = lagged_pearson(xs, ys, mask, mask, max_lag, min_frames=min_frames)
    usable = defined[:, max_lag]
    lags = best_lag(corr, defined, max_lag)
    weight = (defined & usable[:, None]).double()
    curve = (corr.double() * weight).sum(0) / weight.sum(0).clamp_min(1)
    return lags, usable, curve.float()


def timing_metrics(per_clip: list[dict[str, Any]], max_lag: int) -> dict[str, float]:
    """Timing of generated speech (``gen_env``) against the given motion (``ref_open``) and the ground-truth
    speech (``ref_env``) that the motion came from (see the module docstring)."""
    opens = [c["ref_open"] for c in per_clip]
    gen_lag, gen_ok, _ = per_clip_lags(opens, [c["gen_env"] for c in per_clip], max_lag)
    ref_lag, ref_ok, _ = per_clip_lags(opens, [c["ref_env"] for c in per_clip], max_lag)
    ok = gen_ok & ref_ok
    env_lag, env_ok, env_curve = per_clip_lags(
        [c["gen_env"] for c in per_clip], [c["ref_env"] for c in per_clip], max_lag
    )
    out = {"timing_clips": float(ok.sum())}
    if bool(ok.any()):
        diff = (gen_lag[ok] - ref_lag[ok]).abs().double()
        out["offset_vs_ground_truth_within_one"] = float((diff <= 1).double().mean())
        out["offset_vs_ground_truth_mean_abs"] = float(diff.mean())
    if bool(env_ok.any()):
        out["envelope_lag_frames"] = float(
            best_lag(env_curve[None], torch.ones_like(env_curve[None], dtype=torch.bool), max_lag)[0]
        )
        out["envelope_lag_within_one"] = float((env_lag[env_ok].abs() <= 1).double().mean())
    return out


# ------------------------------------------------------------------------------------------------ pocketsphinx
def pocketsphinx_available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


class PocketSphinx:
    """CMU PocketSphinx with the US-English model shipped in its wheel (offline): ``transcribe(wave, sr)``."""

    RATE = 16000

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise InputError(
                "--pocketsphinx on: the optional `pocketsphinx` package is not installed "
                "(pip install 'jam-flow[speech]')"
            ) from err
        self.decoder = Decoder(samprate=self.RATE, logfn="/dev/null")

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        import torchaudio.functional as AF

        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if sample_rate != self.RATE:
            x = AF.resample(x, sample_rate, self.RATE)
        peak = float(x.abs().max()) if x.numel() else 0.0
        if peak > 1.0:
            x = x / peak
        pcm = (x.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


# ------------------------------------------------------------------------------------------------ intelligibility
def intelligibility_metrics(
    judge_path: str | None,
    texts: list[str],
    per_clip: list[dict[str, Any]],
    mel_settings,
    vocoder_path: str | None = None,
    pocketsphinx: str = "auto",
    device: str = "cpu",
) -> dict[str, float]:
    """CER / WER of the generated speech (``gen_mel``) against ``texts``, each with ``*_ground_truth`` (the same
    recogniser on ``ref_mel``); see the module docstring for the keys."""
    if pocketsphinx not in ("auto", "on", "off"):
        raise InputError(f"--pocketsphinx: expected auto, on or off, got {pocketsphinx!r}")
    use_sphinx = pocketsphinx == "on" or (pocketsphinx == "auto" and pocketsphinx_available())
    out: dict[str, float] = {}
    gen = [c["gen_mel"] for c in per_clip]
    ref = [c["ref_mel"] for c in per_clip]
    judge = None
    if judge_path is not None:
        from jam_flow.models.judge import load_judge

        judge = load_judge(judge_path, device)
        out.update(_judged(judge, gen, ref, texts, ""))
    if vocoder_path is None and not use_sphinx:
        return out
    from jam_flow.data.mel import log_mel
    from jam_flow.data.vocoder import load_vocoder

    vocoder = load_vocoder(vocoder_path, mel_settings, device)
    gen_wave = [vocoder.decode(m).numpy() for m in gen]
    ref_wave = [vocoder.decode(m).numpy() for m in ref]  # the same vocoder on both sides: a fair ceiling
    sr = int(vocoder.sample_rate)
    if judge is not None and vocoder_path is not None:
        if sr != mel_settings.sample_rate:
            raise InputError(f"--vocoder: writes {sr} Hz, the judge's mel is {mel_settings.sample_rate} Hz")

        def remel(waves: list[np.ndarray]) -> list[Tensor]:
            return [log_mel(w.astype(np.float32), mel_settings).float() for w in waves]

        out.update(_judged(judge, remel(gen_wave), remel(ref_wave), texts, "_vocoded"))
    if use_sphinx:
        sphinx = PocketSphinx()
        hyp_gen = [sphinx.transcribe(w, sr) for w in gen_wave]
        hyp_ref = [sphinx.transcribe(w, sr) for w in ref_wave]
        out["wer_pocketsphinx"] = error_rates(hyp_gen, texts)["wer"]
        out["wer_pocketsphinx_ground_truth"] = error_rates(hyp_ref, texts)["wer"]
    return out


def _judged(judge, gen: list[Tensor], ref: list[Tensor], texts: list[str], suffix: str) -> dict[str, float]:
    hyp_gen, hyp_ref = [], []
    for start in range(0, len(gen), 16):
        hyp_gen += judge.transcribe(gen[start : start + 16])
        hyp_ref += judge.transcribe(ref[start : start + 16])
    for text, hyp in list(zip(texts, hyp_gen, strict=True))[:3]:
        log.info("judge: %r -> %r", text, hyp)
    g, r = error_rates(hyp_gen, texts), error_rates(hyp_ref, texts)
    return {
        f"cer{suffix}": g["cer"],
        f"wer{suffix}": g["wer"],
        f"cer{suffix}_ground_truth": r["cer"],
        f"wer{suffix}_ground_truth": r["wer"],
    }
