# SPDX-License-Identifier: AGPL-3.0-or-later
"""Waking and sleeping an on-demand instance on purpose (POST /srv/services/active/<name>/wake and /sleep).

An orchestrator warms an instance before its traffic comes, or frees its GPU at once instead of after
`idle_stop`. Only a desired on-demand instance can be nudged: the checks here say which names could be, and
what to change in the settings for one that is not on demand; the reconciler's worker does the rest
(`Reconciler.nudge`). Pure: the caller reads the desired set and the settings.
"""

from __future__ import annotations

from ozwald.config import ResolveError, Settings
from ozwald.errors import Exit, OzwaldError
from ozwald.provisioner.requests import effective_spec
from ozwald.records import ActiveService, DesiredSet, NudgeOperation

SHOWN_NAMES = 20  # the most desired names a "not desired" error lists


class NotDesired(OzwaldError):
    """The name is not an instance of the current desired set."""

    exit_status = Exit.USAGE
    http_status = 404


class NotOnDemand(OzwaldError):
    """The instance is desired but does not run on demand: it has no idle state to wake from or go to."""

    exit_status = Exit.USAGE
    http_status = 409


class NotListening(OzwaldError):
    """The instance's socket does not listen (its port is taken, or it is being restarted): a wake connects to
    the port, and would reach whatever else listens there, or nothing. Refused like any request the API does not
    admit now (409)."""

    exit_status = Exit.USAGE
    http_status = 409


def check_listening(name: str, status: ActiveService | None) -> None:
    """A wake needs the instance's socket listening, as last published; NotListening says what it is instead.
    Nothing published yet by this process: the reconciler's own check (it knocks only on a listening socket)."""
    if status is None:
        return
    on_demand = status.info.on_demand
    state = on_demand.socket_state if on_demand is not None else None
    if state is not None and state.startswith("active/"):
        return
    reason = status.info.get("reason")
    raise NotListening(f"cannot wake {name}: its socket is {state or 'not loaded yet'}"
                       + (f" ({reason})" if reason else "") + "; Ozwald starts it again every 2 s, try then")


def _shown(name: str) -> str:
    """The name as sent, quoted and cut short: it comes from a URL and ends up in an answer."""
    return repr(name if len(name) <= 63 else name[:63] + "…")


def check_nudge(settings: Settings, desired: DesiredSet, name: str, operation: NudgeOperation) -> str:
    """The message of an accepted wake or sleep of `name`; NotDesired or NotOnDemand when it cannot be."""
    wanted = desired.by_name()
    instance = wanted.get(name)
    if instance is None:
        names = sorted(wanted)
        listed = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more"
                                                   if len(names) > SHOWN_NAMES else "")
        raise NotDesired(f"no instance {_shown(name)} in the desired set (generation {desired.generation}); "
                         + (f"desired: {listed}" if names else "it is empty"))
    try:
        spec = effective_spec(settings, instance)
    except ResolveError as exc:  # the settings changed under it: it is failed, and nothing runs it on demand
        raise NotOnDemand(f"instance {name!r} cannot run under the current settings: {exc}") from None
    if spec.type != "container" or spec.on_demand is None:
        raise NotOnDemand(f"instance {name!r} is not on demand; set on_demand on its service ({instance.service})")
    idle = spec.on_demand.idle_stop
    after = f"{idle:g} s" if idle < 120 else f"{idle / 60:g} min"
    if operation == "wake":
        return (f"wake of {name} accepted: its container starts, then stops after {after} without a connection; "
                "its socket keeps listening")
    return f"sleep of {name} accepted: its container stops; its socket keeps listening and the next connection wakes it"
