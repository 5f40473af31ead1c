"""The transfer bench's own arithmetic and arguments (bench/transfer.py): medians, ratios, tables. No timings."""
from __future__ import annotations

import pytest
from rich.console import Console

from bench import transfer as tb


def row(case, seconds, size=300, ok=True, sent=None, rnd=0):
    r = {"case": case, "size_mb": size, "db_mb": size + 7, "round": rnd, "ok": ok, "seconds": seconds}
    if sent is not None:
        r["media"] = [{"item": "media:shared/media", "bytes_sent": sent}]
    return r


def text(table) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


def test_sizes_parse_and_bad_ones_are_refused(capsys):
    assert tb.parse_args([]).sizes == [300, 1500]
    assert tb.parse_args(["--sizes", "50"]).sizes == [50]
    assert tb.parse_args(["--sizes", "300, 1500"]).sizes == [300, 1500]
    assert tb.parse_args(["--size-mb", "700"]).sizes == [700]  # invoke bench --size-mb: one size
    args = tb.parse_args(["--sizes", "50", "--rounds", "1", "--json", "out.json"])
    assert (args.rounds, args.json, args.media_files, args.media_mb) == (1, "out.json", 200, 50)
    for bad in (["--sizes", "abc"], ["--sizes", "0"], ["--sizes", "50,50"], ["--sizes", ""], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as exc:
            tb.parse_args(bad)
        assert exc.value.code == 2
    assert "every size must be a positive number of MB" in capsys.readouterr().err


def test_median_skips_missing_values():
    assert tb.median([3.0, 1.0, 2.0]) == 2.0
    assert tb.median([4.0, 1.0]) == 2.5
    assert tb.median([None, 5.0]) == 5.0
    assert tb.median([]) is None


def test_summary_medians_per_size_ratio_and_failed_cases():
    rows = [row("copy", 3.0, sent=1000), row("baseline", 2.0), row("copy", 5.0, sent=5), row("baseline", 4.0),
            row("copy", 4.0, sent=0), row("baseline", 3.0),
            row("copy", 30.0, size=1500, sent=0), row("baseline", 20.0, size=1500),
            row("copy", None, size=1500, ok=False)]
    s = tb.summarize(rows, [300, 1500])
    small, big = s["sizes"]
    assert (small["copy"], small["baseline"], small["copy_ratio"]) == (4.0, 3.0, 4.0 / 3.0)
    assert small["samples"] == {"copy": 3, "baseline": 3, "replicate": 0} and small["db_mb"] == 307
    assert big["copy_ratio"] == 1.5 and big["failed"] == ["copy"] and big["samples"]["copy"] == 1
    assert s["media"] == {"first_bytes": 1000, "second_bytes": 5, "ratio": 0.005}


def test_step_seconds_keep_the_slowest_host_of_the_runs_own_playbook_in_order():
    from deploykit.engine.results import StepRecord

    recs = [StepRecord("transfer", "freeze", "freeze_writes", "host1", "changed", 0.5),
            StepRecord("transfer", "freeze", "backup_data", "host1", "changed", 2.0),
            StepRecord("transfer", "freeze", "freeze_writes", "host4", "changed", 0.75),
            StepRecord("transfer_unfreeze", "unfreeze", "unfreeze_writes", "host1", "ok", 9.0)]
    assert list(tb.step_seconds(recs).items()) == [("freeze/freeze_writes", 0.75), ("freeze/backup_data", 2.0)]


def test_media_resend_needs_two_good_transfers():
    assert tb.media_resend([row("copy", 1.0, sent=10)]) is None
    assert tb.media_resend([row("copy", 1.0, sent=10), row("copy", None, ok=False, sent=0)]) is None
    assert tb.media_resend([row("copy", 1.0, sent=0), row("replicate", 1.0, sent=0)])["ratio"] is None


def test_tables_show_the_targets_and_say_when_replicate_is_not_available():
    rows = [row("copy", 3.3, sent=1000), row("baseline", 3.0), row("copy", 3.3, sent=1)]
    s = tb.summarize(rows, [300], "not available: no replicate mode")
    freeze = text(tb.freeze_table(s))
    assert "freeze seconds against database size" in freeze and "300 MB (307 MB)" in freeze
    assert "3.30" in freeze and "1.10x" in freeze and "not available" in freeze and "2/1/0" in freeze
    failed = tb.summarize(rows + [row("replicate", None, ok=False)], [300])
    assert "replicate" in text(tb.freeze_table(failed)).split("300 MB")[1]
    verdicts = {name: (measured, verdict) for name, measured, _, verdict in tb.ratio_rows(s)}
    assert verdicts["copy freeze / baseline, 300 MB"] == ("1.10x", "met")
    assert verdicts["replicate freeze, 300 MB"] == ("not available", "not available: no replicate mode")
    assert verdicts["media: second transfer / first, bytes sent"][1] == "met"
    assert "transfer ratios against their targets" in text(tb.ratio_table(s))

    s = tb.summarize([row("copy", 4.0, sent=0), row("baseline", 2.0), row("replicate", 2.5, sent=0)], [300])
    verdicts = {name: (measured, verdict) for name, measured, _, verdict in tb.ratio_rows(s)}
    assert verdicts["copy freeze / baseline, 300 MB"] == ("2.00x", "NOT met")
    assert verdicts["replicate freeze, 300 MB"] == ("2.50 s", "NOT met")
    assert verdicts["media: second transfer / first, bytes sent"] == ("-", "the first sent nothing")
    s = tb.summarize([row("copy", 4.0, sent=10), row("baseline", 2.0)], [300])
    assert tb.ratio_rows(s)[-1][1:] == ("-", "< 1%", "fewer than two transfers")
