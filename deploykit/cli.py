"""`deploykit` console script: the same tasks without a tasks.py.

Only the options that mean something for deploykit are offered: invoke's
`--dry`, `--warn-only`, `--echo`, `--pty`, `--hide`, `--command-timeout`,
`--prompt-for-sudo-password` and its own `--config` file are about invoke's
`c.run()`, which deploykit's tasks do not use, and would look like deploykit
options that silently do nothing (`deploykit --dry release` once did a real
release).
"""
import sys

from invoke import Exit, Program

from . import __version__
from .tasks import BARE_WORD, ns

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


def bare_words(argv: list[str]) -> list[str]:
    """`deploykit log RUN` -> `deploykit log --run RUN` (tasks.BARE_WORD): invoke's positional arguments
    are required, and RUN is optional. The first word after the task that is no option's value is it."""
    out = list(argv)
    for i, word in enumerate(out):
        if word in BARE_WORD:
            task = ns[word]
            kept = dict(task.help)  # invoke's get_arguments() pops each option's help: keep it for --help
            valued = {f"--{n}" for a in task.get_arguments() for n in a.names if a.kind is not bool}
            task.help = kept
            j = i + 1
            while j < len(out):
                tok = out[j]
                if tok == "--":
                    break
                if tok.startswith("-"):
                    j += 2 if tok in valued else 1
                    continue
                if tok in ns.task_names:
                    break  # the next task
                return out[:j] + [f"--{BARE_WORD[word]}", tok] + out[j + 1:]
            break
    return out


program = DeploykitProgram(namespace=ns, name="deploykit", binary="deploykit", version=__version__)


def main():
    program.run(bare_words(sys.argv))


if __name__ == "__main__":
    main()
