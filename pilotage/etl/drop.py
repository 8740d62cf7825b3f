"""Finding drops and checking them against their control file.

This is the only place the loader touches file bytes in Python: to hash them
(SPEC.md requires the SHA-256 of control.csv to match), to count their lines
and to read their header line. Everything about the rows themselves is left
to DuckDB.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from pilotage.etl.spec import CONTROL_FILE, FILES, FILES_BY_NAME, FileSpec

BOM = b"\xef\xbb\xbf"


class DropRefused(Exception):
    """The drop cannot be loaded at all; nothing of it is loaded."""

    def __init__(self, drop_path: Path, reason: str, file: str | None = None):
        self.drop_path = drop_path
        self.file = file
        self.reason = reason
        where = f"{drop_path}/{file}" if file else str(drop_path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class DropFile:
    """A data file of a drop, checked against control.csv."""

    spec: FileSpec
    path: Path
    sha256: str
    rows: int  # data lines: non-blank lines after the header
    header: tuple[str, ...]
    blank_lines: int
    # byte offset of every line end ("\n"), found while counting lines: cutting the rejected
    # lines out later (the quarantine keeps them as written) needs no second pass over the file
    line_ends: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.header if c not in self.spec.column_names)


@dataclass(frozen=True)
class Drop:
    """A drop folder whose control file agrees with its data files."""

    date: date
    path: Path
    files: tuple[DropFile, ...]
    fingerprint: str
    warnings: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(f.path.stat().st_size for f in self.files)


def drop_date(path: Path) -> date | None:
    """The extract date a folder name gives, or None if it is not YYYY-MM-DD."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", path.name):
        return None
    try:
        return date.fromisoformat(path.name)
    except ValueError:
        return None


def find_drops(paths: list[Path]) -> list[Path]:
    """Drop folders named by `paths`: each a drop, or a folder of drops.

    Sorted by extract date, so that a backlog loads in the order it was made.
    """
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        if drop_date(path) is not None or (path / CONTROL_FILE).exists():
            found.append(path)
            continue
        # a drop is a dated folder; an undated one with a control file is a misnamed drop, to be refused
        children = [c for c in sorted(path.iterdir())
                    if c.is_dir() and (drop_date(c) is not None or (c / CONTROL_FILE).exists())]
        if not children:
            raise FileNotFoundError(f"{path}: neither a drop folder (YYYY-MM-DD) nor a folder of drops")
        found.extend(children)
    return sorted(found, key=lambda p: (drop_date(p) or date.min, str(p)))


def inspect_drop(path: Path) -> Drop:
    """Check a drop's completeness; raise DropRefused if it is incomplete or unreadable."""
    extract_date = drop_date(path)
    if extract_date is None:
        raise DropRefused(path, "the folder name is not an extract date YYYY-MM-DD")
    control = _read_control(path)
    warnings = []
    files = []
    for name in sorted(p.name for p in path.iterdir() if p.is_file()):
        if name in FILES_BY_NAME and name not in control:
            raise DropRefused(path, "the file is not listed in control.csv", name)
    for spec in FILES:
        if spec.filename not in control:
            if spec.required:
                raise DropRefused(path, "a required file is missing (not in control.csv)", spec.filename)
            continue
        files.append(_check_file(path, spec, *control[spec.filename]))
    for name in sorted(set(control) - set(FILES_BY_NAME)):
        warnings.append(f"{name}: listed in control.csv but not a file of the interface; ignored")
    for f in files:
        for extra in f.extra_columns:
            warnings.append(f"{f.spec.filename}: unknown column {extra!r} ignored")
    fingerprint = _fingerprint({f.spec.filename: f.sha256 for f in files})
    return Drop(extract_date, path, tuple(files), fingerprint, tuple(warnings))


def _fingerprint(hashes: dict[str, str]) -> str:
    """Identity of a drop's content: its data files and their hashes."""
    text = "\n".join(f"{spec.filename};{hashes[spec.filename]}" for spec in FILES if spec.filename in hashes)
    return hashlib.sha256(text.encode()).hexdigest()


