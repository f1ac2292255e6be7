# SPDX-License-Identifier: AGPL-3.0-or-later
"""The man page and the bash completion of `ozwald`, generated from the CLI's parser.

    python3 -m ozwald.cli.docs --man build/ozwald.1 --bash build/ozwald.bash

The packages run this at build time; it needs only the standard library. Generated, not written by
hand, so that neither can drift from `ozwald --help`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from ozwald import __version__
from ozwald.cli import build_parser
from ozwald.cli.common import ENVIRONMENT_TEXT, EXIT_CODES_TEXT

FILES_TEXT = """\
/etc/ozwald/ozwald.yml: the settings file (a commented example is installed)
/etc/ozwald/ozwald.env: OZWALD_SYSTEM_KEY and OZWALD_REDIS_PASSWORD, mode 0600, generated at install
/etc/ozwald/redis-auth.conf: the password of ozwald-redis.service, mode 0600
/var/lib/ozwald: the provisioner's state; /var/lib/ozwald/redis: its Redis data
ozwald.target, ozwald.service, ozwald-redis.service: the systemd units"""


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            yield action


def _roff(text: str) -> str:
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in escaped.splitlines())


def _spell(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{_roff(str(action.metavar or action.dest))}\\fR"
    flags = ", ".join(f"\\fB{_roff(flag)}\\fR" for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    metavar = action.metavar or action.dest.upper()
    return f"{flags} \\fI{_roff(str(metavar))}\\fR"


def manpage(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    out = [
        f'.TH OZWALD 1 "" "ozwald {__version__}" "User Commands"',
        ".SH NAME",
        "ozwald \\- " + _roff(parser.description or "").rstrip("."),
        ".SH SYNOPSIS",
        "\\fBozwald\\fR \\fIACTION\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff("Ozwald runs AI services as Podman containers under systemd (Quadlet). The provisioner, "
              "ozwald.service, serves an HTTP API and reconciles the desired set of services with systemd; "
              "this command manages it and talks to its API."),
        ".SH ACTIONS",
    ]
    for name, sub, text in _actions(parser):
        out += [".SS " + _roff(name), _roff(text)]
        for action in _options(sub):
            out += [".TP", _spell(action), _roff(action.help or "")]
    for title, text in (("EXIT STATUS", EXIT_CODES_TEXT), ("ENVIRONMENT", ENVIRONMENT_TEXT)):
        out += [f".SH {title}"]
        for line in text.splitlines()[1:]:
            line = line.strip()
            head, _, rest = line.partition("  ")
            if rest:
                out += [".TP", f"\\fB{_roff(head)}\\fR", _roff(rest.strip())]
            elif line:
                out.append(_roff(line))
    out += [".SH FILES"]
    for line in FILES_TEXT.splitlines():
        path, _, text = line.partition(": ")
        out += [".TP", f"\\fI{_roff(path)}\\fR", _roff(text)]
    out += [".SH SEE ALSO", "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBpodman\\-systemd.unit\\fR(5)"]
    return "\n".join(out) + "\n"


def bash_completion(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    cases = []
    for name, sub, _ in _actions(parser):
        flags = sorted(flag for action in _options(sub) for flag in action.option_strings)
        cases.append(f'        {name}) opts="{" ".join(flags)} --help" ;;')
    names = " ".join(name for name, _, _ in _actions(parser))
    case_lines = "\n".join(cases)
    return f"""# bash completion for ozwald, generated from its argument parser (python3 -m ozwald.cli.docs)
_ozwald() {{
    local cur prev action opts
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD-1]}}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))
        return
    fi
    case $prev in
        --config|--file|-f) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    action=${{COMP_WORDS[1]}}
    case $action in
{case_lines}
        *) opts="" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _ozwald ozwald
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ozwald.cli.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--man", type=Path, help="write the man page here")
    parser.add_argument("--bash", type=Path, help="write the bash completion here")
    args = parser.parse_args(argv)
    if not args.man and not args.bash:
        sys.stdout.write(manpage())
    for path, text in ((args.man, manpage()), (args.bash, bash_completion())):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
