"""CI: the built sdist and wheel hold every package-data file of the checkout (templates, helpers, playbooks).

    python .ci/check_dist.py DIST_DIR

The patterns are pyproject.toml's [tool.setuptools.package-data] of the
deploykit package: a file the checkout has there and a distribution lacks
would make `deploykit init` (its templates), the remote helpers or the
playbooks missing from a user's install. One line per problem; exit 1.
"""
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def expected() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["deploykit"]
    files = {p.relative_to(ROOT).as_posix() for pattern in data for p in (ROOT / "deploykit").glob(pattern)
             if p.is_file()}
    if not any(f.startswith("deploykit/scaffold/templates/") for f in files):
        sys.exit("check_dist: no template of deploykit init matches the package-data patterns")
    return files


def main(dist: Path) -> int:
    want = expected()
    wheels, sdists = sorted(dist.glob("deploykit-*.whl")), sorted(dist.glob("deploykit-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"check_dist: expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    with zipfile.ZipFile(wheels[0]) as zf:
        in_wheel = set(zf.namelist())
    with tarfile.open(sdists[0]) as tf:
        in_sdist = {"/".join(n.split("/")[1:]) for n in tf.getnames()}
    bad = [f"{wheels[0].name} lacks {f}" for f in sorted(want - in_wheel)]
    bad += [f"{sdists[0].name} lacks {f}" for f in sorted(want - in_sdist)]
    for line in bad:
        print(f"check_dist: {line}")
    if not bad:
        print(f"check_dist: {wheels[0].name} and {sdists[0].name} hold all {len(want)} package-data files")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
