"""eSpeak NG speech synthesis through ctypes (``espeakng-loader``), one fresh process per utterance, and the
project's one phonemizer (:func:`phonemize`, in process).

Dimension legend: s audio samples at the synthesiser's native rate (22050 Hz).

Two things make eSpeak NG's output vary for the same request (measured): a second utterance in one process
drifts by a few samples (state carried between calls, env-notes), and voices with noise components (the ``+f*``
variants, for instance) draw from an RNG that the library seeds with the clock. So every utterance runs in a
process that has never loaded the library (a bare ``os.fork`` of a process that has not, else this file run as a
script in a new ``python -I -S`` interpreter), and the RNG is reseeded with a constant before synthesising.
The child writes a JSON header (sample rate, PHONEME events) and the raw int16 samples to a pipe and exits.
The library is not thread-safe either; separate processes sidestep that too.

:func:`phonemize` (text -> IPA phonemes, one symbol per phoneme, ``" "`` between words) is pure text processing
(``espeak_TextToPhonemes`` with voice ``en-us``, whatever voice spoke the audio): deterministic, so it runs in this
process behind a lock. Once it has loaded the library here, :func:`synthesize` uses fresh interpreters, not forks.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "Phoneme",
    "Speech",
    "synthesize",
    "synthesize_in_process",
    "EspeakError",
    "phonemize",
    "PHONEMIZER_VOICE",
]

# espeak_EVENT types and API constants (speak_lib.h)
_EV_LIST_TERMINATED, _EV_PHONEME = 0, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x1
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_RAND_SEED = 1


class EspeakError(RuntimeError):
    """The synthesiser failed (voice not found, library error, child crashed)."""


@dataclass(frozen=True)
class Phoneme:
    """One PHONEME event: eSpeak's phoneme mnemonic (stress marks included) and its start sample."""

    name: str
    sample: int


@dataclass(frozen=True)
class Speech:
    """int16 mono ``samples [s]`` at ``sample_rate`` and the phoneme onsets (sorted by sample)."""

    samples: object  # np.ndarray int16 [s]
    sample_rate: int
    phonemes: tuple[Phoneme, ...]


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


_LOADED_HERE = False  # set once this process has loaded the library itself (its children may not fork then)


def _synth_raw(lib_path: str, data_path: str, text: str, voice: str, rate: int, pitch: int):
    """-> (sample_rate, int16 little-endian bytes, [(phoneme, sample)]). Pure ctypes (runs under ``-I -S``)."""
    global _LOADED_HERE
    _LOADED_HERE = True
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    # the data path must be passed explicitly: without it the library calls exit() (env-notes section 2)
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INIT_PHONEME_EVENTS
    )
    if sample_rate <= 0:
        raise EspeakError(f"espeak_Initialize failed (returned {sample_rate})")
    # voices with breath/noise components (e.g. the f* variants) draw from an RNG that eSpeak seeds with the
    # clock: fix its seed so that the same request gives the same samples
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(_RAND_SEED)
    chunks: list[bytes] = []
    phonemes: list[tuple[str, int]] = []

    def on_audio(wav, n, events) -> int:
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                raw = bytes(ev.id.string).split(b"\0", 1)[0]
                phonemes.append((raw.decode("utf-8", errors="replace"), int(ev.sample)))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)  # must stay referenced while the library may call it
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise EspeakError(f"eSpeak NG voice {voice!r} not found")
    lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    data = text.encode("utf-8") + b"\0"
    rc = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if rc != 0:
        raise EspeakError(f"espeak_Synth returned {rc} for {text!r}")
    phonemes.sort(key=lambda p: p[1])
    return int(sample_rate), b"".join(chunks), phonemes


def _paths() -> tuple[str, str]:
    import espeakng_loader

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _to_speech(sample_rate: int, pcm: bytes, phonemes) -> Speech:
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
    return Speech(samples, sample_rate, tuple(Phoneme(str(n), int(s)) for n, s in phonemes))


