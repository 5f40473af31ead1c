"""pytest plugin: real sshd hosts, a real PostgreSQL cluster, real supervisord.

Enable it in a conftest.py or test module::

    pytest_plugins = ["deploykit_testing.plugin"]

Fixtures:

``pg_cluster`` (session)
    one :class:`~deploykit_testing.postgres.PgCluster` for the whole run.
    Never skipped: missing PostgreSQL binaries fail the tests with the fix.
``pg_database_factory`` (function)
    ``make(prefix="app") -> PgDatabase(name, owner, password)``: a database
    owned by a fresh login role (not the admin); both dropped at teardown.
``ssh_rig_factory`` (function)
    ``make(n=2) -> SSHRig`` of ``n`` sshd hosts under tmp_path; stopped at teardown.
``ssh_rig`` (function)
    ``ssh_rig_factory(2)``.
``supervisor_factory`` (function)
    ``make(dir, programs) -> Supervisor``; shut down at teardown.
``wheelhouse`` (session)
    a directory of the test wheels (:mod:`deploykit_testing.wheelhouse`),
    which the sample project's requirements pin.
``stage_factory`` (function)
    ``make(n=2, **make_stage kwargs) -> DeployedStage`` (see
    :mod:`deploykit_testing.stage`).
``fleet_factory`` (function)
    ``make(n=4, **make_fleet kwargs) -> Fleet``: one stage ("fleet") of ``n``
    sshd hosts, every one an app host, the first the primary, the session's
    cluster, sample repository and wheelhouse (:mod:`deploykit_testing.plain_fleet`);
    stopped at teardown.
``nginx_factory`` (function)
    ``make(prefix, upstream, servers) -> Nginx``: a real nginx on a loopback
    port, everything inside ``prefix`` (:mod:`deploykit_testing.nginx`); stopped at teardown.
``colours_factory`` (function)
    ``make(database="sqlite") -> Colours``: blue and green stages of the
    sample project and nginx in front of them (:mod:`deploykit_testing.colours`);
    ``database="postgresql"``: each colour with its own PostgreSQL server.
``balanced_fleet_factory`` (function)
    ``make(n=4, database="postgresql") -> BalancedFleet``: n app hosts of the
    sample project (one shared PostgreSQL database) behind a real nginx that
    balances over all of them (:mod:`deploykit_testing.fleet`).
``unique_name`` (function)
    ``unique_name(prefix="dk") -> "dk_1a2b3c4d"``: short, random, a valid
    unquoted SQL identifier and file name.
"""

from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path
from typing import NamedTuple

import pytest

from ._proc import RigError, is_root
from .postgres import PgCluster, PgUnavailable, find_pg_bin
from .sshd import SSHD, start_ssh_hosts
from .supervisor import Supervisor


class PgDatabase(NamedTuple):
    name: str
    owner: str
    password: str


def _new_name(prefix: str = "dk") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rig: the test starts real services (sshd, PostgreSQL, supervisord)"
    )


def pytest_report_header(config):
    try:
        pg = str(find_pg_bin())
    except PgUnavailable:
        pg = "NOT FOUND (set DEPLOYKIT_PG_BIN)"
    me = pwd.getpwuid(os.geteuid()).pw_name
    pg_user = os.environ.get("DEPLOYKIT_PG_USER", "nobody") if is_root() else me
    return f"deploykit rig: sshd={SSHD} postgres={pg} (server runs as {pg_user}), log-in user {me}"


