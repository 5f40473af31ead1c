"""The HTML report of one run (`deploykit log RUN --html FILE`): a page that stands alone.

A timeline per host, each step a bar placed by its start and its seconds
(state/runlog.steps), failures in red, the recovery's steps apart below a
line of their own; the error, the recovery, the backup used, and figures:
total time, time per phase, and the downtime when it can be derived (from
the first stop or restart of the processes to the last health check that
passed after it). Inline CSS only: no script, no font or image fetched, so it
opens the same from a mail, a CI artifact or a laptop offline. Every string
from the journal is escaped. Each bar carries `data-host`, `data-step`,
`data-phase`, `data-playbook`, `data-status` and `data-recovery`, for tests
and for whoever scripts over the page.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape

COLOURS = {"ok": "#2e7d32", "changed": "#b7791f", "failed": "#d32f2f", "skipped": "#9e9e9e",
           "planned": "#0288d1"}
RECOVERY_COLOURS = {"ok": "#3949ab", "changed": "#6a4fb3", "failed": "#d32f2f", "skipped": "#9e9e9e",
                    "planned": "#0288d1"}

CSS = """
body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 24px; color: #212121; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 28px 0 8px 0; border-bottom: 2px solid #cfd8dc; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px 0; color: #37474f; }
.outcome { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: bold; }
.o-ok { background: #2e7d32; } .o-recovered, .o-finished, .o-interrupted { background: #b7791f; }
.o-failed, .o-died, .o-recovery-failed { background: #d32f2f; } .o-running { background: #0288d1; }
table.facts { border-collapse: collapse; margin: 8px 0; }
table.facts td, table.facts th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; font-size: 13px; }
table.facts th { color: #546e7a; font-weight: normal; }
.error { color: #b71c1c; font-weight: bold; }
.host { background: #fff; border: 1px solid #cfd8dc; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.row { display: flex; align-items: center; height: 20px; font-size: 12px; }
.label { width: 300px; flex: none; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.track { position: relative; flex: 1; height: 14px; background: #eceff1; border-radius: 3px; }
.secs { width: 80px; flex: none; text-align: right; font-variant-numeric: tabular-nums; }
.bar { position: absolute; top: 0; height: 14px; min-width: 3px; border-radius: 3px; }
.bar.failed { outline: 2px solid #7f0000; }
.row.failed .label { color: #d32f2f; font-weight: bold; }
.down { position: absolute; top: -3px; height: 20px; background: rgba(211, 47, 47, 0.10);
        border-left: 1px dashed #d32f2f; border-right: 1px dashed #d32f2f; }
.recovery { margin-top: 8px; padding: 4px 0; border-top: 2px dashed #3949ab; border-bottom: 2px dashed #3949ab;
            background: #f3f4fb; }
.recovery-title { font-size: 12px; font-weight: bold; color: #3949ab; margin-bottom: 4px; }
.axis { display: flex; font-size: 11px; color: #78909c; margin-left: 300px; margin-right: 80px;
        justify-content: space-between; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
            vertical-align: -2px; }
.msg { color: #607d8b; }
"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if t else "-"


def _secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def _bar(r: dict, t0: float, span: float, band: str = "") -> str:
    colours = RECOVERY_COLOURS if r["recovery"] else COLOURS
    start = r["start"] if r["start"] is not None else t0
    left = max(0.0, (start - t0) / span * 100)
    width = max(0.0, r["seconds"] / span * 100)
    status = r["status"]
    title = f"{r['playbook']} / {r['phase']} / {r['step']}: {status}, {r['seconds']:.2f} s; {r['message']}"
    attrs = (f'data-host="{_e(r["host"])}" data-playbook="{_e(r["playbook"])}" data-phase="{_e(r["phase"])}" '
             f'data-step="{_e(r["step"])}" data-status="{_e(status)}" '
             f'data-recovery="{"true" if r["recovery"] else "false"}" data-start="{start - t0:.3f}" '
             f'data-seconds="{r["seconds"]:.3f}"')
    return (f'<div class="row {_e(status)}"><div class="label" title="{_e(title)}">{_e(r["phase"])} · '
            f'{_e(r["step"])}</div><div class="track">{band}<div class="bar {_e(status)}" {attrs} '
            f'title="{_e(title)}" style="left:{left:.3f}%;width:{width:.3f}%;background:'
            f'{colours.get(status, "#607d8b")}"></div></div><div class="secs">{_secs(r["seconds"])}</div></div>')


def _down_band(doc: dict, t0: float, span: float) -> str:
    down = doc.get("downtime")
    if not down or down.get("from") is None:
        return ""
    end = down["to"] if down.get("to") is not None else t0 + span
    left = max(0.0, (down["from"] - t0) / span * 100)
    width = max(0.0, (end - down["from"]) / span * 100)
    return f'<div class="down" title="downtime" style="left:{left:.3f}%;width:{width:.3f}%"></div>'


def _axis(span: float) -> str:
    ticks = "".join(f"<span>{span * i / 4:.1f} s</span>" for i in range(5))
    return f'<div class="axis">{ticks}</div>'


def _host_section(doc: dict, host: str, t0: float, span: float) -> str:
    rows = [r for r in doc["steps"] if r["host"] == host]
    band = _down_band(doc, t0, span)
    main = "".join(_bar(r, t0, span, band) for r in rows if not r["recovery"])
    rec_rows = [r for r in rows if r["recovery"]]
    rec = ""
    if rec_rows:
        name = (doc.get("recovery") or {}).get("procedure") or rec_rows[0]["playbook"]
        rec = (f'<div class="recovery" data-recovery-of="{_e(host)}"><div class="recovery-title">recovery: '
               f'{_e(name)}</div>' + "".join(_bar(r, t0, span, band) for r in rec_rows) + "</div>")
    failed = sum(1 for r in rows if r["status"] == "failed")
    note = f' <span class="error">{failed} failed</span>' if failed else ""
    return (f'<section class="host" data-host="{_e(host)}"><h3>{_e(host)} — {len(rows)} step(s){note}</h3>'
            f'{_axis(span)}{main}{rec}</section>')


def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<table class="facts">' + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def render(doc: dict) -> str:
    """The whole page for one run's `runlog.detail`."""
    placed = [r for r in doc["steps"] if r["start"] is not None]
    t0 = min([r["start"] for r in placed] + ([doc["t0"]] if doc.get("t0") else [])) if placed else (doc.get("t0") or 0)
    t_end = max((r["end"] or r["start"]) for r in placed) if placed else t0
    span = max(t_end - t0, 0.001)
    outcome = doc["outcome"]
    rec = doc.get("recovery")
    down = doc.get("downtime")
    head = [("run", _e(doc["run"])), ("command", _e(doc.get("command"))), ("stage", _e(doc.get("stage") or "?")),
            ("started", _e(doc.get("started") or "-")),
            ("outcome", f'<span class="outcome o-{_e(outcome.replace(" ", "-"))}">{_e(outcome)}</span> '
                        f'{_e(doc.get("text"))}')]
    if doc.get("error"):
        head.append(("error", f'<span class="error">{_e(doc.get("failed_phase"))}: {_e(doc["error"])}</span>'))
    if rec:
        said = "done" if rec["ok"] else (f'<span class="error">failed at {_e(rec["failed_phase"])}: '
                                         f'{_e(rec["error"])}</span>' if rec["done"] else "did not finish")
        head.append(("recovery", f"{_e(rec['procedure'])}: {said}"))
    head.append(("backup used", _e(doc.get("backup") or "none")))
    if doc.get("restored_from"):
        head.append(("data restored", _e(doc["restored_from"])))
    figures = [("total", _e(_secs(doc.get("seconds")))),
               ("downtime", _e("none derived" if not down else f"{_secs(down['seconds'])} (from {_when(down['from'])} "
                               f"to {_when(down['to'])})" if down.get("to") else
                               f"the app did not pass a health check after {_when(down['from'])}"))]
    for p in doc.get("phases", []):
        figures.append((f"{p['playbook']}{' (recovery)' if p['recovery'] else ''} / {p['phase']}",
                        _e(_secs(p["seconds"]))))
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(s)}</span>' for s, c in COLOURS.items()) + \
        f'<span><i style="background:{RECOVERY_COLOURS["ok"]}"></i>recovery step</span>' + \
        '<span><i style="background:rgba(211,47,47,0.25)"></i>downtime</span>'
    hosts = "".join(_host_section(doc, h, t0, span) for h in doc["hosts"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>deploykit run {_e(doc["run"])}</title><style>{CSS}</style></head><body>'
            f'<h1>deploykit {_e(doc.get("command"))} on {_e(doc.get("stage") or "?")}</h1>'
            f'{_facts(head)}<h2>figures</h2>{_facts(figures)}'
            f'<h2>timeline per host</h2><div class="legend">{legend}</div>{hosts or "<p>no step was recorded</p>"}'
            f'</body></html>\n')
