"""The parts of the test rig the benchmarks use, imported in one place (the rig is not part of deploykit)."""
from __future__ import annotations

from types import SimpleNamespace


def rig_modules() -> SimpleNamespace:
    """sshd hosts, PostgreSQL, supervisord, the sample repository, its wheelhouse and stage maker."""
    from deploykit_testing.samplerepo import build_sample_repo
    from deploykit_testing.ports import free_port
    from deploykit_testing.postgres import PgCluster
    from deploykit_testing.sshd import start_ssh_hosts
    from deploykit_testing.stage import OWNER, OWNER_PASSWORD, make_stage
    from deploykit_testing.supervisor import Supervisor, supervisor_command
    from deploykit_testing.wheelhouse import build_wheelhouse

    return SimpleNamespace(build_sample_repo=build_sample_repo, free_port=free_port, PgCluster=PgCluster,
                           start_ssh_hosts=start_ssh_hosts, OWNER=OWNER, OWNER_PASSWORD=OWNER_PASSWORD,
                           make_stage=make_stage, Supervisor=Supervisor, supervisor_command=supervisor_command,
                           build_wheelhouse=build_wheelhouse)


def colour_modules() -> SimpleNamespace:
    """Blue/green with PostgreSQL colours: each colour's own cluster, the colours maker, nginx in front."""
    from deploykit_testing.colours import make_colours, session_env, start_colour_clusters, stop_clusters
    from deploykit_testing.nginx import Nginx

    return SimpleNamespace(**vars(rig_modules()), make_colours=make_colours, session_env=session_env,
                           start_colour_clusters=start_colour_clusters, stop_clusters=stop_clusters, Nginx=Nginx)
