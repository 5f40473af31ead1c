"""deploykit's test rig: real sshd hosts, a real PostgreSQL cluster, real supervisord.

Use it as a pytest plugin (``pytest_plugins = ["deploykit_testing.plugin"]``)
or directly through the classes below. Nothing here imports pytest.
"""

from ._proc import RigError
from .ports import free_port
from .postgres import PgCluster, PgUnavailable
from .sshd import SSHRig, SSHTestHost, start_ssh_hosts, strict_connection, unused_address
from .supervisor import Supervisor

__all__ = [
    "RigError",
    "free_port",
    "PgCluster",
    "PgUnavailable",
    "SSHRig",
    "SSHTestHost",
    "start_ssh_hosts",
    "strict_connection",
    "unused_address",
    "Supervisor",
]
