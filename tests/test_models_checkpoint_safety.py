"""No code runs from a checkpoint: a pickled ``__reduce__`` (in a zip ``.ckpt`` and in a plain pickle) is refused
with one line and exit 2 by every command that takes a checkpoint, and never executes (the marker file never
appears). Truncated and missing files give one line too."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from inference_fixtures import write_export
from lightning_support import fit_argv, make_dataset, model_reader_argv

from jam_flow.cli import main
from jam_flow.errors import InputError
from jam_flow.models.format import read_torch_file


class _Payload:
    """Unpickling this calls ``os.system`` (touches the marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_safety")
    marker = root / "PWNED"
    zipped = root / "evil_zip.ckpt"
    torch.save({"jam_flow": {"ema_state_dict": _Payload(marker)}, "global_step": 1}, zipped)
    plain = root / "evil_plain.ckpt"
    with open(plain, "wb") as f:
        pickle.dump({"jam_flow": _Payload(marker)}, f)
    export = write_export(root)
    good = root / "good.ckpt"
    torch.save({"jam_flow": {"x": torch.zeros(3)}, "global_step": 1}, good)
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:300])
    return {
        "root": root,
        "marker": marker,
        "evil": [zipped, plain],
        "truncated": truncated,
        "missing": root / "missing.ckpt",
        "export": export,
        "data": make_dataset(root / "ds", n_train=2, n_val=0, n_test=2, min_s=0.5, max_s=0.6),
    }


def _one_line(capsys, argv: list[str], *expected: str) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


def _commands(files, ckpt: Path) -> dict[str, list[str]]:
    data, root = files["data"], files["root"]
    return {
        **model_reader_argv(ckpt, data, root),
        "fit --ckpt_path": fit_argv(data, root, "--ckpt_path", str(ckpt)),
        "fit init_audio_from": fit_argv(data, root, "--model.init_audio_from", str(ckpt)),
        "fit init_motion_from": fit_argv(data, root, "--model.init_motion_from", str(ckpt)),
    }


@pytest.mark.parametrize("kind", [0, 1], ids=["zip", "plain_pickle"])
def test_malicious_checkpoint_never_runs(files, capsys, kind):
    evil = files["evil"][kind]
    for name, argv in _commands(files, evil).items():
        line = _one_line(capsys, argv, str(evil), "docs/training.md")
        assert "refused" in line, (name, line)
        assert not files["marker"].exists(), f"{name}: the checkpoint's pickled code ran"


def test_truncated_and_missing_checkpoints_one_line(files, capsys):
    # init_motion_from reads through the same function as init_audio_from (covered above for malicious files)
    for name, argv in _commands(files, files["truncated"]).items():
        if name != "fit init_motion_from":
            line = _one_line(capsys, argv, str(files["truncated"]))
            assert "not a readable PyTorch checkpoint" in line, (name, line)
    for name, argv in _commands(files, files["missing"]).items():
        if name in ("generate", "export", "evaluate", "fit init_audio_from"):
            _one_line(capsys, argv, str(files["missing"]))


def test_read_torch_file_reads_plain_values(files):
    obj = read_torch_file(files["root"] / "good.ckpt", "--ckpt")
    assert obj["global_step"] == 1 and torch.equal(obj["jam_flow"]["x"], torch.zeros(3))
    with pytest.raises(InputError, match="would call"):
        read_torch_file(files["evil"][0], "--ckpt")
    assert not files["marker"].exists()


def test_module_checkpoint_holds_plain_hyper_parameters(tmp_path):
    """A module built in Python (dataclass arguments, not the CLI's dicts) still writes a weights_only file."""
    from jam_flow.inference.testing import joint_meta
    from jam_flow.lightning.module import JAMFlowModule
    from jam_flow.models import JointDiT, tiny_joint_config

    module = JAMFlowModule(JointDiT(**tiny_joint_config()), warmup_steps=1)
    module.set_data_meta(joint_meta(tiny_joint_config()))
    ckpt = {"hyper_parameters": dict(module.hparams)}
    assert not isinstance(ckpt["hyper_parameters"]["ema"], dict)  # a dataclass before saving
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "m.ckpt")
    back = read_torch_file(tmp_path / "m.ckpt", "--ckpt")
    assert back["hyper_parameters"]["ema"] == {"beta": 0.9999, "update_after_step": 100, "update_every": 10}
    assert back["jam_flow"]["format_version"] == 1
