"""A fleet: one stage of n sshd hosts, every one an app host, the first the primary, one PostgreSQL database (no balancer: fleet.py puts nginx in front).

    fleet = make_fleet(8, tmp_path / "fleet")
    try:
        api.release(fleet.config, fleet.name, "v1.0")
        ... fleet.hosts[3].deploy_to ...
    finally:
        fleet.stop()

It is `make_stage` (stage.py) over `start_ssh_hosts(base, n)`: each host its
own sshd on 127.0.0.(i+2) with its own port, host key and deploy root, one
known_hosts for all; supervisord + gunicorn per host; the migrations run on
the primary against one database on the rig's initdb cluster. What the
caller does not pass (a cluster, the sample repository, the wheelhouse) is
made under `base` and stopped or removed by `stop()`, which also stops what
make_stage started and the sshd hosts. Tests that have the plugin's fixtures
pass theirs (`pg=pg_cluster, repo=sample_repo, wheelhouse=wheelhouse`) and
let the fixtures stop those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .sshd import start_ssh_hosts


@dataclass
class Fleet:
    name: str                 # the stage's name in the config
    stage: object             # the DeployedStage (config_path, http, get(), revision(), ...)
    rig: object               # the SSHRig
    pg: object                # the PgCluster the database lives in
    _owned: list = field(default_factory=list, repr=False)  # what stop() stops that the caller did not pass

    @property
    def hosts(self):
        """The stage's sshd test hosts, in config order (hosts[0] is the primary)."""
        return self.rig.hosts

    @property
    def config_path(self) -> Path:
        return self.stage.config_path

    @property
    def config(self):
        """A freshly loaded deploykit Config of the fleet (the file may have been edited)."""
        return self.stage.config()

    def stop(self) -> None:
        """Stop supervisord on every host, the sshd hosts, and a cluster make_fleet started itself."""
        try:
            self.stage.stop()
        finally:
            try:
                self.rig.stop()
            finally:
                for thing in reversed(self._owned):
                    try:
                        thing.stop()
                    except Exception:  # noqa: BLE001 - teardown: stop the rest too
                        pass


def make_fleet(n: int, base: Path, *, name: str = "fleet", pg=None, repo: Path | None = None,
               wheelhouse: Path | None = None, keep_releases: int = 3, snapshots: bool = True) -> Fleet:
    """n sshd hosts under base as stage `name` of the sample project (see the module's docstring)."""
    from .postgres import PgCluster
    from .samplerepo import build_sample_repo
    from .stage import make_stage
    from .wheelhouse import build_wheelhouse

    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    owned: list = []
    rig = None
    try:
        if pg is None:
            pg = PgCluster.start(base / "pg")
            owned.append(pg)
        if repo is None:
            repo = base / "sample" / "library"
            if not (repo / ".git").exists():
                build_sample_repo(repo)
        if wheelhouse is None:
            wheelhouse = build_wheelhouse(base / "wheelhouse")
        rig = start_ssh_hosts(base / f"ssh-{name}", n)
        stage = make_stage(rig, pg, Path(repo), name=name, wheelhouse=wheelhouse, keep_releases=keep_releases,
                           snapshots=snapshots)
    except BaseException:
        if rig is not None:
            rig.stop()
        for thing in reversed(owned):
            thing.stop()
        raise
    return Fleet(name, stage, rig, pg, owned)
