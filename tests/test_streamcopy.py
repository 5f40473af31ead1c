"""Host-to-host copies between two stages (real sshd hosts): whole and checked, or nothing replaced."""
from __future__ import annotations

import hashlib
import os
import sys

import pytest

from deploykit.config import parse_config
from deploykit.errors import DeployError, DryRunWrite
from deploykit.transport.host import Host, make_host
from deploykit.transport.streamcopy import CopyCorrupt, copy_file, copy_tree, sync_tree


def two_stages(rig, tmp_path):
    """blue = the rig's first host, green = its second: one config, two stages."""
    def host(h):
        return {"name": h.name, "address": f"{rig.user}@{h.address}:{h.port}", "deploy_to": str(h.deploy_to),
                "roles": ["app", "primary"]}
    raw = {"deploy_to": "/nonexistent", "python": sys.executable,
           "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key)},
           "stages": {"blue": {"hosts": [host(rig[0])]}, "green": {"hosts": [host(rig[1])]}}}
    return parse_config(raw, tmp_path / "deploykit.yaml")


def hosts(cfg, read_only=False):
    return (make_host(cfg.stage("blue")[0], cfg, run_id="copytest"),
            make_host(cfg.stage("green")[0], cfg, run_id="copytest", read_only=read_only))


def tree(root):
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), oct(p.stat().st_mode & 0o777))
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def backup_set(ssh_rig):
    src = ssh_rig[0].deploy_to / "backups" / "b1"
    (src / "db").mkdir(parents=True)
    (src / "db" / "default.dump").write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    (src / "manifest.json").write_text('{"items": []}\n')
    (src / "empty").write_bytes(b"")
    return src


def test_tree_arrives_whole_and_checked(ssh_rig, tmp_path, backup_set):
    blue, green = hosts(two_stages(ssh_rig, tmp_path))
    dest = ssh_rig[1].deploy_to / "incoming" / "b1"
    told = []
    result = copy_tree(blue, str(backup_set), green, str(dest), progress=lambda sent, total: told.append((sent, total)))

    assert {k: v[0] for k, v in tree(dest).items()} == {k: v[0] for k, v in tree(backup_set).items()}
    assert all(mode == "0o600" for _, mode in tree(dest).values())
    assert result.bytes == 5 * 1024 * 1024 + 17 + len('{"items": []}\n')
    assert sorted(f.rel for f in result.files) == ["db/default.dump", "empty", "manifest.json"]
    # the bytes were told as they went, ending at the whole tree's size
    assert told[-1] == (result.bytes, result.bytes) and len(told) > 2
    assert [s for s, _ in told] == sorted(s for s, _ in told)
    assert [p.name for p in dest.parent.iterdir()] == ["b1"]  # no .part left beside it
    # a second copy never replaces a directory that exists
    with pytest.raises(DeployError, match="exists already"):
        copy_tree(blue, str(backup_set), green, str(dest))
    blue.close(), green.close()


def test_corrupted_in_transit_is_discarded_and_the_old_file_kept(ssh_rig, tmp_path, backup_set, monkeypatch):
    blue, green = hosts(two_stages(ssh_rig, tmp_path))
    dest = ssh_rig[1].deploy_to / "incoming" / "default.dump"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the copy from last week")
    original = Host.open_stream

    def flipping(self, command, **kw):  # the target's disk returns a bit flipped
        stream = original(self, command, **kw)
        if self is green:
            write = stream.write
            stream.write = lambda data: write(bytes([data[0] ^ 1]) + data[1:]) if data else None
        return stream

    monkeypatch.setattr(Host, "open_stream", flipping)
    with pytest.raises(CopyCorrupt, match="sha256"):
        copy_file(blue, str(backup_set / "db" / "default.dump"), green, str(dest))
    assert dest.read_bytes() == b"the copy from last week"
    assert [p.name for p in dest.parent.iterdir()] == ["default.dump"]
    monkeypatch.undo()
    copy_file(blue, str(backup_set / "db" / "default.dump"), green, str(dest), mode=0o640)
    assert dest.read_bytes() == (backup_set / "db" / "default.dump").read_bytes()
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    blue.close(), green.close()


def test_full_disk_on_the_target_leaves_nothing(ssh_rig, tmp_path, backup_set):
    target = ssh_rig[1]
    target.stop()
    target.file_size_limit = 1024 * 1024  # every file written in an ssh session: at most 1 MB
    target.start()
    target.wait_ready()
    blue, green = hosts(two_stages(ssh_rig, tmp_path))
    dest = target.deploy_to / "incoming" / "b1"
    with pytest.raises(DeployError, match="writing"):
        copy_tree(blue, str(backup_set), green, str(dest))
    assert not (target.deploy_to / "incoming").exists() or list((target.deploy_to / "incoming").iterdir()) == []
    blue.close(), green.close()


def test_dry_run_target_refuses_before_writing(ssh_rig, tmp_path, backup_set):
    blue, green = hosts(two_stages(ssh_rig, tmp_path), read_only=True)
    dest = ssh_rig[1].deploy_to / "incoming" / "b1"
    with pytest.raises(DryRunWrite):
        copy_tree(blue, str(backup_set), green, str(dest))
    assert not (ssh_rig[1].deploy_to / "incoming").exists()
    blue.close(), green.close()


