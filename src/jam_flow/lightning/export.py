"""``jam-flow export --ckpt CKPT --out DIR``: EMA weights of a training checkpoint as ``DIR/model.safetensors``
plus ``DIR/config.yaml`` (architecture, mel and motion settings, normalisation statistics, mouth indices,
vocabulary), the export format of docs/CONVENTIONS.md. No tensor dimensions of its own.

The checkpoint's ``ckpt["jam_flow"]`` block is read, checked against the rebuilt network (strictly) and written
with :mod:`jam_flow.models.format` (the one owner of the format, with the weights' SHA-256 in ``config.yaml``), so
an export is exactly what ``jam-flow generate`` reads.
"""

from __future__ import annotations

from pathlib import Path

from jam_flow.errors import ArgumentParser, InputError

__all__ = ["main", "export_checkpoint"]


_EXPORT_FILES = {"model.safetensors", "config.yaml"}


def export_owned(root: Path) -> str | None:
    """None when ``root`` is an export directory this project wrote (only ``model.safetensors`` + ``config.yaml``,
    the weights' header saying ``format: jam-flow``), so ``--overwrite`` may replace it; else why it is not."""
    from safetensors import SafetensorError, safe_open

    foreign = sorted(p.name for p in root.iterdir() if p.name not in _EXPORT_FILES)
    if foreign:
        return f"it holds files that are not part of a jam-flow export: {', '.join(foreign[:5])}"
    try:
        with safe_open(str(root / "model.safetensors"), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
    except (SafetensorError, OSError) as err:
        return f"its model.safetensors is not a jam-flow export ({err})"
    if fmt != "jam-flow":
        return f"its model.safetensors is not a jam-flow export (format {fmt!r})"
    return None


def export_checkpoint(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the export directory ``out`` from the Lightning checkpoint ``ckpt``; returns ``out``.

    The export is written into a temporary sibling folder and swapped in when complete (:mod:`jam_flow.atomic`);
    ``overwrite`` replaces only a folder :func:`export_owned` recognises."""
    from jam_flow.atomic import check_out_dir, replace_dir
    from jam_flow.models.configs import with_legacy_defaults
    from jam_flow.models.format import build_checked_model, read_model_file, write_export

    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_file():
        raise InputError(f"--ckpt: {ckpt} is not a file (expected a .ckpt written by `jam-flow fit`)")
    check_out_dir(out, overwrite, export_owned)
    found = read_model_file(ckpt, "--ckpt")
    # the network is rebuilt and loaded strictly, so an export always loads; old checkpoints get their old defaults
    meta = {**found.meta, "model": with_legacy_defaults(found.meta["model"])}
    build_checked_model(meta["model"], found.state, found.where)
    with replace_dir(out, overwrite, export_owned) as tmp:
        write_export(tmp, found.state, meta)
    return out


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
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
