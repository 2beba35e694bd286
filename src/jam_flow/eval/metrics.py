"""Evaluation metrics as ``torchmetrics.Metric`` classes: batch-wise ``update``, DDP-safe (every state is a
tensor summed across processes with ``dist_reduce_fx="sum"``), ``compute`` returns plain floats in a dict.

Dimension legend: b batch (clips), n mel frames, c mel channels (100), m motion frames (25 / s),
km mouth keypoints (4), l lags (``2 * max_lag + 1``). Masks are bool, True = valid, everywhere.

Motion: ``MouthKeypointL2`` (mouth keypoint error over valid frames), ``ClipCorrelation`` (mean
per-clip Pearson correlation, used for mouth opening vs ground truth and speech envelope vs reference),
``AVOffset`` (lag of maximal mouth-opening / speech-envelope correlation). Audio: ``MelDistance`` (mel L1 and
log-spectral distance), ``DurationError``. With optional external models: ``SpeakerSimilarity`` (cosine of
embeddings), ``LipSyncScores`` (LSE-C / LSE-D from SyncNet); WER uses ``torchmetrics.text.WordErrorRate``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from jam_flow.errors import InputError
from jam_flow.eval.signals import best_lag, crop_pair, lagged_pearson, masked_pearson

__all__ = [
    "MouthKeypointL2",
    "ClipCorrelation",
    "AVOffset",
    "MelDistance",
    "DurationError",
    "SpeakerSimilarity",
    "LipSyncScores",
]

# 20 / ln(10): converts a difference of natural-log magnitudes into decibels of power
_DB_PER_NEPER = 20.0 / math.log(10.0)


def _full_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise InputError(f"mask: expected shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


class _SumMetric(Metric):
    """Shared plumbing: scalar sum states."""

    full_state_update = False

    def _add_sums(self, *names: str) -> None:
        for name in names:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")


class MouthKeypointL2(_SumMetric):
    """Mean Euclidean distance between generated and reference mouth keypoints, over valid frames.

    ``update(pred, target, mask)``: ``pred, target [b, m, km, 3]`` or ``[b, m, km * 3]`` (same units as given:
    the evaluate CLI passes de-normalised LivePortrait expression offsets), ``mask [b, m]``. Per frame the error
    is the mean over keypoints of the 3-D L2 distance; the result is the mean over all valid frames of all
    clips (longer clips weigh more).
    """

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_sums("err_sum", "frames")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        if pred.shape != target.shape:
            raise InputError(
                f"mouth keypoints: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        if pred.dim() == 3:
            if pred.shape[-1] % 3:
                raise InputError(f"mouth keypoints: last dim must be a multiple of 3, got {pred.shape[-1]}")
            pred = pred.reshape(*pred.shape[:2], -1, 3)
            target = target.reshape(*target.shape[:2], -1, 3)
        if pred.dim() != 4 or pred.shape[-1] != 3:
            raise InputError(
                f"mouth keypoints: expected [b, m, km, 3] or [b, m, km*3], got {tuple(pred.shape)}"
            )
        mask = _full_mask(pred, mask)
        per_frame = torch.linalg.vector_norm(pred.double() - target.double(), dim=-1).mean(-1)  # [b, m]
        self.err_sum += (per_frame * mask).sum()
        self.frames += mask.sum()

    def compute(self) -> Tensor:
        return (self.err_sum / self.frames.clamp_min(1)).float()


class ClipCorrelation(_SumMetric):
    """Mean over clips of the per-clip Pearson correlation of two scalar signals.

    ``update(x, y, mask_x, mask_y)`` with ``x [b, tx]``, ``y [b, ty]``: both are cropped to the common length and
    correlated over frames valid in both. A clip with fewer than ``min_frames`` common valid frames is skipped
    (counted in ``skipped``); a constant signal counts as correlation 0.
    """

    higher_is_better = True

    def __init__(self, min_frames: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_frames = min_frames
        self._add_sums("corr_sum", "clips", "skipped")

    def update(
        self, x: Tensor, y: Tensor, mask_x: Tensor | None = None, mask_y: Tensor | None = None
    ) -> None:
        x, y, mask = crop_pair(x, y, _full_mask(x, mask_x), _full_mask(y, mask_y))
        corr, defined = masked_pearson(x, y, mask, min_frames=self.min_frames)
        self.corr_sum += corr[defined].double().sum()
        self.clips += defined.sum()
        self.skipped += (~defined).sum()

    def compute(self) -> Tensor:
        return (self.corr_sum / self.clips.clamp_min(1)).float()


class AVOffset(Metric):
    """Audio-visual offset: the lag (motion frames) maximising the correlation of mouth opening with the speech
    energy envelope, searched over ``[-max_lag, max_lag]``; ideal 0.

    ``update(mouth_open, envelope, mask_open, mask_env)``: ``[b, m]`` signals on the motion clock (see
    ``signals.speech_envelope``). A positive lag means the mouth moves *after* the sound. ``compute()`` returns
    ``offset_frames`` (argmax of the correlation curve averaged over clips: the population offset, robust to
    clips with little speech), ``mean_abs_offset`` and ``within_one_frame`` (per-clip argmax statistics),
    ``peak_corr`` (mean per-clip maximum) and ``corr_at_zero`` (mean correlation at lag 0).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, max_lag: int = 10, min_frames: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_lag < 0:
            raise InputError(f"max_lag: expected a non-negative number of motion frames, got {max_lag}")
        self.max_lag = max_lag
        self.min_frames = min_frames
        self.add_state(
            "curve_sum", default=torch.zeros(2 * max_lag + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "curve_count", default=torch.zeros(2 * max_lag + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        for name in ("clips", "offset_sum", "abs_offset_sum", "within_one", "peak_sum", "zero_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        mouth_open: Tensor,
        envelope: Tensor,
        mask_open: Tensor | None = None,
        mask_env: Tensor | None = None,
    ) -> None:
        x, y, mask = crop_pair(
            mouth_open, envelope, _full_mask(mouth_open, mask_open), _full_mask(envelope, mask_env)
        )
        corr, defined = lagged_pearson(x, y, mask, mask, self.max_lag, min_frames=self.min_frames)  # [b, l]
        clip_ok = defined[:, self.max_lag]  # clips usable at lag 0
        if not bool(clip_ok.any()):
            return
        corr, defined = corr[clip_ok].double(), defined[clip_ok]
        self.curve_sum += (corr * defined).sum(0)
        self.curve_count += defined.double().sum(0)
        lag = best_lag(corr, defined, self.max_lag).double()
        self.clips += clip_ok.sum()
        self.offset_sum += lag.sum()
        self.abs_offset_sum += lag.abs().sum()
        self.within_one += (lag.abs() <= 1).sum()
        self.peak_sum += torch.where(defined, corr, torch.full_like(corr, -1.0)).max(1).values.sum()
        self.zero_sum += corr[:, self.max_lag].sum()

    def compute(self) -> dict[str, float]:
        clips = float(self.clips)
        if clips == 0:
            nan = float("nan")
            return {
                "offset_frames": nan,
                "mean_offset": nan,
                "mean_abs_offset": nan,
                "within_one_frame": nan,
                "peak_corr": nan,
                "corr_at_zero": nan,
                "clips": 0.0,
            }
        curve = self.curve_sum / self.curve_count.clamp_min(1)
        offset = int(best_lag(curve[None], (self.curve_count > 0)[None], self.max_lag)[0])
        return {
            "offset_frames": float(offset),
            "mean_offset": float(self.offset_sum) / clips,
            "mean_abs_offset": float(self.abs_offset_sum) / clips,
            "within_one_frame": float(self.within_one) / clips,
            "peak_corr": float(self.peak_sum) / clips,
            "corr_at_zero": float(self.zero_sum) / clips,
            "clips": clips,
        }

    def curve(self) -> Tensor:
        """The mean correlation per lag (``[l]``, lag ``k - max_lag`` at index ``k``), reduced across processes
        like ``compute``."""
        with self.sync_context():
            return (self.curve_sum / self.curve_count.clamp_min(1)).float().clone()


class MelDistance(_SumMetric):
    """Distance between generated and reference log-mel spectrograms over their common valid frames.

    ``update(pred, target, mask_pred, mask_target)``: ``[b, n, c]`` natural-log mel. ``compute()`` returns
    ``mel_l1`` (mean absolute difference of log-mel, per element) and ``lsd_db`` (log-spectral distance: per
    frame the RMS over channels of the difference in dB of mel power, ``20 / ln 10 * |d|``, averaged over frames).
    """

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_sums("l1_sum", "elements", "lsd_sum", "frames")

    def update(
        self, pred: Tensor, target: Tensor, mask_pred: Tensor | None = None, mask_target: Tensor | None = None
    ) -> None:
        if pred.dim() != 3 or target.dim() != 3 or pred.shape[-1] != target.shape[-1]:
            raise InputError(
                f"mel: expected [b, n, c] pairs with equal c, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        mp, mt = _full_mask(pred, mask_pred), _full_mask(target, mask_target)
        n = min(pred.shape[1], target.shape[1])
        diff = pred[:, :n].double() - target[:, :n].double()  # [b, n, c]
        mask = (mp[:, :n] & mt[:, :n]).double()
        c = pred.shape[-1]
        self.l1_sum += (diff.abs().sum(-1) * mask).sum()
        self.elements += mask.sum() * c
        lsd = torch.sqrt(((_DB_PER_NEPER * diff) ** 2).mean(-1))  # [b, n]
        self.lsd_sum += (lsd * mask).sum()
        self.frames += mask.sum()

    def compute(self) -> dict[str, float]:
        return {
            "mel_l1": float(self.l1_sum / self.elements.clamp_min(1)),
            "lsd_db": float(self.lsd_sum / self.frames.clamp_min(1)),
        }


class DurationError(_SumMetric):
    """Error of the generated duration against the reference.

    ``update(pred_frames, target_frames)``: ``[b]`` frame counts at ``frame_rate`` frames per second.
    ``compute()`` returns ``abs_s`` (mean absolute error in seconds), ``rel`` (mean ``|pred - ref| / ref``) and
    ``signed_s`` (mean of ``pred - ref`` in seconds: positive = too long).
    """

    higher_is_better = False

    def __init__(self, frame_rate: float = 24000 / 256, **kwargs) -> None:
        super().__init__(**kwargs)
        if frame_rate <= 0:
            raise InputError(f"frame_rate: expected a positive number of frames per second, got {frame_rate}")
        self.frame_rate = frame_rate
        self._add_sums("abs_sum", "rel_sum", "signed_sum", "clips")

    def update(self, pred_frames: Tensor, target_frames: Tensor) -> None:
        pred = torch.as_tensor(pred_frames, dtype=torch.float64).flatten()
        ref = torch.as_tensor(target_frames, dtype=torch.float64).flatten()
        if pred.shape != ref.shape:
            raise InputError(f"durations: got {pred.numel()} generated and {ref.numel()} reference lengths")
        if bool((ref <= 0).any()):
            raise InputError("durations: reference lengths must be positive")
        diff = pred - ref
        self.abs_sum += diff.abs().sum() / self.frame_rate
        self.rel_sum += (diff.abs() / ref).sum()
        self.signed_sum += diff.sum() / self.frame_rate
        self.clips += pred.numel()

    def compute(self) -> dict[str, float]:
        clips = self.clips.clamp_min(1)
        return {
            "abs_s": float(self.abs_sum / clips),
            "rel": float(self.rel_sum / clips),
            "signed_s": float(self.signed_sum / clips),
        }


class SpeakerSimilarity(_SumMetric):
    """Mean cosine similarity of speaker embeddings (generated vs reference speech): ``update(emb_pred,
    emb_ref)`` with ``[b, d]`` embeddings from any speaker-embedding model (see ``eval.external``)."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_sums("sim_sum", "clips")

    def update(self, emb_pred: Tensor, emb_ref: Tensor) -> None:
        if emb_pred.shape != emb_ref.shape or emb_pred.dim() != 2:
            raise InputError(
                f"speaker embeddings: expected two [b, d] tensors of equal shape, got "
                f"{tuple(emb_pred.shape)} and {tuple(emb_ref.shape)}"
            )
        sim = torch.nn.functional.cosine_similarity(emb_pred.double(), emb_ref.double(), dim=-1)
        self.sim_sum += sim.sum()
        self.clips += sim.numel()

    def compute(self) -> Tensor:
        return (self.sim_sum / self.clips.clamp_min(1)).float()


class LipSyncScores(_SumMetric):
    """LSE-D / LSE-C (Prajwal et al. 2020, from SyncNet; see ``eval.syncnet.sync_scores``): ``update(dist,
    conf)`` with per-video ``[b]`` minimum mean distance and confidence; ``compute()`` averages over videos."""

    higher_is_better = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_sums("dist_sum", "conf_sum", "offset_sum", "videos")

    def update(self, dist: Tensor, conf: Tensor, offset: Tensor | None = None) -> None:
        dist = torch.as_tensor(dist, dtype=torch.float64).flatten()
        conf = torch.as_tensor(conf, dtype=torch.float64).flatten()
        if dist.shape != conf.shape:
            raise InputError(f"LSE: got {dist.numel()} distances and {conf.numel()} confidences")
        self.dist_sum += dist.sum()
        self.conf_sum += conf.sum()
        if offset is not None:
            self.offset_sum += torch.as_tensor(offset, dtype=torch.float64).flatten().sum()
        self.videos += dist.numel()

    def compute(self) -> dict[str, float]:
        videos = self.videos.clamp_min(1)
        return {
            "lse_d": float(self.dist_sum / videos),
            "lse_c": float(self.conf_sum / videos),
            "offset_frames": float(self.offset_sum / videos),
        }


# FID / FVD live in their own module; exported here (``from jam_flow.eval.metrics import FID, FVD``).
from jam_flow.eval.video_metrics import FID, FVD  # noqa: E402

__all__ += ["FID", "FVD"]
