"""Build the sample "library" Django project as a real git repository.

The project is stored in ``deploykit_testing/sample/`` as a base tree (``base/``,
tagged ``v1.0``) plus overlay directories. A tag's tree is its parent tag's
tree with the tag's overlays (:data:`SOURCES`, by default the directory named
like the tag) applied in order. An overlay holds the files it adds or
replaces, and optionally a ``.sample-delete`` file listing paths (one per
line, ``#`` comments) to delete.

:func:`build_sample_repo` turns that into a git repository with annotated
tags. The result is deterministic: fixed author, committer and tagger, and
dates one hour apart from a fixed epoch, so the same source gives the same
commit ids on any machine and the committed dates order the tags exactly as
:data:`TAGS` lists them. ``main`` ends at ``v1.2``; every other tag is the
head of its own branch, forked from its parent tag::

    v1.0 -- v1.1 -- v1.2                    (main)
             |         |-- v1.3-broken-health      (broken-health)
             |         |-- v1.3-broken-migration   (broken-migration)
             |         |-- v2.0: an irreversible data migration (irreversible)
             |         |-- v1.4-shelf (shelf) -- v1.5-squashed (squash)
             |         |-- v1.6-drop-field: removes Book.isbn (drop-field)
             |         `-- v1.6-not-null: adds NOT NULL Book.copies without a default (not-null)
             |-- v1.1-dotenv (dotenv-1.1) -- v1.2-dotenv (dotenv)
             `-- v1.6-additive: a nullable column and a new table (additive)

Each tag's ``requirements.txt`` pins ``dk-sample-extra`` (1.0 at v1.0, 1.1
from v1.1, 1.3 in v1.3-broken-health), a wheel of the test wheelhouse
(:mod:`deploykit_testing.wheelhouse`); ``/env/`` reports the version the
serving environment has. ``v1.4-shelf`` adds the reusable app ``dk_shelf``
1.0 (migrations 0001-0003); ``v1.5-squashed`` squashes the library's
0001-0004 into ``0001_squashed_0004_book_isbn`` (the originals deleted), adds
``0005_book_edition`` and moves to ``dk_shelf`` 2.0 (its own squash
``0001_squashed_0003_shelf_label`` + ``0004_shelf_colour``): rollbacks across
squashes. The ``-dotenv`` tags load ``.env`` in ``manage.py`` and
``wsgi.py``; their settings read ``DATABASE_URL`` from the environment only
(a Django helper that bypassed manage.py would see SQLite). The ``v1.6-*``
tags are the migrations a rolling release must judge (``deploykit plan``):
purely additive from v1.1 (``0004_book_subtitle_loan``: a nullable column, a
new table), a removed field from v1.2 (``0005_remove_book_isbn``) and a NOT
NULL column whose one-off default is not kept (``0005_book_copies``).

Command line: ``python -m deploykit_testing.samplerepo DEST``.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import git

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

#: Tags in commit-date order (oldest first).
TAGS = ["v1.0", "v1.1", "v1.2", "v1.3-broken-health", "v1.3-broken-migration", "v2.0",
        "v1.4-shelf", "v1.5-squashed", "v1.1-dotenv", "v1.2-dotenv", "v1.6-additive", "v1.6-drop-field",
        "v1.6-not-null"]
#: Tag -> the tag its tree and commit derive from.
PARENTS = {
    "v1.0": None,
    "v1.1": "v1.0",
    "v1.2": "v1.1",
    "v1.3-broken-health": "v1.2",
    "v1.3-broken-migration": "v1.2",
    "v2.0": "v1.2",
    "v1.4-shelf": "v1.2",
    "v1.5-squashed": "v1.4-shelf",
    "v1.1-dotenv": "v1.1",
    "v1.2-dotenv": "v1.1-dotenv",
    "v1.6-additive": "v1.1",
    "v1.6-drop-field": "v1.2",
    "v1.6-not-null": "v1.2",
}
#: Tag -> branch its commit is made on.
BRANCHES = {
    "v1.0": "main",
    "v1.1": "main",
    "v1.2": "main",
    "v1.3-broken-health": "broken-health",
    "v1.3-broken-migration": "broken-migration",
    "v2.0": "irreversible",
    "v1.4-shelf": "shelf",
    "v1.5-squashed": "squash",
    "v1.1-dotenv": "dotenv-1.1",
    "v1.2-dotenv": "dotenv",
    "v1.6-additive": "additive",
    "v1.6-drop-field": "drop-field",
    "v1.6-not-null": "not-null",
}
#: Tag -> overlay directories under SAMPLE_DIR, applied in order over the parent's tree.
SOURCES = {tag: (("base",) if PARENTS[tag] is None else (tag,)) for tag in TAGS}
SOURCES.update({"v1.1-dotenv": ("dotenv",), "v1.2-dotenv": ("v1.2", "dotenv")})
#: What each tag's APP_VERSION says.
APP_VERSIONS = {
    "v1.0": "1.0",
    "v1.1": "1.1",
    "v1.2": "1.2",
    "v1.3-broken-health": "1.3",
    "v1.3-broken-migration": "1.3",
    "v2.0": "2.0",
    "v1.4-shelf": "1.4",
    "v1.5-squashed": "1.5",
    "v1.1-dotenv": "1.1",
    "v1.2-dotenv": "1.2",
    "v1.6-additive": "1.6",
    "v1.6-drop-field": "1.6",
    "v1.6-not-null": "1.6",
}
#: Latest library migration of each tag's tree.
LAST_MIGRATIONS = {
    "v1.0": "0001_initial",
    "v1.1": "0003_default_genres",
    "v1.2": "0004_book_isbn",
    "v1.3-broken-health": "0005_book_pages",
    "v1.3-broken-migration": "0006_review",
    "v2.0": "0005_normalize_titles",
    "v1.4-shelf": "0004_book_isbn",
    "v1.5-squashed": "0005_book_edition",
    "v1.1-dotenv": "0003_default_genres",
    "v1.2-dotenv": "0004_book_isbn",
    "v1.6-additive": "0004_book_subtitle_loan",
    "v1.6-drop-field": "0005_remove_book_isbn",
    "v1.6-not-null": "0005_book_copies",
}

AUTHOR_NAME = "Deploykit Sample"
AUTHOR_EMAIL = "sample@deploykit.invalid"
EPOCH = datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
DELETE_LIST = ".sample-delete"
_SKIP_DIRS = {"__pycache__", ".git"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_EXECUTABLE = {"manage.py"}


class SampleRepoError(RuntimeError):
    pass


def commit_date(tag: str) -> datetime:
    """The fixed author/committer/tagger date of ``tag``'s commit."""
    return EPOCH + timedelta(hours=TAGS.index(tag))


