"""Character vocabulary in F5-TTS ``vocab.txt`` format (one token per line; line number = index).

Dimension legend: nt text tokens. Batches pad ids with -1 (F5 convention; the model shifts ids by +1 so that
embedding row 0 is the filler). Unlike F5-TTS, which maps unknown characters silently to index 0, ``encode``
refuses text with characters outside the vocabulary and names them, so that data problems surface early.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jam_flow.errors import InputError

__all__ = ["Vocab", "default_vocab_path"]


def default_vocab_path() -> Path:
    """Path of the bundled character vocabulary (``jam_flow/assets/vocab.txt``)."""
    return Path(str(resources.files("jam_flow") / "assets" / "vocab.txt"))


class Vocab:
    """An ordered token list with a token -> index map. ``len(vocab)`` is the model's ``text_num_embeds``."""

    def __init__(self, tokens: list[str], source: str = "<tokens>") -> None:
        seen: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or tok == "":
                raise InputError(f"{source}: token {i} must be a non-empty string, got {tok!r}")
            if tok in seen:
                raise InputError(f"{source}: token {tok!r} appears twice (index {seen[tok]} and {i})")
            seen[tok] = i
        if not tokens:
            raise InputError(f"{source}: the vocabulary is empty")
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = seen
        self.source = source

    # construction -------------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> Vocab:
        """Read an F5-TTS vocab.txt: each line minus its trailing newline is one token."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: vocabulary file does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: vocabulary file is not UTF-8 ({err})") from err
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]  # final newline
        for i, line in enumerate(lines):
            if line == "":
                raise InputError(f"{path}:{i + 1}: empty line (every line must hold one token)")
        return cls(lines, source=str(path))

    @classmethod
    def default(cls) -> Vocab:
        """The bundled character vocabulary: space at index 0, printable ASCII, a few typographic marks."""
        return cls.from_file(default_vocab_path())

    @classmethod
    def from_list(cls, tokens: list[str]) -> Vocab:
        """Rebuild a vocabulary stored as a list (e.g. ``ckpt["jam_flow"]["vocab"]``)."""
        if not isinstance(tokens, (list, tuple)):
            raise InputError(f"vocab: expected a list of token strings, got {type(tokens).__name__}")
        return cls(list(tokens), source="vocab list")

    # use ---------------------------------------------------------------------------------------------------------
    def to_list(self) -> list[str]:
        return list(self.tokens)

    def save(self, path: str | Path) -> Path:
        """Write in vocab.txt format (readable by F5-TTS's "custom" tokenizer)."""
        path = Path(path)
        path.write_text("".join(tok + "\n" for tok in self.tokens), encoding="utf-8")
        return path

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.tokens == self.tokens

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens from {self.source})"

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` not in the vocabulary, in first-seen order."""
        out: list[str] = []
        for ch in text:
            if ch not in self.index and ch not in out:
                out.append(ch)
        return out

    def encode(self, text: str, where: str = "text") -> list[int]:
        """Per-character ids (F5's ASCII path). Raises ``InputError`` naming every unknown character."""
        if not isinstance(text, str):
            raise InputError(f"{where}: expected a string, got {type(text).__name__}")
        unknown = self.unknown_chars(text)
        if unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown)
            raise InputError(f"{where}: characters not in the vocabulary ({self.source}): {shown}")
        return [self.index[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        """Inverse of ``encode``; negative ids (padding) are skipped."""
        return "".join(self.tokens[i] for i in ids if i >= 0)
