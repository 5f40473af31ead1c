"""The whole interruption matrix: `invoke faults [--only TEXT] [--json PATH]`.

Starts its own stage (two sshd hosts, a PostgreSQL cluster, the sample
project under supervisord), brings it to the golden state once, then runs
every case of deploykit_testing.faults.all_cases() and prints the table
(case, outcome, seconds). Exits non-zero if any case broke the promise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit_testing.faults import all_cases, open_lab, table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="run the cases whose id contains this text")
    parser.add_argument("--json", help="write one JSON line per case here")
    args = parser.parse_args()
    cases = [c for c in all_cases() if not args.only or args.only in c.id]
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dkfaults-") as tmp, open_lab(Path(tmp)) as lab:
        out = open(args.json, "w") if args.json else None
        for i, case in enumerate(cases, 1):
            result = lab.run_case(case)
            results.append(result)
            line = {"case": case.id, "outcome": result.outcome if result.fired else "NOT FIRED",
                    "seconds": round(result.seconds, 1), "exits": result.exits, "problems": result.problems,
                    "ok": result.ok}
            print(f"[{i}/{len(cases)}] {json.dumps(line)}", file=sys.stderr, flush=True)
            if out:
                out.write(json.dumps(line) + "\n")
                out.flush()
    print(table(results))
    print(f"matrix: {len(results)} cases in {time.monotonic() - started:.0f} s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
