"""Protocol results: the JSON per run and the Markdown table in the paper's column order, with the paper's numbers
beside ours when asked (``--compare-paper``; the numbers live in ``jam_flow/assets/paper_results.json``).

Metric values are plain floats; WER is stored as a fraction in the JSON
(torchmetrics' convention) and shown in percent in the table, as the paper prints it.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from jam_flow.errors import InputError

__all__ = ["PROTOCOL_TABLES", "load_paper_results", "paper_table", "markdown_table", "write_outputs"]

PROTOCOL_TABLES = {"talking-head": "table1", "tts": "table2", "dubbing": "table3", "ablation": "table4"}


def load_paper_results() -> dict[str, Any]:
    """The paper's Tables 1-4 (``assets/paper_results.json``), checked for shape."""
    text = resources.files("jam_flow").joinpath("assets/paper_results.json").read_text(encoding="utf-8")
    data = json.loads(text)
    for name, table in data["tables"].items():
        metrics = [c["metric"] for c in table["columns"]]
        for row in table["rows"]:
            if set(row["values"]) != set(metrics):
                raise ValueError(f"paper_results.json: {name} row {row['row']!r} has {sorted(row['values'])}")
            for value in row["values"].values():
                if value is not None and not isinstance(value, (int, float)):
                    raise ValueError(
                        f"paper_results.json: {name} row {row['row']!r}: {value!r} is not a number"
                    )
    return data


def paper_table(protocol: str) -> dict[str, Any]:
    return load_paper_results()["tables"][PROTOCOL_TABLES[protocol]]


def _cell(value: float | None, column: dict[str, Any], ours: bool) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if column.get("unit") == "%":
        return f"{100.0 * value if ours else value:.2f}%"
    return f"{value:.3f}"


def markdown_table(protocol: str, rows: list[dict[str, Any]], compare_paper: bool = False) -> str:
    """``rows``: ``[{"label", "metrics": {metric: float}}]``; columns in the paper's order, unselected metrics
    shown as ``-``. With ``compare_paper`` the paper's rows of the same table come first, marked "(paper)"."""
    table = paper_table(protocol)
    columns = table["columns"]
    arrows = {"lower": "↓", "higher": "↑"}
    head = "| Method | " + " | ".join(f"{c['label']} {arrows[c['better']]}" for c in columns) + " |"
    lines = [f"{table['title']} (protocol `{protocol}`)", "", head, "|---" * (len(columns) + 1) + "|"]
    if compare_paper:
        for row in table["rows"]:
            cells = [_cell(row["values"][c["metric"]], c, ours=False) for c in columns]
            lines.append(f"| {row['method']} (paper) | " + " | ".join(cells) + " |")
    for row in rows:
        cells = [_cell(row["metrics"].get(c["metric"]), c, ours=True) for c in columns]
        lines.append(f"| {row['label']} (this run) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _relative(path: str | None) -> str | None:
    """Repository-relative when the path lies inside the working directory; else its name only."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def write_outputs(
    out_dir: str | Path, protocol: str, rows: list[dict[str, Any]], settings: dict[str, Any], compare: bool
) -> dict[str, Any]:
    """``OUT/result.json`` (settings, one entry per row with metrics and clip counts, the paper's table when
    compared) and ``OUT/table.md``. Paths in the settings are written relative to the working directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for key, value in row["metrics"].items():
            if value is not None and not math.isfinite(value):
                raise InputError(f"{protocol}: metric {key} of {row['label']} is not finite ({value})")
    paths = ("out", "videos", "list_file", "audio_root", "data_dir", "inception", "i3d", "syncnet", "asr")
    paths += ("speaker_model", "vocoder", "liveportrait")
    clean = dict(settings)
    for key in paths:
        clean[key] = _relative(clean.get(key))
    clean["ckpt"] = [_relative(c) for c in clean.get("ckpt", [])]
    result: dict[str, Any] = {
        "protocol": protocol,
        "table": PROTOCOL_TABLES[protocol],
        "columns": [c["metric"] for c in paper_table(protocol)["columns"]],
        "rows": rows,
        "settings": clean,
    }
    if compare:
        result["paper"] = paper_table(protocol)
    from jam_flow.eval.evaluate import _finite  # NaN / inf -> null, as `jam-flow evaluate --task` writes

    result = _finite(result)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "table.md").write_text(markdown_table(protocol, rows, compare), encoding="utf-8")
    return result
