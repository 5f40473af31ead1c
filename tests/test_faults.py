"""Interrupted runs keep the promise: a representative subset of the interruption matrix.

Each case stops an operator command (release, a recovery, rollback with and
without data, restore, backup, a rolling release) at a phase boundary or inside its longest
remote command, by SIGINT, SIGTERM, SIGKILL of the controller or a dropped
SSH connection; the same command is run again when the ending says so. The
stage must then hold exactly the state before the run or the state of the
completed run (rows, schema, owners, settings, media, the version served;
an undone rolling release: the code before, its additive migrations kept),
serve on every host, and hold no lock, passfile, process or temp dir of the
run. `invoke faults` runs the whole matrix (deploykit_testing/faults.py).
"""
from __future__ import annotations

import pytest

from deploykit_testing.faults import CI_CASES, FaultLab, table
from deploykit_testing.stage import make_stage


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pg_cluster, sample_repo):
    from deploykit_testing.sshd import start_ssh_hosts

    base = tmp_path_factory.mktemp("faults")
    rig = start_ssh_hosts(base / "ssh", 2)
    stage = make_stage(rig, pg_cluster, sample_repo, keep_releases=5)
    lab = FaultLab(stage, base / "lab")
    try:
        lab.prepare()
        yield lab
    finally:
        stage.stop()
        rig.stop()


@pytest.mark.parametrize("case", CI_CASES, ids=lambda c: c.id)
def test_interrupted_run_keeps_the_promise(lab, case):
    result = lab.run_case(case)
    print("\n" + table([result]).splitlines()[1])
    assert result.fired, f"{case.id}: the point was never reached ({result.exits})"
    assert result.ok, table([result]) + f"\nlast line: {getattr(result, 'last_stderr', '')}"
