"""Training callbacks: :class:`Checkpoint` (best after the validation that scores it, periodic ``last.ckpt``,
atomic writes), :class:`NonFiniteGuard` (skips and counts NaN/inf steps, stops a diverged run) and
:class:`ValidationMedia`: a generated mel image, vocoded audio and mouth-keypoint trajectories against the ground
truth, sampled with the EMA network through :func:`jam_flow.flow.sampler.sample`.

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, km mouth keypoints (4).
Masks are **True = valid**; ``*_known`` masks are **True = given** (the sampler's convention).

Task per stage (first validation batch, first ``num_clips`` clips):

* ``stage2``: text + reference (paper case 2): the first ``prompt_frac`` of the clip is given in both streams,
  the rest of the speech and lip motion is generated jointly;
* ``stage1_audio``: the same with the audio stream only (F5-TTS continuation);
* ``stage1_motion``: audio -> motion: the whole mel is given, the motion after the prompt is generated.

The mel and the audio come from the clip's generated region and the reference together (what a user hears);
``val/mouth_mae`` is the mean absolute error of the generated mouth keypoints (raw LivePortrait units) over the
generated frames.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.features import FrameClock
from jam_flow.flow.layouts import Given, task_layout
from jam_flow.flow.sampler import SamplerSettings, sample
from jam_flow.models.stages import Stage

__all__ = ["AtomicCheckpointIO", "Checkpoint", "NonFiniteGuard", "NonFiniteTrainingError", "ValidationMedia"]

log = logging.getLogger(__name__)


class Checkpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with its two jobs kept apart (docs/training.md, "Checkpoints"):

    * the **best** checkpoint(s) by ``monitor`` are decided in ``on_validation_end``, right after the validation
      that produced the score (Lightning's step trigger fires *before* a validation at the same step and would
      rank the weights by the previous validation's score);
    * ``last.ckpt`` is written every ``every_n_train_steps`` optimizer steps whether or not a validation ran, after
      every validation (so it carries the newest best score) and at the end of training;
    * every file is written to a hidden sibling and renamed into place with the usual file mode
      (:class:`AtomicCheckpointIO`, installed when the strategy uses the default ``TorchCheckpointIO``).

    Without ``monitor`` it behaves exactly as ``ModelCheckpoint``. The arguments are ``ModelCheckpoint``'s.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.monitor is None or not pl_module.automatic_optimization:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self._every_n_train_steps
        if n < 1 or trainer.global_step % n or self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.monitor is None:
            return super().on_validation_end(trainer, pl_module)
        if trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes a local checkpoint to ``.checkpoint-save.partial`` beside it and renames it
    into place: Lightning's own save goes through a ``mkstemp`` file in the system temp folder (mode 0600, left
    behind when the process is killed). The partial file is removed on failure; a killed save leaves only it, and
    the next save overwrites it (its name holds no "last", so ``ckpt_path="last"`` never picks it)."""

    PARTIAL_NAME = ".checkpoint-save.partial"

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        partial = os.path.join(directory, self.PARTIAL_NAME)
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise


class NonFiniteTrainingError(RuntimeError):
    """Training stopped after too many consecutive optimizer steps with NaN/inf loss or gradients."""


