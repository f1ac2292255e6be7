# SPDX-License-Identifier: AGPL-3.0-or-later
"""Validated value types shared by the settings model.

Names become systemd unit names, container names and labels, so their charset is the first line of
defence for the unit files Ozwald writes; the quadlet escaper is the second.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
# An OCI image reference: [registry[:port]/]path[:tag][@digest]. No whitespace, quotes, `%` or `$`.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")


def check_text(value: str) -> str:
    """Text that can reach a unit file and a process environment: UTF-8 encodable, without NUL."""
    if "\x00" in value:
        raise ValueError("text cannot contain NUL bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None  # never echo: it may be a secret
    return value


def check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-63 characters from A-Z a-z 0-9 _ . -, starting with a letter "
            "or digit (names become systemd unit and container names)"
        )
    return value


def check_env_key(value: str) -> str:
    if not _ENV_KEY.fullmatch(value):
        raise ValueError(f"invalid environment variable name {value!r}: use A-Z a-z 0-9 _, not starting with a digit")
    return value


def check_label_key(value: str) -> str:
    if not _LABEL_KEY.fullmatch(value):
        raise ValueError(f"invalid label key {value!r}: use A-Z a-z 0-9 . _ / -")
    if value == "ozwald" or value.startswith("ozwald."):
        raise ValueError(f"label key {value!r} is reserved: Ozwald sets ozwald.* labels itself")
    return value


def check_image(value: str) -> str:
    if not _IMAGE.fullmatch(value):
        raise ValueError(f"invalid image reference {value!r}")
    return value


def check_size(value: str) -> str:
    if not _SIZE.fullmatch(value):
        raise ValueError(f"invalid size {value!r}: use a number with an optional unit b, k, m or g (e.g. 16g)")
    return value


def env_scalar(value: Any) -> str:
    """Turn a scalar into the text an operator would have typed.

    YAML files keep their own spelling (see yamlsource); this covers values given from Python or JSON,
    where `True` must still render as `true`.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return check_text(value)
    if value is None:
        raise ValueError('a null environment value is ambiguous: write "" for an empty value')
    raise ValueError(f"environment values must be scalars (string, number or boolean), not {type(value).__name__}")


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `1m30s`, `2h`, `500ms`: systemd and Podman spellings both work."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as 30s, 5m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            pos = 0
            seconds = 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"invalid duration {value!r}: use seconds or e.g. 30s, 5m, 1h30m, 500ms")
    else:
        raise ValueError("a duration must be a number of seconds or a string such as 30s, 5m, 1h30m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, AfterValidator(check_text)]
EnvKey = Annotated[str, AfterValidator(check_env_key)]
EnvValue = Annotated[str, BeforeValidator(env_scalar)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
ImageRef = Annotated[str, AfterValidator(check_image)]
Size = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
                 AfterValidator(check_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
