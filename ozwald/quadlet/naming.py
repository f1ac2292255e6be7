# SPDX-License-Identifier: AGPL-3.0-or-later
"""How Ozwald names what it creates for an instance, and how it reads those names and labels back.

An instance `x` is the Quadlet file `ozwald-x.container`, the systemd unit `ozwald-x.service` and the
container `ozwald-x`; its unit file carries `Label="ozwald.<key>=<value>"` lines. An on-demand instance also
has the socket `ozwald-x.socket` and its proxy `ozwald-x:proxy.service`: `:` cannot appear in an instance
name, so no instance's container unit can take the proxy's name. Everything that builds
or parses one of these names uses this module, so they cannot drift apart.
"""

from __future__ import annotations

UNIT_PREFIX = "ozwald-"
LABEL_PREFIX = "ozwald."
FILE_SUFFIX = ".container"
ENV_SUFFIX = ".env"  # Quadlet reads only unit extensions, so it leaves these files alone
UNIT_SUFFIX = ".service"
SOCKET_SUFFIX = ".socket"
PROXY_MARK = ":proxy"
UNIT_PATTERN = f"{UNIT_PREFIX}*"  # every Ozwald unit (services and sockets), for ListUnitsByPatterns
_LABEL_LINE = "Label="
# Ozwald's own units that share the prefix (units/): never an instance, so no instance may take the name.
OWN_UNITS = frozenset({"ozwald-redis.service"})
RESERVED_INSTANCES = frozenset(unit.removeprefix(UNIT_PREFIX).removesuffix(UNIT_SUFFIX) for unit in OWN_UNITS)
_C_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                "v": "\v"}


def container_name(instance: str) -> str:
    """The container's name, also the stem of the unit file and unit names."""
    return f"{UNIT_PREFIX}{instance}"


def unit_name(instance: str) -> str:
    """The systemd unit Quadlet generates for an instance."""
    return f"{container_name(instance)}{UNIT_SUFFIX}"


def socket_name(instance: str) -> str:
    """The socket unit of an on-demand instance (also its file's name)."""
    return f"{container_name(instance)}{SOCKET_SUFFIX}"


def proxy_name(instance: str) -> str:
    """The proxy service the socket of an on-demand instance starts (also its file's name)."""
    return f"{container_name(instance)}{PROXY_MARK}{UNIT_SUFFIX}"


def swap_dropin(instance: str) -> str:
    """The drop-in (relative to systemd's unit directory) that gates the start of an on-demand instance which
    swaps with others on its GPUs."""
    return f"{unit_name(instance)}.d/50-ozwald-swap.conf"


def swap_gate(instance: str) -> str:
    """The FIFO the gate of a swapping instance's start waits on, until Ozwald writes a line to it."""
    return f"/run/ozwald/swap/{container_name(instance)}.gate"


def unit_filename(instance: str) -> str:
    """The Quadlet file Ozwald writes for an instance."""
    return f"{container_name(instance)}{FILE_SUFFIX}"


def env_filename(instance: str) -> str:
    """The file, next to the unit file, that holds an instance's secret environment (mode 0600)."""
    return f"{container_name(instance)}{ENV_SUFFIX}"


def instance_of_unit(unit: str) -> str | None:
    """The instance an `ozwald-<instance>.service` unit runs, or an on-demand instance's socket or proxy
    belongs to; None for any other unit (Ozwald's own included)."""
    if not unit.startswith(UNIT_PREFIX) or unit in OWN_UNITS:
        return None
    for suffix in (f"{PROXY_MARK}{UNIT_SUFFIX}", UNIT_SUFFIX, SOCKET_SUFFIX):
        if unit.endswith(suffix):
            name = unit[len(UNIT_PREFIX):-len(suffix)]
            return name if name and ":" not in name else None
    return None


def is_container_unit(unit: str) -> bool:
    """`ozwald-<instance>.service`: the unit that runs an instance's container."""
    name = instance_of_unit(unit)
    return name is not None and unit == unit_name(name)


def instance_of_filename(filename: str) -> str | None:
    """The instance an `ozwald-<instance>.container` file belongs to; None for any other file."""
    if filename.startswith(UNIT_PREFIX) and filename.endswith(FILE_SUFFIX) and \
            len(filename) > len(UNIT_PREFIX + FILE_SUFFIX):
        return filename[len(UNIT_PREFIX):-len(FILE_SUFFIX)]
    return None


def unquote_word(word: str) -> str:
    """The inverse of `ozwald.quadlet.escape.quote_word`: the text a quoted unit-file word stands for."""
    if len(word) < 2 or word[0] != '"' or word[-1] != '"':
        raise ValueError(f"not a quoted word: {word!r}")
    out: list[str] = []
    body = word[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "x" and i + 3 < len(body):
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(_C_UNESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out).replace("%%", "%").replace("$$", "$")


def unit_labels(text: str) -> dict[str, str]:
    """The `ozwald.*` labels of a unit file, without the prefix: {"service": "x", "spec-hash": "…", …}."""
    labels: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith(_LABEL_LINE):
            continue
        try:
            key, sep, value = unquote_word(line[len(_LABEL_LINE):].strip()).partition("=")
        except ValueError:
            continue
        if sep and key.startswith(LABEL_PREFIX):
            labels[key[len(LABEL_PREFIX):]] = value
    return labels


def unit_label(text: str, key: str) -> str | None:
    """One `ozwald.<key>` label of a unit file; None when absent or empty."""
    return unit_labels(text).get(key) or None
