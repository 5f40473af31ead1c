"""Every path deploykit uses on a host, in one place (Capistrano's layout).

    <deploy_to>/
      releases/<release id>/     one directory per release; `current` links to the live one
      current -> releases/<id>
      shared/                    files every release links to (.env, media, ...)
      venvs/<key>/               Python environments, shared by releases with the same requirements
      backups/<backup id>/       verified backup sets (0700), each with manifest.json
      failed/<release id>/code   what a recovery set aside (and replaced data beside it): never deleted
      .deploykit/
        releases.json            the release registry (and derived database names)
        lock                     the stage lock
        pending.json             a rollback under way (a rerun finishes it)
        freeze                   while it exists, writes are frozen (JSON: since, mode, retry_after, run id)
        freeze.lock              flock'ed shared by each write request, exclusively by the freezer (drain)
        router.json              on a router host: the colour it serves, since when, by which run
        balancer.json            on a balancer host: its servers and which are drained, since when, by which run
        run/<run id>.pids        long commands of a run, for whoever finishes it
        journal/<run id>.jsonl   the host's copy of a run's journal

Functions take a Host (for its deploy_to); names without a host are relative to deploy_to.
"""
from __future__ import annotations

import posixpath

RELEASES = "releases"
CURRENT = "current"
SHARED = "shared"
VENVS = "venvs"
BACKUPS = "backups"
FAILED = "failed"
STATE_DIR = ".deploykit"
RUN_DIR = f"{STATE_DIR}/run"
JOURNAL_DIR = f"{STATE_DIR}/journal"
REGISTRY_FILE = f"{STATE_DIR}/releases.json"
LOCK_FILE = f"{STATE_DIR}/lock"
PENDING_ROLLBACK = f"{STATE_DIR}/pending.json"
FREEZE_FLAG = f"{STATE_DIR}/freeze"  # the write freeze (deploykit.django.middleware reads it too)
FREEZE_LOCK = f"{STATE_DIR}/freeze.lock"
ROUTER_STATE = f"{STATE_DIR}/router.json"
BALANCER_STATE = f"{STATE_DIR}/balancer.json"
PREVIOUS_SUFFIX = ".deploykit-previous"  # beside a file deploykit owns outside deploy_to: the one it replaced
MANIFEST = "manifest.json"  # in a backup directory
CODE_ARCHIVE = "code.tar.gz"  # in a backup directory

# created by prepare_dirs: (relative path, private)
DIRS = ((RELEASES, False), (SHARED, False), (FAILED, False), (STATE_DIR, False), (RUN_DIR, False),
        (BACKUPS, True))


def current(host) -> str:
    return host.path(CURRENT)


def releases_dir(host) -> str:
    return host.path(RELEASES)


def release_dir(host, release_id: str) -> str:
    return host.path(RELEASES, release_id)


def shared(host, *parts: str) -> str:
    return host.path(SHARED, *parts)


def venvs_dir(host) -> str:
    return host.path(VENVS)


def backups_dir(host) -> str:
    return host.path(BACKUPS)


def backup_dir(host, backup_id: str) -> str:
    return host.path(BACKUPS, backup_id)


def manifest(backup_path: str) -> str:
    return posixpath.join(backup_path, MANIFEST)


def code_archive(backup_path: str) -> str:
    return posixpath.join(backup_path, CODE_ARCHIVE)


def failed_dir(host, name: str) -> str:
    return host.path(FAILED, name)


def failed_code(failed_path: str) -> str:
    """Where a release's code is kept in its failed/ directory."""
    return posixpath.join(failed_path, "code")


def registry_file(host) -> str:
    return host.path(REGISTRY_FILE)


def lock_file(host) -> str:
    return host.path(LOCK_FILE)


def pending_rollback(host) -> str:
    return host.path(PENDING_ROLLBACK)


def freeze_flag(host) -> str:
    return host.path(FREEZE_FLAG)


def freeze_lock(host) -> str:
    return host.path(FREEZE_LOCK)


def pid_file(host, run_id: str) -> str:
    return host.path(RUN_DIR, f"{run_id}.pids")


def journal_dir(host) -> str:
    return host.path(JOURNAL_DIR)


def journal_file(host, run_id: str) -> str:
    return host.path(JOURNAL_DIR, f"{run_id}.jsonl")


def under_deploy_to(host, path: str) -> str:
    """A configured path: absolute as it is, else relative to deploy_to."""
    return path if posixpath.isabs(path) else host.path(path)


def router_state(host) -> str:
    return host.path(ROUTER_STATE)


def balancer_state(host) -> str:
    return host.path(BALANCER_STATE)


# nginx's pid file where Debian's package puts it (rollout.balancer.nginx.pid_file's default)
NGINX_PID = "/run/nginx.pid"


# on a colour's primary: when the router began to serve it, and its write counters then
LIVE_SINCE = f"{STATE_DIR}/live-since.json"


def live_since(host) -> str:
    return host.path(LIVE_SINCE)


def previous_of(path: str) -> str:
    """Where the file a switch replaced is kept, beside it (an nginx upstream file), until the next switch."""
    return path + PREVIOUS_SUFFIX


# the host's machine id (systemd's; absent elsewhere, then the hostname stands in): which machine a path is on
MACHINE_ID = "/etc/machine-id"


def scratch_dir(host, run_id: str) -> str:
    """A run's scratch space on a host (a transfer's media archive while it is sent), removed after use."""
    return host.path(RUN_DIR, f"scratch-{run_id}")
