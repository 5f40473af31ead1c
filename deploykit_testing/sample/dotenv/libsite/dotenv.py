"""Load ``.env`` (next to manage.py) into os.environ, like python-dotenv's load_dotenv().

Called by manage.py and wsgi.py only, before Django reads the settings:
settings.py itself reads os.environ and never the file. Variables already
in the environment win.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def load_dotenv(path=None):
    path = Path(path) if path else BASE_DIR / ".env"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        os.environ.setdefault(key, value)
    return True