def read_control_fingerprint(path: Path) -> tuple[date, str] | None:
    """(extract date, fingerprint) as the control file states them, without hashing the files.

    Enough to recognise a drop already loaded; None if the control file is unusable.
    """
    extract_date = drop_date(path)
    if extract_date is None:
        return None
    try:
        control = _read_control(path)
    except DropRefused:
        return None
    return extract_date, _fingerprint({name: sha for name, (_, sha) in control.items() if name in FILES_BY_NAME})


def _read_control(path: Path) -> dict[str, tuple[int, str]]:
    control_path = path / CONTROL_FILE
    if not control_path.is_file():
        raise DropRefused(path, "control.csv is missing: the drop is incomplete")
    try:
        text = control_path.read_bytes().removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DropRefused(path, f"not UTF-8 ({exc.reason} at byte {exc.start})", CONTROL_FILE) from None
    reader = csv.reader(io.StringIO(text), delimiter=";", quotechar='"')
    rows = [row for row in reader if row]
    if not rows or rows[0] != ["file", "rows", "sha256"]:
        raise DropRefused(path, "line 1: the header must be file;rows;sha256", CONTROL_FILE)
    control = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 3 or not row[1].isdigit() or not re.fullmatch(r"[0-9a-f]{64}", row[2]):
            raise DropRefused(path, f"line {line}: expected file;rows;sha256, got {';'.join(row)!r}", CONTROL_FILE)
        if row[0] in control:
            raise DropRefused(path, f"line {line}: {row[0]} is listed twice", CONTROL_FILE)
        control[row[0]] = (int(row[1]), row[2])
    return control


def _check_file(drop_path: Path, spec: FileSpec, expected_rows: int, expected_sha: str) -> DropFile:
    path = drop_path / spec.filename
    if not path.is_file():
        raise DropRefused(drop_path, "listed in control.csv but absent: the drop is incomplete", spec.filename)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != expected_sha:
        raise DropRefused(drop_path, f"sha256 is {sha}, control.csv says {expected_sha}", spec.filename)
    header = _header(drop_path, spec, data)
    lines, blank, ends = _count_lines(data)
    rows = max(lines - 1 - blank, 0)
    if rows != expected_rows:
        raise DropRefused(drop_path, f"{rows} data rows, control.csv says {expected_rows}", spec.filename)
    return DropFile(spec, path, sha, rows, header, blank, ends)


def _count_lines(data: bytes) -> tuple[int, int, np.ndarray]:
    """(lines, blank lines, byte offsets of the line ends) of a file's bytes.

    numpy finds the line ends in one vectorised pass (it releases the GIL, so
    the drops' inspections run in parallel): `bytes.count` and substring
    searches for blank lines cost three times as much and hold the GIL.
    A blank line is a line end followed by another, with at most a CR between.
    """
    octets = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(octets == 10)
    lines = len(ends) + (1 if data and not data.endswith(b"\n") else 0)
    gaps = np.diff(ends)
    blank = int(np.count_nonzero(gaps == 1))
    crlf = ends[:-1][gaps == 2]
    blank += int(np.count_nonzero(octets[crlf + 1] == 13))
    return lines, blank + (1 if data.startswith((b"\n", b"\r\n")) else 0), ends


def _header(drop_path: Path, spec: FileSpec, data: bytes) -> tuple[str, ...]:
    start = len(BOM) if data.startswith(BOM) else 0
    end = data.find(b"\n", start)
    first = data[start:end if end >= 0 else len(data)].rstrip(b"\r")  # not split(): it would copy the file
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DropRefused(drop_path, f"line 1: not UTF-8 ({exc.reason} at byte {exc.start})", spec.filename) from None
    header = tuple(next(csv.reader([text], delimiter=";", quotechar='"'), []))
    missing = [c for c in spec.column_names if c not in header]
    if missing:
        raise DropRefused(drop_path, "line 1: missing column(s) " + ", ".join(missing), spec.filename)
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DropRefused(drop_path, "line 1: duplicated column(s) " + ", ".join(duplicated), spec.filename)
    return header
