"""Optional Django app: `deploykit.django` in INSTALLED_APPS gives management
commands that show, on a host, the release states deploykit recorded and the
plan of a rollback to a given tag, from the same state files."""
