# SPDX-License-Identifier: AGPL-3.0-or-later
"""How systemd reads an `ExecStart=` line, for checking what Quadlet generated.

This models systemd's documented rules (word splitting with quotes and C escapes, then `%` specifiers,
then `$` variables) closely enough to prove that a value reaches podman unchanged. It refuses anything
systemd would expand, rather than guessing the expansion.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
                   '"': '"', "'": "'", "s": " "}


class Expansion(Exception):
    """systemd would substitute something in this word: the value would not arrive as written."""


def split_words(line: str) -> list[str]:
    words: list[str] = []
    i = 0
    n = len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote: str | None = None
        while i < n:
            ch = line[i]
            if quote is None and ch in " \t":
                break
            if ch == "\\":
                consumed, text = _unescape(line, i)
                word.append(text)
                i += consumed
                continue
            if quote is None and ch in "\"'":
                quote = ch
            elif quote is not None and ch == quote:
                quote = None
            else:
                word.append(ch)
            i += 1
        if quote is not None:
            raise ValueError(f"unterminated quote in {line!r}")
        words.append("".join(word))
    return words


def _unescape(line: str, i: int) -> tuple[int, str]:
    if i + 1 >= len(line):
        raise ValueError("trailing backslash")
    ch = line[i + 1]
    if ch in _SIMPLE_ESCAPES:
        return 2, _SIMPLE_ESCAPES[ch]
    if ch == "x":
        return 4, chr(int(line[i + 2:i + 4], 16))
    if ch == "u":
        return 6, chr(int(line[i + 2:i + 6], 16))
    if ch == "U":
        return 10, chr(int(line[i + 2:i + 10], 16))
    if ch in "01234567":
        return 4, chr(int(line[i + 1:i + 4], 8))
    raise ValueError(f"unknown escape \\{ch}")


def resolve_specifiers(word: str, keep: frozenset[str] = frozenset()) -> str:
    """`%%` becomes `%`; the specifiers in `keep` stay as written; any other specifier is refused."""
    out = []
    i = 0
    while i < len(word):
        if word[i] == "%":
            if i + 1 < len(word) and word[i + 1] == "%":
                out.append("%")
                i += 2
                continue
            if word[i:i + 2] in keep:
                out.append(word[i:i + 2])
                i += 2
                continue
            raise Expansion(f"specifier %{word[i + 1:i + 2]} in {word!r}")
        out.append(word[i])
        i += 1
    return "".join(out)


def resolve_variables(word: str) -> str:
    if word.startswith("$") and not word.startswith(("${", "$$")) and len(word) > 1:
        raise Expansion(f"variable word {word!r}")
    out = []
    i = 0
    while i < len(word):
        if word[i] == "$" and i + 1 < len(word):
            if word[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if word[i + 1] == "{":
                raise Expansion(f"variable in {word!r}")
        out.append(word[i])
        i += 1
    return "".join(out)


def exec_argv(line: str, keep_specifiers: frozenset[str] = frozenset()) -> list[str]:
    """The argv systemd passes for an ExecStart value; Quadlet's own %t/%N stay unexpanded."""
    return [resolve_variables(resolve_specifiers(word, keep_specifiers)) for word in split_words(line)]
