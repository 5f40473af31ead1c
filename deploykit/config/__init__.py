"""deploykit.yaml: the one place that reads and validates settings.

models.py holds the typed models of the file (one per section, with the
descriptions the README's key reference is generated from); loader.py the one
loader; specs.py the resolved settings every other module receives. Nothing
else looks at YAML or the environment for settings.
"""
from .fields import BACKUP_KINDS, PG_MAX_IDENTIFIER, ROLES
from .loader import DEFAULT_FILE, find_config, load_config, parse_config
from .models import Document, LockSpec, VenvSpec
from .phases import BUILTIN_PLAYBOOKS
from .refresh import DEFAULT_RULES_FILE, read_rules_file
from .specs import (ColoursSpec, Config, DatabaseSpec, HealthCheck, HostSpec, PathSpec, ProcessSpec, RefreshSpec,
                    RouterSpec, template_names)

TOP_KEYS = frozenset(Document.model_fields)

__all__ = ["BACKUP_KINDS", "BUILTIN_PLAYBOOKS", "DEFAULT_FILE", "DEFAULT_RULES_FILE", "PG_MAX_IDENTIFIER", "ROLES",
           "TOP_KEYS", "ColoursSpec", "Config", "DatabaseSpec", "Document", "HealthCheck", "HostSpec", "LockSpec",
           "PathSpec", "ProcessSpec", "RefreshSpec", "RouterSpec", "VenvSpec", "find_config", "load_config",
           "parse_config", "read_rules_file", "template_names"]