def _safe_directory_env(worktree: Path) -> dict[str, str]:
    """Let git work in ``worktree`` even when another user owns it (root
    building for a deploy user): no "dubious ownership" refusal."""
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": str(worktree),
    }


def _git_env(when: datetime, worktree: Path) -> dict[str, str]:
    stamp = f"{int(when.timestamp())} +0000"
    return {
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
        # No user/system git configuration (signing, hooks, templates, autocrlf)
        # may change what gets committed.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        **_safe_directory_env(worktree),
    }


def _source_files(src: Path):
    """(relative posix path, absolute path) of the files of one source dir, sorted."""
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(_SKIP_SUFFIXES) or name == DELETE_LIST:
                continue
            path = Path(root) / name
            yield path.relative_to(src).as_posix(), path


def _deletions(src: Path) -> list[str]:
    listing = src / DELETE_LIST
    if not listing.exists():
        return []
    paths = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = PurePosixPath(line)
        if rel.is_absolute() or ".." in rel.parts:
            raise SampleRepoError(f"{listing}: {line!r} must be a relative path inside the tree")
        paths.append(rel.as_posix())
    return paths


def _apply(src: Path, worktree: Path) -> None:
    for rel in _deletions(src):
        target = worktree / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            raise SampleRepoError(f"{src / DELETE_LIST}: {rel} does not exist in the parent tree")
    for rel, path in _source_files(src):
        target = worktree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_dir():
            raise SampleRepoError(f"{path}: would replace a directory or symlink at {rel}")
        target.write_bytes(path.read_bytes())
        # git keeps only the executable bit: set it from the file name, not
        # from however the package was installed.
        target.chmod(0o755 if PurePosixPath(rel).name in _EXECUTABLE else 0o644)


