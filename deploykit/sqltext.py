"""SQL text for psql on the hosts: identifiers and literals quoted by psycopg.sql, nowhere else.

deploykit composes SQL on the controller and runs it with the host's psql
(bulk data never crosses the controller), so it needs SQL *text*: psycopg's
`sql.Identifier`/`sql.Literal` render it without a connection. LIKE patterns
and database-level settings (pg_db_role_setting) have their own rules here.
"""
from __future__ import annotations


# Settings whose stored value is a list of separately quoted items (pg_dump's
# variable_is_guc_list_quote): re-applied as a list, not as one quoted string.
GUC_LIST_QUOTE = {"local_preload_libraries", "search_path", "session_preload_libraries",
                  "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"}


def ident(name: str) -> str:
    """A quoted SQL identifier ("name", with embedded quotes doubled)."""
    if "\0" in name:
        raise ValueError("an identifier cannot contain NUL")
    from psycopg import sql  # imported when SQL is composed: the `deploykit` program starts faster

    return sql.Identifier(name).as_string(None)


def literal(value) -> str:
    """A quoted SQL literal ('text', E'...' when it holds backslashes)."""
    if isinstance(value, str) and "\0" in value:
        raise ValueError("a literal cannot contain NUL")
    from psycopg import sql

    return sql.Literal(value).as_string(None).strip()


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (as a literal) matching strings that start with `prefix` exactly."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return literal(escaped + "%") + " ESCAPE " + literal("\\")


def split_guc_list(value: str) -> list[str]:
    """Split a stored list setting (`"$user", public`) into its items, as PostgreSQL's SplitGUCList."""
    items, i, n = [], 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            items.append(value[start:i])
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
            continue
        if i < n:
            raise ValueError(f"cannot read the list setting {value!r}")
        break
    return items


def set_database_setting(db: str, entry: str) -> str:
    """`ALTER DATABASE db SET name TO ...` for one `name=value` of pg_db_role_setting, exactly as it was."""
    name, sep, value = entry.partition("=")
    if not sep or not name:
        raise ValueError(f"not a setting: {entry!r}")
    if name.lower() in GUC_LIST_QUOTE:
        items = split_guc_list(value)
        rendered = ", ".join(literal(item) for item in items) if items else "''"
    else:
        rendered = literal(value)
    return f"ALTER DATABASE {ident(db)} SET {ident(name)} TO {rendered};"
