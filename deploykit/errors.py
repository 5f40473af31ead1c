"""User-facing errors: each names the problem and the fix, shown as one line."""


class DeployError(Exception):
    """A failure the operator can act on; `hint` says how."""

    hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(DeployError):
    hint = "fix deploykit.yaml and run again"


class UnknownStage(DeployError):
    hint = "use one of the stages defined under 'stages:' in deploykit.yaml"


class UnknownRevision(DeployError):
    hint = "list the tags with 'git tag' and pass one with --tag"


class HostUnreachable(DeployError):
    hint = "check the address, port and that sshd runs there"


class HostKeyUnknown(DeployError):
    pass


class HostCommandFailed(DeployError):
    pass


class LockHeld(DeployError):
    hint = "wait for that run to finish, or free a stale lock with 'invoke unlock --host STAGE'"


class BackupInvalid(DeployError):
    hint = "pick another backup from 'invoke backups --host STAGE'"


class DryRunWrite(DeployError):
    """Something tried to change a host during a dry-run: refused, by construction."""


class Interrupted(DeployError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the current step; the procedure for that point runs next."""

    hint = "deploykit finishes safely: the procedure for the point reached runs next"


class LockLost(DeployError):
    """Another run took the lock over: this run must not change anything more."""

    hint = "another run declared this one gone and took over; see 'deploykit unlock --host STAGE'"


class NotConfirmed(DeployError):
    """The operator declined (or could not be asked): nothing was changed."""

    hint = "pass --yes to confirm in scripts"


class PreflightFailed(DeployError):
    """A read-only check found a mistake before anything changed."""


class UnsafeForRollingRelease(PreflightFailed):
    """Migrations the old code, still serving while a rolling release switches its batches, does not survive
    (work/migration_safety.unsafe_operations): refused before anything changed."""

    hint = ("--all-at-once (downtime: processes stopped during migrate) or split it over two releases "
            "(expand, then contract)")
    SHOWN = 2

    def __init__(self, operations, hint: str | None = None):
        self.operations = list(operations)
        shown = [f"{o['app']}.{o['migration']}: {o['describe']} ({o['why']})" if i == 0 else
                 f"{o['app']}.{o['migration']}: {o['describe']}" for i, o in enumerate(self.operations[:self.SHOWN])]
        more = len(self.operations) - self.SHOWN
        told = "operation is" if len(self.operations) == 1 else "operations are"
        super().__init__(f"{len(self.operations)} migration {told} unsafe while the old code still serves in a "
                         f"rolling release: {'; '.join(shown)}" + (f"; and {more} more" if more > 0 else ""), hint)


class MaskKeyMissing(DeployError):
    """The anonymized refresh has no masking key in the controller's environment."""


class RefreshRuleInvalid(DeployError):
    """A refresh rule (or subset) names nothing the source has, or cannot apply to its column."""

    hint = "fix the rule in refresh.rules (or the rules file)"


class RulesFileExists(DeployError):
    """--init-rules never overwrites a rules file."""

    hint = "move the file aside (or edit it): the suggestions are written to a new file only"


class PersonalColumnsWithoutRule(DeployError):
    """Columns that look personal have no masking rule (nor an explicit keep): nothing is copied."""

    hint = ("give each a rule (or 'keep') under refresh.rules; 'deploykit refresh --init-rules' writes a rules "
            "file with a suggestion for each")
    SHOWN = 5

    def __init__(self, findings, hint: str | None = None):
        self.findings = list(findings)
        names = [f"{f.table}.{f.column}" for f in self.findings]
        more = f" and {len(names) - self.SHOWN} more" if len(names) > self.SHOWN else ""
        told = "columns look personal and have" if len(names) != 1 else "column looks personal and has"
        super().__init__(f"{len(names)} {told} no refresh rule: {', '.join(names[:self.SHOWN])}{more}", hint)


class PartialRollout(DeployError):
    """A rolling release went on past hosts that failed within rollout.max_fail: they serve the previous release."""

    hint = "fix those hosts, then run the same command again: it resumes with only them"


class HardStop(BaseException):
    """A second interrupt: stop at once, keep the lock and the journal so the same command finishes the work."""
