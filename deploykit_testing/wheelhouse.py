"""A wheelhouse of tiny pure-Python wheels, written by hand: no network, no build backend.

The sample project's requirements pin packages from here, so each release of
it gets its own Python environment (``venv: {pip_args: [--no-index,
--find-links, WHEELHOUSE]}``) and a test can see which one serves:

``dk-sample-extra`` 1.0, 1.1, 1.3
    one module, ``dk_sample_extra.__version__``; the sample's ``/env/`` page
    reports the installed version.
``dk-shelf`` 1.0 and 2.0
    a reusable Django app with migrations, shipped like wagtail: 1.0 has
    ``0001_initial``, ``0002_shelf_position``, ``0003_shelf_label``; 2.0
    squashed them into ``0001_squashed_0003_shelf_label`` (``replaces`` the
    three, whose files are gone) and adds ``0004_shelf_colour``.

Wheels are deterministic (fixed timestamps, sorted entries): the same source
gives the same bytes. ``python -m deploykit_testing.wheelhouse DEST``.
"""
from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

_DATE = (2024, 1, 1, 0, 0, 0)

EXTRA_VERSIONS = ("1.0", "1.1", "1.3")
SHELF_VERSIONS = ("1.0", "2.0")

_SHELF_APPS = '''from django.apps import AppConfig


class DkShelfConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "dk_shelf"
'''

_SHELF_MODELS = '''from django.db import models


class Shelf(models.Model):
    name = models.CharField(max_length=100)
    position = models.IntegerField(default=0)
    label = models.CharField(max_length=50, blank=True, default="")
{extra}
    def __str__(self):
        return self.name
'''

_HEAD = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n"

_SHELF_0001 = _HEAD + '''
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Shelf",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
    ]
'''

_SHELF_0002 = _HEAD + '''
    dependencies = [("dk_shelf", "0001_initial")]

    operations = [
        migrations.AddField(model_name="shelf", name="position", field=models.IntegerField(default=0)),
    ]
'''

_SHELF_0003 = _HEAD + '''
    dependencies = [("dk_shelf", "0002_shelf_position")]

    operations = [
        migrations.AddField(model_name="shelf", name="label",
                            field=models.CharField(blank=True, default="", max_length=50)),
    ]
'''

_SHELF_SQUASHED = _HEAD + '''
    replaces = [("dk_shelf", "0001_initial"), ("dk_shelf", "0002_shelf_position"), ("dk_shelf", "0003_shelf_label")]

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Shelf",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("position", models.IntegerField(default=0)),
                ("label", models.CharField(blank=True, default="", max_length=50)),
            ],
        ),
    ]
'''

_SHELF_0004 = _HEAD + '''
    dependencies = [("dk_shelf", "0001_squashed_0003_shelf_label")]

    operations = [
        migrations.AddField(model_name="shelf", name="colour",
                            field=models.CharField(blank=True, default="", max_length=20)),
    ]
'''


def _extra_files(version: str) -> dict[str, str]:
    return {"dk_sample_extra/__init__.py": f'"""deploykit test package."""\n__version__ = "{version}"\n'}


def _shelf_files(version: str) -> dict[str, str]:
    files = {"dk_shelf/__init__.py": f'__version__ = "{version}"\n', "dk_shelf/apps.py": _SHELF_APPS,
             "dk_shelf/migrations/__init__.py": ""}
    if version == "1.0":
        files["dk_shelf/models.py"] = _SHELF_MODELS.format(extra="")
        files["dk_shelf/migrations/0001_initial.py"] = _SHELF_0001
        files["dk_shelf/migrations/0002_shelf_position.py"] = _SHELF_0002
        files["dk_shelf/migrations/0003_shelf_label.py"] = _SHELF_0003
    else:
        colour = '    colour = models.CharField(max_length=20, blank=True, default="")\n'
        files["dk_shelf/models.py"] = _SHELF_MODELS.format(extra=colour)
        files["dk_shelf/migrations/0001_squashed_0003_shelf_label.py"] = _SHELF_SQUASHED
        files["dk_shelf/migrations/0004_shelf_colour.py"] = _SHELF_0004
    return files


#: distribution name -> (versions, files of a version)
PACKAGES = {
    "dk-sample-extra": (EXTRA_VERSIONS, _extra_files),
    "dk-shelf": (SHELF_VERSIONS, _shelf_files),
}


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def write_wheel(dest_dir: Path, name: str, version: str, files: dict[str, str],
                summary: str = "deploykit test package") -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` (METADATA, WHEEL, RECORD with sha256)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    entries = {path: text.encode() for path, text in sorted(files.items())}
    entries[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                   f"Summary: {summary}\nRequires-Python: >=3.8\n").encode()
    entries[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: deploykit-wheelhouse\n"
                                b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    entries[f"{info}/top_level.txt"] = (dist + "\n").encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in entries.items())
    entries[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = Path(dest_dir) / f"{dist}-{version}-py3-none-any.whl"
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in entries.items():
            zi = zipfile.ZipInfo(arc, date_time=_DATE)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    tmp.replace(path)
    return path


def build_wheelhouse(dest: str | Path) -> Path:
    """Write every test wheel into ``dest`` (created if needed); return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, (versions, files_of) in PACKAGES.items():
        for version in versions:
            write_wheel(dest, name, version, files_of(version))
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m deploykit_testing.wheelhouse DEST", file=sys.stderr)
        return 2
    for wheel in sorted(build_wheelhouse(args[0]).glob("*.whl")):
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
