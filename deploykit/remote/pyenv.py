"""deploykit remote helper: one Python environment per set of requirements.

Standalone (stdlib only, Python 3.9+): run with the base interpreter
(deploykit.yaml's `python:`) as `python pyenv.py ACTION` with JSON arguments
on stdin; prints one JSON document.

An environment lives in `<deploy_to>/venvs/<key>/`, where key is the sha256
of what it is built from: the base interpreter's real path and version, the
requirements (with the files they include), pip_args and
system_site_packages (then also the base venv's site-packages, which the
environment sees). It is built at its final path (venvs are not
relocatable); `.deploykit-complete`, written last, holds its `pip freeze`. A
directory without that marker is an interrupted build: removed and built
again. A complete environment is never changed; every release with the same
key links to it (`<release>/.venv -> <deploy_to>/venvs/<key>`).

With system_site_packages, `python -m venv --system-site-packages` run from
a venv only exposes the *base* interpreter's site-packages, so the new
environment also gets a `.pth` adding the venv's own site-packages (with its
own .pth files) after the environment's: pip then installs only what the
release adds or pins differently (it shadows the base layer).

Actions:
  probe  {release_dir, requirements, pip_args, system_site_packages, venvs_dir}
         -> {key, path, complete, inputs}
  ensure the same + {constraints?: [lines], link?: true}
         -> {key, path, reused, method, seconds, freeze, own_freeze, inputs}
  prune  {deploy_to, keep?: [keys]} -> {removed: [keys], kept: [keys]}
"""
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import time

from _common import serve

MARKER = ".deploykit-complete"
BASE_PTH = "_deploykit_base_layer.pth"
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
FORMAT = 1


class EnvError(Exception):
    pass