def build_sample_repo(dest: Path, sample_dir: Path = SAMPLE_DIR) -> git.Repo:
    """Create the sample repository at ``dest`` (absent or an empty directory).

    Returns the :class:`git.Repo`, checked out at ``main`` (= ``v1.2``).
    """
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SampleRepoError(f"{dest} exists and is not an empty directory: pass a new or empty path")
    for tag in TAGS:
        for src in SOURCES[tag]:
            if not (sample_dir / src).is_dir():
                raise SampleRepoError(f"sample source {sample_dir / src} is missing")
    dest.mkdir(parents=True, exist_ok=True)

    cmd = git.Git(str(dest))
    with cmd.custom_environment(**_git_env(EPOCH, dest)):
        cmd.init("--quiet", str(dest))
        cmd.symbolic_ref("HEAD", "refs/heads/main")  # any git, whatever init.defaultBranch
    repo = git.Repo(dest)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", AUTHOR_NAME)
        cw.set_value("user", "email", AUTHOR_EMAIL)
        cw.set_value("core", "autocrlf", "false")
        cw.set_value("commit", "gpgsign", "false")
        cw.set_value("tag", "gpgsign", "false")

    for tag in TAGS:
        parent = PARENTS[tag]
        branch = BRANCHES[tag]
        with repo.git.custom_environment(**_git_env(commit_date(tag), dest)):
            if parent is not None:
                repo.git.checkout("--quiet", "--force", "-B", branch, f"{parent}^{{commit}}")
                repo.git.clean("-fdxq")
            for src in SOURCES[tag]:
                _apply(sample_dir / src, dest)
            repo.git.add("--all", "--force", ".")
            repo.git.commit("--quiet", "--no-verify", "-m", tag)
            repo.git.tag("-a", tag, "-m", tag)
    with repo.git.custom_environment(**_git_env(EPOCH, dest)):
        repo.git.checkout("--quiet", "main")
    repo.git.update_environment(**_safe_directory_env(dest))  # the returned Repo keeps working
    return repo


def tag_commits(repo: git.Repo) -> dict[str, str]:
    """Tag name -> full commit sha, in :data:`TAGS` order."""
    return {tag: repo.tags[tag].commit.hexsha for tag in TAGS}


def archive_tag(repo: git.Repo, tag: str, dest: Path) -> Path:
    """Extract ``git archive`` of ``tag`` into ``dest`` (created if needed)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    data = io.BytesIO()
    repo.archive(data, tag, format="tar")
    data.seek(0)
    with tarfile.open(fileobj=data, mode="r:") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4
            tar.extractall(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit_testing.samplerepo",
        description="Build the sample Django project's git repository with its tags.",
    )
    parser.add_argument("dest", type=Path, help="a new or empty directory")
    args = parser.parse_args(argv)
    try:
        repo = build_sample_repo(args.dest)
    except (SampleRepoError, git.GitCommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    width = max(len(tag) for tag in TAGS)
    for tag, sha in tag_commits(repo).items():
        parent = PARENTS[tag] or "-"
        print(f"{tag:<{width}}  {sha}  branch={BRANCHES[tag]}  parent={parent}")
    print(f"{repo.working_tree_dir}: checked out main at {repo.head.commit.hexsha[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
