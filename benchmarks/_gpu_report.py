"""Stages, the time budget and the results files of benchmarks/gpu_check.py.

:class:`Report` holds every stage's record (``status`` ok / failed / skipped, ``seconds``,
``results``, ``reason``) and rewrites ``gpu_check.json`` and ``gpu_check.md`` after each change, so
that a run stopped early leaves what it measured. :func:`run_stage` and :func:`guarded` skip what no
longer fits in the budget and record failures instead of raising; a watchdog (SIGALRM) cuts a stage
that runs past the budget.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = (
    "environment",
    "install",
    "tests_parity",
    "tests_propagation",
    "api_click",
    "api_propagate",
    "api_everything",
    "speed_propagation",
    "speed_model",
    "speed_everything",
    "speed_compile",
)


class BudgetExceeded(BaseException):
    """The watchdog fired: the stage ran past the global time budget."""


# ---------------------------------------------------------------------------- report
class Report:
    """Stage results, written as JSON and markdown after every change."""

    def __init__(self, out: Path, args, budget_s: float) -> None:
        self.out, self.start, self.budget_s = out, time.monotonic(), budget_s
        self.data: dict[str, Any] = {
            "schema": 1,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "device": args.device,
            "quick": args.quick,
            "budget_s": budget_s,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "stages": {name: {"status": "pending"} for name in STAGES},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def set(self, name: str, record: dict) -> None:
        self.data["stages"][name] = record
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default))
        tmp.replace(self.out / "gpu_check.json")
        (self.out / "gpu_check.md").write_text(render_markdown(self.data))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def run_stage(report: Report, name: str, fn: Callable[[], dict], needs_s: float) -> dict:
    """Run one stage unless the budget is spent; record ok / failed / skipped with the reason."""
    left = report.left()
    if left < needs_s:
        rec = {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left, the stage needs about {needs_s:.0f} s",
        }
        report.set(name, rec)
        print(f"[{name}] skipped: {rec['reason']}", flush=True)
        return rec
    print(f"[{name}] start ({left:.0f} s of budget left)", flush=True)
    t0 = time.monotonic()
    try:
        with watchdog(left + min(30.0, 0.1 * report.budget_s)):
            results = fn()
        status = results.pop("_status", "ok")
        rec = {"status": status, "seconds": round(time.monotonic() - t0, 2), "results": results}
        if "_reason" in results:
            rec["reason"] = results.pop("_reason")
    except BudgetExceeded as exc:  # cut short by the budget: not a finding about the code
        rec = {
            "status": "skipped",
            "seconds": round(time.monotonic() - t0, 2),
            "reason": f"time budget: {exc}",
        }
    except Exception as exc:  # a failing stage is a finding: record it and go on
        rec = {
            "status": "failed",
            "seconds": round(time.monotonic() - t0, 2),
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    report.set(name, rec)
    print(
        f"[{name}] {rec['status']} in {rec['seconds']:.1f} s"
        + (f": {rec.get('reason')}" if rec.get("reason") else ""),
        flush=True,
    )
    return rec


@contextlib.contextmanager
def watchdog(seconds: float):
    """Raise BudgetExceeded in this (main) thread after ``seconds`` (POSIX; a no-op elsewhere)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise BudgetExceeded(f"the stage ran past the time budget (watchdog at {seconds:.0f} s)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def guarded(results: dict, key: str, fn: Callable[[], dict], report: Report, needs_s: float = 0.0) -> None:
    """One measurement inside a stage: results[key] = its numbers, or a recorded failure or skip."""
    left = report.left()
    if left < needs_s:
        results[key] = {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left, needs about {needs_s:.0f} s",
        }
        return
    t0 = time.monotonic()
    try:
        row = fn()
        errors = _errors(row)
        results[key] = {
            "status": "failed" if errors else "ok",
            **row,
            "seconds": round(time.monotonic() - t0, 2),
        }
        if errors:
            results[key]["reason"] = "; ".join(errors)[:1000]
    except Exception as exc:
        results[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
    print(
        f"    {key}: {results[key]['status']}"
        + (f" ({results[key].get('reason')})" if results[key]["status"] != "ok" else ""),
        flush=True,
    )


def _errors(row: dict, prefix: str = "") -> list[str]:
    """Every side's error recorded in a measurement row or in its sub-rows (model stages)."""
    out = [f"{prefix}{side}: {msg}" for side, msg in row.get("errors", {}).items()]
    for k, v in row.items():
        if isinstance(v, dict) and k != "errors":
            out += _errors(v, f"{prefix}{k}/")
    return out


def stage_status(results: dict) -> dict:
    bad = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "failed"]
    if bad:
        results["_status"] = "failed"
        results["_reason"] = "failed: " + ", ".join(bad)
    return results


# ---------------------------------------------------------------------------- markdown
def _f(v, fmt=".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render_markdown(data: dict) -> str:
    env = data["stages"].get("environment", {}).get("results", {})
    lines = [
        "# napari-sam2 GPU check",
        "",
        f"- device: `{data['device']}`{' (' + env['gpu'] + ')' if env.get('gpu') else ''}; quick: {data['quick']}",
        f"- torch {env.get('torch', '?')}, python {env.get('python', '?')}, {env.get('nproc', '?')} CPUs; "
        f"started {data['started']}; {data.get('elapsed_s', 0):.0f} s of a {data['budget_s']:.0f} s budget",
        f"- command: `{' '.join(data['command'])}`",
        "",
        "## Stages",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---:|---|",
    ]
    for name in STAGES:
        rec = data["stages"].get(name, {})
        note = rec.get("reason", "")
        res = rec.get("results", {})
        if name.startswith("tests_") and "tests" in res:
            note = (
                f"{res['passed']} passed, {res['failed']} failed, {res['errors']} errors, {res['skipped']} skipped"
                + (f"; {note}" if note else "")
            )
        lines.append(
            f"| {name} | {rec.get('status')} | {_f(rec.get('seconds'), '.1f')} | {note.replace('|', '/')[:200]} |"
        )
    lines += _speed_tables(data)
    lines += _api_table(data)
    lines += _failures(data)
    return "\n".join(lines) + "\n"


def _speed_rows(data: dict):
    """(stage label, key, row) for every speed measurement with at least one side timed."""
    st = data["stages"]
    for name in ("speed_propagation", "speed_model", "speed_everything", "speed_compile"):
        res = st.get(name, {}).get("results", {})
        groups = [(name, res)]
        if name == "speed_compile":
            groups = [(f"{name}/{k}", v) for k, v in res.items() if isinstance(v, dict)]
        for label, group in groups:
            for key, row in group.items():
                if not isinstance(row, dict) or row.get("status") not in ("ok", "failed"):
                    continue
                subs = (
                    [s for s in ("encode", "click", "step") if s in row]
                    if label.endswith("model")
                    else [None]
                )
                for sub in subs:
                    r = row if sub is None else row[sub]
                    if r.get("ours_s") or r.get("ref_s"):
                        yield label, key if sub is None else f"{key} / {sub}", r


def _speed_tables(data: dict) -> list[str]:
    kind = "CUDA max_memory_allocated" if data["device"].startswith("cuda") else "resident set (VmHWM)"
    lines = ["", "## Ours vs the reference (same weights, same inputs)", "",
             "Times are medians; speed-up = ref time / ours time (> 1: ours faster); propagation in frames/s. "
             f"Memory: {kind} at its peak during one call, less what was held before it (both models' weights "
             "excluded), MiB. A side that failed shows its error instead of a time.",
             "", "| stage | variant / case / precision | ours | ref | speed-up | ours +MiB | ref +MiB | ours vs ref masks |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    eq_lines = ["", "## Masks: bfloat16 autocast against float32", "",
                "| stage | variant / case / precision | ours IoU mean (min) | ours differing px | ref IoU mean (min) | ref differing px |",
                "|---|---|---|---:|---|---:|"]  # fmt: skip
    for label, key, row in _speed_rows(data):
        errors = row.get("errors", {})
        cells = []
        for side in ("ours", "ref"):
            if side in errors:
                cells.append("FAILED")
            elif "ours_fps" in row:
                cells.append(f"{_f(row.get(side + '_fps'), '.2f')} fr/s")
            else:
                cells.append(f"{_f(row[side + '_s'] and row[side + '_s'] * 1e3, '.1f')} ms")
        vs = row.get("ours_vs_ref")
        if vs and vs.get("masks"):
            same = f"IoU {vs['iou_mean']:.4f} (min {vs['iou_min']:.4f}), {vs['differing_fraction']:.2e} px differ"
        elif "ours_equal_ref" in row:
            same = f"{row['ours_masks']} vs {row['ref_masks']} masks, identical: {row['ours_equal_ref']}"
        else:
            same = "; ".join(f"{k}: {v}" for k, v in errors.items())[:200].replace("|", "/") or "n/a"
        speedup = _f(row.get("speedup"), ".2f") + ("x" if row.get("speedup") else "")
        lines.append(f"| {label} | {key} | {cells[0]} | {cells[1]} | {speedup} | {_f(row.get('ours_extra_mib'), '.0f')} | "
                     f"{_f(row.get('ref_extra_mib'), '.0f')} | {same} |")  # fmt: skip
        o, r = row.get("ours_vs_ours_fp32"), row.get("ref_vs_ref_fp32")
        if o or r:
            o, r = o or {}, r or {}
            eq_lines.append(f"| {label} | {key} | {_f(o.get('iou_mean'), '.4f')} ({_f(o.get('iou_min'), '.4f')}) | "
                            f"{o.get('differing_px', 'n/a')} | {_f(r.get('iou_mean'), '.4f')} ({_f(r.get('iou_min'), '.4f')}) | "
                            f"{r.get('differing_px', 'n/a')} |")  # fmt: skip
    return lines + eq_lines


def _api_table(data: dict) -> list[str]:
    lines = [
        "",
        "## Public API with the demo model",
        "",
        "| stage | measurement | figures |",
        "|---|---|---|",
    ]
    for name in ("api_click", "api_propagate", "api_everything"):
        for key, row in data["stages"].get(name, {}).get("results", {}).items():
            if not isinstance(row, dict):
                continue
            figures = ", ".join(f"{k} {_f(v, '.4g') if isinstance(v, float) else v}" for k, v in row.items()
                                if k not in ("traceback",) and not isinstance(v, (dict, list)))  # fmt: skip
            lines.append(f"| {name} | {key} | {figures.replace('|', '/')[:300]} |")
    return lines


def _failures(data: dict) -> list[str]:
    lines = []
    for name in STAGES:
        res = data["stages"].get(name, {}).get("results", {})
        for f in res.get("failures", [])[:20]:
            lines.append(f"- {name}: {f}")
    return ["", "## Failing tests", "", *lines] if lines else []
