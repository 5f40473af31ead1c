"""`invoke demo` end to end: local host, SQLite, gunicorn under supervisord."""
from deploykit_demo.scenario import run_demo


def test_demo_passes(tmp_path):
    assert run_demo(tmp_path / "demo") is True
