"""Gate results in the forms CI systems read: one text line per check, JUnit XML, GitHub step-summary Markdown.

Pure formatting of the dict `run_gate` returns (gate.json); nothing here measures or decides.
A check's line never wraps, whatever the terminal width, so `grep FAIL` sees whole checks.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .rundir import write_text

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"  # GitHub Actions: a Markdown file shown on the job's page


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def measured(check: dict[str, Any]) -> str:
    return "—" if check["measured"] is None else f"{check['measured']:.6g}"


def line(check: dict[str, Any]) -> str:
    """`FAIL  min_accuracy  student onnxruntime int8 cpu b32  measured 0.85  limit 0.9  (note)` on one line."""
    note = f"  ({_one_line(check['note'])})" if check["note"] else ""
    return (f"{check['status']}  {check['gate']:<26} {_one_line(check['row']):<40} measured {measured(check):<10} "
            f"limit {_one_line(check['limit'])}{note}")


def junit(result: dict[str, Any]) -> str:
    """JUnit XML: one testcase per check; a failure carries the measured value and the limit."""
    checks = result["checks"]
    counts = dict(tests=str(len(checks)), failures=str(sum(c["status"] == "FAIL" for c in checks)),
                  errors="0", skipped=str(sum(c["status"] == "SKIP" for c in checks)))
    suites = ET.Element("testsuites", name="lfcc-deploy gate", **counts)
    suite = ET.SubElement(suites, "testsuite", name=f"lfcc-deploy gate {result['run_dir']}", **counts)
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{c['gate'].replace(' ', '_')}",
                             name=_one_line(c["row"]), time="0")
        text = f"measured {measured(c)}, limit {_one_line(c['limit'])}" + (f" ({_one_line(c['note'])})"
                                                                          if c["note"] else "")
        if c["status"] == "FAIL":
            ET.SubElement(case, "failure", message=text, type=c["gate"]).text = line(c)
        elif c["status"] == "SKIP":
            ET.SubElement(case, "skipped", message=text)
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _cell(text: Any) -> str:
    return _one_line(text).replace("|", "\\|")


def markdown(result: dict[str, Any]) -> str:
    """A Markdown table of every check, headed by the verdict (for GitHub's job summary)."""
    checks = result["checks"]
    failed = sum(c["status"] == "FAIL" for c in checks)
    verdict = f"{failed} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed"
    lines = [f"### lfcc-deploy gate: `{result['run_dir']}` — {verdict}", "",
             "| status | gate | row | measured | limit | note |", "|---|---|---|---|---|---|"]
    icon = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "SKIP": "⏭ SKIP"}
    lines += [f"| {icon.get(c['status'], c['status'])} | {_cell(c['gate'])} | {_cell(c['row'])} | "
              f"{_cell(measured(c))} | {_cell(c['limit'])} | {_cell(c['note'])} |" for c in checks]
    return "\n".join(lines) + "\n\n"


def write_junit(path: str | Path, result: dict[str, Any]) -> None:
    write_text(Path(path), junit(result))


def append_step_summary(result: dict[str, Any]) -> Path | None:
    """Append the table to $GITHUB_STEP_SUMMARY when it is set (GitHub shows the file on the job page)."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:  # appended to: other steps write to the same file
        f.write(markdown(result))
    return Path(target)
