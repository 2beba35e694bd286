"""JSON for ``benchmarks/gpu_check.sh``: a pytest JUnit XML report as JSON, and the run's summary.

    python benchmarks/gpu_check_report.py junit REPORT.xml OUT.json STEP
    python benchmarks/gpu_check_report.py summary STEPS.tsv OUT.json DEVICE DRY_RUN BUDGET_S

``STEPS.tsv`` holds one line per step: name, status (ok | failed | timeout | skipped), exit code, seconds, the JSON
file it wrote (or -) and a note. The summary records the machine (``common.machine``), each step and where its
result is; paths are relative to the results folder. Dimension legend: none.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def junit(xml_path: str, out: str, step: str) -> None:
    cases, totals = [], {"passed": 0, "failed": 0, "skipped": 0}
    if Path(xml_path).is_file():
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            outcome = "passed"
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            totals[outcome] += 1
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            cases.append({"test": name, "outcome": outcome, "seconds": float(case.get("time") or 0.0)})
    common.write_json(out, {"step": step, "report_found": Path(xml_path).is_file(), **totals, "cases": cases})


def summary(tsv: str, out: str, device: str, dry_run: str, budget_s: str) -> None:
    steps = []
    for line in Path(tsv).read_text().splitlines():
        name, status, rc, seconds, result, note = (line.split("\t") + [""] * 6)[:6]
        steps.append(
            {
                "step": name,
                "status": status,
                "exit_code": int(rc) if rc.lstrip("-").isdigit() else None,
                "seconds": float(seconds or 0),
                "result": None if result in ("", "-") else Path(result).name,
                "note": note,
            }
        )
    common.write_json(
        out,
        {
            "machine": common.machine(device),
            "dry_run": dry_run == "1",
            "budget_s": float(budget_s),
            "all_ok": all(s["status"] == "ok" for s in steps),
            "steps": steps,
        },
    )


if __name__ == "__main__":
    verb, *rest = sys.argv[1:]
    {"junit": junit, "summary": summary}[verb](*rest)
