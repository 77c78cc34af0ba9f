"""`invoke acli`: the live session (changes applied to the lab) and the interactive shell.

The prompt is AHV's `<acropolis> `; history is kept in ~/.labkit_acli_history and Tab completes
commands, keywords, VM and network names (acli.complete).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from . import acli, commands
from .errors import LabkitError

PROMPT = "<acropolis> "
HISTORY = Path.home() / ".labkit_acli_history"


class LiveSession:
    """acli on a running lab: each command reads the lab's control plane under its lock, and a
    change goes through resolve -> plan -> apply (commands.apply_change)."""

    def __init__(self, lab: str, say=lambda _message: None):
        self.lab, self.say = lab, say

    def controlled(self):
        return commands.controlled(self.lab)

    def apply(self, change) -> None:
        commands.apply_change(change, say=self.say)

    def probe(self, path: str, what: str):
        """What the image file at `path` is (qemu-img reads it here, where acli runs)."""
        from .control_storage import ImageFacts
        from .host.storage import probe

        facts = probe(path, what)
        return ImageFacts(facts.format, facts.size, facts.bootable)

    def fetch(self, url: str, what: str) -> str:
        """An image served on this workstation (http://127.0.0.1/...), downloaded into labkit's cache."""
        from .host.download import fetch

        return fetch(url, what)

    def act(self, action) -> None:
        """A power action on running guests, a task of the lab's per VM (commands.act)."""
        for message in commands.act(self.lab, action.verb, action.vms, action.operation, client="acli"):
            self.say(message)


TERMINAL = "terminal"  # run_one's `ask`: ask on this process's terminal, if it has one


def run_one(session, line: str, as_json: bool, yes: bool, out=print, ask=TERMINAL) -> int:
    """One command line (`invoke acli -c`, or one typed in a CVM: acli_relay): its output, or its
    error as one line; returns the exit status. `ask(question) -> bool` asks before a delete (None:
    nobody to ask, as in a script: it goes ahead, as AHV's acli does without a terminal)."""
    if ask == TERMINAL:
        # The question goes where the answer's reader looks: with -o json, stdout is for the JSON alone.
        ask = (lambda q: _ask(q, sys.stderr if as_json else sys.stdout)) if sys.stdin.isatty() else None
    confirm = None if yes else ask
    if line.strip() == "help":
        out("\n".join(acli.help_text()))
        return 0
    try:
        output = acli.execute(session, line, confirm, say=(lambda _m: None) if as_json else out)
    except LabkitError as exc:
        out(acli.as_json(None, str(exc)) if as_json else str(exc))
        return 1
    out(acli.as_json(output, None) if as_json else "\n".join(output.text))
    return 0


def interactive(session, yes: bool = False) -> None:
    import readline

    with contextlib.suppress(FileNotFoundError, OSError):
        readline.read_history_file(HISTORY)
    readline.set_completer_delims(" \t=")
    readline.set_completer(_Completer(session).complete)
    readline.parse_and_bind("tab: complete")
    print("labkit acli: AHV's commands on lab " + session.lab + "; help lists them, exit or Ctrl-D leaves")
    try:
        while True:
            try:
                line = input(PROMPT).strip()
            except KeyboardInterrupt:
                print()
                continue
            if line in ("exit", "quit"):
                break
            if line:
                run_one(session, line, as_json=False, yes=yes)
    except EOFError:
        print()
    finally:
        with contextlib.suppress(OSError):
            readline.set_history_length(1000)
            readline.write_history_file(HISTORY)


def _ask(question: str, stream=None) -> bool:
    stream = stream or sys.stdout
    stream.write(question)
    stream.flush()
    try:
        return input().strip().lower() in ("yes", "y")
    except EOFError:
        return False


class _Completer:
    def __init__(self, session):
        self.session, self.matches = session, []

    def complete(self, text: str, state: int):
        import readline

        if state == 0:
            before = readline.get_line_buffer()[: readline.get_begidx()]
            try:
                with self.session.controlled() as ctl:
                    self.matches = acli.complete(before, text, ctl)
            except LabkitError:
                self.matches = acli.complete(before, text, None)
        return self.matches[state] if state < len(self.matches) else None
