"""`deploykit status`, `deploykit log` and the HTML run report, against real parts: sshd hosts, PostgreSQL,
gunicorn under supervisord; the report rendered by a real headless Chromium."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

from deploykit import api
from deploykit.state import lock as stage_lock
from deploykit.transport.host import make_host

ROOT = Path(__file__).resolve().parent.parent


def registry(host) -> dict:
    return json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())


def json_lines(cp) -> list[dict]:
    """Every stdout line of a --json run is one JSON object; the last one is the result."""
    lines = [json.loads(line) for line in cp.stdout.splitlines()]
    assert lines and lines[-1]["event"] == "result", cp.stdout[-2000:]
    return lines


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_status_reports_release_agreement_processes_health_disk_backup_then_drift_then_a_dead_lock(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    first = api.release(cfg, st.name, "v1.0")
    second = api.release(cfg, st.name, "v1.1")
    assert first.ok and second.ok, (first.error, second.error)
    live_id, old_id = second.data["release_id"], first.data["release_id"]
    live = next(r for r in registry(st.primary)["releases"] if r["id"] == live_id)
    host = st.primary.name

    cp = st.cli("status", "--host", st.name)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert live_id in cp.stdout and "agree" in cp.stdout and "web running" in cp.stdout, cp.stdout
    assert live["backup_id"] in cp.stdout and "every host is well" in cp.stdout + cp.stderr

    cp = st.cli("status", "--host", st.name, "--json")
    assert cp.returncode == 0, cp.stderr
    result = json_lines(cp)[-1]
    assert result["command"] == "status" and result["ok"] and result["code"] == 0 and not result["problems"]
    doc = result["hosts"][host]
    assert doc["live"]["id"] == live_id and doc["live"]["tag"] == "v1.1"
    assert doc["current"] == str((st.primary.deploy_to / "releases" / live_id).resolve()) and doc["agree"] is True
    assert doc["processes"] == [{"name": "web", "running": True}]
    assert doc["health"]["ok"] and any("/health/ 200" in n for n in doc["health"]["notes"]), doc["health"]
    assert doc["disk"]["free_bytes"] > 0 and doc["disk"]["ok"]
    assert doc["backup"]["id"] == live["backup_id"] and doc["backup"]["age_seconds"] >= 0
    assert doc["backups"] == 2 and doc["lock"] is None
    snaps = [s for s in doc["snapshots"] if s["kind"] == "snapshot"]
    assert {s["release"] for s in snaps} == {old_id, live_id} and all(s["bytes"] > 0 for s in snaps), snaps
    assert set(doc["snapshots"][0]) >= {"name", "kind", "release", "bytes", "item"}

    # `current` changed by hand: drift, naming both releases (exit 1: the app still serves)
    current = st.primary.deploy_to / "current"
    subprocess.run(["ln", "-sfn", str(st.primary.deploy_to / "releases" / old_id), str(current)], check=True)
    cp = st.cli("status", "--host", st.name, "--json")
    result = json_lines(cp)[-1]
    assert cp.returncode == 1 and result["code"] == 1 and not result["ok"], cp.stdout[-2000:] + cp.stderr
    drift = result["hosts"][host]["drift"]
    assert result["hosts"][host]["agree"] is False
    assert "DRIFT" in drift and live_id in drift and old_id in drift and "superseded" in drift, drift
    assert [p["what"] for p in result["problems"]] == ["drift"]
    cp = st.cli("status", "--host", st.name)
    assert cp.returncode == 1 and "DRIFT" in cp.stdout and old_id in cp.stdout and live_id in cp.stdout, cp.stdout
    subprocess.run(["ln", "-sfn", str(st.primary.deploy_to / "releases" / live_id), str(current)], check=True)

    # a lock held by a run that died on this controller: its pid no longer runs
    pid = dead_pid()
    h = make_host(cfg.stage(st.name)[0], cfg)
    try:
        info = {**stage_lock.holder_info("20260101T000000Z-release-dead", "release", st.name), "pid": pid,
                "pid_start": None}
        assert h.helper("locks", "lock_acquire", {"path": str(st.primary.deploy_to / ".deploykit" / "lock"),
                                                  "info": info})["acquired"]
    finally:
        h.close()
    cp = st.cli("status", "--host", st.name, "--json")
    result = json_lines(cp)[-1]
    assert cp.returncode == 1 and result["code"] == 1, cp.stdout[-2000:] + cp.stderr
    lock = result["hosts"][host]["lock"]
    assert lock["run_id"] == "20260101T000000Z-release-dead" and lock["state"] == "dead" and lock["gone"]
    assert lock["pid"] == pid and f"pid {pid} no longer runs" in lock["why"], lock
    assert [p["what"] for p in result["problems"]] == ["lock"]
    assert result["hosts"][host]["agree"] is True
    cp = st.cli("status", "--host", st.name)
    assert cp.returncode == 1 and "DEAD" in cp.stdout and "20260101T000000Z-release-dead" in cp.stdout, cp.stdout
    # status changed nothing: the lock is still there, and it wrote no journal on the host
    assert (st.primary.deploy_to / ".deploykit" / "lock").exists()
    assert not [p for p in (st.primary.deploy_to / ".deploykit" / "journal").iterdir() if "-status-" in p.name]


class Bars(HTMLParser):
    """The step bars of the report (elements with data-step) and the text of the page."""

    def __init__(self):
        super().__init__()
        self.bars: list[dict] = []
        self.sections: list[str] = []
        self.text: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-step" in a:
            self.bars.append(a)
        if tag == "section" and "data-host" in a:
            self.sections.append(a["data-host"])
        if tag in ("script", "link", "img", "iframe"):
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    assert exe, "the HTML report test needs Debian's chromium (apt-get install chromium fonts-dejavu-core)"
    argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def png_colours(data: bytes, most: int = 16) -> set:
    """Distinct pixel values of an 8-bit RGB(A) PNG (a tiny decoder: zlib + the five row filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    seen = set()
    for y in range(height):
        ftype, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                row[i] = (row[i] + a) & 255
            elif ftype == 2:
                row[i] = (row[i] + b) & 255
            elif ftype == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 8 == 0:
            for x in range(0, stride, bpp * 4):
                seen.add(bytes(row[x:x + bpp]))
            if len(seen) >= most:
                return seen
        prev = row
    return seen


def artifacts_dir() -> Path:
    path = Path(os.environ.get("DEPLOYKIT_ARTIFACTS") or ROOT / ".artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_log_lists_and_shows_runs_and_the_html_report_of_a_failed_and_recovered_release(stage_factory, tmp_path):
    st = stage_factory(2)
    cfg = st.config()
    for tag in ("v1.0", "v1.2"):
        assert api.release(cfg, st.name, tag).ok
    failed = api.release(cfg, st.name, "v1.3-broken-health")
    assert not failed.ok and failed.recovered, (failed.error, failed.recovery and failed.recovery.error)
    run_id = failed.run_id
    journal = cfg.journal_dir
    # the controller's state dir carries its own .gitignore
    assert (cfg.project_dir / ".deploykit" / ".gitignore").read_text() == "*\n"

    # the list: every run, the failed one recovered
    cp = st.cli("log", "--json")
    assert cp.returncode == 0, cp.stderr
    runs = {r["run"]: r for r in json_lines(cp)[-1]["runs"]}
    assert runs[run_id]["outcome"] == "recovered" and runs[run_id]["command"] == "release"
    assert runs[run_id]["stage"] == st.name and runs[run_id]["failed_phase"] == "verify"
    assert [r["outcome"] for r in runs.values() if r["command"] == "release"] == ["ok", "ok", "recovered"]
    cp = st.cli("log")
    assert cp.returncode == 0 and run_id in cp.stdout and "recovered" in cp.stdout, cp.stdout

    # one run by a unique prefix (the id without its pid): steps per host, the recovery, the backup used
    prefix = run_id.rsplit("-", 1)[0]
    cp = st.cli("log", prefix, "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json_lines(cp)[-1]["run"]
    assert doc["run"] == run_id and doc["backup"] == failed.data["backup_id"]
    assert doc["recovery"]["procedure"] == "recover" and doc["recovery"]["ok"]
    host_names = [h.name for h in st.hosts]
    assert set(host_names) <= set(doc["hosts"])
    checks = [(s["host"], s["status"], s["recovery"]) for s in doc["steps"] if s["step"] == "health_check"]
    assert any(s == "failed" and not rec for _, s, rec in checks), checks
    assert {h for h, s, rec in checks if rec and s == "ok"} == set(host_names), checks
    assert doc["downtime"] and doc["downtime"]["seconds"] > 0
    cp = st.cli("log", prefix)
    assert cp.returncode == 0 and "health_check" in cp.stdout and "failed" in cp.stdout and "recover" in cp.stdout

    # --from-host reads the hosts' copies: the controller's own journal is not needed
    aside = tmp_path / "journal-aside"
    shutil.move(str(journal / f"{run_id}.jsonl"), aside)
    try:
        cp = st.cli("log", prefix, "--from-host", "--host", st.name, "--json")
        assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr
        remote = json_lines(cp)[-1]["run"]
        assert remote["run"] == run_id and remote["outcome"] == "recovered" and remote["stage"] == st.name
        assert set(host_names) <= set(remote["hosts"])
        assert {(s["host"], s["step"], s["status"]) for s in remote["steps"] if s["recovery"]} >= {
            (h, "start_processes", "changed") for h in host_names}
        cp = st.cli("log", "--from-host", "--host", st.name, "--json")
        assert cp.returncode == 0, cp.stderr
        listed = {r["run"]: r for r in json_lines(cp)[-1]["runs"]}
        assert listed[run_id]["outcome"] == "recovered"
        missing = st.cli("log", prefix)
        assert missing.returncode == 2 and "no run" in missing.stderr, missing.stderr
    finally:
        shutil.move(str(aside), journal / f"{run_id}.jsonl")

    # the HTML report, rendered by headless Chromium
    page = tmp_path / "report.html"
    cp = st.cli("log", "last", "--html", str(page))
    assert cp.returncode == 0 and str(page) in cp.stdout, cp.stdout + cp.stderr
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and "url(" not in html
    dom = chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    parsed = Bars()
    parsed.feed(dom.stdout)
    assert parsed.scripts == 0  # self-contained: nothing to fetch, nothing to run
    assert set(host_names) <= set(parsed.sections)
    for name in host_names:
        mine = [b for b in parsed.bars if b["data-host"] == name]
        release_steps = {b["data-step"] for b in mine if b["data-recovery"] == "false"}
        recover_steps = {b["data-step"] for b in mine if b["data-recovery"] == "true"}
        assert {"upload_code", "switch_current", "restart_processes", "health_check"} <= release_steps, release_steps
        assert {"stop_processes", "restore_previous_code", "start_processes", "health_check"} <= recover_steps
        assert all(b["data-playbook"] == "recover" for b in mine if b["data-recovery"] == "true")
    failed_bars = [b for b in parsed.bars if b["data-status"] == "failed"]
    assert failed_bars and all(b["data-step"] == "health_check" and b["data-recovery"] == "false"
                               for b in failed_bars), failed_bars
    text = " ".join(parsed.text)
    assert "recovered" in text and failed.data["backup_id"] in text and "downtime" in text

    shot = artifacts_dir() / f"run-report-{run_id}.png"
    cp = chromium(f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri(), tmp=tmp_path)
    assert cp.returncode == 0 and shot.is_file() and shot.stat().st_size > 0, cp.stderr[-2000:]
    assert len(png_colours(shot.read_bytes())) > 3  # not blank: bars of several colours on the page
    print(f"run report screenshot: {shot}")


def test_the_html_report_escapes_every_string_from_the_journal():
    from deploykit import runreport
    from deploykit.state import runlog

    evil = '<script>alert("x")</script>&'
    events = [{"event": "run_start", "t": 10.0, "command": evil, "stage": evil},
              {"event": "playbook_start", "t": 10.0, "playbook": evil},
              {"event": "step_start", "t": 11.0, "host": evil, "playbook": evil, "phase": evil, "step": evil},
              {"event": "step", "t": 12.0, "host": evil, "playbook": evil, "phase": evil, "step": evil,
               "status": "failed", "seconds": 1.0, "message": evil},
              {"event": "playbook_failed", "t": 12.0, "playbook": evil, "phase": evil, "error": evil},
              {"event": "run_end", "t": 13.0, "locked": [], "backup": evil}]
    html = runreport.render(runlog.detail(f"20260101T000000Z-{evil}-1", events, local=False))
    assert "<script" not in html and evil not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html
    parsed = Bars()
    parsed.feed(html)
    assert parsed.scripts == 0 and [b["data-step"] for b in parsed.bars] == [evil]
    assert parsed.bars[0]["data-status"] == "failed" and parsed.sections == [evil]