@pytest.fixture
def unique_name():
    """Factory of short random names: ``unique_name("db") -> "db_8f3a1c2e"``."""
    return _new_name


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL cluster for the session (admin: ``dkadmin``)."""
    try:
        cluster = PgCluster.start()
    except RigError as exc:
        pytest.fail(f"cannot start the test PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database_factory(pg_cluster):
    """``make(prefix="app") -> PgDatabase``: a database owned by its own login role."""
    made: list[PgDatabase] = []

    def make(prefix: str = "app") -> PgDatabase:
        name = _new_name(prefix)
        db = PgDatabase(name=name, owner=f"{name}_owner", password=secrets.token_urlsafe(12))
        pg_cluster.create_role(db.owner, db.password)
        pg_cluster.create_database(db.name, owner=db.owner)
        made.append(db)
        return db

    yield make
    for db in reversed(made):
        try:
            pg_cluster.drop_database(db.name)
            pg_cluster.drop_role(db.owner)
        except Exception:  # noqa: BLE001 - the test may have dropped/renamed things
            pass


@pytest.fixture
def ssh_rig_factory(tmp_path):
    """``make(n=2) -> SSHRig``: ``n`` real sshd hosts on 127.0.0.2.. for this test."""
    rigs = []

    def make(n: int = 2, **kwargs):
        base = tmp_path / f"ssh{len(rigs)}"
        try:
            rig = start_ssh_hosts(base, n, **kwargs)
        except RigError as exc:
            pytest.fail(f"cannot start the test sshd hosts: {exc}", pytrace=False)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


@pytest.fixture
def ssh_rig(ssh_rig_factory):
    """Two real sshd hosts."""
    return ssh_rig_factory(2)


@pytest.fixture
def supervisor_factory(tmp_path):
    """``make(dir=None, programs={}) -> Supervisor`` (daemonized; shut down at teardown)."""
    made: list[Supervisor] = []

    def make(dir: Path | None = None, programs: dict | None = None) -> Supervisor:
        sv = Supervisor.start(dir or tmp_path / f"supervisor{len(made)}", programs or {})
        made.append(sv)
        return sv

    yield make
    for sv in made:
        sv.shutdown()


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory):
    """The sample library project as a git repository with tags v1.0 … v1.3-broken-*."""
    from .samplerepo import build_sample_repo

    path = tmp_path_factory.mktemp("sample") / "library"
    build_sample_repo(path)
    return path


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """The test wheels (dk-sample-extra, dk-shelf), written once per session."""
    from .wheelhouse import build_wheelhouse

    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture
def stage_factory(ssh_rig_factory, pg_cluster, sample_repo, wheelhouse):
    """make(n) -> DeployedStage: n sshd hosts, each with supervisord + gunicorn, one database."""
    from .stage import make_stage

    made = []

    def make(n: int = 2, **kwargs):
        rig = ssh_rig_factory(n)
        kwargs.setdefault("wheelhouse", wheelhouse)
        stage = make_stage(rig, pg_cluster, sample_repo, **kwargs)
        made.append(stage)
        return stage

    yield make
    for stage in made:
        stage.stop()


@pytest.fixture
def fleet_factory(tmp_path, pg_cluster, sample_repo, wheelhouse):
    """make(n=4, **kwargs) -> Fleet: n sshd hosts as one stage, every host an app host (stopped at teardown)."""
    from .plain_fleet import make_fleet

    made = []

    def make(n: int = 4, **kwargs):
        kwargs.setdefault("pg", pg_cluster)
        kwargs.setdefault("repo", sample_repo)
        kwargs.setdefault("wheelhouse", wheelhouse)
        try:
            fleet = make_fleet(n, tmp_path / f"fleet{len(made)}", **kwargs)
        except RigError as exc:
            pytest.fail(f"cannot start the test fleet: {exc}", pytrace=False)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


@pytest.fixture
def nginx_factory():
    """``make(prefix, upstream, servers) -> Nginx`` (stopped at teardown)."""
    from .nginx import Nginx

    made = []

    def make(prefix: Path, upstream: str, servers: list[str], **extra):
        try:
            ngx = Nginx.start(prefix, upstream, servers, **extra)
        except RigError as exc:
            pytest.fail(f"cannot start the test nginx: {exc}", pytrace=False)
        made.append(ngx)
        return ngx

    yield make
    for ngx in made:
        ngx.stop()


@pytest.fixture
def colours_factory(ssh_rig_factory, sample_repo, wheelhouse, nginx_factory, tmp_path):
    """make(database="sqlite") -> Colours: blue (host1) and green (host2) behind nginx (host3); with
    database="postgresql" each colour has its own PostgreSQL cluster (stopped at teardown)."""
    from .colours import make_colours, session_env, start_colour_clusters, stop_clusters

    made = []

    def make(database: str = "sqlite"):
        if database not in ("sqlite", "postgresql"):
            raise ValueError(f"database must be 'sqlite' or 'postgresql', not {database!r}")
        clusters = {}
        if database == "postgresql":
            try:
                clusters = start_colour_clusters(tmp_path / f"colours{len(made)}")
            except RigError as exc:
                pytest.fail(f"cannot start the colours' PostgreSQL clusters: {exc}", pytrace=False)
        try:
            env = [session_env(clusters[c]) for c in ("blue", "green")] if clusters else None
            rig = ssh_rig_factory(3, env=env)
            colours = make_colours(rig, sample_repo, wheelhouse, nginx_factory, clusters=clusters)
        except BaseException:
            stop_clusters(clusters)
            raise
        made.append(colours)
        return colours

    yield make
    for colours in made:
        colours.stop()


@pytest.fixture
def balanced_fleet_factory(ssh_rig_factory, pg_cluster, sample_repo, wheelhouse, nginx_factory):
    """make(n=4, database="postgresql") -> BalancedFleet: n app hosts (host1 the primary) behind nginx on host n+1."""
    from .fleet import make_balanced_fleet

    made = []

    def make(n: int = 4, database: str = "postgresql"):
        if database != "postgresql":
            raise ValueError(f"a balanced fleet shares one PostgreSQL database, not {database!r}")
        rig = ssh_rig_factory(n + 1)
        fleet = make_balanced_fleet(rig, pg_cluster, sample_repo, wheelhouse, nginx_factory, n)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()
