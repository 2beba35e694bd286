"""LightningModule for JAM-Flow training (paper §4.2, §4.5, appendix A).

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, k keypoints (21), dm mouth dims
(12), dr rest dims (51), nt text tokens. Validity masks are **True = valid**.

The network is passed in (built by jsonargparse from ``model.net.class_path`` / ``init_args``); the objective
(:mod:`jam_flow.flow.objective`), the masks (:mod:`jam_flow.flow.masking`) and the normalisation live here, outside
the network. Stages:

* ``stage1_audio``: F5-TTS fine-tune. Audio only (no motion stream), every sample hides an audio span.
* ``stage1_motion``: Motion-DiT from scratch. Every sample hides a motion span; the Motion-DiT gets per-frame audio
  features on the 25 fps motion grid (paper §4.5, appendix A): precomputed wav2vec2 / HuBERT hidden states
  (``--data.audio_features wav2vec2``, :mod:`jam_flow.data.audio_features`) or, by default, the clean mel averaged
  per motion frame (``mel``).
* ``stage2``: joint training with the modality scenarios (only motion / only audio / both hidden).

Randomness is a function of ``(seed, rank, global_step, micro-batch)``: each training micro-batch reseeds the
objective's generator (times, noise, masks, dropout flags) and the global torch RNG (network dropout); the
micro-batch index counts the batches accumulated into one optimizer step (``accumulate_grad_batches``), so they
draw differently. A resumed run therefore draws exactly what an uninterrupted run draws, on every rank, without
storing per-rank RNG states.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from jam_flow.data.meta import DataMeta, Normaliser
from jam_flow.errors import InputError
from jam_flow.flow.masking import (
    AUDIO_ONLY,
    MOTION_ONLY,
    DropoutConfig,
    MaskConfig,
    sample_dropout,
    sample_masks,
)
from jam_flow.flow.objective import FlowBatch, FlowLoss, FlowObjective
from jam_flow.flow.probe import TIME_BINS, TextUseSums, rotate_text, text_use_batch
from jam_flow.lightning.ema import EMA
from jam_flow.models import JointDiT, MotionDiT
from jam_flow.models.format import make_meta, net_spec, plain, text_num_embeds
from jam_flow.models.stages import Stage, joint_interface, load_audio_init, load_motion_init

__all__ = ["JAMFlowModule", "EMAConfig", "WarmupLinearDecay", "STAGES"]

log = logging.getLogger(__name__)

STAGES = tuple(s.value for s in Stage)


@dataclass
class EMAConfig:
    """ema-pytorch schedule (F5-TTS defaults)."""

    beta: float = 0.9999
    update_after_step: int = 100
    update_every: int = 10


class WarmupLinearDecay:
    """LR factor: linear warm-up ``1e-8 -> 1`` over ``warmup`` steps, then linear decay ``1 -> 1e-8`` over
    ``decay`` steps (F5-TTS ``SequentialLR`` of two ``LinearLR``); constant after warm-up when ``decay`` is 0.
    A callable object (not a lambda) so ``LambdaLR.state_dict()`` saves it."""

    def __init__(self, warmup: int, decay: int, floor: float = 1e-8) -> None:
        self.warmup = max(int(warmup), 0)
        self.decay = max(int(decay), 0)
        self.floor = floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.floor + (1.0 - self.floor) * step / self.warmup
        if self.decay == 0:
            return 1.0
        done = min(step - self.warmup, self.decay) / self.decay
        return 1.0 + (self.floor - 1.0) * done


def enable_activation_checkpointing(net: nn.Module) -> bool:
    """Switch on ``checkpoint_activations`` wherever the network (or a branch of it) has that switch; returns
    whether any was found. Read-only properties (JointDiT derives its flag from its branches) are skipped."""
    found = False
    for mod in net.modules():
        if isinstance(getattr(type(mod), "checkpoint_activations", None), property):
            continue
        if hasattr(mod, "checkpoint_activations"):
            mod.checkpoint_activations = True
            found = True
    return found


def _step_seed(seed: int, rank: int, step: int, salt: int = 0, micro: int = 0) -> int:
    """Seed of one draw; ``micro`` (the micro-batch of a step) adds nothing at 0, so runs without gradient
    accumulation draw what they always drew."""
    mixed = seed * 1_000_003 + rank * 7_919 + step * 104_729 + salt * 15_485_863 + micro * 32_452_843
    return mixed % (2**63 - 1)


class JAMFlowModule(L.LightningModule):
    """Joint flow-matching training of a ``JointDiT`` (or a stage-1 ``AudioDiT`` / ``MotionDiT``).

    Args:
        net: the network (``JointDiT`` for ``stage1_audio`` / ``stage2``; ``MotionDiT`` or ``JointDiT`` for
            ``stage1_motion``; ``AudioDiT`` also works for ``stage1_audio``).
        stage: ``stage1_motion`` | ``stage1_audio`` | ``stage2`` (paper §4.5).
        lr: peak learning rate (F5-TTS: 7.5e-5).
        betas: AdamW betas.
        weight_decay: AdamW weight decay (torch default 0.01, as F5-TTS).
        warmup_steps: optimizer steps of linear warm-up (F5-TTS: 20000).
        decay_steps: optimizer steps of linear decay after warm-up; None: until the end of training
            (``trainer.estimated_stepping_batches``), 0: constant after warm-up.
        ema: EMA schedule; the EMA weights are used for validation, checkpoints' ``ema_state_dict`` and export.
        masking: span / scenario settings.
        dropout: conditioning dropout (appendix A): availability drops and the guidance configurations each
            ``--guidance`` mode extrapolates from (``jam_flow.flow.masking.DropoutConfig``).
        time_sampling: ``uniform`` (default) or ``logit_normal``.
        logit_normal_mean: mean of the logit-normal time distribution.
        logit_normal_std: std of the logit-normal time distribution.
        shared_time: the same ``t`` for both streams of a sample (default; see ``jam_flow.flow.objective``).
        freeze_audio_dit: keep the Audio-DiT (``net.audio``) fixed (paper Table 4 ablation).
        init_audio_from: F5-TTS checkpoint (``.pt`` / ``.safetensors``), or a jam-flow ``.ckpt`` / export dir (e.g.
            a ``stage1_audio`` fine-tune), loaded into the Audio-DiT at the start of training (not on resume).
        init_motion_from: a stage-1 Motion-DiT (``.ckpt`` of ``jam-flow fit`` or an export dir) loaded into
            ``net.motion`` at the start of stage-2 training (not on resume).
        activation_checkpointing: set ``net.checkpoint_activations`` (less memory, ~30 % more compute).
        normalize_mel: standardise the mel with the dataset stats (F5-TTS does not: keep False to start from F5).
        seed: base of every training random draw.
        text_probe_batches: validation batches (the first ones, of >= 2 clips) on which the text-use probe
            (``jam_flow.flow.probe``) scores the EMA network at every validation: ``val/text_gain`` (the relative
            gain of the own text over another clip's) and ``val/text_gain_t0.0-0.3`` / ``_t0.3-0.7`` /
            ``_t0.7-1.0`` per flow-time bin; 0 = off. Each batch costs 9 extra forward passes.
    """

    def __init__(
        self,
        net: nn.Module,
        stage: Stage = Stage.stage2,
        lr: float = 7.5e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        warmup_steps: int = 20000,
        decay_steps: int | None = None,
        ema: EMAConfig = EMAConfig(),
        masking: MaskConfig = MaskConfig(),
        dropout: DropoutConfig = DropoutConfig(),
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        logit_normal_mean: float = 0.0,
        logit_normal_std: float = 1.0,
        shared_time: bool = True,
        freeze_audio_dit: bool = False,
        init_audio_from: str | None = None,
        init_motion_from: str | None = None,
        activation_checkpointing: bool = False,
        normalize_mel: bool = False,
        seed: int = 0,
        text_probe_batches: int = 4,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise InputError(f"--model.stage: expected one of {list(STAGES)}, got {stage!r}")
        stage = Stage(stage)  # also accepts the plain string (a module built in Python)
        if text_probe_batches < 0:
            raise InputError(f"--model.text_probe_batches: expected >= 0, got {text_probe_batches}")
        if warmup_steps < 0 or (decay_steps is not None and decay_steps < 0):
            raise InputError("--model.warmup_steps / decay_steps: expected >= 0")
        self.save_hyperparameters(ignore=["net"])
        self._net_spec_hint = self._cli_net_spec()
        self.net = net
        self.stage = stage
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.warmup_steps, self.decay_steps = warmup_steps, decay_steps
        self.masking, self.dropout_cfg = masking, dropout
        self.objective = FlowObjective(time_sampling, logit_normal_mean, logit_normal_std, shared_time)
        self.freeze_audio_dit = freeze_audio_dit
        self.init_audio_from, self.init_motion_from = init_audio_from, init_motion_from
        self.normalize_mel = normalize_mel
        self.seed = seed
        self.text_probe_batches = text_probe_batches
        self._text_probe: TextUseSums | None = None
        if activation_checkpointing and not enable_activation_checkpointing(net):
            raise InputError(
                f"--model.activation_checkpointing: {type(net).__name__} has no "
                "'checkpoint_activations' switch"
            )
        if freeze_audio_dit:
            if stage is not Stage.stage2 or not isinstance(net, JointDiT):
                raise InputError("--model.freeze_audio_dit needs stage2 and a JointDiT (a net with .audio)")
            net.audio.requires_grad_(False)
        self.forward_fn = joint_interface(net, stage)
        self.ema = EMA(net, ema.beta, ema.update_after_step, ema.update_every)
        self.ema_forward_fn = joint_interface(self.ema.model, stage)
        self.data_meta: DataMeta | None = None  # mel, motion, stats, vocab (from the DataModule / checkpoint)
        self.normaliser: Normaliser | None = None  # built with data_meta (set_data_meta)
        self._generator = torch.Generator()
        self._last_ema_step = -1
        self._micro_step, self._micro = (
            -1,
            0,
        )  # optimizer step of the last training batch, its micro-batch index
        self._tick: float | None = None
        self._skipped_ids: dict[str, str] = {}
        self._initialised_from_pretrained = False
        self.val_batch: dict[str, Any] | None = None  # first validation batch (for media callbacks)
        self.data_position: tuple[int, int] | None = None  # read by the sampler's state_dict (exact resume)
        self._skipped_setup = 0

    # ------------------------------------------------------------------------------------------------ metadata
    def _cli_net_spec(self) -> dict | None:
        """LightningCLI hands ``save_hyperparameters`` the config of ``net`` (class_path + init_args)."""
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

        given = _given_hyperparameters.get()
        spec = given.get("net") if isinstance(given, dict) else None
        return dict(spec) if isinstance(spec, dict) and "class_path" in spec else None

    def set_data_meta(self, meta: dict[str, Any] | DataMeta) -> None:
        """Take mel/motion settings, stats and vocabulary from the data side (or a checkpoint's block)."""
        data = meta if isinstance(meta, DataMeta) else DataMeta.from_dict(meta, "dataset metadata")
        if data.stats is None and self.normalize_mel:
            raise InputError("--model.normalize_mel needs dataset stats (stats.json)")
        device = self.normaliser.exp_mean.device if self.normaliser is not None else None
        self.data_meta = data
        self.normaliser = Normaliser(data.motion, data.stats, self.normalize_mel).to(device)

    def jam_flow_meta(self, with_weights: bool = True) -> dict[str, Any]:
        """``ckpt["jam_flow"]`` exactly as docs/CONVENTIONS.md describes it (:func:`jam_flow.models.format.make_meta`)."""
        if self.data_meta is None:
            raise InputError(
                "the model has no dataset metadata (train it with a DataModule or load a checkpoint)"
            )
        data = self.data_meta.to_dict()
        meta = make_meta(net_spec(self.net, self._net_spec_hint), **data, normalize_mel=self.normalize_mel)
        if with_weights:
            meta["ema_state_dict"] = {k: v.detach().cpu().clone() for k, v in self.ema.weights().items()}
        return meta

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["jam_flow"] = self.jam_flow_meta()
        # plain values only, so that every reader can use torch.load(weights_only=True) (docs/training.md)
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain(checkpoint["hyper_parameters"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("jam_flow")
        if isinstance(meta, dict):
            self.set_data_meta(meta)
        self._initialised_from_pretrained = True  # a resumed run never re-loads the pretrained inits

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "meta"):
            self.set_data_meta(dm.meta())
            self._skipped_setup = len(getattr(dm, "missing", []))
        feat_dim = getattr(dm, "audio_feature_dim", None) if dm is not None else None
        motion = self.net.motion if isinstance(self.net, JointDiT) else self.net
        net_dim = motion.audio_feat_dim if isinstance(motion, MotionDiT) else None
        if self.stage is Stage.stage1_motion and feat_dim is not None and net_dim != feat_dim:
            raise InputError(
                f"stage1_motion: the data gives {feat_dim}-wide audio features (--data.audio_features "
                f"{getattr(dm, 'audio_features', 'mel')}) but the Motion-DiT has audio_feat_dim={net_dim}"
            )
        if self.data_meta is not None and self.net_text_embeds() is not None:
            vocab_len = len(self.data_meta.vocab)
            if self.net_text_embeds() != vocab_len:
                raise InputError(
                    f"the network has text_num_embeds={self.net_text_embeds()} but the vocabulary has "
                    f"{vocab_len} tokens (set --data.vocab_path to the model's vocab.txt)"
                )

    def net_text_embeds(self) -> int | None:
        spec = net_spec(self.net, self._net_spec_hint, strict=False)
        return text_num_embeds((spec or {}).get("init_args"))

    def on_fit_start(self) -> None:
        if self._initialised_from_pretrained:
            return
        self._initialised_from_pretrained = True
        loaded = False
        if self.init_audio_from:
            load_audio_init(self.net, self.init_audio_from)
            log.info("initialised the Audio-DiT from %s", self.init_audio_from)
            loaded = True
        if self.init_motion_from:
            load_motion_init(self.net, self.init_motion_from)
            log.info("initialised the Motion-DiT from %s", self.init_motion_from)
            loaded = True
        if loaded:
            self.ema.copy_from(self.net)

    # ------------------------------------------------------------------------------------------------ batches
    def _data(self) -> DataMeta:
        if self.data_meta is None:
            raise InputError(
                "the model has no dataset metadata (train it with a DataModule or load a checkpoint)"
            )
        return self.data_meta

    def _norm(self) -> Normaliser:
        if self.normaliser is None:
            raise InputError(
                "the model has no dataset metadata (train it with a DataModule or load a checkpoint)"
            )
        return self.normaliser

    def normalise_exp(self, exp: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``exp [b, m, k, 3]`` -> ``(mouth [b, m, dm], rest [b, m, dr])`` in model space."""
        return self._norm().motion_to_model(exp)

    def denormalise_mouth(self, mouth: Tensor) -> Tensor:
        """Model-space ``mouth [b, m, dm]`` -> raw mouth keypoints ``[b, m, len(mouth_indices), 3]``."""
        return self._norm().mouth_from_model(mouth)

    def mel_to_model(self, mel: Tensor) -> Tensor:
        return self._norm().mel_to_model(mel)

    def mel_from_model(self, x: Tensor) -> Tensor:
        return self._norm().mel_from_model(x)

    def flow_batch(self, batch: dict[str, Any]) -> FlowBatch:
        with_motion = self.stage.has_motion
        mouth = rest = None
        if with_motion:
            mouth, rest = self.normalise_exp(batch["exp"].float())
        return FlowBatch(
            audio=self.mel_to_model(batch["mel"].float()),
            audio_mask=batch["audio_mask"],
            text=batch["text"],
            motion=mouth,
            motion_rest=rest,
            motion_mask=batch["motion_mask"] if with_motion else None,
            # precomputed wav2vec2 features feed the stage-1 Motion-DiT only (paper: not used in stage 2)
            audio_feats=batch.get("audio_feats") if self.stage is Stage.stage1_motion else None,
        )

    def compute_loss(self, fb: FlowBatch, forward_fn, generator: torch.Generator) -> FlowLoss:
        forced = {Stage.stage1_audio: AUDIO_ONLY, Stage.stage1_motion: MOTION_ONLY}.get(self.stage)
        mel, motion = self._data().mel, self._data().motion
        masks = sample_masks(
            fb.audio_mask.sum(1),
            fb.audio.shape[1],
            fb.motion_mask.sum(1) if fb.motion is not None else None,
            fb.motion.shape[1] if fb.motion is not None else None,
            self.masking,
            generator,
            scenario=forced,
            sample_rate=mel.sample_rate,
            hop_length=mel.hop_length,
            fps=motion.fps,
        )
        drops = sample_dropout(
            fb.audio.shape[0], self.dropout_cfg, generator, masks.audio_hidden, masks.motion_hidden
        )
        return self.objective(forward_fn, fb, masks, drops, generator)

    # ------------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._note_skipped(batch)
        if "position" in batch:  # (data epoch, batches of it consumed once this one is trained on)
            self.data_position = (int(batch["position"][0]), int(batch["position"][1]) + 1)
        step = int(self.global_step)
        rank = int(self.global_rank)
        micro = (
            self._micro + 1 if step == self._micro_step else 0
        )  # gradient accumulation: batch of this step
        self._micro_step, self._micro = step, micro
        self._generator.manual_seed(_step_seed(self.seed, rank, step, micro=micro))
        torch.manual_seed(_step_seed(self.seed, rank, step, salt=1, micro=micro))  # network dropout
        if "mel" not in batch:  # every clip of this batch failed to load: a zero step keeps DDP ranks in sync
            loss = sum(p.sum() * 0.0 for p in self.net.parameters() if p.requires_grad)
            self.log("loss/total", 0.0, prog_bar=True, batch_size=1)
            return loss
        fb = self.flow_batch(batch)
        out = self.compute_loss(fb, self.forward_fn, self._generator)
        b = fb.audio.shape[0]
        self.log("loss/total", out.total, prog_bar=True, batch_size=b)
        self.log("loss/audio", out.audio, batch_size=b)
        self.log("loss/motion", out.motion, batch_size=b)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=False, batch_size=b)
        now = time.perf_counter()
        if self._tick is not None and now > self._tick:
            frames = float(batch["audio_mask"].sum()) * self.trainer.world_size
            self.log("throughput/frames_per_s", frames / (now - self._tick), batch_size=b)
        self._tick = now
        return out.total

    def _note_skipped(self, batch: dict[str, Any]) -> None:
        for cid, err in zip(batch.get("skipped_ids", []), batch.get("skipped_errors", []), strict=True):
            if cid not in self._skipped_ids:
                self._skipped_ids[cid] = err
                log.warning("skipping clip %r: %s", cid, err)
        own = float(len(self._skipped_ids) + (self._skipped_setup if self.global_rank == 0 else 0))
        self.log("data/skipped_clips", own, prog_bar=True, reduce_fx="sum", sync_dist=True, batch_size=1)

    def on_train_epoch_end(self) -> None:
        missing = self._skipped_setup
        if self._skipped_ids or missing:
            ids = ", ".join(sorted(self._skipped_ids)[:20])
            log.warning(
                "epoch %d: %d clip(s) skipped on rank %d (bad at load: %s)%s",
                self.current_epoch,
                len(self._skipped_ids) + missing,
                self.global_rank,
                ids or "none",
                f"; {missing} missing at setup" if missing else "",
            )

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("grad_norm", norm, batch_size=1)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step != self._last_ema_step:  # once per optimizer step (gradient accumulation)
            self._last_ema_step = int(self.global_step)
            self.ema.update(self.net)

    # ------------------------------------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, Any], batch_idx: int, prefix: str) -> Tensor | None:
        if "mel" not in batch:
            return None
        if batch_idx == 0 and prefix == "val":
            self.val_batch = {k: v for k, v in batch.items()}
        gen = torch.Generator().manual_seed(_step_seed(self.seed, 0, batch_idx, salt=2))
        fb = self.flow_batch(batch)
        out = self.compute_loss(fb, self.ema_forward_fn, gen)
        b = fb.audio.shape[0]
        self.log(f"{prefix}/loss", out.total, prog_bar=True, batch_size=b, sync_dist=True)
        self.log(f"{prefix}/loss_audio", out.audio, batch_size=b, sync_dist=True)
        self.log(f"{prefix}/loss_motion", out.motion, batch_size=b, sync_dist=True)
        if (
            prefix == "val"
            and self._text_probe is not None
            and batch_idx < self.text_probe_batches
            and b >= 2
        ):
            # same times and noise at every validation: the curve moves only with the weights
            probe_gen = torch.Generator().manual_seed(_step_seed(self.seed, 0, batch_idx, salt=3))
            text_use_batch(self.ema_forward_fn, fb, rotate_text(fb.text), probe_gen, self._text_probe)
        return out.total

    def on_validation_epoch_start(self) -> None:
        probe = self.text_probe_batches > 0 and self.stage is not Stage.stage1_motion
        self._text_probe = TextUseSums() if probe else None

    def on_validation_epoch_end(self) -> None:
        sums, self._text_probe = self._text_probe, None
        if sums is None:  # the same on every rank (a config switch), so every rank takes the same branch
            return
        if self.trainer.world_size > 1:
            # every rank joins the one all-reduce, also a rank that scored no clip; the logged values are then
            # the same on every rank (no sync_dist, which would need a value from every rank)
            vec = self.trainer.strategy.reduce(sums.to_tensor().to(self.device), reduce_op="sum")
            sums = TextUseSums.from_tensor(vec)
        if sums.clips == 0:
            return
        res = sums.result()
        self.log("val/text_gain", res["text_gain_rel"], batch_size=sums.clips)
        for name, _, _ in TIME_BINS:
            gain = res["bins"][name]["text_gain_rel"]
            self.log(f"val/text_gain_{name}", gain, batch_size=sums.clips)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, batch_idx, "test")

    # ------------------------------------------------------------------------------------------------ optim
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise InputError("no trainable parameters (is everything frozen?)")
        fused = bool(torch.cuda.is_available() and all(p.is_cuda for p in params))
        opt = torch.optim.AdamW(
            params,
            lr=self.lr,
            betas=self.betas,
            weight_decay=self.weight_decay,
            **({"fused": True} if fused else {}),
        )
        decay = self.decay_steps
        if decay is None:
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
            decay = 0 if not math.isfinite(total) else max(int(total) - self.warmup_steps, 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupLinearDecay(self.warmup_steps, decay))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
