# SPDX-License-Identifier: AGPL-3.0-or-later
"""Escaping for Quadlet `.container` files: the boundary that stops a value from becoming a directive.

Two things read what Ozwald writes: Quadlet's unit-file parser, then systemd, which re-parses the
`ExecStart=` line Quadlet generates. Quadlet copies `%` specifiers and `$` variables through unchanged,
so systemd would expand them; they are doubled here (`%%`, `$$`), which systemd turns back into one.

Quadlet reads keys in two ways, and each gets its own quoting:
- word lists (Environment, Label, Exec): each word is double-quoted with C-style escapes, so newlines,
  quotes and backslashes cannot end the word, the line or the section;
- raw strings (HealthCmd, Entrypoint, Volume): taken as written, up to the end of the line. Ozwald only
  ever puts a JSON array or a validated path there, which cannot hold a raw newline and never starts
  or ends with a quote (Quadlet strips those).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b",
              "\f": "\\f", "\v": "\\v"}


def systemd_literal(text: str) -> str:
    """Double the characters systemd would expand (`%` specifiers, `$` variables)."""
    return text.replace("%", "%%").replace("$", "$$")


def quote_word(text: str) -> str:
    """One double-quoted word that Quadlet unquotes back to exactly `text`, and systemd leaves alone."""
    if "\x00" in text:
        raise ValueError("NUL bytes cannot be written to a unit file")
    out = []
    for char in systemd_literal(text):
        if char in _C_ESCAPES:
            out.append(_C_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def quote_words(words: Sequence[str]) -> str:
    return " ".join(quote_word(word) for word in words)


def raw_json_array(words: Sequence[str]) -> str:
    """A JSON array for a raw key (HealthCmd, Entrypoint): Podman reads it as an exec-form command."""
    if any("\x00" in word for word in words):
        raise ValueError("NUL bytes cannot be written to a unit file")
    # Compact: Podman's --health-cmd parser mishandles arrays written with spaces after the commas.
    encoded = json.dumps(list(words), ensure_ascii=False, separators=(",", ":"))
    # JSON escapes control characters and quotes; U+2028/2029 are left alone by json but are not line
    # breaks for systemd or Quadlet, so the result is one line that starts with [ and ends with ].
    return systemd_literal(encoded)


def raw_token(text: str) -> str:
    """A validated token (path, port, size) for a raw key: refuse anything that could escape the value."""
    if any(ord(c) < 0x20 or c in "\"'\\ \x7f" for c in text):
        raise ValueError(f"unsafe characters in {text!r}")
    return systemd_literal(text)
