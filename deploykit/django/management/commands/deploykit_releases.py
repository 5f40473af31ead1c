"""Show the releases deploykit recorded on this host."""
from django.core.management.base import BaseCommand

from ...state import registry

SYSTEM_APPS = {"admin", "auth", "contenttypes", "sessions"}


class Command(BaseCommand):
    help = "List the releases recorded by deploykit: id, commit, tags, status, migration leaf per app, backup."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the registry as JSON")

    def handle(self, *args, **opts):
        releases = registry().get("releases", [])
        if opts["json"]:
            import json

            self.stdout.write(json.dumps(releases, indent=2))
            return
        for r in releases:
            leaves = ", ".join(f"{app}:{names[-1]}" for app, names in sorted((r.get("migrations") or {}).items())
                               if names and app not in SYSTEM_APPS)
            self.stdout.write(f"{r['id']}  {(r.get('commit') or '')[:10]}  {','.join(r.get('tags') or []) or '-':<24} "
                              f"{r['status']:<12} {leaves or '-'}  backup={r.get('backup_id') or '-'}")
