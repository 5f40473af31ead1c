"""What the masking and proof tests share: the helpers as shipped, psql on the rig's cluster, the controller's
part of the proof (digests kept in memory) played by the test."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

from deploykit.transport.bundle import load_helper

REMOTE = Path(__file__).resolve().parent.parent / "deploykit" / "remote"
PY = os.environ.get("DEPLOYKIT_HELPER_PYTHON") or sys.executable
mask = load_helper("mask")  # the program a host runs (_common and _copytext inlined), as a module
# whether the helpers' Python (DEPLOYKIT_HELPER_PYTHON: another interpreter, maybe without Faker) has Faker
HAS_FAKER = subprocess.run([PY, "-c", "import faker"], capture_output=True).returncode == 0


def without_faker(rules: dict) -> dict:
    """The rules as a Python without Faker can run them: faker rules become format rules (same guarantees)."""
    if HAS_FAKER:
        return rules
    out = {}
    for col, rule in rules.items():
        if rule["kind"] == "faker":
            rule = {"kind": "format"}
        elif rule["kind"] == "json":
            rule = dict(rule, paths=without_faker(rule["paths"]))
        out[col] = rule
    return out


def tool(cluster, name: str) -> str:
    own = Path(cluster.bin_dir) / name
    return str(own) if own.exists() else name


def env(cluster) -> dict:
    """This environment with the cluster's libpq settings (the admin's password in PGPASSWORD)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out.update(cluster.env())
    return out


def psql(cluster, db: str) -> list[str]:
    return [tool(cluster, "psql"), "--no-password", "-d", db]


def copy_out(cluster, db: str, sql_from: str) -> list[str]:
    """argv of psql printing COPY text of a query or table (what the controller asks the stream to run)."""
    return psql(cluster, db) + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"COPY {sql_from} TO STDOUT"]


def copy_bytes(cluster, db: str, sql_from: str) -> bytes:
    proc = subprocess.run(copy_out(cluster, db, sql_from), env=env(cluster), capture_output=True, check=True)
    return proc.stdout


def copy_in(cluster, db: str, table: str, data: bytes) -> None:
    argv = psql(cluster, db) + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"COPY {table} FROM STDIN"]
    proc = subprocess.run(argv, input=data, env=env(cluster), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def helper(name: str, action: str, args: dict, environ: dict | None = None) -> dict:
    proc = subprocess.run([PY, str(REMOTE / f"{name}.py"), action], input=json.dumps(args), capture_output=True,
                          text=True, timeout=300, env=environ)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    doc = json.loads(lines[0])
    assert (proc.returncode == 0) == doc["ok"], (doc, proc.stderr)
    return doc


def run_stream(header: dict, avoid: bytes = b"", environ: dict | None = None, argv: list[str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python mask.py stream` fed its header line and the avoid list, as the controller feeds it."""
    header = dict(header, avoid_count=len(avoid) // (4 if header.get("avoid_format") == "ds32" else 8))
    feed = (json.dumps(header) + "\n").encode() + avoid
    cmd = argv or [PY, str(REMOTE / "mask.py"), "stream"]
    return subprocess.run(cmd, input=feed, capture_output=True, env=environ, timeout=timeout)


class Originals:
    """The controller's side of the proof: the digests of original values, in memory."""

    def __init__(self, proof_key: bytes):
        self.key = proof_key
        self.exact: set[int] = set()
        self.normal: set[int] = set()

    def add(self, *values):
        for v in values:
            if v is None or len(mask.normalise(v)) < mask.MIN_LENGTH:
                continue
            self.exact.add(mask.digest(self.key, v))
            self.normal.add(mask.digest(self.key, mask.normalise(v)))

    def add_b64(self, exact: str, normalised: str):
        self.exact.update(mask.digests_b64(exact))
        self.normal.update(mask.digests_b64(normalised))

    def avoid(self) -> bytes:
        return mask.pack_digests(self.normal)

    def scan_args(self) -> dict:
        return {"proof_key": self.key.hex(), "exact": mask.b64_digests(self.exact),
                "normalised": mask.b64_digests(self.normal)}

    def screen(self, *values) -> str:
        """The scan's prefilter (base64 ds32) of these original values, as the digests action makes it."""
        crcs = [zlib.crc32(mask.normalise(v).encode("utf-8", "surrogateescape")) for v in values
                if v is not None and len(mask.normalise(v)) >= mask.MIN_LENGTH]
        return base64.b64encode(mask.pack_screen(crcs)).decode()
