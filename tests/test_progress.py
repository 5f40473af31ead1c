"""Always knowing what is going on: --json event streams, live progress lines, migrate output as it runs."""
from __future__ import annotations

import io
import json

from deploykit.display import Display
from deploykit.state.journal import Journal


def events(stdout: str) -> list[dict]:
    """Every stdout line is one JSON object (nothing else reaches stdout with --json)."""
    lines = stdout.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def test_json_stream_of_a_release_and_a_rollback(stage_factory):
    st = stage_factory(1)
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.0", "--json")
    assert cp.returncode == 0, cp.stderr
    evs = events(cp.stdout)
    result = evs[-1]
    assert result["event"] == "result" and result["ok"] is True and result["code"] == 0
    assert result["command"] == "release" and result["data"]["live"]["tag"] == "v1.0"
    assert [e for e in evs[:-1] if e["event"] == "result"] == []  # the result only once, last
    assert all(e["run"] == result["run"] for e in evs[:-1])
    # every step that ran was announced before it ended, with a time of its own
    starts = [(e["host"], e["step"]) for e in evs if e["event"] == "step_start" and "host" in e]
    ends = [(e["host"], e["step"]) for e in evs if e["event"] == "step" and e["status"] != "planned" and "host" in e]
    assert sorted(starts) == sorted(ends) and ("host1", "migrate") in starts
    assert all(isinstance(e["t"], float) for e in evs[:-1])
    # the upload told its bytes, ending with all of them
    upload = [e for e in evs if e["event"] == "progress" and e.get("what") == "upload"]
    assert upload and upload[-1]["done"] is True and upload[-1]["bytes"] == upload[-1]["total"] > 0
    assert {e["step"] for e in upload} == {"upload_code"}
    # migrate's own output, line by line, while it ran (before the migrate step ended)
    migrate_lines = [i for i, e in enumerate(evs) if e["event"] == "progress" and e.get("command") == "migrate"]
    texts = [evs[i]["text"] for i in migrate_lines]
    assert any("Applying library.0001_initial" in t for t in texts), texts
    migrate_end = next(i for i, e in enumerate(evs) if e["event"] == "step" and e["step"] == "migrate")
    assert migrate_lines and max(migrate_lines) < migrate_end

    assert st.cli("release", "--stage", st.name, "--tag", "v1.1").returncode == 0
    cp = st.cli("rollback", "--stage", st.name, "--to-tag", "v1.0", "--json")
    assert cp.returncode == 0, cp.stderr
    evs = events(cp.stdout)
    assert evs[-1]["event"] == "result" and evs[-1]["ok"] and evs[-1]["command"] == "rollback"
    texts = [e["text"] for e in evs if e["event"] == "progress" and e.get("command") == "unapply"]
    assert "Unapplying library.0003_default_genres..." in texts and "library.0002_genre_book_genre OK" in texts
    status, body = st.get(st.primary, "/")
    assert status == 200 and body["version"] == "1.0"


def test_plain_lines_when_not_a_terminal_and_json_refusals(stage_factory):
    st = stage_factory(1)
    cp = st.cli("release", "--host", st.name, "--tag", "v1.1")  # stdout is a pipe: plain lines, no live display
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    assert "\x1b[" not in out  # no cursor movement or colour codes in a log
    assert "upload: " in out and "Applying library.0002_genre_book_genre" in out
    assert "release " in out.splitlines()[-1] and "done" in out.splitlines()[-1]
    # a refusal before any host is contacted is still exactly one result object on stdout
    cp = st.cli("release", "--stage", st.name, "--tag", "v9.9", "--json")
    assert cp.returncode == 2
    (only,) = events(cp.stdout)
    assert only["event"] == "result" and only["ok"] is False and only["code"] == 2 and "v9.9" in only["error"]
    assert "deploykit: error:" in cp.stderr
    # --host and --stage are one option
    cp = st.cli("releases", "--stage", st.name, "--json")
    assert cp.returncode == 0 and events(cp.stdout)[-1]["releases"][-1]["tag"] == "v1.1"
    cp = st.cli("releases", "--host", st.name, "--stage", "other")
    assert cp.returncode == 2 and "disagree" in cp.stderr


def test_display_throttles_bytes_and_keeps_other_progress(tmp_path):
    out = io.StringIO()
    journal = Journal("r1", tmp_path)
    host = type("H", (), {"name": "web1"})()
    with Display(tty=False) as display:
        display.stream = out
        import deploykit.report as report

        saved, report.console.file = report.console.file, out
        try:
            journal.record("step_start", host=host, step="upload_code")
            for sent in range(0, 10):
                journal.record("progress", host=host, step="upload_code", text=f"upload: {sent} MB", kind="bytes",
                               bytes=sent, total=9, done=sent == 9)
            journal.record("progress", host=host, step="health_check", text="attempt 1: status 500", kind="health")
        finally:
            report.console.file = saved
    lines = out.getvalue().splitlines()
    said = [line for line in lines if "upload:" in line]
    assert said[0].endswith("upload: 0 MB") and said[-1].endswith("upload: 9 MB") and len(said) < 10
    assert any("attempt 1: status 500" in line for line in lines)


def test_json_display_prints_every_event_and_the_result_last(tmp_path):
    out = io.StringIO()
    journal = Journal("r2", tmp_path)
    with Display(json_mode=True, stream=out) as display:
        journal.record("step_start", step="x")
        journal.record("progress", text="half", kind="bytes")
        display.print("a table nobody parses")
        display.result({"command": "x", "ok": True, "code": 0})
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["event"] for d in docs] == ["step_start", "progress", "result"]
    journal.record("after", step="y")  # the display is no longer watching
    assert len(out.getvalue().splitlines()) == 3


def test_a_quiet_long_step_still_says_it_runs_in_plain_lines(tmp_path, monkeypatch):
    import time

    import deploykit.display as display_mod
    import deploykit.report as report

    monkeypatch.setattr(display_mod, "QUIET_EVERY", 0.3)
    out = io.StringIO()
    monkeypatch.setattr(report.console, "file", out)
    journal = Journal("r3", tmp_path)
    host = type("H", (), {"name": "web1"})()
    with Display(tty=False):
        journal.record("step_start", host=host, step="release_env")
        deadline = time.monotonic() + 30
        while "still running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        journal.record("step", host=host, step="release_env", status="ok", seconds=1.0)
    said = [line for line in out.getvalue().splitlines() if "still running" in line]
    assert said and "web1" in said[0] and "release_env" in said[0]
