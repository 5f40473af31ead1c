"""`deploykit` console script: the same tasks without a tasks.py.

Only the options that mean something for deploykit are offered: invoke's
`--dry`, `--warn-only`, `--echo`, `--pty`, `--hide`, `--command-timeout`,
`--prompt-for-sudo-password` and its own `--config` file are about invoke's
`c.run()`, which deploykit's tasks do not use, and would look like deploykit
options that silently do nothing (`deploykit --dry release` once did a real
release).
"""
from invoke import Exit, Program

from . import __version__
from .tasks import ns

KEPT_CORE = {"complete", "debug", "help", "list", "list-depth", "list-format", "print-completion-script", "version"}


class DeploykitProgram(Program):
    """invoke's Program, offering only the core options that apply to deploykit."""

    def parse_core(self, argv):
        super().parse_core(argv)
        given = [a for a in self.args.values() if a.name not in KEPT_CORE and a.got_value]
        if given:
            flag = f"--{given[0].name}"
            hint = "use --dry-run after the task name" if given[0].name == "dry" else \
                "see 'deploykit --help' and 'deploykit --help TASK'"
            raise Exit(f"deploykit: error: {flag} is not a deploykit option (hint: {hint})", code=2)

    def print_help(self):
        print(f"Usage: {self.binary} [--core-opts] <task> [--task-opts] ...")
        print("")
        print("Core options:")
        print("")
        self.print_columns([t for t in self.initial_context.help_tuples()
                            if t[0].lstrip("-").split()[0].split("=")[0].split(",")[0] in KEPT_CORE
                            or any(f"--{k}" in t[0] for k in KEPT_CORE)])
        self.list_tasks()


program = DeploykitProgram(namespace=ns, name="deploykit", binary="deploykit", version=__version__)


def main():
    program.run()


if __name__ == "__main__":
    main()
