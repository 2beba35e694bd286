"""``jam-flow fit | validate | test``: a LightningCLI (jsonargparse) over :class:`JAMFlowModule` and
:class:`JAMFlowDataModule`.

No tensors here. Besides Lightning's own ``--trainer.*``, ``--model.*``, ``--data.*`` and ``--ckpt_path`` it adds:

* ``--checkpoint.*``: a :class:`~jam_flow.lightning.callbacks.Checkpoint` (Lightning's ``ModelCheckpoint``
  arguments) that always runs: the best checkpoint by ``val/loss`` (EMA network), decided right after each
  validation, plus ``last.ckpt`` every ``every_n_train_steps`` steps, under ``<log dir>/checkpoints/``;
* ``--nonfinite.*``: :class:`~jam_flow.lightning.callbacks.NonFiniteGuard` (skips and counts NaN/inf steps, stops
  after ``max_consecutive_nonfinite`` in a row: one ``error:`` line, exit status 1);
* ``--ckpt_path`` is checked before anything is built (exists, loads with ``weights_only=True``, holds a
  ``state_dict``, names no class outside jam-flow's networks in ``jam_flow.model.class_path`` or its
  ``hyper_parameters``): a bad one is one ``error:`` line, exit status 2. ``--ckpt_path last`` means the newest
  ``last*.ckpt`` (or SLURM ``hpc_ckpt_*.ckpt``) anywhere under ``default_root_dir``, whatever its version folder
  (Lightning itself would look in the new run's folder only and start over); none: a new run starts;
* ``--media.*``: :class:`~jam_flow.lightning.callbacks.ValidationMedia` (mel image, audio, mouth trajectories);
* a rich progress bar (``--progress_bar.*``); Lightning's default TensorBoard logger writes to
  ``<default_root_dir>/lightning_logs/version_N/`` (checkpoints in its ``checkpoints/``);
* SIGTERM (preemption) stops the run at the next batch end with exit status 143 (Lightning alone exits 0);
  ``--ckpt_path last`` continues it from its newest checkpoint;
* ``trainer.use_distributed_sampler`` defaults to false: the DataModule's batch sampler shards batches itself;
* the network's ``text_num_embeds`` is set from the data vocabulary (see ``before_instantiate_classes``).

Multi-GPU / multi-node: Lightning launches DDP itself (``--trainer.devices 4 --trainer.strategy ddp``); for
several nodes start the same command on every node with ``torchrun`` or under SLURM ``srun`` (docs/training.md).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from jam_flow.errors import InputError
from jam_flow.lightning.callbacks import Checkpoint, NonFiniteGuard, NonFiniteTrainingError, ValidationMedia
from jam_flow.lightning.datamodule import JAMFlowDataModule
from jam_flow.lightning.module import JAMFlowModule

__all__ = ["JAMFlowCLI", "fit_main", "validate_main", "test_main", "run_cli", "newest_checkpoint"]

log = logging.getLogger(__name__)


class JAMFlowCLI(LightningCLI):
    """LightningCLI with jam-flow's forced callbacks, defaults and argument links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_lightning_class_args(ValidationMedia, "media")
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        # Lightning's default logger (trainer.logger: true) is TensorBoard under <default_root_dir>/lightning_logs
        parser.set_defaults({"trainer.use_distributed_sampler": False})

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        """The forced callbacks step aside when the trainer switches their feature off
        (``--trainer.enable_progress_bar false`` / ``--trainer.enable_checkpointing false``)."""
        if config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, RichProgressBar)]
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyper-parameters here, first of all: resolve ``last`` across version
        folders and check the file before it does."""
        if self.config.get("subcommand"):
            cfg = self.config[self.config.subcommand]
            if cfg.get("ckpt_path") == "last":
                root = cfg.get("trainer.default_root_dir") or "."
                found = newest_checkpoint(root)
                if found is None:
                    log.info("--ckpt_path last: no checkpoint under %s, starting a new run", root)
                else:
                    log.info("--ckpt_path last: resuming from %s", found)
                cfg["ckpt_path"] = None if found is None else str(found)
            _check_ckpt_path(cfg.get("ckpt_path"))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Set the network's ``text_num_embeds`` from the data vocabulary (``data.vocab_path`` or the bundled one of
        ``data.text_units``).

        This is a link ``data.vocab_size -> model.net...text_num_embeds`` whose target depends on the network class
        (``init_args.audio.text_num_embeds`` for a JointDiT, ``init_args.text_num_embeds`` for an AudioDiT, none
        for a MotionDiT), which ``link_arguments`` cannot express."""
        from jam_flow.data.text import load_vocab

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        net = cfg.get("model.net")
        if net is None or "init_args" not in net:
            return
        from jam_flow.models.format import text_embeds_holder

        holder = text_embeds_holder(net.init_args)
        if holder is None:
            return
        size = len(load_vocab(cfg.get("data.vocab_path"), cfg.get("data.text_units") or "char"))
        holder["text_num_embeds"] = size


def newest_checkpoint(root: str | Path) -> Path | None:
    """The most recently written resume point under ``root``: ``last*.ckpt`` in any logger / version folder, or a
    SLURM requeue checkpoint ``hpc_ckpt_*.ckpt`` (Lightning writes those into ``default_root_dir``)."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [*root.rglob("last*.ckpt"), *root.glob("hpc_ckpt_*.ckpt")]
    found = [p for p in found if p.is_file() and not p.name.startswith(".")]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def _check_ckpt_path(ckpt_path: object) -> None:
    """Refuse a ``--ckpt_path`` file that is missing, corrupt or needs code to unpickle, with one line, before
    Lightning opens it (its tensors are memory-mapped, not read). Lightning's keywords (``last``, ...) pass."""
    if not isinstance(ckpt_path, str) or ckpt_path in ("last", "best", "hpc", "registry"):
        return
    from jam_flow.models.format import check_hyper_parameters, check_meta, read_torch_file

    ckpt = read_torch_file(ckpt_path, "--ckpt_path", mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"--ckpt_path: {ckpt_path} is not a Lightning checkpoint (no 'state_dict' entry)")
    # the class names it holds are strings checked against jam-flow's networks before Lightning parses them
    if "jam_flow" in ckpt:
        check_meta(ckpt["jam_flow"], f"--ckpt_path: {ckpt_path} [jam_flow]")
    check_hyper_parameters(ckpt.get("hyper_parameters"), f"--ckpt_path: {ckpt_path}")


def run_cli(subcommand: str, argv: list[str]) -> JAMFlowCLI:
    """Run one LightningCLI subcommand and return the CLI object (``.trainer``, ``.model``, ``.datamodule``).
    LightningCLI exits itself on bad arguments and after ``--print_config``."""
    with warnings.catch_warnings():
        # `jam-flow fit ...` passes its arguments in `args` while sys.argv also holds them (it must: DDP's launcher
        # re-runs sys.argv on every rank); and the EMA copy is in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        return JAMFlowCLI(
            JAMFlowModule,
            JAMFlowDataModule,
            args=[subcommand, *argv],
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )


# exit status of a run stopped by SIGTERM (preemption): 128 + 15, as if killed, so a script sees it did not finish
SIGTERM_EXIT = 143


def fit_main(argv: list[str]) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        run_cli("fit", argv)
    except NonFiniteTrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except SIGTERMException:  # Lightning stops at the next batch end and raises SystemExit() (status 0)
        print("error: stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
        return SIGTERM_EXIT
    return 0


def validate_main(argv: list[str]) -> int:
    run_cli("validate", argv)
    return 0


def test_main(argv: list[str]) -> int:
    run_cli("test", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(fit_main(sys.argv[1:]))
