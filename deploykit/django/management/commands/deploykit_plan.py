"""Show the migration plan of a rollback to a tag, commit or release, without changing anything."""
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ....planning import (PlanError, find_target, forbidden_unapplies, graph_targets, unexplained_noop,
                          unknown_target_state)
from ....transport.bundle import load_helper
from ...state import registry

_django_state = load_helper("django_state")  # the helper the controller sends, bundled the same way
build_plan, read_graph = _django_state.build_plan, _django_state.read_graph


class Command(BaseCommand):
    help = "Print, per app, the migration target of a rollback and the backward migrations with their SQL."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--to-tag")
        group.add_argument("--to-commit")
        group.add_argument("--to-release")
        parser.add_argument("--database", default="default")
        parser.add_argument("--no-sql", action="store_true")

    def handle(self, *args, **opts):
        releases = registry().get("releases", [])
        live = next((r for r in reversed(releases) if r.get("status") == "live"), None)
        try:
            target = find_target(releases, live, tag=opts["to_tag"], commit=opts["to_commit"],
                                 release_id=opts["to_release"])
        except PlanError as exc:
            raise CommandError(f"{exc} ({exc.hint})") from None
        connection = connections[opts["database"]]
        graph = read_graph(connection)
        now = graph["applied"]
        if unknown_target_state(graph, target):
            raise CommandError(f"{target['id']} has no recorded migration state while this database has migrations: "
                               "a plan would unapply everything (roll back with --with-data)")
        targets = graph_targets(graph, target)
        self.stdout.write(f"rollback to {target['id']} ({','.join(target.get('tags') or []) or target.get('commit')})")
        if not targets:
            self.stdout.write("no migration to unapply")
        for app, name in targets:
            self.stdout.write(f"  {app}: {(now.get(app) or ['zero'])[-1]} -> {name or 'zero'}")
        steps, irreversible = build_plan(connection, targets, with_sql=not opts["no_sql"])
        for step in steps:
            verb = "unapply" if step["backwards"] else "apply"
            self.stdout.write(f"-- {verb} {step['app']}.{step['name']}")
            for line in step.get("sql", []):
                self.stdout.write(f"   {line}")
        forbidden = forbidden_unapplies(steps, graph, target)
        if forbidden:
            self.stdout.write(self.style.ERROR("refused: would unapply migrations the target had: " + ", ".join(forbidden)))
        missing = unexplained_noop(steps, graph, live or {}, target)
        if missing:
            self.stdout.write(self.style.ERROR("refused: the live release recorded migrations this database does not "
                                               "have: " + ", ".join(missing)))
        if irreversible:
            self.stdout.write(self.style.ERROR("irreversible: " + "; ".join(irreversible)))
            self.stdout.write("a rollback needs --with-data (restores that release's backup)")
