"""Benchmark of the refresh's masking stream and proof scan (remote/mask.py, remote/proof.py).

    python bench/mask.py [--rows 500000] [--avoid 1500000] [--scan] [--json bench/results/mask.json]

Writes a synthetic COPY text file shaped like the bench database's users
table (id, email, name, created, bio: the pg_data_path dataset) and one with
longer, messier text (names that repeat, bios of prose with tabs, newlines
and non-ASCII), then times, per rule set, the stream transform in-process
(CPU seconds of this process: MB/s per core) and `mask.py stream` as a host
runs it, fed a `cat` of the file (its CPU and wall time), in one process and
with two workers (jobs 2). The avoid set holds
--avoid random digests (the originals of a run). With --scan it also loads
the first file into a fresh cluster (the rig's) and times proof.py scan of it
(catalog, pg_dump, one pass), with one worker and with the default. Prints one JSON line per case.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.transport.bundle import load_helper  # noqa: E402

REMOTE = ROOT / "deploykit" / "remote"
COLUMNS = ["id", "email", "name", "created", "bio"]
RULES = {"email": {"kind": "email"}, "name": {"kind": "faker", "provider": "name", "locale": "en_US"},
         "bio": {"kind": "format"}}
KEY, PROOF = "ab" * 32, bytes(range(16))


def dataset(path: Path, rows: int) -> None:
    """The bench database's users: userN@example.org, 'User N', bio of two md5 hex digests."""
    with open(path, "wb") as f:
        chunk = []
        for g in range(1, rows + 1):
            bio = hashlib.md5(str(g).encode()).hexdigest() + hashlib.md5(str(g * 7).encode()).hexdigest()
            chunk.append(b"%d\tuser%d@example.org\tUser %d\t2024-05-01 10:%02d:00+00\t%s\n"
                         % (g, g, g, g % 60, bio.encode()))
            if len(chunk) >= 10000:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def prose(path: Path, rows: int) -> None:
    """Messier text: names that repeat, mixed-case emails, bios of 20-80 words, some tabs/newlines/unicode."""
    rng = random.Random(1)
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
             "et dolore magna aliqua Paris London Zürich").split()
    first = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "Müller", "José"]
    last = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez"]
    with open(path, "wb") as f:
        for i in range(rows):
            a, b = rng.choice(first), rng.choice(last)
            bio = " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))
            if i % 17 == 0:
                bio = bio.replace(" ", "\\n", 2).replace(" ", "\\t", 1)
            f.write(("%d\t%s.%s%d@Corp%d.com\t%s %s\t2024-01-01 10:00:00+00\t%s\n"
                     % (i, a, b, i, i % 50, a, b, bio)).encode())


def avoid_list(n: int) -> bytes:
    rng = random.Random(2)
    m = load_helper("mask")
    return m.pack_digests(rng.getrandbits(64) for _ in range(n))


def in_process(path: Path, rules: dict, avoid: bytes) -> dict:
    m = load_helper("mask")
    ctx = m.Context(KEY, PROOF.hex(), m.membership(m.unpack_digests(avoid)))
    tm = m.TableMasker({"table": "users", "columns": COLUMNS, "masks": rules}, ctx)
    data = path.read_bytes()
    start = time.process_time()
    for lines in m.iter_blocks(io.BytesIO(data).read):
        tm.transform(lines)
    cpu = time.process_time() - start
    return {"mb": round(len(data) / 1e6, 1), "rows": tm.rows, "cpu_s": round(cpu, 2),
            "mb_s_per_core": round(len(data) / 1e6 / cpu, 1), "us_per_row": round(cpu / tm.rows * 1e6, 2)}


def by_stream(path: Path, rules: dict, avoid: bytes, jobs: int = 1) -> dict:
    header = {"command": ["cat", str(path)], "spec": {"table": "users", "columns": COLUMNS, "masks": rules},
              "mask_key": KEY, "proof_key": PROOF.hex(), "avoid_count": len(avoid) // 8, "jobs": jobs}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.run([sys.executable, str(REMOTE / "mask.py"), "stream"],
                              input=(json.dumps(header) + "\n").encode() + avoid, stdout=sink, stderr=subprocess.PIPE)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr.decode())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    size = path.stat().st_size / 1e6
    return {"jobs": jobs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mb_s_wall": round(size / wall, 1),
            "mb_s_per_core": round(size / cpu, 1)}


def scan_case(path: Path, work: Path) -> dict:
    from deploykit_testing.postgres import PgCluster

    pg = PgCluster.start(work / "cluster")
    try:
        pg.create_database("maskbench")
        pg.psql("maskbench", "CREATE TABLE users (id bigint PRIMARY KEY, email text, name text, "
                             "created timestamptz, bio text)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(pg.env())
        psql = [str(pg.bin_dir / "psql"), "--no-password", "-d", "maskbench"]
        with open(path, "rb") as f:
            subprocess.run(psql + ["-c", "COPY users FROM STDIN"], stdin=f, env=env, check=True)
        m = load_helper("mask")
        rng = random.Random(3)
        some = m.b64_digests(rng.getrandbits(64) for _ in range(1_000_000))
        out = []
        for jobs in (1, None):
            args = {"psql": psql, "pg_dump": [str(pg.bin_dir / "pg_dump"), "--no-password", "-d", "maskbench"],
                    "proof_key": PROOF.hex(), "exact": some, "normalised": some, "min_length": 4, "jobs": jobs}
            start = time.monotonic()
            proc = subprocess.run([sys.executable, str(REMOTE / "proof.py"), "scan"], input=json.dumps(args),
                                  capture_output=True, text=True, env=env)
            wall = time.monotonic() - start
            doc = json.loads(proc.stdout)
            if not doc.get("ok"):
                raise SystemExit(doc)
            out.append({"jobs": doc["jobs"], "wall_s": round(wall, 2), "helper_s": doc["seconds"],
                        "checked": doc["checked"], "found": len(doc["found"]),
                        "mb": round(path.stat().st_size / 1e6, 1), "mb_s": round(path.stat().st_size / 1e6 / wall, 1)})
        return out
    finally:
        pg.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--avoid", type=int, default=1_500_000, help="digests in the avoid set (originals of a run)")
    ap.add_argument("--scan", action="store_true", help="also time proof.py scan of the dataset in a fresh cluster")
    ap.add_argument("--json", type=Path, default=None)
    opts = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="dk-bench-mask-") as tmp:
        work = Path(tmp)
        files = {"bench_users": work / "users.copy", "prose": work / "prose.copy"}
        dataset(files["bench_users"], opts.rows)
        prose(files["prose"], opts.rows // 2)
        avoid = avoid_list(opts.avoid)
        cases = [("email+name+bio", RULES)] + [(k, {k: v}) for k, v in RULES.items()]
        for name, path in files.items():
            for case, rules in cases:
                row = {"case": "transform", "data": name, "rules": case, **in_process(path, rules, avoid)}
                print(json.dumps(row), flush=True)
                results.append(row)
            for jobs in (1, 2):
                row = {"case": "stream", "data": name, "rules": "email+name+bio",
                       **by_stream(path, RULES, avoid, jobs)}
                print(json.dumps(row), flush=True)
                results.append(row)
        if opts.scan:
            for one in scan_case(files["bench_users"], work):
                row = {"case": "proof_scan", "data": "bench_users", **one}
                print(json.dumps(row), flush=True)
                results.append(row)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