def _include_lines(path):
    """Files a requirements file includes (-r/-c), relative to it."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.split(" #", 1)[0].strip()
            if line.startswith("#") or not line:
                continue
            m = re.match(r"^(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+)(\S+)$", line)
            if m:
                ref = m.group(1)
                if "://" in ref:
                    continue
                out.append(ref if os.path.isabs(ref) else os.path.join(os.path.dirname(path), ref))
    return out


def requirements_digest(path):
    """sha256 of a requirements file and, in order, every file it includes."""
    digest = hashlib.sha256()
    seen = set()

    def walk(p):
        real = os.path.realpath(p)
        if real in seen:
            return
        seen.add(real)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise EnvError("requirements file %s not found" % p) from None
        digest.update(("%s\0%d\0" % (os.path.basename(p), len(data))).encode())
        digest.update(data)
        for ref in _include_lines(p):
            walk(ref)

    walk(path)
    return digest.hexdigest()


def base_layer(system_site_packages):
    """The site-packages of `python:` when it is itself a venv (what --system-site-packages misses)."""
    if not system_site_packages or sys.prefix == sys.base_prefix:
        return []
    prefix = os.path.join(sys.prefix, "")
    return [p for p in site.getsitepackages() if p.startswith(prefix) and os.path.isdir(p)]


def key_inputs(args):
    req = os.path.join(args["release_dir"], args.get("requirements") or "requirements.txt")
    ssp = bool(args.get("system_site_packages"))
    return {
        "format": FORMAT,
        "python": os.path.realpath(sys.executable),
        "version": sys.version,
        "requirements": requirements_digest(req),
        "pip_args": [str(a) for a in args.get("pip_args") or []],
        "system_site_packages": ssp,
        "base_layer": base_layer(ssp),
    }, req


def env_key(inputs):
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _read_marker(path):
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _write_atomic(path, text):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                            "VIRTUAL_ENV", "PYTHONUSERBASE")}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"})
    return env


def _start(cmd, cwd=None):
    return subprocess.Popen(cmd, cwd=cwd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)


def _finish(proc, cmd, what=None):
    out, err = proc.communicate()
    if proc.returncode != 0:
        text = (err.strip() or out.strip()).splitlines()
        useful = [line.strip() for line in text if line.strip().startswith(("ERROR", "error"))] or text[-2:]
        raise EnvError("%s failed (exit %d): %s" % (what or " ".join(shlex.quote(c) for c in cmd[:4]),
                                                     proc.returncode, " | ".join(useful[-2:])))
    return out


def _run(cmd, cwd=None, what=None):
    return _finish(_start(cmd, cwd), cmd, what)


def _pip_version():
    try:
        from importlib.metadata import version
        return tuple(int(x) for x in re.findall(r"\d+", version("pip"))[:2])
    except Exception:
        return (0, 0)


def choose_method(ssp, layer):
    """How pip runs for a new environment, fastest first.

    shared: the environment sees the base's pip (system_site_packages): `env/bin/python -m pip`.
    python-option: the base's pip installs into it (`pip --python`, pip >= 22.3).
    ensurepip: the environment gets its own pip (slowest).
    """
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.origin:
        return "ensurepip"
    pip_home = os.path.realpath(os.path.dirname(os.path.dirname(spec.origin)))
    if ssp:
        visible = list(layer) + site.getsitepackages([sys.base_prefix])
        if pip_home in {os.path.realpath(p) for p in visible}:
            return "shared"
    if _pip_version() >= (22, 3):
        return "python-option"
    return "ensurepip"


def _pip(method, env_py):
    if method == "python-option":
        return [sys.executable, "-m", "pip", "--python", env_py]
    return [env_py, "-m", "pip"]


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def build(path, inputs, req, args):
    """Create the environment at its final path; the marker is written last."""
    start = time.monotonic()
    ssp = inputs["system_site_packages"]
    method = choose_method(ssp, inputs["base_layer"])
    cmd = [sys.executable, "-m", "venv"]
    if method != "ensurepip":
        cmd.append("--without-pip")
    if ssp:
        cmd.append("--system-site-packages")
    _run(cmd + [path], what="python -m venv")
    env_py = os.path.join(path, "bin", "python")
    purelib = _run([env_py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   what="the new environment's python").strip()
    if inputs["base_layer"]:
        _write_atomic(os.path.join(purelib, BASE_PTH),
                      "".join("import site; site.addsitedir(%r)\n" % p for p in inputs["base_layer"]))
    pip = _pip(method, env_py)
    install = pip + ["install", "--no-input"] + inputs["pip_args"] + ["-r", req]
    constraints = [c for c in args.get("constraints") or []
                   if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==\S+$", c.strip())]
    if constraints:
        cfile = os.path.join(path, ".deploykit-constraints.txt")
        _write_atomic(cfile, "\n".join(c.strip() for c in constraints) + "\n")
        install += ["-c", cfile]
    _run(install, cwd=args["release_dir"], what="pip install -r %s" % os.path.basename(req))
    full_cmd, own_cmd = pip + ["freeze"], pip + ["freeze", "--path", purelib]
    full_proc, own_proc = _start(full_cmd), _start(own_cmd)  # side by side: each takes a pip start-up
    freeze = _lines(_finish(full_proc, full_cmd, "pip freeze"))
    own = _lines(_finish(own_proc, own_cmd, "pip freeze --path"))
    marker = {"key": os.path.basename(path), "inputs": inputs, "method": method, "freeze": freeze,
              "own_freeze": own, "site_packages": purelib, "constrained": bool(constraints),
              "seconds": round(time.monotonic() - start, 3),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_atomic(os.path.join(path, MARKER), json.dumps(marker, indent=1))
    return marker


def link(release_dir, path):
    """<release>/.venv -> path, atomically (symlink + rename)."""
    dest = os.path.join(release_dir, ".venv")
    if os.path.lexists(dest) and not os.path.islink(dest):
        raise EnvError("%s exists and is not a symlink; refusing to replace it" % dest)
    if os.path.islink(dest) and os.readlink(dest) == path:
        return False
    tmp = "%s.tmp-%d" % (dest, os.getpid())
    os.symlink(path, tmp)
    os.replace(tmp, dest)
    return True


def probe(args):
    inputs, _ = key_inputs(args)
    key = env_key(inputs)
    path = os.path.join(args["venvs_dir"], key)
    marker = _read_marker(path)
    return {"ok": True, "changed": False, "key": key, "path": path, "inputs": inputs,
            "complete": bool(marker and marker.get("key") == key)}


def ensure(args):
    inputs, req = key_inputs(args)
    key = env_key(inputs)
    venvs = args["venvs_dir"]
    path = os.path.join(venvs, key)
    marker = _read_marker(path)
    reused = bool(marker and marker.get("key") == key)
    start = time.monotonic()
    if not reused:
        os.makedirs(venvs, exist_ok=True)
        if os.path.lexists(path):  # an interrupted build: garbage
            shutil.rmtree(path)
        try:
            marker = build(path, inputs, req, args)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    linked = link(args["release_dir"], path) if args.get("link", True) else False
    return {"ok": True, "changed": (not reused) or linked, "key": key, "path": path, "reused": reused,
            "method": marker.get("method"), "seconds": round(time.monotonic() - start, 3),
            "build_seconds": marker.get("seconds"), "freeze": marker.get("freeze", []),
            "own_freeze": marker.get("own_freeze", []), "inputs": inputs,
            "constrained": marker.get("constrained", False)}


def _link_key(link_path, venvs):
    try:
        target = os.readlink(link_path)
    except OSError:
        return None
    target = os.path.normpath(os.path.join(os.path.dirname(link_path), target))
    if os.path.dirname(target) != os.path.normpath(venvs):
        return None
    return os.path.basename(target)


def prune(args):
    """Remove environments no release directory (nor current) links to."""
    root = args["deploy_to"]
    venvs = os.path.join(root, "venvs")
    if not os.path.isdir(venvs):
        return {"ok": True, "changed": False, "removed": [], "kept": []}
    keep = set(args.get("keep") or [])
    releases = os.path.join(root, "releases")
    names = os.listdir(releases) if os.path.isdir(releases) else []
    for name in names:
        k = _link_key(os.path.join(releases, name, ".venv"), venvs)
        if k:
            keep.add(k)
    current = os.path.join(root, "current")
    if os.path.islink(current):
        k = _link_key(os.path.join(os.path.realpath(current), ".venv"), venvs)
        if k:
            keep.add(k)
    removed, kept = [], []
    for name in sorted(os.listdir(venvs)):
        if name in keep:
            kept.append(name)
        elif KEY_RE.match(name):
            shutil.rmtree(os.path.join(venvs, name))
            removed.append(name)
    return {"ok": True, "changed": bool(removed), "removed": removed, "kept": kept}


READ_ONLY = {"probe"}  # what a dry-run may call
ACTIONS = {"probe": probe, "ensure": ensure, "prune": prune}


def main():
    sys.exit(serve(ACTIONS, name="pyenv.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
