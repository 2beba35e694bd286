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

import jam_flow
from jam_flow.cli import main

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(jam_flow.__file__).resolve().parents[1]  # the package under test (subprocesses run the same code)
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
    # dub-video / animate
    "dub_video_video_missing": (
        [
            "dub-video",
            "--video",
            "{missing}",
            "--text",
            "Hi.",
            "--out",
            "{out}/d.mp4",
            "--ckpt",
            "{export}",
            "--motion-extractor",
            "{junk}",
        ],
        "--video",
    ),  # fmt: skip
    "dub_video_window_bogus": (
        [
            "dub-video",
            "--video",
            "{speech}",
            "--text",
            "Hi.",
            "--out",
            "{out}/d.mp4",
            "--ckpt",
            "{export}",
            "--motion-extractor",
            "{junk}",
            "--window-s",
            "0",
        ],
        "--window-s",
    ),  # fmt: skip
    "dub_video_out_not_mp4": (
        [
            "dub-video",
            "--video",
            "{speech}",
            "--text",
            "Hi.",
            "--out",
            "{out}/d.avi",
            "--ckpt",
            "{export}",
            "--motion-extractor",
            "{junk}",
        ],
        "--out",
    ),  # fmt: skip
    "animate_source_missing": (
        [
            "animate",
            "--source",
            "{missing}",
            "--text",
            "Hi.",
            "--liveportrait",
            "{root}",
            "--out",
            "{out}/a.mp4",
            "--ckpt",
            "{export}",
        ],
        "--source",
    ),  # fmt: skip
    "animate_audio_and_text": (
        [
            "animate",
            "--source",
            "{speech}",
            "--audio",
            "{speech}",
            "--text",
            "Hi.",
            "--liveportrait",
            "{root}",
            "--out",
            "{out}/a.mp4",
            "--ckpt",
            "{export}",
        ],
        "--text",
    ),  # fmt: skip
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


