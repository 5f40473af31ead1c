"""Benchmark of the way to a host: a no-op remote call, deploykit against plain Fabric.

    python bench/transport.py [--runs 200] [--json bench/results/transport.json]

Starts one real sshd host on loopback (the test rig's), then times, interleaved
in one run so both sides see the same machine load: deploykit's
`Host.run("true")`, a no-op helper call (`files read_json` of a missing file),
and Fabric's `Connection.run("true", hide=True)` on the same host. Connections
are opened before timing: what is measured is the cost of one call. Prints one
JSON line per case, then a table with the ratios to Fabric.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.config import parse_config  # noqa: E402
from deploykit.transport.host import make_host  # noqa: E402
from deploykit_testing.sshd import start_ssh_hosts  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    opts = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dk-bench-transport-") as tmp:
        rig = start_ssh_hosts(Path(tmp) / "ssh", 1)
        try:
            h = rig.hosts[0]
            raw = {"deploy_to": str(h.deploy_to), "python": sys.executable,
                   "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key)},
                   "stages": {"b": {"hosts": [f"{rig.user}@{h.address}:{h.port}"]}}}
            cfg = parse_config(raw, Path(tmp) / "deploykit.yaml")
            host = make_host(cfg.stages["b"][0], cfg, run_id="bench-transport")
            host.connect()
            missing = str(h.deploy_to / "no-such.json")
            fab = rig.connection(h)
            fab.open()
            cases = {
                "deploykit run true": lambda: host.run("true", read_only=True),
                "deploykit helper no-op": lambda: host.helper("files", "read_json", {"path": missing}),
                "fabric run true": lambda: fab.run("true", hide=True),
            }
            for fn in cases.values():  # warm up: first channel, helper cache, imports
                fn()
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(opts.runs):
                for name, fn in cases.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            host.close()
            fab.close()
        finally:
            rig.stop()

    fabric = statistics.median(times["fabric run true"])
    results = []
    for name, ts in times.items():
        doc = {"case": name, "runs": len(ts), "median_ms": round(statistics.median(ts) * 1000, 2),
               "p90_ms": round(percentile(ts, 90) * 1000, 2),
               "ratio_to_fabric": round(statistics.median(ts) / fabric, 3)}
        results.append(doc)
        print(json.dumps(doc))
    print(f"\n{'case':28} {'median ms':>10} {'p90 ms':>10} {'x fabric':>9}")
    for doc in results:
        print(f"{doc['case']:28} {doc['median_ms']:>10.2f} {doc['p90_ms']:>10.2f} {doc['ratio_to_fabric']:>9.3f}")
    target = next(d for d in results if d["case"] == "deploykit run true")["median_ms"]
    print(f"\ntarget: deploykit no-op <= 5 ms median: {'met' if target <= 5 else 'NOT met'} ({target} ms)")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
