"""Helpers for the training tests: a small clip dataset written with ``jam_flow.data.format`` and tiny networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jam_flow.data.format import ClipRecord, write_clip, write_dataset
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame, num_motion_frames

SENTENCES = ["hello there", "a tiny clip", "lips move", "jam flow", "speech and motion", "one two three"]


def make_dataset(
    root: str | Path,
    n_train: int = 6,
    n_val: int = 2,
    n_test: int = 0,
    seed: int = 0,
    min_s: float = 0.5,
    max_s: float = 1.2,
    corrupt: int = 0,
    missing: int = 0,
) -> Path:
    """Write a valid dataset of random-but-structured clips; ``corrupt`` train clips get a truncated npz and
    ``missing`` train clips lose their npz after the stats are computed (planted bad clips)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mel_s, mot_s = MelSettings(), MotionSettings()
    records = []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        dur = float(np.round(rng.uniform(min_s, max_s), 3))
        n = mel_s.num_frames(round(dur * mel_s.sample_rate))
        m = num_motion_frames(dur, mot_s.fps)
        t = np.arange(n)[:, None]
        freq = rng.uniform(0.05, 0.2)
        mel = np.sin(freq * t + np.linspace(0, 3, 100)[None]) * 2 - 5 + 0.1 * rng.standard_normal((n, 100))
        phase = np.sin(freq * 3.75 * np.arange(m))
        exp = 0.01 * rng.standard_normal((m, 21, 3))
        exp[:, list(mot_s.mouth_indices), 1] += 0.05 * phase[:, None]
        arrays = {
            "mel": mel,
            "exp": exp,
            "pitch": np.zeros(m),
            "yaw": np.zeros(m),
            "roll": np.zeros(m),
            "scale": np.ones((m, 1)),
            "t": np.zeros((m, 3)),
            "kp": np.zeros((m, 21, 3)),
        }
        assert abs(audio_to_motion_frame(n - 1) + 1 - m) <= 1
        rec = ClipRecord(
            id=f"clip{i:03d}",
            split=split,
            speaker=f"spk{i % 2}",
            duration=dur,
            n_mel=n,
            n_motion=m,
            text=SENTENCES[i % len(SENTENCES)],
            features="",
        )
        records.append(write_clip(root, rec, arrays))
    write_dataset(root, records, mel_s, mot_s, "test")
    train = [r for r in records if r.split == "train"]
    for rec in train[:corrupt]:
        path = root / rec.features
        path.write_bytes(path.read_bytes()[:200])
    for rec in train[corrupt : corrupt + missing]:
        (root / rec.features).unlink()
    return root


class LossRecorder(__import__("lightning").Callback):
    """Appends ``global_step loss`` lines to ``path`` after every training batch (usable from a CLI config)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        path = self.path if trainer.world_size == 1 else f"{self.path}.rank{trainer.global_rank}"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{trainer.global_step - 1} {float(loss):.10f} {','.join(batch.get('ids', []))}\n")


def read_losses(path: str | Path) -> dict[int, tuple[float, str]]:
    out = {}
    for line in Path(path).read_text().splitlines():
        step, loss, ids = (line.split(" ") + [""])[:3]
        out[int(step)] = (float(loss), ids)
    return out


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tests"


def fit_argv(data: str | Path, root: str | Path, *extra: str) -> list[str]:
    """``jam-flow fit`` of the tiny stage-2 config on ``data`` for one step (no validation, no media) under
    ``root/fit``, then ``extra``."""
    return [
        "fit",
        *("--config", str(CONFIGS / "tiny_stage2.yaml"), "--data.data_dir", str(data)),
        *("--trainer.default_root_dir", str(Path(root) / "fit"), "--trainer.max_steps", "1"),
        *("--trainer.limit_val_batches", "0", "--media.num_clips", "0"),
        *extra,
    ]


def model_reader_argv(ckpt: str | Path, data: str | Path, root: str | Path) -> dict[str, list[str]]:
    """The ``generate``, ``export`` and ``evaluate`` command lines that read the model file ``ckpt``, writing
    under ``root``."""
    ckpt, root = str(ckpt), Path(root)
    return {
        "generate": [
            "generate",
            "--task",
            "text2av",
            "--text",
            "hi",
            "--ckpt",
            ckpt,
            "--out",
            str(root / "g"),
        ],
        "export": ["export", "--ckpt", ckpt, "--out", str(root / "e")],
        "evaluate": [
            "evaluate",
            *("--ckpt", ckpt, "--data.data_dir", str(data), "--split", "test"),
            *("--task", "audio2motion", "--out", str(root / "eval.json")),
        ],
    }