# ------------------------------------------------------------------------------------------------------------------
# Reliability, second round: races at swap time, concurrent writers, symlinks, SIGTERM, memory bombs, malformed
# metadata and deep JSON. Each case below failed on the code before these guarantees (a deleted file, two runs
# that both "succeed", a traceback, a MemoryError, an exit status 0).
def _big_npy_header(path: Path, shape: tuple[int, ...]) -> Path:
    """A .npy that declares ``shape`` float32 but holds only a few bytes of data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    path.write_bytes(buf.getvalue() + bytes(1024))
    return path


def _big_npz_header(path: Path, shape: tuple[int, ...]) -> Path:
    """A tiny .npz whose 'exp' member declares ``shape`` (its data is missing)."""
    import zipfile

    tmp = _big_npy_header(path.with_suffix(".member"), shape)
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(tmp, "exp.npy")
    tmp.unlink()
    return path


def _sparse_wav(path: Path, seconds: float, rate: int = 24000) -> Path:
    """A valid 16-bit mono wav of ``seconds`` of silence, written as a sparse file (no disk space, instant)."""
    import struct

    n = int(seconds * rate) * 2
    header = (
        b"RIFF"
        + struct.pack("<I", min(36 + n, 2**32 - 1))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", n)
    )
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)
    return path


def _export_variant(ws, name: str, edit_config=None, weights_dtype=None) -> Path:
    """A copy of the workspace export with its config.yaml edited and/or one weight cast to ``weights_dtype``
    (the checksum updated, so only the edit is wrong)."""
    import shutil

    import yaml
    from safetensors.torch import load_file, save_file

    from jam_flow.models.format import sha256_file

    d = ws["root"] / "variants" / name
    if d.exists():
        return d
    shutil.copytree(ws["export"], d)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    if edit_config is not None:
        edit_config(cfg)
    if weights_dtype is not None:
        state = load_file(str(d / "model.safetensors"))
        key = sorted(state)[0]
        state[key] = state[key].to(weights_dtype)
        save_file(state, str(d / "model.safetensors"), metadata={"format": "jam-flow", "format_version": "1"})
        cfg["weights_sha256"] = sha256_file(d / "model.safetensors")
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def _set(path: str, value):
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value

    return edit


def _deep_json(levels: int = 100_000) -> str:
    return "[" * levels + "]" * levels


# name -> (how to build the variant, the error must name these)
META_CASES = {
    "huge_dim_depth": (
        lambda cfg: cfg["model"]["init_args"]["audio"].update(dim=10**6, depth=1000),
        ["config.yaml", "model.init_args.audio.dim"],
    ),
    "huge_text_num_embeds": (
        _set("model.init_args.audio.text_num_embeds", 10**10),
        ["config.yaml", "text_num_embeds"],
    ),
    "depth_not_matching_weights": (
        _set(
            "model.init_args.motion.depth", 3
        ),  # in range, but the weights have 4 blocks (meta-device check)
        ["config.yaml", "weights do not match"],
    ),
    "fps_string": (_set("motion.fps", "25"), ["config.yaml", "motion.fps"]),
    "fps_zero": (_set("motion.fps", 0), ["config.yaml", "motion.fps"]),
    "sample_rate_negative": (_set("mel.sample_rate", -1), ["config.yaml", "mel.sample_rate"]),
    "hop_string": (_set("mel.hop_length", "256"), ["config.yaml", "mel.hop_length"]),
    "normalize_mel_string": (_set("normalize_mel", "no"), ["config.yaml", "normalize_mel"]),
}


@pytest.mark.parametrize("name", sorted(META_CASES))
def test_checkpoint_metadata_is_checked_before_the_model_is_built(ws, capsys, name):
    edit, names = META_CASES[name]
    export = _export_variant(ws, name, edit_config=edit)
    capsys.readouterr()
    code = main(["generate", "--ckpt", str(export), "--out", str(ws["out"]), "--nfe", "2", *TEXT2AV])
    line = _error_line(capsys.readouterr().err)
    assert code == 2
    for part in names:
        assert part in line, line
    assert not ws["out"].exists()


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.float64])
def test_export_weight_dtypes_are_refused_not_converted(ws, capsys, dtype):
    export = _export_variant(ws, f"weights_{dtype}".replace(".", "_"), weights_dtype=dtype)
    capsys.readouterr()
    code = main(["generate", "--ckpt", str(export), "--out", str(ws["out"]), "--nfe", "2", *TEXT2AV])
    line = _error_line(capsys.readouterr().err)
    assert code == 2 and "model.safetensors" in line and str(dtype) in line, line
    assert not ws["out"].exists()


def _bombs(ws) -> dict[str, Path]:
    root = ws["root"] / "bombs"
    if not root.exists():
        root.mkdir()
        _big_npy_header(root / "huge.npy", (10**9, 21, 3))
        _big_npz_header(root / "huge.npz", (10**9, 21, 3))
        _sparse_wav(root / "hour.wav", 3600)
        _sparse_wav(root / "minute.wav", 60)
        clip = root / "deep" / "motion.npy"
        clip.parent.mkdir()
        clip.write_bytes(ws["motion"].read_bytes())
        (root / "deep" / "motion.json").write_text(_deep_json())
    return {p.name: p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "args,names",
    [
        (["--task", "motion2audio", "--motion", "huge.npy"], ["--motion", "1000000000 frames"]),
        (["--task", "motion2audio", "--motion", "huge.npz"], ["--motion", "1000000000 frames"]),
        (["--task", "audio2motion", "--audio", "hour.wav"], ["--audio", "3600.0 s"]),
        (["--task", "tts", "--text", "Hi.", "--ref-audio", "minute.wav"], ["--ref-audio", "60.0 s"]),
        (
            ["--task", "motion2audio", "--motion", "motion.npy"],
            ["--motion", "motion.json", "nested too deeply"],
        ),
    ],
    ids=["npy_header", "npz_member_header", "wav_hours", "ref_wav_minute", "deep_motion_json"],
)
def test_inputs_are_bounded_before_they_are_read(ws, capsys, args, names):
    bombs = _bombs(ws)
    args = [str(bombs[a]) if a in bombs else a for a in args]
    capsys.readouterr()
    code = main(["generate", "--ckpt", str(ws["export"]), "--out", str(ws["out"]), "--nfe", "2", *args])
    line = _error_line(capsys.readouterr().err)
    assert code == 2
    for part in names:
        assert part in line, line


def _dataset_copy(ws, name: str) -> Path:
    import shutil

    d = ws["root"] / "datasets" / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(ws["data"], d)
    return d


def test_deep_json_in_a_dataset_is_one_problem_line(ws, capsys):
    d = _dataset_copy(ws, "deep")
    manifest = d / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + _deep_json() + "\n")
    (d / "dataset.json").write_text(_deep_json())
    capsys.readouterr()
    code = main(["data", "validate", str(d)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err, err
    assert f"{d / 'dataset.json'}: JSON nested too deeply" in out
    assert f"{manifest}:5: JSON nested too deeply" in out
    # the readers used by training say it in one line too
    capsys.readouterr()
    code = main(
        ["fit", "--config", TINY, "--data.data_dir", str(d), "--trainer.default_root_dir", str(d / "r")]
    )
    assert code == 2 and "nested too deeply" in _error_line(capsys.readouterr().err)


def test_data_validate_checks_the_text_against_the_vocabulary(ws, capsys, tmp_path):
    import json

    d = _dataset_copy(ws, "vocab")
    manifest = d / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["text"] = "caf\u00e9 \u4e2d"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["data", "validate", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{manifest}:1: clip {rows[0]['id']!r} text: characters not in the vocabulary" in out, out
    vocab = tmp_path / "vocab.txt"  # a vocabulary that holds them passes
    chars = sorted({c for r in rows for c in r["text"]})
    vocab.write_text("".join(c + "\n" for c in chars))
    assert main(["data", "validate", str(d), "--vocab", str(vocab)]) == 0, capsys.readouterr().out


def test_fit_without_a_trainable_batch_fails(ws, capsys, tmp_path):
    capsys.readouterr()
    code = main(
        [
            "fit",
            "--config",
            TINY,
            "--data.data_dir",
            str(ws["data"]),
            "--data.frames_per_batch",
            "10",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--data.frames_per_batch: no training batch" in errors[0], err


# --out: races, concurrent writers, symlinks -------------------------------------------------------------------
def _gen(out: Path, ws, *extra: str) -> list[str]:
    return [
        "generate",
        "--ckpt",
        str(ws["export"]),
        "--out",
        str(out),
        "--nfe",
        "2",
        "--no-preview",
        *TEXT2AV,
        *extra,
    ]


def _during_run(monkeypatch, action):
    """Run ``action(tmp_dir)`` while `generate` writes its outputs (after the model is loaded, before the swap)."""
    import jam_flow.api.generate as gen_cli

    real = gen_cli.run_task

    def run_task(args, model, out_dir):
        action(out_dir)
        return real(args, model, out_dir)

    monkeypatch.setattr(gen_cli, "run_task", run_task)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_written_into_out_during_the_run_is_never_deleted(ws, capsys, monkeypatch, tmp_path):
    out = tmp_path / "race"
    out.mkdir()
    _during_run(monkeypatch, lambda _: (out / "important.txt").write_text("x"))
    capsys.readouterr()
    code = main(_gen(out, ws))
    line = _error_line(capsys.readouterr().err)
    assert code == 2 and "--out" in line and "received new files" in line, line
    assert [p.name for p in out.iterdir()] == ["important.txt"] and _hidden(tmp_path) == []
    # --overwrite replaces an earlier output, but not one that gained a foreign file meanwhile
    monkeypatch.undo()
    (out / "important.txt").unlink()
    assert main(_gen(out, ws)) == 0
    before = sorted(p.name for p in out.iterdir())
    _during_run(monkeypatch, lambda _: (out / "important.txt").write_text("x"))
    capsys.readouterr()
    code = main(_gen(out, ws, "--overwrite"))
    line = _error_line(capsys.readouterr().err)
    assert code == 2 and "refusing to replace" in line and "important.txt" in line, line
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "important.txt"])
    assert _hidden(tmp_path) == []


def test_a_second_writer_to_the_same_out_is_refused(ws, capsys, monkeypatch, tmp_path):
    out = tmp_path / "same"
    second: dict[str, object] = {}

    def start_another(_):
        capsys.readouterr()
        second["code"] = main(_gen(out, ws))
        second["err"] = capsys.readouterr().err

    _during_run(monkeypatch, start_another)
    assert main(_gen(out, ws)) == 0
    assert second["code"] == 2, second
    line = _error_line(str(second["err"]))
    assert "--out" in line and f"pid {os.getpid()}" in line, line
    assert (out / "motion.json").is_file() and _hidden(tmp_path) == []


def test_a_symlinked_out_is_resolved(ws, capsys, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(_gen(link, ws)) == 0
    assert link.is_symlink() and (target / "motion.json").is_file()
    first = (target / "audio.wav").read_bytes()
    assert main(_gen(link, ws, "--overwrite", "--seed", "7")) == 0  # replaces the target, keeps the link
    assert link.is_symlink() and (target / "audio.wav").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]
    file_link = tmp_path / "file_link"
    file_link.symlink_to(ws["a_file"])
    capsys.readouterr()
    assert main(_gen(file_link, ws)) == 2
    assert "--out" in _error_line(capsys.readouterr().err)


def _terminated(tmp_path: Path, out: Path, argv: list[str]) -> tuple[int, str]:
    """Start ``jam-flow ARGV``, send SIGTERM once its temporary folder beside ``out`` exists, return (status,
    stderr). Output goes to files: a pipe could be held open by a child process."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    err_path = tmp_path.parent / f"{tmp_path.name}.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jam_flow.cli", *argv], stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        deadline = time.monotonic() + 180
        while not any(p.name.startswith(f".{out.name}.tmp-") for p in out.parent.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err_path.read_text()


def test_sigterm_cleans_up_like_ctrl_c(ws, tmp_path):
    out = tmp_path / "gen"  # a long generation: it is still loading or sampling when SIGTERM comes
    code, err = _terminated(
        tmp_path,
        out,
        ["generate", "--ckpt", str(ws["export"]), "--out", str(out), "--nfe", "1000", "--no-preview"]
        + ["--task", "text2av", "--text", "Hi.", "--duration", "30"],
    )
    assert code == 143 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "temporaries left behind"


@pytest.mark.slow
def test_sigterm_cleans_up_synth_corpus(tmp_path):
    out = tmp_path / "corpus"
    code, err = _terminated(
        tmp_path, out, ["synth-corpus", "--out", str(out), "--n-clips", "400", "--workers", "1"]
    )
    assert code == 143 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "temporaries left behind"


def _real_npz_bomb(path: Path, frames: int) -> Path:
    """A small deflated .npz whose 'exp' really holds ``frames`` x 21 x 3 float32 zeros (5e6 frames: about 5 MB on
    disk, 1.3 GB once loaded)."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (frames, 21, 3)}
    )
    chunk = bytes(1 << 24)
    left = frames * 21 * 3 * 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("exp.npy", "w", force_zip64=True) as member:
            member.write(head.getvalue())
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return path


def _run_measured(argv: list[str]) -> tuple[int, str, float, int]:
    """Run ``python -m jam_flow.cli ARGV``; returns (exit status, stderr, wall seconds, peak RSS in bytes)."""
    import time

    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jam_flow.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, wall, usage.ru_maxrss * 1024


@pytest.mark.slow
def test_memory_bombs_are_refused_quickly_and_small(ws, tmp_path):
    """Each case is refused in one line, within 2 s of a baseline refusal at the same point (after the model is
    loaded: the wall clock of a process is mostly imports), using under 1 GB RSS."""
    bombs = _bombs(ws)
    cases = {
        "npz_5e6_frames": [
            "--task",
            "motion2audio",
            "--motion",
            str(_real_npz_bomb(tmp_path / "bomb.npz", 5 * 10**6)),
        ],
        "npy_header_1e9": ["--task", "motion2audio", "--motion", str(bombs["huge.npy"])],
        "wav_12h": ["--task", "audio2motion", "--audio", str(_sparse_wav(tmp_path / "long.wav", 12 * 3600))],
        "ref_wav_12h": ["--task", "tts", "--text", "Hi.", "--ref-audio", str(tmp_path / "long.wav")],
        "ckpt_dim_depth": [
            "--ckpt",
            str(_export_variant(ws, "huge_dim_depth", META_CASES["huge_dim_depth"][0])),
            *TEXT2AV,
        ],
        "ckpt_text_num_embeds": [
            "--ckpt",
            str(_export_variant(ws, "huge_text_num_embeds", META_CASES["huge_text_num_embeds"][0])),
            *TEXT2AV,
        ],
    }
    gen = ["generate", "--ckpt", str(ws["export"]), "--out", str(tmp_path / "out"), "--nfe", "2"]
    code, err, base_wall, base_rss = _run_measured(
        [*gen, "--task", "motion2audio", "--motion", str(ws["shape_motion"])]
    )
    assert code == 2, err
    for name, extra in cases.items():
        code, err, wall, rss = _run_measured([*gen, *extra])
        assert code == 2, f"{name}: {err}"
        _error_line(err)
        assert rss < 2**30, f"{name}: peak RSS {rss / 2**20:.0f} MiB (baseline {base_rss / 2**20:.0f} MiB)"
        assert wall - base_wall < 2.0, f"{name}: {wall:.1f} s, baseline refusal {base_wall:.1f} s"
        assert not (tmp_path / "out").exists()


# the web demo ------------------------------------------------------------------------------------------------------
def test_demo_cleans_its_request_folders_and_shows_no_server_paths(ws):
    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    from jam_flow.demo import DemoRunner, build_app, run_request
    from jam_flow.inference.bundle import load_bundle

    runner = DemoRunner(load_bundle(ws["export"]))  # no --out: a temporary folder of its own
    fields = {"text": "Hi there.", "duration": "0.6", "nfe": 2, "cfg": 2.0, "seed": "0"}
    status, paths = run_request(runner, "text2av", fields)
    assert status.startswith("done") and all(p.is_file() for p in paths.values()), status
    runner.remove([str(f) for f in runner.last_folders])  # what the page runs once the response is sent
    assert list(runner.out_root.iterdir()) == []
    bombs = _bombs(ws)
    common = {"nfe": 2, "cfg": 2.0, "seed": "0"}
    status, _ = run_request(runner, "dub", {**common, "text": "Hi.", "motion": [str(bombs["huge.npy"])]})
    assert status.startswith("error: --motion: motion.npy: ") and "1000000000 frames" in status, status
    assert "/" not in status.split("(")[0], f"a server path in the page: {status}"
    status, _ = run_request(runner, "audio2motion", {**common, "audio": str(bombs["hour.wav"])})
    assert status.startswith("error: --audio: hour.wav: 3600.0 s") and str(ws["root"]) not in status, status
    status, _ = run_request(
        runner, "text2av", fields
    )  # an API client: the next request removes the last one's
    assert sorted(p.name for p in runner.out_root.iterdir()) == ["0004-text2av"]
    runner.close()  # on exit: every request folder
    assert not runner.out_root.exists()
    app = build_app(load_bundle(ws["export"]))
    assert app.delete_cache is not None, "Gradio's cache is never swept"
    assert any(fn.fn == app.runner.remove for fn in app.fns.values()), "no clean-up event after a request"
    app.runner.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_bounds_uploads_and_stops_at_once_on_ctrl_c(ws, tmp_path):
    """`jam-flow demo` as a process: an upload over the bound is refused, Ctrl-C ends it within 5 s, and nothing is
    left in its temporary folder (request folders, Gradio's cache)."""
    import signal
    import time
    import urllib.error
    import urllib.request

    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    port = _free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", TMPDIR=str(temp))
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jam_flow.cli", "demo", "--ckpt", str(ws["export"]), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        boundary = "jamflowboundary"
        big = bytes(101 * 2**20)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.wav"\r\n'
                "Content-Type: audio/wav\r\n\r\n"
            ).encode()
            + big
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/gradio_api/upload",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - start < 5.0, f"stopped after {time.monotonic() - start:.1f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()
    assert sorted(p.name for p in temp.rglob("*")) == [], "left in the temporary folder"


def test_render_motion_is_bounded_before_it_is_read(ws):
    """`jam-flow render` / `animate` read motion through render.io: the same bounds (declared size, JSON depth)."""
    from jam_flow.errors import InputError
    from jam_flow.render.io import load_motion

    bombs = _bombs(ws)
    for name in ("huge.npy", "huge.npz"):
        with pytest.raises(InputError, match=r"--motion .*'exp' declares shape \(1000000000, 21, 3\)"):
            load_motion(bombs[name])
    with pytest.raises(InputError, match="motion.json: JSON nested too deeply"):
        load_motion(bombs["motion.npy"])
