"""The fleet bench's own arithmetic (bench/fleet.py): per-step max and sum, medians, the ratio, CPU. No timings."""
from __future__ import annotations

import os
from types import SimpleNamespace

from bench import fleet as fb


def rec(step, host, seconds, playbook="release"):
    return SimpleNamespace(playbook=playbook, step=step, host=host, seconds=seconds)


def row(hosts, wall, steps, hosts_cpu, rnd=1):
    cpu = {"controller": 0.1 * hosts, "machine": hosts_cpu + 1.0, "postgres": 0.2, "hosts_sum": hosts_cpu,
           "other": 0.7 - 0.1 * hosts}
    return {"stage": "x", "hosts": hosts, "tag": "v1.0", "wall": wall, "cpu": cpu, "steps": steps, "round": rnd}


def test_step_breakdown_is_the_slowest_host_and_the_sum_over_hosts():
    got = fb.step_breakdown([rec("upload_code", "h1", 0.5), rec("upload_code", "h2", 0.75),
                             rec("migrate", "h1", 0.25)])
    assert got == {"release/upload_code": {"max": 0.75, "sum": 1.25, "hosts": 2},
                   "release/migrate": {"max": 0.25, "sum": 0.25, "hosts": 1}}


def test_summary_ratio_cpu_and_cost_per_extra_host():
    one = {"release/upload_code": {"max": 0.1, "sum": 0.1, "hosts": 1}}
    many = {"release/upload_code": {"max": 0.3, "sum": 1.5, "hosts": 8}}
    rows = [row(1, 3.0, one, 1.0), row(8, 6.0, many, 8.0), row(1, 5.0, one, 1.2, 2), row(8, 4.0, many, 8.4, 2)]
    s = fb.summarize(rows, 8, 2)
    assert (s["wall_1"], s["wall_8"], s["rounds"]) == (4.0, 5.0, 2)
    assert s["ratio"] == 1.25 and s["met"] and s["target"] == 1.3
    assert s["cpu_1"]["hosts_sum"] == 1.1 and s["cpu_8"]["per_host"] == 8.2 / 8
    assert abs(s["cpu_per_extra_host"] - (8.2 - 1.1) / 7) < 1e-9
    own = 0.8 + 8.2 + 0.2  # controller, hosts, postgres (medians)
    assert abs(s["cpu_floor"] - own / 2) < 1e-9 and abs(s["cpu_floor_ratio"] - own / 2 / 4.0) < 1e-9
    step = s["steps"]["release/upload_code"]
    assert (step["max_1"], step["max_8"], step["sum_8"]) == (0.1, 0.3, 1.5)
    assert abs(step["per_extra_host"] - (1.5 - 0.1) / 7) < 1e-9


def test_tree_cpu_counts_this_process_and_its_children():
    mine = fb.tree_cpu([os.getpid()])
    assert mine >= 0.0
    assert fb.tree_cpu([2 ** 22 + 12345]) == 0.0  # no such process: nothing
    assert fb.busy_cpu_seconds() > 0.0


def test_the_cpu_meter_splits_each_host_into_deploykits_sessions_and_the_app():
    before = {"controller": 1.0, "machine": 10.0, "postgres": 1.0, "hosts": {"h1": 2.0, "h2": 3.0},
              "sessions": {"h1": 1.5, "h2": 2.0}, "app": {"h1": 0.5, "h2": 1.0}}
    after = {"controller": 1.5, "machine": 14.0, "postgres": 1.25, "hosts": {"h1": 3.0, "h2": 4.5},
             "sessions": {"h1": 2.25, "h2": 3.0}, "app": {"h1": 0.75, "h2": 1.5}}
    d = fb.CpuMeter.delta(before, after)
    assert (d["hosts_sum"], d["sessions_sum"], d["app_sum"]) == (2.5, 1.75, 0.75)
    assert d["other"] == 4.0 - 0.5 - 0.25 - 2.5
    rows = [row(1, 3.0, {}, 1.0), row(8, 6.0, {}, 8.0)]
    rows[0]["cpu"].update(sessions_sum=0.75, app_sum=0.25)
    s = fb.summarize(rows, 8, 2)
    assert (s["cpu_1"]["sessions_sum"], s["cpu_1"]["app_sum"], s["cpu_8"]["sessions_sum"]) == (0.75, 0.25, None)


def test_the_apps_own_floor_is_its_start_and_one_django_set_up_per_host_over_the_cores():
    rows = [row(1, 3.0, {}, 1.0), row(8, 6.0, {}, 8.0)]
    for r in rows:
        r["cpu"]["app_sum"] = 0.5 * r["hosts"]
    s = fb.summarize(rows, 8, 2, django_setup=0.25)
    assert s["django_setup_cpu"] == 0.25
    assert abs(s["app_floor"] - (4.0 + 8 * 0.25) / 2) < 1e-9 and abs(s["app_floor_ratio"] - 3.0 / 3.0) < 1e-9
    assert "app_floor" not in fb.summarize(rows, 8, 2)  # not measured: not claimed
