"""The recipe's experiment configs parse through `jam-flow fit --print_config` and differ from the main config only in
what their ablation names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jam_flow.errors import InputError
from jam_flow.lightning.cli import fit_main
from jam_flow.recipes.common import rel, shown
from jam_flow.recipes.synth import VARIANTS, main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))


def _print_config(paths: list[Path], capsys) -> dict:
    with pytest.raises(SystemExit) as exc:
        fit_main([*(arg for path in paths for arg in ("--config", str(path))), "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def test_every_variant_has_a_config_and_every_config_a_variant():
    assert {v.config(CONFIGS) for v in VARIANTS} == set(EXPERIMENTS)


# the exact differences each ablation may have from synth_main.yaml (after parsing)
EXPECTED_DIFF = {
    "main": {},
    "joint_none": {"model.net.init_args.joint_layers": "none"},
    "joint_full": {"model.net.init_args.joint_layers": "full"},
    "masks_off": {"model.net.init_args.window": None},
    "rope_off": {"model.net.init_args.rope_alignment": "off"},
    "audio_frozen": {"model.freeze_audio_dit": True},
}


def test_configs_parse_and_ablate_one_thing(capsys):
    main_yaml = CONFIGS / "experiments" / "synth_main.yaml"
    main_cfg = _flatten(_print_config([main_yaml], capsys))
    assert main_cfg["model.net.init_args.joint_layers"] == "half"
    assert main_cfg["model.net.init_args.rope_alignment"] == "length"
    assert main_cfg["model.net.init_args.window"] == 3
    assert main_cfg["model.freeze_audio_dit"] is False
    assert main_cfg["model.decay_steps"] == 0  # constant LR: main's step-N checkpoint is a shorter main run
    assert main_cfg["trainer.max_time"]
    for variant in VARIANTS:
        if variant.name == "main":
            assert variant.configs(CONFIGS) == [main_yaml]
            continue
        # an override of synth_main.yaml: the file holds only the ablated field(s) and the budget
        assert variant.configs(CONFIGS) == [main_yaml, variant.config(CONFIGS)]
        own = _flatten(yaml.safe_load(variant.config(CONFIGS).read_text()))
        assert set(own) == {"trainer.max_steps", "trainer.max_time", *EXPECTED_DIFF[variant.name]}, (
            variant.name
        )
        cfg = _flatten(_print_config(variant.configs(CONFIGS), capsys))
        diff = {k: cfg.get(k) for k in set(cfg) | set(main_cfg) if cfg.get(k) != main_cfg.get(k)}
        steps = diff.pop("trainer.max_steps")
        assert diff.pop("trainer.max_time", None) is not None  # every run has a wall-clock cap
        assert 0 < steps < main_cfg["trainer.max_steps"]
        assert steps % main_cfg["checkpoint.every_n_train_steps"] == 0  # main has a checkpoint at that step
        assert diff == EXPECTED_DIFF[variant.name], variant.name


def test_ckpt_at_step_picks_newest_not_after(tmp_path):
    from jam_flow.recipes.synth import _ckpt_at_step

    ckpts = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    ckpts.mkdir(parents=True)
    for n in (100, 200, 300):
        (ckpts / f"step-{n}.ckpt").write_bytes(b"")
    (ckpts / "last.ckpt").write_bytes(b"")
    assert _ckpt_at_step(tmp_path, 250) == (ckpts / "step-200.ckpt", 200)
    assert _ckpt_at_step(tmp_path, 300)[1] == 300
    assert _ckpt_at_step(tmp_path, 50) is None


def test_configs_dir_comes_from_the_command_line_or_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./configs here
    with pytest.raises(InputError, match="--configs-dir: configs/experiments is not a directory"):
        main([])
    (tmp_path / "mine" / "experiments").mkdir(parents=True)
    with pytest.raises(InputError, match="missing experiment config mine/experiments/synth_main.yaml"):
        main(["--configs-dir", "mine", "--only", "main"])


def test_result_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rel(tmp_path / "runs" / "main" / "last.ckpt") == "runs/main/last.ckpt"
    assert rel("runs/x.ckpt") == "runs/x.ckpt"
    assert rel("/elsewhere/x.ckpt") == "/elsewhere/x.ckpt"  # outside the repository: kept as the user gave it
    assert shown(["/opt/venv/bin/python", "-m", "jam_flow.cli", "fit", "--config", "a b.yaml"]) == (
        "jam-flow fit --config 'a b.yaml'"
    )


def test_guidance_sweep_settings_reach_evaluate_and_the_table(tmp_path, monkeypatch):
    """--guidance-sweep: gamma 0 is one unguided evaluation, each other gamma one per mode; the mode reaches
    `jam-flow evaluate --guidance` (the default mode stays implicit, so older cached evaluations keep their key)."""
    import json

    from jam_flow.recipes import synth as recipe
    from jam_flow.recipes import synth_eval

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"x")
    seen = []

    def fake_jobs(jobs, parallel):
        out = []
        for path, task, ns in jobs:
            cmd = synth_eval.eval_command(path, task, Path("-"), ns)
            seen.append((task, ns.cfg, cmd))
            metric = {"mouth_open_corr": ns.cfg / 10} if task == "audio2motion" else {"envelope_corr": 0.0}
            out.append({"metrics": metric, "shuffled": {}, "wall_s": 1.0})
        return out

    monkeypatch.setattr(synth_eval, "evaluate_jobs", fake_jobs)
    args = recipe._parser().parse_args(["--sweep-cfgs", "0", "2", "--sweep-modes", "joint", "f5"])
    sweep = synth_eval.guidance_sweep({"ckpt": str(ckpt), "steps_done": 5, "train_wall_s": 1.0}, args)
    assert len(seen) == 2 * 3  # two tasks x (gamma 0, gamma 2 joint, gamma 2 f5)
    flags = [("--guidance" in cmd, cmd[cmd.index("--cfg") + 1]) for _, _, cmd in seen]
    assert flags.count((True, "2.0")) == 2 and (True, "0.0") not in flags
    assert set(sweep["table"]["audio2motion"]) == {"0", "2"}
    assert set(sweep["table"]["audio2motion"]["2"]) == {"joint", "f5"}
    assert sweep["table"]["audio2motion"]["2"]["f5"]["mouth_open_corr"] == pytest.approx(0.2)
    text = synth_eval.sweep_table(sweep)
    assert text.count("\n") == 2 + 2 and "| 2 | f5 | 0.200 |" in text
    json.dumps(sweep)  # the table is JSON-ready
