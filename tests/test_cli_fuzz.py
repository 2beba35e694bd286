"""A table of malformed inputs for every command. Each must exit non-zero with exactly one
``error:`` line on stderr that names the argument (or file), no traceback, and no file changed outside ``--out``
(for a failure: no file changed at all, and no temporary left behind).

Most cases run in-process through ``jam_flow.cli.main`` (fast); a few run the real ``python -m jam_flow.cli`` to
check the exit status and stderr of a process. One tiny random export serves every command that takes a model.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fixtures import write_export, write_inputs
from lightning_support import make_dataset

from jam_flow.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tests" / "tiny_stage2.yaml")
# lines a logger may add around the error (the error itself is the one `error:` line)
_LOG_PREFIXES = ("WARNING", "INFO", "DEBUG")


class _Marker:
    """A pickle that would create a file if unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """The workspace: inputs, an export, a dataset and malformed files of every kind."""
    root = tmp_path_factory.mktemp("fuzz")
    files: dict[str, Path] = {"root": root, **write_inputs(root), "export": write_export(root)}
    files["data"] = make_dataset(root / "data", n_train=2, n_val=1, n_test=1, min_s=0.5, max_s=0.6)
    rng = np.random.default_rng(13)
    files["junk"] = root / "junk.bin"
    files["junk"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("not a folder")
    exp = np.load(files["motion"])
    for name, arr in {
        "int_motion": exp.astype(np.int32),
        "bool_motion": exp > 0,
        "nan_motion": np.where(exp > 0, np.nan, exp),
        "huge_motion": exp * 1e20,
        "shape_motion": exp[:, :5],
    }.items():
        files[name] = root / f"{name}.npy"
        np.save(files[name], arr)
    files["object_motion"] = root / "object_motion.npy"
    np.save(files["object_motion"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["junk_npy"] = root / "junk.npy"
    files["junk_npy"].write_bytes(files["junk"].read_bytes())
    files["junk_wav"] = root / "junk.wav"
    files["junk_wav"].write_bytes(files["junk"].read_bytes())
    # export directories with one broken file each
    for name, target in (("bad_yaml_export", "config.yaml"), ("bad_weights_export", "model.safetensors")):
        d = root / name
        d.mkdir()
        for f in files["export"].iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        (d / target).write_bytes(files["junk"].read_bytes())
        files[name] = d
    # checkpoints: random bytes, truncated zip, a plain pickle and a zip pickle that would run code
    good = root / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, good)
    files["truncated_ckpt"] = root / "truncated.ckpt"
    files["truncated_ckpt"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    files["marker"] = root / "MARKER"
    files["plain_pickle_ckpt"] = root / "plain.ckpt"
    files["plain_pickle_ckpt"].write_bytes(pickle.dumps({"state_dict": {"w": [0.0]}}))
    files["plain_evil_ckpt"] = root / "plain_evil.ckpt"
    files["plain_evil_ckpt"].write_bytes(pickle.dumps({"state_dict": _Marker(files["marker"])}))
    files["evil_ckpt"] = root / "evil.ckpt"
    torch.save({"state_dict": {}, "jam_flow": _Marker(files["marker"])}, files["evil_ckpt"])
    files["missing"] = root / "does-not-exist"
    files["out"] = root / "out"
    return files


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mode, p.read_bytes()[:4096])
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# (command argv template, the argument the error line must name). "{name}" is replaced by ws[name].
GEN = ["generate", "--ckpt", "{export}", "--out", "{out}", "--nfe", "2"]
TEXT2AV = ["--task", "text2av", "--text", "Hi there.", "--duration", "0.8"]
CASES: dict[str, tuple[list[str], str]] = {
    # generate
    "gen_seed_2**64": ([*GEN, *TEXT2AV, "--seed", "18446744073709551616"], "--seed"),
    "gen_seed_text": ([*GEN, *TEXT2AV, "--seed", "zero"], "--seed"),
    "gen_out_proc": (["generate", "--ckpt", "{export}", "--out", "/proc/jam-flow-x", *TEXT2AV], "--out"),
    "gen_out_under_file": (["generate", "--ckpt", "{export}", "--out", "{a_file}/sub", *TEXT2AV], "--out"),
    "gen_out_is_file": (["generate", "--ckpt", "{export}", "--out", "{a_file}", *TEXT2AV], "--out"),
    "gen_out_not_empty": (["generate", "--ckpt", "{export}", "--out", "{root}", *TEXT2AV], "--out"),
    "gen_ckpt_junk": (["generate", "--ckpt", "{junk}", "--out", "{out}", *TEXT2AV], "--ckpt"),
    "gen_ckpt_missing": (["generate", "--ckpt", "{missing}", "--out", "{out}", *TEXT2AV], "--ckpt"),
    "gen_ckpt_truncated": (["generate", "--ckpt", "{truncated_ckpt}", "--out", "{out}", *TEXT2AV], "--ckpt"),
    "gen_ckpt_plain_pickle": (
        ["generate", "--ckpt", "{plain_pickle_ckpt}", "--out", "{out}", *TEXT2AV],
        "--ckpt",
    ),
    "gen_ckpt_evil_zip": (["generate", "--ckpt", "{evil_ckpt}", "--out", "{out}", *TEXT2AV], "--ckpt"),
    "gen_ckpt_evil_plain": (
        ["generate", "--ckpt", "{plain_evil_ckpt}", "--out", "{out}", *TEXT2AV],
        "--ckpt",
    ),
    "gen_export_yaml_junk": (
        ["generate", "--ckpt", "{bad_yaml_export}", "--out", "{out}", *TEXT2AV],
        "config.yaml",
    ),
    "gen_export_weights_junk": (
        ["generate", "--ckpt", "{bad_weights_export}", "--out", "{out}", *TEXT2AV],
        "model.safetensors",
    ),
    "gen_motion_int32": ([*GEN, "--task", "motion2audio", "--motion", "{int_motion}"], "--motion"),
    "gen_motion_bool": ([*GEN, "--task", "motion2audio", "--motion", "{bool_motion}"], "--motion"),
    "gen_motion_nan": ([*GEN, "--task", "motion2audio", "--motion", "{nan_motion}"], "--motion"),
    "gen_motion_huge": ([*GEN, "--task", "motion2audio", "--motion", "{huge_motion}"], "--motion"),
    "gen_motion_shape": ([*GEN, "--task", "motion2audio", "--motion", "{shape_motion}"], "--motion"),
    "gen_motion_object": ([*GEN, "--task", "motion2audio", "--motion", "{object_motion}"], "--motion"),
    "gen_motion_junk": ([*GEN, "--task", "motion2audio", "--motion", "{junk_npy}"], "--motion"),
    "gen_ref_audio_junk": (
        [*GEN, "--task", "tts", "--text", "Hi.", "--ref-audio", "{junk_wav}"],
        "--ref-audio",
    ),
    "gen_audio_missing": ([*GEN, "--task", "audio2motion", "--audio", "{missing}"], "--audio"),
    "gen_task_bogus": ([*GEN, "--task", "sing"], "--task"),
    "gen_nfe_zero": ([*GEN[:-1], "0", *TEXT2AV], "--nfe"),
    "gen_nfe_text": ([*GEN[:-1], "many", *TEXT2AV], "--nfe"),
    "gen_cfg_nan": ([*GEN, *TEXT2AV, "--cfg", "nan"], "--cfg"),
    "gen_cfg_non_finite_result": ([*GEN, *TEXT2AV, "--cfg", "1e300"], "--task text2av"),
    "gen_duration_negative": ([*GEN, "--task", "text2av", "--text", "Hi.", "--duration", "-1"], "--duration"),
    "gen_vocoder_file": ([*GEN, *TEXT2AV, "--vocoder", "{a_file}"], "--vocoder"),
    "gen_text_not_in_vocab": ([*GEN, "--task", "text2av", "--text", "\x00\x01\x02"], "--text"),
    "gen_unknown_option": ([*GEN, *TEXT2AV, "--colour", "red"], "--colour"),
    # export
    "export_ckpt_junk": (["export", "--ckpt", "{junk}", "--out", "{out}"], "--ckpt"),
    "export_ckpt_missing": (["export", "--ckpt", "{missing}", "--out", "{out}"], "--ckpt"),
    "export_ckpt_truncated": (["export", "--ckpt", "{truncated_ckpt}", "--out", "{out}"], "--ckpt"),
    "export_ckpt_evil_zip": (["export", "--ckpt", "{evil_ckpt}", "--out", "{out}"], "--ckpt"),
    "export_ckpt_evil_plain": (["export", "--ckpt", "{plain_evil_ckpt}", "--out", "{out}"], "--ckpt"),
    "export_out_is_file": (["export", "--ckpt", "{evil_ckpt}", "--out", "{a_file}"], "--out"),
    "export_out_foreign": (["export", "--ckpt", "{evil_ckpt}", "--out", "{root}", "--overwrite"], "--out"),
    # synth-corpus
    "synth_sentences_junk": (
        ["synth-corpus", "--out", "{out}", "--n-clips", "1", "--sentences", "{junk}"],
        "--sentences",
    ),
    "synth_sentences_missing": (
        ["synth-corpus", "--out", "{out}", "--n-clips", "1", "--sentences", "{missing}"],
        "--sentences",
    ),
    "synth_n_clips_zero": (["synth-corpus", "--out", "{out}", "--n-clips", "0"], "--n-clips"),
    "synth_n_clips_text": (["synth-corpus", "--out", "{out}", "--n-clips", "few"], "--n-clips"),
    "synth_seed_2**64": (
        ["synth-corpus", "--out", "{out}", "--n-clips", "1", "--seed", str(2**64)],
        "--seed",
    ),
    "synth_workers_zero": (
        ["synth-corpus", "--out", "{out}", "--n-clips", "1", "--workers", "0"],
        "--workers",
    ),
    "synth_out_is_file": (["synth-corpus", "--out", "{a_file}", "--n-clips", "1"], "--out"),
    "synth_overwrite_foreign": (
        ["synth-corpus", "--out", "{root}", "--n-clips", "1", "--overwrite"],
        "--out",
    ),
    # data validate
    "data_no_action": (["data"], "action"),
    "data_validate_missing": (["data", "validate", "{missing}"], "DIR"),
    "data_validate_file": (["data", "validate", "{a_file}"], "DIR"),
    # fit
    "fit_ckpt_path_truncated": (
        ["fit", "--config", TINY, "--data.data_dir", "{data}", "--ckpt_path", "{truncated_ckpt}"],
        "--ckpt_path",
    ),
    "fit_ckpt_path_plain_pickle": (
        ["fit", "--config", TINY, "--data.data_dir", "{data}", "--ckpt_path", "{plain_evil_ckpt}"],
        "--ckpt_path",
    ),
    "fit_ckpt_path_foreign_pickle": (
        ["fit", "--config", TINY, "--data.data_dir", "{data}", "--ckpt_path", "{evil_ckpt}"],
        "--ckpt_path",
    ),
    "fit_ckpt_path_missing": (
        ["fit", "--config", TINY, "--data.data_dir", "{data}", "--ckpt_path", "{missing}"],
        "--ckpt_path",
    ),
    # evaluate
    "evaluate_ckpt_missing": (
        [
            "evaluate",
            "--ckpt",
            "{missing}",
            "--data.data_dir",
            "{data}",
            "--task",
            "audio2motion",
            "--out",
            "{out}/m.json",
        ],
        "--ckpt",
    ),
    "evaluate_ckpt_evil": (
        [
            "evaluate",
            "--ckpt",
            "{evil_ckpt}",
            "--data.data_dir",
            "{data}",
            "--task",
            "audio2motion",
            "--out",
            "{out}/m.json",
        ],
        "--ckpt",
    ),
    "evaluate_out_is_dir": (
        [
            "evaluate",
            "--ckpt",
            "{export}",
            "--data.data_dir",
            "{data}",
            "--task",
            "audio2motion",
            "--out",
            "{root}",
        ],
        "--out",
    ),
    "evaluate_task_bogus": (
        [
            "evaluate",
            "--ckpt",
            "{export}",
            "--data.data_dir",
            "{data}",
            "--task",
            "sing",
            "--out",
            "{out}/m.json",
        ],
        "--task",
    ),
    # render
    "render_source_missing": (
        [
            "render",
            "--source",
            "{missing}",
            "--motion",
            "{motion}",
            "--audio",
            "{speech}",
            "--weights",
            "{root}",
            "--out",
            "{out}/v.mp4",
        ],
        "--source",
    ),
    # preprocess
    "preprocess_dataset_bogus": (
        [
            "preprocess",
            "--dataset",
            "vimeo",
            "--root",
            "{root}",
            "--out",
            "{out}",
            "--motion-extractor",
            "{junk}",
        ],
        "--dataset",
    ),
    "preprocess_root_missing": (
        [
            "preprocess",
            "--dataset",
            "folder",
            "--root",
            "{missing}",
            "--out",
            "{out}",
            "--motion-extractor",
            "{junk}",
        ],
        "--root",
    ),
    # the dispatcher
    "unknown_command": (["sing"], "sing"),
}


def _argv(template: list[str], ws: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in ws.items()}) for a in template]


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(_LOG_PREFIXES)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_one_line(ws, capsys, name):
    template, names = CASES[name]
    before = _snapshot(ws["root"])
    capsys.readouterr()
    code = main(_argv(template, ws))
    err = capsys.readouterr().err
    assert code != 0, f"{name}: exit status 0"
    line = _error_line(err)
    assert names in line, f"{name}: the error does not name {names!r}: {line}"
    assert _snapshot(ws["root"]) == before, f"{name}: files changed"
    assert not ws["marker"].exists(), f"{name}: code from a pickle ran"


@pytest.mark.parametrize("name", ["gen_seed_2**64", "synth_sentences_junk"])
def test_malformed_input_in_a_process(ws, name):
    template, names = CASES[name]
    before = _snapshot(ws["root"])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "jam_flow.cli", *_argv(template, ws)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert names in _error_line(proc.stderr)
    assert _snapshot(ws["root"]) == before
