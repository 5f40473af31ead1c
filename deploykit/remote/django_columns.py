"""deploykit remote helper: the app's concrete models and the columns their fields are stored in.

Standalone (stdlib + the app's own Django), run inside the app's manage.py
exactly as django_state.py is (see its docstring: `manage.py shell -c
BOOTSTRAP`, one JSON line per request with --session), so it sees the models
the app's own settings install. The anonymized refresh resolves its
`app_label.Model.field` rules through this answer (renames and db_table are
the app's business) and classifies personal-looking columns from it.

Actions (take database?; run directly, also project_dir and settings?):
  columns -> {django, user_model: "app_label.Model" (AUTH_USER_MODEL), models: [
                {app_label, object_name, label, db_table, managed, auto_created (an m2m through table),
                 user_model: bool, fields: [
                   {name, attname, column, class, classes (the MRO's class names, the field's own first),
                    internal_type, db_type, unique, primary_key, null, max_length, related_model, auto_now}]}]}
             every concrete model (no proxy, no swapped-out model, auto-created m2m tables included),
             sorted by db_table; its concrete local fields in model order. db_type is the column type
             Django would create on this connection (null when it has none: a relation's own table).
"""
import sys

from _common import end_session, serve, serve_session
from _django import _close_connections, _connection, _setup


def _field(field, connection):
    classes = [k.__name__ for k in type(field).__mro__ if k is not object]
    try:
        db_type = field.db_type(connection)
    except Exception:  # a third-party field that cannot say on this backend: the database still can
        db_type = None
    related = getattr(field, "related_model", None)
    return {"name": field.name, "attname": field.attname, "column": field.column, "class": classes[0],
            "classes": classes, "internal_type": field.get_internal_type(), "db_type": db_type,
            "unique": bool(field.unique), "primary_key": bool(field.primary_key), "null": bool(field.null),
            "max_length": field.max_length if isinstance(field.max_length, int) else None,
            "related_model": related._meta.label if related is not None and hasattr(related, "_meta") else None,
            "auto_now": bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))}


def read_columns(connection):
    """Every concrete model of the app with its concrete local fields (pure reading: nothing is connected)."""
    from django.apps import apps
    from django.conf import settings

    user_label = str(getattr(settings, "AUTH_USER_MODEL", "auth.User"))
    app_label, _, object_name = user_label.partition(".")
    models = []
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.proxy or meta.swapped:
            continue
        is_user = meta.app_label == app_label and meta.object_name.lower() == object_name.lower()
        models.append({"app_label": meta.app_label, "object_name": meta.object_name, "label": meta.label,
                       "db_table": meta.db_table, "managed": bool(meta.managed),
                       "auto_created": bool(meta.auto_created), "user_model": is_user,
                       "fields": [_field(f, connection) for f in meta.local_concrete_fields]})
    models.sort(key=lambda m: (m["db_table"], m["label"]))
    return {"user_model": user_label, "models": models}


def columns(args):
    django = _setup(args)
    out = read_columns(_connection(args))
    out.update({"ok": True, "changed": False, "django": django.get_version()})
    return out


ACTIONS = {"columns": columns}
READ_ONLY = {"columns"}


def main():
    if sys.argv[1:] == ["--session"]:  # many requests, one Django start-up (see _common.serve_session)
        end_session(serve_session(ACTIONS, READ_ONLY, after=_close_connections, typed_errors=True))
    sys.exit(serve(ACTIONS, name="django_columns.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
