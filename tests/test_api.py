"""The Python API (``from jam_flow import JamFlow``): one method per task with ``jam-flow generate``'s option names,
the same numbers as the CLI, results with ``.audio`` / ``.sample_rate`` / ``.motion`` / atomic ``.save(dir)``,
the CLI's checks, and batched generation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from inference_fixtures import write_export, write_inputs, write_vocos

from jam_flow import JamFlow
from jam_flow.cli import main
from jam_flow.errors import InputError

CASES = {
    "tts": lambda e: {"text": "Hi there.", "ref_audio": e["ref"], "ref_text": "A voice."},
    "text2av": lambda e: {"text": "Hi there.", "duration": 0.8},
    "audio2motion": lambda e: {"audio": e["speech"], "motion": e["motion"]},
    "dub": lambda e: {"motion": e["clip"], "text": "New words", "ref_audio": e["ref"]},
    "motion2audio": lambda e: {"motion": e["motion"]},
    "edit": lambda e: {"audio": e["speech"], "motion": e["motion"], "edit_start": 0.2, "edit_end": 0.6},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    files = write_inputs(root)
    export, vocos = write_export(root), write_vocos(root)
    return {
        "root": root,
        "export": export,
        "vocos": vocos,
        "jf": JamFlow.load(export, vocoder=vocos),
        **files,
    }


def _cli_flags(options: dict) -> list[str]:
    return [a for name, value in options.items() for a in (f"--{name.replace('_', '-')}", str(value))]


@pytest.mark.parametrize("task", list(CASES))
def test_each_method_matches_jam_flow_generate(env, task, tmp_path):
    options = CASES[task](env)
    result = getattr(env["jf"], task)(**options, nfe=2, seed=3)
    assert result.sample_rate == 24000
    assert (
        isinstance(result.audio, torch.Tensor)
        and result.audio.ndim == 1
        and result.audio.dtype == torch.float32
    )
    has_motion = task != "tts"
    assert (result.motion is not None) == has_motion
    if has_motion:
        assert result.motion.shape[1:] == (21, 3)
    paths = result.save(tmp_path / "api", preview=False)
    code = main(
        ["generate", "--task", task, "--ckpt", str(env["export"]), "--out", str(tmp_path / "cli")]
        + ["--vocoder", str(env["vocos"]), "--nfe", "2", "--seed", "3", "--no-preview", *_cli_flags(options)]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == sorted(
        p.name for p in (tmp_path / "cli").iterdir()
    )
    api_wave, _ = sf.read(paths["audio"], dtype="float32")
    cli_wave, _ = sf.read(tmp_path / "cli" / "audio.wav", dtype="float32")
    assert np.array_equal(api_wave, cli_wave)
    assert np.allclose(api_wave, result.audio.numpy(), atol=1 / 32768)  # 16-bit wav
    if has_motion:
        assert np.array_equal(np.load(paths["motion"]), np.load(tmp_path / "cli" / "motion.npy"))
        assert np.array_equal(np.load(paths["motion"]), result.motion)


def test_save_is_atomic_and_refuses_a_foreign_folder(env, tmp_path):
    result = env["jf"].text2av(text="Hi.", duration=0.5, nfe=1, seed=0)
    out = tmp_path / "out"
    paths = result.save(out, preview=False)
    assert (
        {p.name for p in out.iterdir()}
        == {"audio.wav", "motion.npy", "motion.json"}
        == {p.name for p in paths.values()}
    )
    with pytest.raises(InputError, match="out_dir"):
        result.save(out)  # not empty: needs overwrite
    result.save(out, preview=False, overwrite=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError):
        result.save(foreign, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    result.motion[0, 0, 0] = np.nan  # nothing is written for a non-finite result
    with pytest.raises(InputError, match="NaN"):
        result.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda jf, e: jf.text2av(text="Hi.", nfe=0), "--nfe: expected 1-1000, got 0"),
        (lambda jf, e: jf.text2av(text="Hi.", steps=4), "--steps: not an option of jam-flow generate"),
        (lambda jf, e: jf.dub(e["motion"], "Hi.", duration=1.0), "--duration: not used by --task dub"),
        (lambda jf, e: jf.tts("Hi.", None), "--ref-audio: required for --task tts"),
        (lambda jf, e: jf.text2av(text="Hi.", guidance="none"), "--guidance: expected one of joint, f5, all"),
        (lambda jf, e: jf.text2av(text="Hi.", cfg=float("nan")), "--cfg: expected a finite number"),
        (lambda jf, e: jf.text2av(text="Hi.", seed=-1), "--seed: expected an integer"),
        (lambda jf, e: jf.audio2motion(e["root"] / "missing.wav"), "--audio: .* does not exist"),
    ],
)
def test_bad_options_raise_the_cli_line(env, call, message):
    with pytest.raises(InputError, match=message):
        call(env["jf"], env)


def test_audio_as_samples_and_rate(env):
    wave, rate = sf.read(env["speech"], dtype="float32")
    a = env["jf"].audio2motion((wave, rate), nfe=2, seed=1)
    b = env["jf"].audio2motion(env["speech"], nfe=2, seed=1)
    assert np.array_equal(a.motion, b.motion)


def test_generate_batch_on_a_padded_batch(env):
    jf = env["jf"]
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([60, 45])
    m = jf.bundle.clock.motion_frames(n)
    batch = {
        "mel": torch.randn(2, 60, 100, generator=g) - 5,
        "exp": 0.02 * torch.randn(2, int(m.max()), 21, 3, generator=g),
        "text": torch.tensor([[3, 4, 5], [6, 7, -1]]),
        "audio_mask": torch.arange(60)[None] < n[:, None],
        "motion_mask": torch.arange(int(m.max()))[None] < m[:, None],
    }
    out = jf.generate_batch(batch, "dub", nfe=2, seed=0)
    assert out.nfe == 2 and torch.equal(out.motion_mask, batch["motion_mask"])
    assert torch.equal(out.audio_mask.sum(1), jf.bundle.clock.mel_frames(m))
    again = jf.generate_batch(batch, "dub", nfe=2, seed=0)
    assert torch.equal(out.mel, again.mel)  # the seed fixes the noise
    with pytest.raises(InputError, match="--nfe"):
        jf.generate_batch(batch, "dub", nfe=0)


@pytest.mark.parametrize("task", list(CASES))
def test_every_option_of_the_task_reaches_the_task_function(env, task, monkeypatch):
    """Each option ``generate`` accepts for the task is passed on (an option added to the CLI table but not to the
    API would otherwise be dropped silently)."""
    from jam_flow.inference import tasks
    from jam_flow.inference.cli import TASK_OPTIONS

    numbers = {"duration": 1.25, "edit_start": 0.125, "edit_end": 0.375}
    options = {name: numbers.get(name, f"<{name}>") for name in TASK_OPTIONS[task]}
    if task == "edit":
        options["edit_streams"] = "motion"
    seen = {}

    def record(*args, **kwargs):
        seen["values"] = [*args, *kwargs.values()]
        return "result"

    monkeypatch.setattr(tasks, task, record)
    assert env["jf"].run(task, **options, nfe=2, seed=5) == "result"
    missing = [name for name, value in options.items() if not any(v is value for v in seen["values"])]
    assert not missing, f"{task}: options not passed to tasks.{task}: {missing}"
    assert 5 in seen["values"]


def test_motion_as_an_array(env, tmp_path):
    """``motion`` may be an array ``[m, 21, 3]`` (e.g. another result's ``.motion``): the same output as its file,
    the same checks, and the record names it ``<array>``."""
    jf, exp = env["jf"], np.load(env["motion"])
    a = jf.dub(exp, text="New words", nfe=2, seed=2)
    b = jf.dub(env["motion"], text="New words", nfe=2, seed=2)
    assert torch.equal(a.audio, b.audio) and a.meta["sources"]["motion"] == "<array>"
    c = jf.audio2motion(env["speech"], motion=torch.from_numpy(exp), nfe=2, seed=2)
    assert c.meta["sources"]["motion"] == "<array>"
    c.save(tmp_path / "a2m", preview=False)
    with pytest.raises(InputError, match=r"--motion: expected an array \[m, 21, 3\]"):
        jf.motion2audio(exp[:, :5], nfe=2)
    with pytest.raises(InputError, match="--motion: <array> contains NaN"):
        jf.motion2audio(np.where(np.arange(exp.size).reshape(exp.shape) == 7, np.nan, exp), nfe=2)
