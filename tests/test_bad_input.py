"""Bad input: a one-line error with a hint, a non-zero exit, nothing changed on any host."""
from __future__ import annotations

import json

import pytest
import yaml

from deploykit import api
from deploykit_testing.sshd import unused_address


@pytest.fixture
def live_stage(stage_factory):
    """Two hosts with v1.0 live and some data: the state no bad command may touch."""
    st = stage_factory(2)
    assert api.release(st.config(), st.name, "v1.0").ok
    st.manage("seed_library", "--books", "2", "--with-covers")
    return st


def assert_refused(cp, *words):
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in cp.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, cp.stderr
    assert lines[0].startswith("deploykit: error:") and "hint:" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def variant(st, tmp_path, edit) -> str:
    cfg = yaml.safe_load(st.config_path.read_text())
    edit(cfg)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_input_changes_nothing(live_stage, tmp_path):
    st = live_stage
    tree, data = st.tree(), st.snapshot()

    assert_refused(st.cli("release", "--host", "nope"), "unknown stage 'nope'", "prod")
    assert_refused(st.cli("release", "--host", st.name, "--tag", "v9.9"), "unknown tag 'v9.9'")

    broken = tmp_path / "broken.yaml"
    broken.write_text(st.config_path.read_text().replace("stages:", "stages:\n  - [oops", 1))
    assert_refused(st.cli("release", "--host", st.name, "--tag", "v1.1", config=broken), "malformed YAML", "line")

    typo = variant(st, tmp_path, lambda c: c.update(keep_releases="three"))
    assert_refused(st.cli("release", "--host", st.name, config=typo), "keep_releases", "expected int")

    dead = unused_address()

    def unreachable(c):
        c["stages"][st.name]["hosts"][1]["address"] = f"{st.rig.user}@{dead.address}:{dead.port}"
    assert_refused(st.cli("release", "--host", st.name, "--tag", "v1.1", config=variant(st, tmp_path, unreachable)),
                   "unreachable")

    def unknown_key(c):
        c["ssh"]["known_hosts"] = str(st.rig.known_hosts_without(st.hosts[1]))
    cp = st.cli("release", "--host", st.name, "--tag", "v1.1", config=variant(st, tmp_path, unknown_key))
    assert_refused(cp, "host key is not in", "ssh-keyscan")

    def same_host_twice(c):  # under another name it would lock itself out
        twin = dict(c["stages"][st.name]["hosts"][0], name="host1-again", roles=["app"])
        c["stages"][st.name]["hosts"].append(twin)
    assert_refused(st.cli("release", "--host", st.name, "--tag", "v1.1", config=variant(st, tmp_path, same_host_twice)),
                   "the same host")

    assert st.tree() == tree
    assert st.snapshot() == data


def test_restore_refuses_a_corrupt_backup(live_stage):
    st = live_stage
    cp = st.cli("backup", "--host", st.name)
    assert cp.returncode == 0, cp.stderr
    backups = sorted(p.name for p in (st.primary.deploy_to / "backups").iterdir())
    manual = [b for b in backups if b.endswith("-manual")][-1]
    bdir = st.primary.deploy_to / "backups" / manual
    # one byte changed in the database dump
    victim = max((p for p in (bdir / "db-default").iterdir() if p.name != "toc.dat"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    st.manage("seed_library", "--books", "1", "--prefix", "after-backup")
    tree, data = st.tree(), st.snapshot()

    cp = st.cli("restore", "--host", st.name, "--backup", manual)
    assert_refused(cp, "not usable", "sha256 mismatch")

    # one file missing
    victim.write_bytes(bytes(raw[: len(raw) // 2]))
    (bdir / "media-media.tar").unlink()
    tree = st.tree()
    assert_refused(st.cli("restore", "--host", st.name, "--backup", manual), "not usable", "missing")
    assert_refused(st.cli("restore", "--host", st.name, "--backup", "no-such-backup"), "no backup 'no-such-backup'")

    assert st.tree() == tree
    assert st.snapshot() == data
    listing = st.cli("backups", "--host", st.name)
    assert listing.returncode == 0 and "NO:" in listing.stdout


def test_dry_run_changes_nothing(live_stage):
    st = live_stage
    tree, data = st.tree(), st.snapshot()
    cp = st.cli("release", "--host", st.name, "--tag", "v1.1", "--dry-run")
    assert cp.returncode == 0, cp.stderr
    assert "planned" in cp.stdout and "would switch" in cp.stdout and "nothing was changed" in cp.stdout
    assert st.tree() == tree
    assert st.snapshot() == data
    regs = json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())
    assert [r["tag"] for r in regs["releases"]] == ["v1.0"]
