"""No foreign class from a file: a checkpoint that loads under ``weights_only=True`` (plain values only) but names
``subprocess.Popen`` as its network (``ckpt["jam_flow"]["model"]["class_path"]``, the Lightning
``hyper_parameters.net.class_path``, an export's ``config.yaml``, a Vocos ``config.yaml`` section) is refused by
every command that reads one, with one ``error:`` line naming the file and the field, exit 2; the command the
``Popen`` would run (touching a marker file) never runs."""

from __future__ import annotations

import time
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from inference_fixtures import tiny_meta, write_export, write_inputs, write_vocos
from lightning_support import CONFIGS, fit_argv, make_dataset, model_reader_argv

from jam_flow.cli import main
from jam_flow.errors import InputError
from jam_flow.inference.testing import random_joint_net
from jam_flow.models.format import (
    NETWORK_CLASSES,
    build_model,
    check_hyper_parameters,
    make_meta,
    model_class,
    read_model_file,
    read_torch_file,
)


def _lightning_ckpt(path: Path, net_spec: dict, hparams_net: dict, state: dict, meta: dict) -> Path:
    """A checkpoint in the layout ``jam-flow fit`` writes (Lightning's keys, plain hyper-parameters, the
    ``jam_flow`` block with the EMA weights), loadable with ``weights_only=True``."""
    data = {k: meta[k] for k in ("mel", "motion", "stats", "vocab")}
    ckpt = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {f"net.{k}": v for k, v in state.items()},
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"net": hparams_net, "stage": "stage2", "lr": 1e-3, "seed": 0},
        "jam_flow": {**make_meta(net_spec, **data, normalize_mel=False), "ema_state_dict": state},
    }
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign_class")
    marker = root / "PWNED"
    popen = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}}
    meta = tiny_meta()
    state = random_joint_net(meta).state_dict()
    evil = _lightning_ckpt(root / "evil.ckpt", popen, popen, state, meta)
    # the network block is a jam-flow network, only the hyper-parameters LightningCLI reads name Popen
    evil_hparams = _lightning_ckpt(root / "evil_hparams.ckpt", meta["model"], popen, state, meta)
    export = write_export(root)
    evil_export = root / "evil_export"
    evil_export.mkdir()
    (evil_export / "model.safetensors").write_bytes((export / "model.safetensors").read_bytes())
    config = yaml.safe_load((export / "config.yaml").read_text())
    config["model"] = popen
    (evil_export / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    evil_vocos = write_vocos(root)
    vocos_cfg = yaml.safe_load((evil_vocos / "config.yaml").read_text())
    vocos_cfg["head"] = popen
    (evil_vocos / "config.yaml").write_text(yaml.safe_dump(vocos_cfg))
    (root / "videos").mkdir()  # dub-video / animate write their output set beside --out
    w2v = root / "w2v"
    w2v.mkdir()
    (w2v / "config.json").write_text('{"model_type": "subprocess.Popen", "num_hidden_layers": 1}')
    return {
        "root": root,
        "marker": marker,
        "evil": evil,
        "evil_hparams": evil_hparams,
        "evil_export": evil_export,
        "export": export,
        "evil_vocos": evil_vocos,
        "w2v": w2v,
        "inputs": write_inputs(root),
        "data": make_dataset(root / "ds", n_train=2, n_val=0, n_test=2, min_s=0.5, max_s=0.6),
    }


def _one_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv[0], err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _fit(files, *extra: str) -> list[str]:
    return fit_argv(files["data"], files["root"], *extra)


def _dub_video(files) -> list[str]:
    """``dub-video`` with its inputs (the model options follow)."""
    inputs = files["inputs"]
    return [
        "dub-video",
        "--video",
        str(inputs["speech"]),
        "--text",
        "hi",
        "--motion-extractor",
        str(inputs["clip"]),
    ]


def _model_commands(files, ckpt: Path) -> dict[str, list[str]]:
    """Every command that reads a jam-flow model (a ``.ckpt`` or an export directory)."""
    root, data = files["root"], str(files["data"])
    return {
        **model_reader_argv(ckpt, data, root),
        "evaluate --protocol": [
            "evaluate",
            *("--protocol", "dubbing", "--ckpt", str(files["export"]), str(ckpt)),
            *("--data.data_dir", data, "--out", str(root / "protocol")),
        ],
        "demo": ["demo", "--ckpt", str(ckpt), "--device", "cpu", "--out", str(root / "demo")],
        "dub-video": [
            *_dub_video(files),
            *("--ckpt", str(ckpt), "--out", str(root / "videos" / "dub.mp4"), "--device", "cpu", "-q"),
        ],
        "animate": [
            "animate",
            *("--source", str(files["inputs"]["ref"]), "--text", "hi", "--liveportrait", str(root)),
            *("--ckpt", str(ckpt), "--out", str(root / "videos" / "animate.mp4"), "--device", "cpu", "-q"),
        ],
        "fit init_audio_from": _fit(files, "--model.init_audio_from", str(ckpt)),
        "fit init_motion_from": _fit(files, "--model.init_motion_from", str(ckpt)),
    }


def _assert_never_ran(files, name: str, wait: float = 0.0) -> None:
    time.sleep(
        wait
    )  # a started Popen touches the marker asynchronously: the last check of a test waits for it
    assert not files["marker"].exists(), f"{name}: the class the file named was built"


@pytest.fixture
def no_liveportrait(monkeypatch):
    """``animate`` loads the LivePortrait weights before the model: a stand-in, so the model file is reached."""
    import jam_flow.liveportrait as lp

    monkeypatch.setattr(lp, "load_liveportrait", lambda *args, **kwargs: object())


@pytest.mark.parametrize("kind", ["evil", "evil_export"])
def test_foreign_network_class_is_refused_by_every_model_reader(files, capsys, kind, no_liveportrait):
    ckpt = files[kind]
    commands = _model_commands(files, ckpt)
    if kind == "evil":  # a Lightning checkpoint: also the commands that resume from one
        commands["fit --ckpt_path"] = _fit(files, "--ckpt_path", str(ckpt))
        for sub in ("validate", "test"):
            base = ["--config", str(CONFIGS / "tiny_stage2.yaml"), "--data.data_dir", str(files["data"])]
            commands[f"{sub} --ckpt_path"] = [sub, *base, "--ckpt_path", str(ckpt)]
    else:  # `jam-flow export` reads a .ckpt only (an export directory is what it writes)
        del commands["export"]
    for name, argv in commands.items():
        line = _one_line(capsys, argv)
        assert "model.class_path" in line and "'subprocess.Popen'" in line, (name, line)
        where = "config.yaml" if kind == "evil_export" else f"{ckpt} [jam_flow]"
        assert where in line, (name, line)
        _assert_never_ran(files, name)
    _assert_never_ran(files, "any command", wait=0.5)


def test_foreign_class_in_lightning_hyper_parameters_is_refused(files, capsys):
    line = _one_line(capsys, _fit(files, "--ckpt_path", str(files["evil_hparams"])))
    assert f"--ckpt_path: {files['evil_hparams']}" in line and "hyper_parameters.net.class_path" in line, line
    assert "'subprocess.Popen'" in line, line
    _assert_never_ran(files, "fit --ckpt_path", wait=0.5)
    # the readers of the jam_flow block accept the same file: only its hyper-parameters are foreign
    assert (
        read_model_file(files["evil_hparams"], "--ckpt").meta["model"]["class_path"]
        == "jam_flow.models.JointDiT"
    )


def test_foreign_vocoder_and_feature_model_classes_are_refused(files, capsys):
    root, vocos = files["root"], str(files["evil_vocos"])
    commands = {
        "generate --vocoder": [
            "generate",
            *("--task", "text2av", "--text", "hi", "--ckpt", str(files["export"])),
            *("--out", str(root / "gv"), "--vocoder", vocos),
        ],
        "demo --vocoder": ["demo", "--ckpt", str(files["export"]), "--device", "cpu", "--vocoder", vocos],
        "dub-video --vocoder": [
            *_dub_video(files),
            *(
                "--ckpt",
                str(files["export"]),
                "--out",
                str(root / "videos" / "dubv.mp4"),
                "--device",
                "cpu",
                "-q",
            ),
            *("--vocoder", vocos),
        ],
    }
    for name, argv in commands.items():
        line = _one_line(capsys, argv)
        assert "head.class_path" in line and "'subprocess.Popen'" in line and "config.yaml" in line, (
            name,
            line,
        )
        _assert_never_ran(files, name)
    argv = ["audio-features", "--data-dir", str(files["data"]), "--model", str(files["w2v"])]
    line = _one_line(capsys, argv)
    assert "'subprocess.Popen'" in line and str(files["w2v"]) in line, line
    _assert_never_ran(files, "audio-features", wait=0.5)


def test_the_allow_list_is_checked_before_any_import(files, monkeypatch, tmp_path):
    """The format owner compares the string: a refused class path imports nothing, not even its module (here one
    that touches a marker when imported)."""
    import sys

    marker = tmp_path / "IMPORTED"
    (tmp_path / "jf_hostile_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Net:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    bad_paths = (
        "jf_hostile_module.Net",
        "subprocess.Popen",
        "jam_flow.models.format.ModelFile",
        "JointDiT",
        3,
    )
    for bad in bad_paths:
        with pytest.raises(InputError, match="not one of jam-flow's networks"):
            model_class(bad, "x.ckpt")
        with pytest.raises(InputError, match="not one of jam-flow's networks"):
            build_model({"class_path": bad, "init_args": {}}, "x.ckpt")
        with pytest.raises(InputError, match=r"hyper_parameters\.net\.class_path"):
            check_hyper_parameters({"net": {"class_path": bad}}, "x.ckpt")
    assert not marker.exists() and "jf_hostile_module" not in sys.modules
    with pytest.raises(InputError, match=r"hyper_parameters\.ema\._class_path"):
        check_hyper_parameters({"ema": {"_class_path": "os.system"}}, "x.ckpt")
    with pytest.raises(InputError, match=r"hyper_parameters\.cbs\[1\]\.class_path"):
        check_hyper_parameters({"cbs": [{}, {"class_path": "os.system"}]}, "x.ckpt")
    check_hyper_parameters({"net": {"class_path": "jam_flow.models.JointDiT"}, "lr": 1e-3}, "x.ckpt")
    # every listed name builds the network it names
    for path, cls in NETWORK_CLASSES.items():
        assert model_class(path, "x") is cls and path.rsplit(".", 1)[-1] == cls.__name__
    assert read_torch_file(files["evil"], "--ckpt")["jam_flow"]["model"]["class_path"] == "subprocess.Popen"