def test_a_run_holds_two_stages_and_an_interrupt_stops_the_copy_cleanly(ssh_rig, tmp_path):
    """A Context over blue with green as a second stage: one journal, one interrupt for the hosts of both."""
    import signal
    import threading
    import time

    from deploykit.engine.context import Context

    cfg = two_stages(ssh_rig, tmp_path)
    cfg.journal_dir = tmp_path / "journal"
    big = ssh_rig[0].deploy_to / "big.dump"
    big.write_bytes(os.urandom(1024 * 1024) * 400)  # 400 MB: still copying when the signal comes
    dest = ssh_rig[1].deploy_to / "incoming" / "big.dump"
    ctx = Context(cfg, "blue", command="transfer", others=("green",))
    try:
        assert [h.name for h in ctx.hosts] == ["host1"] and [h.name for h in ctx.stages["green"]] == ["host2"]
        assert [h.name for h in ctx.every_host] == ["host1", "host2"]
        blue, green = ctx.primary, ctx.primary_of("green")
        outcome = []

        def copy():
            try:
                outcome.append(copy_file(blue, str(big), green, str(dest)))
            except DeployError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=copy)
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.name.startswith("big.dump.part-")
                                                      for p in dest.parent.glob("*")):
            time.sleep(0.05)
        time.sleep(0.3)
        ctx.interrupt(signal.SIGINT)
        worker.join(120)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], DeployError), outcome
        assert list(dest.parent.iterdir()) == []  # nothing half-copied stays on the target
        events = [line for line in ctx.journal.local_path.read_text().splitlines() if '"interrupted"' in line]
        assert events
    finally:
        ctx.close()


def test_sync_tree_sends_only_the_files_that_differ_and_keeps_the_old_tree(ssh_rig, tmp_path):
    blue, green = hosts(two_stages(ssh_rig, tmp_path))
    media = ssh_rig[0].deploy_to / "shared" / "media"
    (media / "covers").mkdir(parents=True)
    for i in range(4):
        (media / "covers" / f"{i}.jpg").write_bytes(os.urandom(1024 * 1024 + i))
    (media / "readme.txt").write_text("hello\n")
    os.chmod(media / "readme.txt", 0o644)
    os.chmod(media / "covers", 0o750)
    target = ssh_rig[1].deploy_to / "shared" / "media"
    before = tree(media)

    def sync(n):
        return sync_tree(blue, str(media), green, str(target), src_scratch=str(ssh_rig[0].deploy_to / "scratch"),
                         dst_scratch=str(ssh_rig[1].deploy_to / "scratch"),
                         aside=str(ssh_rig[1].deploy_to / "failed" / f"media.replaced-{n}"))

    first = sync(1)
    assert tree(target) == before  # same content, same modes
    assert oct((target / "covers").stat().st_mode & 0o777) == "0o750"
    assert first.sent_files == 5 and first.kept_files == 0 and first.aside is None
    assert first.bytes_sent > 4 * 1024 * 1024

    # one file changed, one removed, one added: only two files travel; the old tree is kept whole aside
    (media / "covers" / "1.jpg").write_bytes(os.urandom(1000))
    (media / "covers" / "3.jpg").unlink()
    (media / "new.txt").write_text("new\n")
    old_target = tree(target)
    second = sync(2)
    assert tree(target) == tree(media)
    assert (second.sent_files, second.kept_files, second.files) == (2, 3, 5)
    assert second.bytes_sent < first.bytes_sent / 20
    assert tree(ssh_rig[1].deploy_to / "failed" / "media.replaced-2") == old_target

    # nothing changed: almost nothing is sent (< 1% of the first transfer)
    third = sync(3)
    assert third.sent_files == 0 and third.kept_files == 5 and third.bytes_sent < first.bytes_sent / 100
    assert tree(target) == tree(media) and tree(media) != before  # the source was only read
    # no scratch archive or half-built tree left on either side
    assert not list((ssh_rig[0].deploy_to / "scratch").iterdir())
    assert not list((ssh_rig[1].deploy_to / "scratch").iterdir())
    assert sorted(p.name for p in target.parent.iterdir()) == ["media"]
    blue.close(), green.close()


def test_sync_tree_that_fails_on_arrival_leaves_the_target_as_it_was(ssh_rig, tmp_path, monkeypatch):
    import deploykit.transport.streamcopy as sc

    blue, green = hosts(two_stages(ssh_rig, tmp_path))
    media = ssh_rig[0].deploy_to / "shared" / "media"
    media.mkdir(parents=True)
    (media / "a.bin").write_bytes(os.urandom(300_000))
    target = ssh_rig[1].deploy_to / "shared" / "media"
    target.mkdir(parents=True)
    (target / "old.bin").write_bytes(b"old")
    old = tree(target)
    real = sc._relay

    def corrupt(src, src_path, dst, dst_part, progress=None):
        size, digest = real(src, src_path, dst, dst_part, progress)
        return size, "0" * 64  # what the controller relayed is not what left
    monkeypatch.setattr(sc, "_relay", corrupt)
    with pytest.raises(CopyCorrupt):
        sync_tree(blue, str(media), green, str(target), src_scratch=str(ssh_rig[0].deploy_to / "scratch"),
                  dst_scratch=str(ssh_rig[1].deploy_to / "scratch"), aside=str(ssh_rig[1].deploy_to / "aside"))
    assert tree(target) == old and not (ssh_rig[1].deploy_to / "aside").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["media"]
    assert not list((ssh_rig[1].deploy_to / "scratch").iterdir())
    blue.close(), green.close()
