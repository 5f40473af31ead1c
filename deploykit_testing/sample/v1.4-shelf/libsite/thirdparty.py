"""Reusable apps this release installs from its requirements (added to INSTALLED_APPS)."""
APPS = ["dk_shelf"]
