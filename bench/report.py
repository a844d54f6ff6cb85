"""What every benchmark prints and writes: a table of comparisons and their JSON records.

A record is {"case", "ours", "ours_ms", "baseline", "baseline_ms", "ratio"}, ratio = ours_ms /
baseline_ms; a target is the ratio a case must not exceed (None: no target, shown for context).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe import files  # noqa: E402


def record(case, ours, ours_ms, baseline, baseline_ms):
    return {"case": case, "ours": ours, "ours_ms": round(ours_ms, 4), "baseline": baseline,
            "baseline_ms": round(baseline_ms, 4), "ratio": round(ours_ms / baseline_ms, 3)}


def table(records, targets):
    rows = [("case", "ours ms", "baseline", "baseline ms", "ratio", "target", "")]
    for entry, target in zip(records, targets):
        verdict = "" if target is None else "met" if entry["ratio"] <= target else "MISSED"
        rows.append((entry["case"], "%.3f" % entry["ours_ms"], entry["baseline"], "%.3f" % entry["baseline_ms"],
                     ("%.2f" if entry["ratio"] >= 0.1 else "%.4f") % entry["ratio"],  # shares: 4 places
                     "" if target is None else "<= %g" % target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if i in (0, 2, 6) else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows)


def write_json(path, records):
    """Write the records to `path` (if given) atomically, and say where."""
    if not path:
        return
    files.write_atomic(path, json.dumps(records, indent=1) + "\n", force=True)
    print("records written to %s" % path)
