"""Django work several steps share: migrate and collectstatic with a given release's code."""
from __future__ import annotations

from ..djangoapp import django_helper, warm_up


def migrate_in(ctx, host, release_dir: str) -> list[str]:
    """`manage.py migrate` with the code in release_dir; return what it applied (the state after is kept).

    The state before and after is read by the same Django that migrates (one start-up).
    """
    doc = django_helper(ctx, host, release_dir, "apply", track="migrate",
                        progress=lambda line: ctx.progress(host, line.strip(), kind="output", command="migrate"))
    ctx.journal.record("django_output", host=host, command="migrate", text=doc.get("output", "")[-4000:])
    ctx.state.migrations = doc["state"]
    return doc["applied"]


def warm_up_in(ctx, host, release_dir: str) -> None:
    """Start release_dir's Django session now (it asks nothing of the database), so that a migrate later,
    under a write freeze, does not wait for Django's start-up."""
    warm_up(ctx, host, release_dir)


def collectstatic(ctx, host, release_dir: str) -> str:
    """`manage.py collectstatic --noinput` in release_dir; its last line of output."""
    doc = django_helper(ctx, host, release_dir, "collectstatic",
                        progress=lambda line: ctx.progress(host, line.strip(), kind="output", command="collectstatic"))
    out = doc.get("output", "").strip()
    return out.splitlines()[-1] if out else "done"


def applied_message(applied: list[str], nothing: str = "no migrations to apply") -> str:
    return f"applied {len(applied)}: {', '.join(applied)}" if applied else nothing
