"""The controller's git repository: tags, commits and archives (GitPython)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # GitPython is imported when a repository is opened: the program starts faster
    import git

from .errors import ConfigError, UnknownRevision


@dataclass
class Revision:
    commit: str
    tag: str | None
    tags: list[str]
    summary: str


def open_repo(path: Path) -> git.Repo:
    import git

    try:
        return git.Repo(path, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ConfigError(f"{path} is not a git repository", hint="set 'repo:' in deploykit.yaml to your project's git checkout") from None


def tags_for(repo: git.Repo, commit: str) -> list[str]:
    return sorted(t.name for t in repo.tags if t.commit.hexsha == commit)


def newest_tag(repo: git.Repo) -> str:
    """The tag whose commit is the most recent (then by name)."""
    tags = list(repo.tags)
    if not tags:
        raise UnknownRevision(f"{repo.working_dir} has no tags", hint="tag the commit to release: git tag v1.0")
    return max(tags, key=lambda t: (t.commit.committed_date, t.name)).name


def resolve(repo_path: Path, tag: str | None = None, commit: str | None = None) -> Revision:
    import git

    repo = open_repo(repo_path)
    if commit:
        try:
            obj = repo.commit(commit)
        except (git.BadName, ValueError):
            raise UnknownRevision(f"unknown or ambiguous commit {commit!r} in {repo_path}",
                                  hint="give more characters of the sha, or a tag with --tag") from None
        return Revision(obj.hexsha, None, tags_for(repo, obj.hexsha), obj.summary)
    name = tag or newest_tag(repo)
    if name not in {t.name for t in repo.tags}:
        known = ", ".join(sorted(t.name for t in repo.tags)[-8:]) or "none"
        raise UnknownRevision(f"unknown tag {name!r} in {repo_path} (known: {known})")
    obj = repo.tags[name].commit
    return Revision(obj.hexsha, name, tags_for(repo, obj.hexsha), obj.summary)


def archive(repo_path: Path, commit: str, dest: Path) -> Path:
    """Write `git archive --format=tar COMMIT` to dest."""
    repo = open_repo(repo_path)
    with open(dest, "wb") as fh:
        repo.archive(fh, treeish=commit, format="tar")
    return dest
