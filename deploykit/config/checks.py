"""Checks across sections, on the resolved specs: what only shows up later, on some host.

One stage's hosts (one primary with the app, distinct names, no host listed
twice), names shared by two entries, backup_order against what is configured,
hooks on phases and roles that exist, and every `{name}` template on every
host that renders it.
"""
from __future__ import annotations

import difflib

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from .fields import BACKUP_KINDS, ROLES
from .problems import fail
from .specs import HostSpec, template_names


@dataclass
class Template:
    """A configured string rendered per host, and what to check after rendering."""

    key: str
    text: str
    on: str | None = None  # only hosts with this role ("all" / None: every host)
    host_path: bool = False  # a path on the host: must not start with "~" once rendered
    one_word: bool = False  # put unquoted into a command: no whitespace once rendered


def stage_hosts(path: Path, name: str, hosts: list[HostSpec]) -> None:
    where = f"stages.{name}."
    primaries = [i for i, h in enumerate(hosts) if "primary" in h.roles]
    if len(primaries) != 1:
        raise fail(path, f"{where}hosts", f"needs exactly one host with role 'primary', found {len(primaries)}",
                   "give the host that runs migrations and database work 'roles: [app, primary]'")
    if "app" not in hosts[primaries[0]].roles:
        raise fail(path, f"{where}hosts[{primaries[0]}].roles", "the primary host lacks the 'app' role",
                   "write 'roles: [app, primary]': migrations run in the primary's release directory")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise fail(path, f"{where}hosts", "two hosts share a name", "give each host a distinct 'name:'")
    places: dict[tuple, int] = {}
    for i, h in enumerate(hosts):
        root = posixpath.normpath(h.deploy_to)
        place = ("local", root) if h.is_local else (h.hostname.lower(), h.port, root)
        if place in places:
            j = places[place]
            shown = "local" if h.is_local else f"{h.hostname} port {h.port}"
            raise fail(path, f"{where}hosts[{i}]", f"is the same host and deploy_to as hosts[{j}] ({hosts[j].name}): "
                       f"{shown}, {root}", "list each host once per stage: the run would lock itself out")
        places[place] = i


def unique(path: Path, key: str, names: list, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise fail(path, key, f"two entries share the {what} name {name!r}", "give each entry a distinct 'name:'")
        seen.add(name)


def backup_order(path: Path, order: list[str], configured: dict[str, bool]) -> None:
    for kind in BACKUP_KINDS:
        if configured[kind] and kind not in order:
            raise fail(path, "backup_order", f"{kind!r} is configured but missing, so it would never be backed up",
                       f"add {kind} to backup_order (usual order: {', '.join(BACKUP_KINDS)})")


def host_roles(path: Path, stages: dict, declared: list[str]) -> None:
    """Every role of a host is built in or declared in 'roles:' (a typo is not a new role)."""
    known = set(ROLES) | set(declared)
    for stage, hosts in stages.items():
        for i, h in enumerate(hosts):
            for role in sorted(h.roles - known):
                near = difflib.get_close_matches(role, sorted(known), n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise fail(path, f"stages.{stage}.hosts[{i}].roles", f"unknown role {role!r}",
                           f"{hint}use roles from {', '.join(sorted(known))}, or declare your own in 'roles:'")


def process_roles(path: Path, processes: list, declared: list[str]) -> None:
    known = {"all"} | set(ROLES) | set(declared)
    for i, proc in enumerate(processes):
        if proc.on not in known:
            near = difflib.get_close_matches(proc.on, sorted(known), n=1)
            raise fail(path, f"processes[{i}].on", f"unknown role {proc.on!r}",
                       (f"did you mean {near[0]!r}? " if near else "") + f"use one of {', '.join(sorted(known))}")


def hooks(path: Path, hooks: dict, phases: set[str], roles_in_use: set[str]) -> None:
    targets = {"all"} | ROLES | roles_in_use
    for when, entries in hooks.items():
        for phase, items in entries.items():
            where = f"hooks.{when}.{phase}"
            if phase not in phases:
                raise fail(path, where, f"no playbook has a phase {phase!r}, so this hook would never run",
                           f"use one of: {', '.join(sorted(phases))}")
            for j, item in enumerate(items):
                if item["on"] not in targets:
                    raise fail(path, f"{where}[{j}].on", f"no host can have the role {item['on']!r}",
                               f"use 'all' or a role: {', '.join(sorted(targets - {'all'}))}")


def templates(path: Path, stages: dict[str, list[HostSpec]], found: list[Template]) -> None:
    """Every `{name}` of every configured template must be known on every host that renders it."""
    for stage, hosts in stages.items():
        for host in hosts:
            known = host.template_vars()
            for t in found:
                if t.on not in (None, "all") and t.on not in host.roles:
                    continue
                for name in template_names(t.text):
                    if name in known:
                        continue
                    if name == "port":
                        fix = ("{port} is not the SSH port: write {ssh_port} for the SSH port, or set "
                               "vars: {port: 8000} (on the stage or the host) for the app's port")
                    else:
                        fix = (f"use one of {{{'}, {'.join(sorted(known))}}}, define '{name}' in vars "
                               f"of the stage or the host, or write ${{{name}}} for a shell variable")
                    raise fail(path, t.key, f"unknown template {{{name}}} for host {host.name} of stage {stage}", fix)
                if t.host_path or t.one_word:
                    value = host.render(t.text)
                    if t.host_path and value.startswith("~"):
                        raise fail(path, t.key, f"is {value!r} on host {host.name} of stage {stage}; the host never "
                                   "expands '~'", "write the absolute path (set the var to one)")
                    if t.one_word and (not value.strip() or re.search(r"\s", value)):
                        raise fail(path, t.key, f"is {value!r} on host {host.name} of stage {stage}, which the "
                                   "command would split at its spaces", "use a name or path without spaces")


def freeze(path: Path, spec, processes: list, command_timeout: float) -> None:
    """stop_writers needs a process that writes; the drain must end before a host command's timeout."""
    if spec.mode == "stop_writers" and processes and not any(p.writes for p in processes):
        raise fail(path, "freeze.mode", "stop_writers, but no process has 'writes: true'",
                   "mark the processes that write 'writes: true', or use 'mode: maintenance'")
    if spec.drain_timeout >= command_timeout:
        raise fail(path, "freeze.drain_timeout", f"{spec.drain_timeout:g} s is not below ssh.command_timeout "
                   f"({command_timeout:g} s)", "give the drain less time than one command on a host may take")
