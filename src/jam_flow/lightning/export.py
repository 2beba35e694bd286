"""``jam-flow export --ckpt CKPT --out DIR``: EMA weights of a training checkpoint as ``DIR/model.safetensors``
plus ``DIR/config.yaml`` (architecture, mel and motion settings, normalisation statistics, mouth indices,
vocabulary), the export format of docs/CONVENTIONS.md. No tensor dimensions of its own.

The checkpoint's ``ckpt["jam_flow"]`` block is read with :func:`jam_flow.inference.bundle.load_bundle` (which
rebuilds the network and loads the EMA weights strictly) and written with
:func:`jam_flow.inference.bundle.save_export`, so an export is exactly what ``jam-flow generate`` reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jam_flow.errors import InputError

__all__ = ["main", "export_checkpoint"]


def export_checkpoint(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the export directory ``out`` from the Lightning checkpoint ``ckpt``; returns ``out``."""
    from jam_flow.inference.bundle import load_bundle, save_export

    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_file():
        raise InputError(f"--ckpt: {ckpt} is not a file (expected a .ckpt written by `jam-flow fit`)")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    existing = [p.name for p in (out / "model.safetensors", out / "config.yaml") if p.exists()]
    if existing and not overwrite:
        raise InputError(
            f"--out: {out} already holds {', '.join(existing)} (pass --overwrite to replace them)"
        )
    bundle = load_bundle(ckpt, device="cpu")
    return save_export(out, bundle.model, bundle.config)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="jam-flow export",
        description="Write the EMA weights of a jam-flow training checkpoint as model.safetensors + config.yaml.",
    )
    parser.add_argument(
        "--ckpt", required=True, help="Lightning checkpoint (.ckpt) written by `jam-flow fit`"
    )
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.ckpt, args.out, overwrite=args.overwrite)
    print(f"wrote {out / 'model.safetensors'} and {out / 'config.yaml'}")
    return 0
