"""Reading hostile input files: size caps, a file (not a directory), UTF-8 text or one error.

Every catalog and telemetry file goes through `read_text`, which raises FileRefused with one
message (and a line when there is one) instead of a traceback: missing, a directory, larger
than its cap, unreadable, binary, or not UTF-8.

The caps are `Limits`, from the environment (`Limits.from_env`):

    WAVEKIT_MAX_YAML_MB        packages.yaml                      default 10
    WAVEKIT_MAX_CSV_MB         each catalog CSV                   default 200
    WAVEKIT_MAX_TELEMETRY_MB   each telemetry file                default 200
    WAVEKIT_MAX_YAML_ALIASES   YAML aliases (*name) per document  default 50
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

MB = 1024 * 1024
_CHUNK = 8 * MB


class FileRefused(Exception):
    """A whole file cannot be used; `message` says why, `line` where (when known)."""

    def __init__(self, message: str, line: int | None = None, field: str = "file") -> None:
        self.message, self.line, self.field = message, line, field
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    """Caps on input files (bytes) and on YAML aliases."""

    yaml_bytes: int = 10 * MB
    csv_bytes: int = 200 * MB
    telemetry_bytes: int = 200 * MB
    yaml_aliases: int = 50

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Limits from WAVEKIT_MAX_* variables; ValueError naming a variable that is not a
        positive number."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, var, scale in (("yaml_bytes", "WAVEKIT_MAX_YAML_MB", MB),
                                 ("csv_bytes", "WAVEKIT_MAX_CSV_MB", MB),
                                 ("telemetry_bytes", "WAVEKIT_MAX_TELEMETRY_MB", MB),
                                 ("yaml_aliases", "WAVEKIT_MAX_YAML_ALIASES", 1)):
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if not (0 <= number <= 1_000_000):  # also false for NaN
                raise ValueError(f"{var}={raw[:40]!r} is not a number from 0 to 1,000,000")
            values[name] = int(number * scale)
        return cls(**values)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Limits.{f.name} must be a whole number >= 0, not {value!r}")


def _size(n: int) -> str:
    return f"{n / MB:,.1f} MB" if n >= MB else f"{n:,} bytes"


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; FileRefused if it is missing, not a regular file or over the cap."""
    try:
        if not path.exists():
            raise FileRefused("file is missing")
        if path.is_dir():
            raise FileRefused("is a directory, not a file")
        if not path.is_file():
            raise FileRefused("is not a regular file")
        size = path.stat().st_size
        if size > max_bytes:
            raise FileRefused(f"is {_size(size)}, larger than the {_size(max_bytes)} allowed")
        # In chunks (read(n) would allocate n bytes up front) and never past the cap: the
        # file may grow between stat and read.
        chunks, total = [], 0
        with path.open("rb") as fh:
            while chunk := fh.read(min(_CHUNK, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise FileRefused(f"is larger than the {_size(max_bytes)} allowed")
    except OSError as exc:
        raise FileRefused(f"cannot be read: {exc.strerror or exc.__class__.__name__}") from None
    return b"".join(chunks)


def decode_text(data: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped); FileRefused for binary or other encodings."""
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise FileRefused("is a binary file (it contains NUL bytes), not UTF-8 text", line)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileRefused(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save it as UTF-8", line) from None


def read_text(path: Path, max_bytes: int) -> str:
    """read_bytes then decode_text."""
    return decode_text(read_bytes(path, max_bytes))