def synthesize_in_process(text: str, voice: str, rate: int = 175, pitch: int = 50) -> Speech:
    """Synthesise in THIS process (reproducible only as the first call of a fresh process; use :func:`synthesize`)."""
    return _to_speech(*_synth_raw(*_paths(), text, voice, rate, pitch))


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50, timeout: float = 120.0) -> Speech:
    """Synthesise ``text`` in a fresh process (byte-reproducible for the same arguments)."""
    lib_path, data_path = _paths()
    request = {
        "lib": lib_path,
        "data": data_path,
        "text": text,
        "voice": voice,
        "rate": int(rate),
        "pitch": int(pitch),
    }
    if hasattr(os, "fork") and not _LOADED_HERE:
        code, out, err = _run_forked(request)
    else:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-S", __file__],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EspeakError(f"eSpeak NG child timed out after {timeout:.0f} s for {text!r}") from exc
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    header, _, pcm = out.partition(b"\n")
    try:
        meta = json.loads(header)
    except json.JSONDecodeError:
        meta = None
    if code != 0 or not isinstance(meta, dict):
        detail = err.decode(errors="replace").strip()[-500:]
        raise EspeakError(f"eSpeak NG child failed (exit status {code}) for voice {voice!r}: {detail}")
    if not meta["ok"]:
        raise EspeakError(meta["error"])
    if len(pcm) != meta["nbytes"]:
        raise EspeakError(f"eSpeak NG child sent {len(pcm)} of {meta['nbytes']} audio bytes")
    return _to_speech(meta["sample_rate"], pcm, meta["phonemes"])


def _run_forked(request: dict) -> tuple[int, bytes, bytes]:
    """Fork (cheap, allowed inside daemonic pool workers), answer ``request`` in the child -> (status, out, err)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the parent's code, never runs its atexit handlers
        status = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                _answer(request, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), data, b""


def _answer(req: dict, out) -> None:
    try:
        sample_rate, pcm, phonemes = _synth_raw(
            req["lib"], req["data"], req["text"], req["voice"], req["rate"], req["pitch"]
        )
    except Exception as err:  # reported to the parent, which raises EspeakError
        out.write(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}).encode() + b"\n")
        return
    header = {"ok": True, "sample_rate": sample_rate, "phonemes": phonemes, "nbytes": len(pcm)}
    out.write(json.dumps(header).encode() + b"\n" + pcm)
    out.flush()


def _child_main() -> int:
    _answer(json.loads(sys.stdin.buffer.read()), sys.stdout.buffer)
    return 0


PHONEMIZER_VOICE = "en-us"  # the phonemizer's voice (its pronunciation rules), for every corpus and model
_PHONEME_MODE = 0x02 | (ord("_") << 8)  # IPA output, "_" between the phonemes of a word
_AUDIO_OUTPUT_RETRIEVAL = 1
_PHONEMIZER_LOCK = threading.Lock()
_phonemizer_lib = None


def _phonemizer():
    global _phonemizer_lib, _LOADED_HERE
    if _phonemizer_lib is None:
        _LOADED_HERE = True  # this process now holds the library's state: synthesize() must not fork from it
        lib = ctypes.CDLL(_paths()[0])
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, _paths()[1].encode(), 0) <= 0:
            raise EspeakError("espeak_Initialize failed (phonemizer)")
        if lib.espeak_SetVoiceByName(PHONEMIZER_VOICE.encode()) != 0:
            raise EspeakError(f"eSpeak NG voice {PHONEMIZER_VOICE!r} not found (phonemizer)")
        _phonemizer_lib = lib
    return _phonemizer_lib


@lru_cache(maxsize=65536)
def phonemize(text: str) -> tuple[str, ...]:
    """``text`` -> its IPA phonemes, one symbol per phoneme (stress and length marks stay on their phoneme, e.g.
    ``"ˈɑː"``), ``" "`` between words; punctuation and clause breaks become word breaks. Deterministic."""
    clauses: list[str] = []
    with _PHONEMIZER_LOCK:
        lib = _phonemizer()
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        while ptr.value:
            out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEME_MODE)
            clauses.append((out or b"").decode("utf-8", errors="replace"))
    symbols: list[str] = []
    for word in " ".join(clauses).split():
        phones = [p for p in word.split("_") if p]
        if phones:
            if symbols:
                symbols.append(" ")
            symbols.extend(phones)
    return tuple(symbols)


if __name__ == "__main__":
    raise SystemExit(_child_main())