class NonFiniteGuard(L.Callback):
    """Skip, count and log optimizer steps whose gradients are NaN/inf; stop a run that stays non-finite.

    A non-finite step (NaN/inf in any gradient, which a NaN/inf loss produces) has its gradients dropped, so the
    optimizer leaves the weights and its state as they were. TensorBoard gets ``train/nonfinite_steps`` and
    ``train/nonfinite_loss`` (running totals) and ``train/nonfinite_consecutive``. After
    ``max_consecutive_nonfinite`` non-finite steps in a row training stops with :class:`NonFiniteTrainingError`
    (``jam-flow fit`` prints it as one line and exits 1); ``last.ckpt`` keeps the last periodic save.

    Args:
        max_consecutive_nonfinite: consecutive non-finite steps that stop training (0: never stop). fp16 loss
            scaling skips a few steps in a row on its own while it calibrates, so keep this well above 1.
    """

    def __init__(self, max_consecutive_nonfinite: int = 20) -> None:
        super().__init__()
        if max_consecutive_nonfinite < 0:
            raise ValueError(
                f"nonfinite.max_consecutive_nonfinite: expected >= 0, got {max_consecutive_nonfinite}"
            )
        self.max_consecutive_nonfinite = int(max_consecutive_nonfinite)
        self.steps = 0  # non-finite optimizer steps so far
        self.losses = 0  # non-finite training losses so far
        self.consecutive = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self.losses += 1
            pl_module.log("train/nonfinite_loss", float(self.losses), batch_size=1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        norms = torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])
        if bool(torch.isfinite(norms).all()):
            self.consecutive = 0
            return
        for p in params:
            p.grad = None  # the optimizer skips parameters without gradients: weights and moments stay finite
        self.steps += 1
        self.consecutive += 1
        pl_module.log("train/nonfinite_steps", float(self.steps), batch_size=1)
        pl_module.log("train/nonfinite_consecutive", float(self.consecutive), batch_size=1)
        log.warning(
            "step %d: non-finite gradients (NaN/inf); the step was skipped (%d in a row, %d so far)",
            trainer.global_step,
            self.consecutive,
            self.steps,
        )
        if self.max_consecutive_nonfinite and self.consecutive >= self.max_consecutive_nonfinite:
            raise NonFiniteTrainingError(
                f"training stopped at step {trainer.global_step}: {self.consecutive} consecutive optimizer steps "
                f"had NaN/inf gradients ({self.steps} non-finite steps, {self.losses} non-finite losses so far; "
                f"--nonfinite.max_consecutive_nonfinite {self.max_consecutive_nonfinite}). Likely causes: a "
                f"learning rate too high (--model.lr), fp16 overflow (use bf16-mixed or 32-true precision), "
                f"gradient clipping off (--trainer.gradient_clip_val) or bad data (`jam-flow data validate`); "
                f"resume from the last checkpoint with a fix"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "losses": self.losses, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = int(state_dict.get("steps", 0))
        self.losses = int(state_dict.get("losses", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))


class ValidationMedia(L.Callback):
    """Log generated media at the end of validation (global rank 0, never during the sanity check).

    Args:
        num_clips: clips of the first validation batch to generate (0 disables the callback).
        every_n_epochs: run on every n-th validation (counted in validation runs).
        nfe: network evaluations of the ODE sampler (paper: 32; tiny configs: 4).
        cfg: classifier-free guidance scale (paper: 2.0).
        guidance: guidance mode (``jam_flow.flow.guidance``): ``joint`` (paper), ``f5`` or ``all``. Refused at
            fit start when the module's ``dropout`` never trains that mode's unconditional configuration.
        sway_coef: F5-TTS sway sampling coefficient.
        prompt_frac: fraction of each clip given as the reference.
        vocoder_path: local Vocos directory; None: the Griffin-Lim fallback (jam_flow.data.vocoder).
        seed: noise seed of the sampler (the same noise every validation, so the images are comparable).
        judge_path: intelligibility judge directory (``jam-flow train-judge``); when set, the first
            ``judge_clips`` validation clips are generated from their text alone (text -> speech + motion, no
            prompt) and the judge's CER is logged as ``val/cer``, with ``val/cer_ground_truth`` (the judge on the
            clips' own mel) beside it. Independent of ``num_clips``.
        judge_clips: validation clips scored by the judge.
    """

    def __init__(
        self,
        num_clips: int = 2,
        every_n_epochs: int = 1,
        nfe: int = 32,
        cfg: float = 2.0,
        guidance: Literal["joint", "f5", "all"] = "joint",
        sway_coef: float | None = -1.0,
        prompt_frac: float = 0.3,
        vocoder_path: str | None = None,
        seed: int = 0,
        judge_path: str | None = None,
        judge_clips: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 <= prompt_frac < 1.0:
            raise ValueError(f"media.prompt_frac: expected a value in [0, 1), got {prompt_frac}")
        self.num_clips = num_clips
        self.every_n_epochs = max(int(every_n_epochs), 1)
        self.settings = SamplerSettings(nfe=nfe, cfg=cfg, sway_coef=sway_coef, guidance=guidance)
        self.prompt_frac = prompt_frac
        self.vocoder_path = vocoder_path
        self.seed = seed
        self._vocoder = None
        self._runs = 0
        self.judge_path = judge_path
        self.judge_clips = judge_clips
        self._judge = None
        if judge_path is not None:
            from jam_flow.models.judge import load_judge

            self._judge = load_judge(judge_path)  # fails at start-up, not after the first epoch

    def _get_vocoder(self, mel_settings):
        if self._vocoder is None:
            from jam_flow.data.vocoder import load_vocoder

            self._vocoder = load_vocoder(self.vocoder_path, mel_settings)
        return self._vocoder

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a guidance mode whose unconditional configuration the model never trains."""
        dropout = getattr(pl_module, "dropout_cfg", None)
        if (
            self.num_clips <= 0
            or dropout is None
            or self.settings.audio_scale + self.settings.motion_scale == 0
        ):
            return
        mode = self.settings.guidance
        if mode == "joint" and getattr(pl_module, "stage", None) is Stage.stage1_audio:
            mode = "f5"  # no motion stream: the sampler falls back to f5
        try:
            dropout.check_trained(mode, f"--media.guidance {self.settings.guidance}")
        except ValueError as err:
            raise InputError(str(err)) from err

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (self.num_clips <= 0 and self._judge is None):
            return
        self._runs += 1
        if (self._runs - 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        batch = getattr(pl_module, "val_batch", None)
        writer = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
        if batch is None or writer is None or not hasattr(writer, "add_figure"):
            return
        if self._judge is not None and pl_module.stage is not Stage.stage1_motion:
            with torch.no_grad():
                scores = self.judge_cer(pl_module, batch)
            for name, value in scores.items():
                writer.add_scalar(f"val/{name}", value, global_step=int(trainer.global_step))
        if self.num_clips <= 0:
            return
        with torch.no_grad():
            media = self.generate(pl_module, batch)
        self.log_media(writer, media, pl_module, int(trainer.global_step))

    # ------------------------------------------------------------------------------------------------ generation
    def generate(self, pl_module: Any, batch: dict[str, Any]) -> dict[str, Tensor | None]:
        """Sample the clips and return model- and raw-space tensors for logging (also used by tests)."""
        k = min(self.num_clips, batch["mel"].shape[0])
        dev = pl_module.device
        sub = {key: (v[:k].to(dev) if isinstance(v, Tensor) else v) for key, v in batch.items()}
        fb = pl_module.flow_batch(sub)
        meta = pl_module.data_meta
        a_len = fb.audio_mask.sum(1)
        prompt = (a_len.float() * self.prompt_frac).long()
        given = Given(text=fb.text, mel=fb.audio, mel_lens=a_len)
        audio_span = None if pl_module.stage is Stage.stage1_motion else torch.stack([prompt, a_len], 1)
        motion_span = None
        if fb.motion is not None:
            given.mouth, given.rest, given.motion_lens = fb.motion, fb.motion_rest, fb.motion_mask.sum(1)
            m_prompt = FrameClock.of(meta.mel, meta.motion).motion_frames(prompt)
            motion_span = torch.stack([m_prompt, given.motion_lens], 1)
        # the prompt continued in both streams: the edit layout with the span after the prompt regenerated
        cond = task_layout(
            "edit", given, meta.mel, meta.motion, audio_span=audio_span, motion_span=motion_span
        ).cond
        audio_known = cond.audio_known
        was_training = pl_module.ema.model.training
        pl_module.ema.model.eval()
        gen = torch.Generator().manual_seed(self.seed)
        out = sample(pl_module.ema_forward_fn, cond, self.settings, generator=gen)
        pl_module.ema.model.train(was_training)
        media: dict[str, Tensor | None] = {
            "mel_gen": pl_module.mel_from_model(out.audio).float().cpu(),
            "mel_gt": sub["mel"].float().cpu(),
            "audio_mask": fb.audio_mask.cpu(),
            "audio_known": audio_known.cpu(),
            "mouth_gen": None,
            "mouth_gt": None,
            "motion_mask": None,
            "motion_known": None,
        }
        if out.motion is not None:
            media["mouth_gen"] = pl_module.denormalise_mouth(out.motion).cpu()
            media["mouth_gt"] = pl_module.denormalise_mouth(fb.motion).cpu()
            media["motion_mask"] = fb.motion_mask.cpu()
            media["motion_known"] = cond.motion_known.cpu()
        return media

    def judge_cer(self, pl_module: Any, batch: dict[str, Any]) -> dict[str, float]:
        """Generate the first ``judge_clips`` clips from their text alone (the text2av layout of ``jam-flow
        evaluate``: nothing given but the text; e_rest dropped) and score them with the judge (``judge_path``;
        without one this is an ``InputError``, raised before any generation)."""
        if self._judge is None:
            raise InputError(
                "--media.judge_path: scoring validation clips with the judge needs a judge directory "
                "(jam-flow train-judge --out DIR), got none"
            )
        from torchmetrics.text import CharErrorRate

        from jam_flow.models.judge import judge_text

        k = min(self.judge_clips, batch["mel"].shape[0])
        dev = pl_module.device
        sub = {key: (v[:k].to(dev) if isinstance(v, Tensor) else v) for key, v in batch.items()}
        fb = pl_module.flow_batch(sub)
        meta = pl_module.data_meta
        # without a motion stream: tts with no reference (the audio branch alone, from the text)
        task = "text2av" if fb.motion is not None else "tts"
        gen_frames = fb.audio_mask.sum(1)
        cond = task_layout(task, Given(text=fb.text), meta.mel, meta.motion, gen_frames=gen_frames).cond
        was_training = pl_module.ema.model.training
        pl_module.ema.model.eval()
        out = sample(
            pl_module.ema_forward_fn, cond, self.settings, generator=torch.Generator().manual_seed(self.seed)
        )
        pl_module.ema.model.train(was_training)
        mel_gen = pl_module.mel_from_model(out.audio).float().cpu()
        vocab = pl_module.data_meta.vocab.tokens
        lengths = fb.audio_mask.sum(1).tolist()
        texts = [judge_text("".join(vocab[i] for i in row[row >= 0].tolist())) for row in sub["text"].cpu()]
        gen = [mel_gen[i, : int(n)] for i, n in enumerate(lengths)]
        ref = [sub["mel"][i, : int(n)].float().cpu() for i, n in enumerate(lengths)]
        judge = self._judge.to(dev)
        return {
            "cer": float(CharErrorRate()([judge_text(t) for t in judge.transcribe(gen)], texts)),
            "cer_ground_truth": float(CharErrorRate()([judge_text(t) for t in judge.transcribe(ref)], texts)),
        }

    # ------------------------------------------------------------------------------------------------ logging
    def log_media(self, writer: Any, media: dict[str, Tensor | None], pl_module: Any, step: int) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        mel_s = pl_module.data_meta.mel
        stage = pl_module.stage
        for i in range(media["mel_gen"].shape[0]):
            n = int(media["audio_mask"][i].sum())
            gen_mel, gt_mel = media["mel_gen"][i, :n], media["mel_gt"][i, :n]
            if stage is not Stage.stage1_motion:
                fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
                for ax, mel, title in ((axes[0], gt_mel, "ground truth"), (axes[1], gen_mel, "generated")):
                    ax.imshow(mel.T.numpy(), origin="lower", aspect="auto", interpolation="none")
                    ax.set_title(f"{title} log-mel")
                prompt = int(media["audio_known"][i, :n].sum())
                axes[1].axvline(prompt - 0.5, color="w", linestyle="--", linewidth=1)
                axes[1].set_xlabel("mel frame")
                fig.tight_layout()
                writer.add_figure(f"val/mel/{i}", fig, global_step=step)
                plt.close(fig)
                try:
                    vocoder = self._get_vocoder(mel_s)
                    wave = vocoder.decode(gen_mel)
                    peak = wave.abs().max().clamp_min(1e-8)
                    writer.add_audio(
                        f"val/audio/{i}",
                        (wave / peak * 0.95)[None],
                        global_step=step,
                        sample_rate=int(vocoder.sample_rate),
                    )
                except Exception as err:  # noqa: BLE001 - media logging must never stop training
                    log.warning("validation audio not logged: %s: %s", type(err).__name__, err)
            if media["mouth_gen"] is not None:
                m = int(media["motion_mask"][i].sum())
                gen_m, gt_m = media["mouth_gen"][i, :m], media["mouth_gt"][i, :m]
                gen_region = ~media["motion_known"][i, :m]
                if gen_region.any():
                    mae = (gen_m[gen_region] - gt_m[gen_region]).abs().mean()
                    writer.add_scalar(f"val/mouth_mae/{i}", float(mae), global_step=step)
                kps = gen_m.shape[1]
                fig, axes = plt.subplots(kps, 1, figsize=(8, 1.6 * kps), sharex=True, squeeze=False)
                for j in range(kps):
                    ax = axes[j, 0]
                    for coord, color in zip(range(3), ("tab:red", "tab:green", "tab:blue"), strict=True):
                        ax.plot(
                            gt_m[:, j, coord].numpy(), color=color, linewidth=1.2, label=f"gt {'xyz'[coord]}"
                        )
                        ax.plot(
                            gen_m[:, j, coord].numpy(),
                            color=color,
                            linewidth=1.2,
                            linestyle="--",
                            label=f"gen {'xyz'[coord]}",
                        )
                    ax.axvline(int((~gen_region).sum()) - 0.5, color="k", linestyle=":", linewidth=1)
                    ax.set_ylabel(f"kp {j}")
                axes[0, 0].legend(ncol=6, fontsize=6, loc="upper right")
                axes[-1, 0].set_xlabel("motion frame (25 fps)")
                fig.suptitle("mouth keypoints: ground truth (solid) vs generated (dashed)")
                fig.tight_layout()
                writer.add_figure(f"val/mouth/{i}", fig, global_step=step)
                plt.close(fig)
