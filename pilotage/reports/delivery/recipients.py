"""The recipients of the emailed summaries: a CSV (`address;name;scope`) or YAML file.

Each recipient has a scope -- the nation, one or more 2005 or 2016 regions, or
departments -- a `pilotage.cubes.Scope`, which the cube applies to every fact:
a recipient receives only the data of its scope.

CSV (`;`-separated, UTF-8, an optional header line, `#` comments)::

    address;name;scope
    dg@example.org;Direction générale;national
    caen@example.org;DR Basse-Normandie;region_2005:25
    normandie@example.org;DR Normandie;region_2016:28
    manche@example.org;UT Manche;department:50

YAML::

    recipients:
      - address: caen@example.org
        name: DR Basse-Normandie
        scope: region_2005:25          # or {region_2005: [25, 23]}, or national

A scope's members are codes or names ("region_2005:Basse-Normandie").
Errors name the file, the line and the problem.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formataddr
from pathlib import Path

import yaml

from pilotage.cubes.model import GEOGRAPHY, members
from pilotage.cubes.scope import Scope, ScopeError

_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_NATIONAL = ("", "nation", "national", "nationale", "france")
_LEVEL_ALIASES = {"departement": "department", "département": "department", "dept": "department",
                  "region": None, "région": None}


class RecipientsError(ValueError):
    """A problem in the recipients file; the message names the file and the line."""

    def __init__(self, path: Path | None, line: int | None, problem: str):
        self.path, self.line, self.problem = path, line, problem
        where = str(path) if path else "recipients"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str
    scope: Scope
    line: int | None = field(default=None, compare=False)

    @property
    def formatted(self) -> str:
        """`Name <address>` for a To: header."""
        return formataddr((self.name, self.address)) if self.name else self.address

    @property
    def scope_label(self) -> str:
        """The scope in words: 'France entière', 'Basse-Normandie', 'Calvados, Manche'."""
        return scope_label(self.scope)


def scope_label(scope: Scope) -> str:
    if scope.is_national:
        return "France entière"
    labels = dict(members(scope.level))
    return ", ".join(labels[code] for code in sorted(scope.codes))


def load_recipients(path: str | os.PathLike) -> tuple[Recipient, ...]:
    """Read a recipients file: `.csv` (or `.txt`) or `.yml`/`.yaml`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecipientsError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipientsError(path, None, f"cannot read: {exc}") from None
    if path.suffix.lower() in (".yml", ".yaml"):
        rows = _yaml_rows(text, path)
    elif path.suffix.lower() in (".csv", ".txt"):
        rows = _csv_rows(text, path)
    else:
        raise RecipientsError(path, None, "unknown format: the file name must end with .csv, .yml or .yaml")
    recipients: list[Recipient] = []
    seen: dict[str, int] = {}
    for line, values in rows:
        recipient = _recipient(values, path, line)
        key = recipient.address.lower()
        if key in seen:
            raise RecipientsError(path, line, f"{recipient.address} is already listed (line {seen[key]})")
        seen[key] = line
        recipients.append(recipient)
    if not recipients:
        raise RecipientsError(path, None, "no recipient")
    return tuple(recipients)


def _csv_rows(text: str, path: Path):
    header_done = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        cells = next(csv.reader(io.StringIO(raw), delimiter=";"))
        cells = [c.strip() for c in cells]
        if not header_done:
            header_done = True
            if cells and cells[0].lower() in ("address", "adresse", "email", "e-mail"):
                if [c.lower() for c in cells[:3]] not in (["address", "name", "scope"], ["adresse", "nom", "périmètre"],
                                                          ["email", "name", "scope"], ["e-mail", "name", "scope"]):
                    raise RecipientsError(path, number, f"header {';'.join(cells)!r}: expected address;name;scope")
                if len(cells) > 3:
                    raise RecipientsError(path, number, "expected 3 columns address;name;scope")
                continue
        if len(cells) != 3:
            raise RecipientsError(path, number, f"expected 3 columns address;name;scope separated by ';', "
                                                f"found {len(cells)}")
        yield number, {"address": cells[0], "name": cells[1], "scope": cells[2]}


def _yaml_rows(text: str, path: Path):
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipientsError(path, mark.line + 1 if mark else None, f"not valid YAML: "
                              f"{getattr(exc, 'problem', None) or exc}") from None
    if isinstance(data, Mapping):
        if set(data) != {"recipients"}:
            raise RecipientsError(path, node.start_mark.line + 1,
                                  "expected a list of recipients, or a mapping with the single key 'recipients'")
        node = next(v for k, v in node.value if k.value == "recipients")
        data = data["recipients"]
    if not isinstance(data, list):
        raise RecipientsError(path, (node.start_mark.line + 1) if node else None, "expected a list of recipients")
    for item, item_node in zip(data, node.value):
        line = item_node.start_mark.line + 1
        if not isinstance(item, Mapping):
            raise RecipientsError(path, line, "each recipient is a mapping with address, name and scope")
        unknown = sorted(str(k) for k in item if k not in ("address", "name", "scope"))
        if unknown:
            raise RecipientsError(path, line, f"unknown key(s) {', '.join(unknown)}; valid: address, name, scope")
        yield line, dict(item)


def _recipient(values: Mapping, path: Path, line: int) -> Recipient:
    address = values.get("address")
    if not isinstance(address, str) or not address.strip():
        raise RecipientsError(path, line, "missing address")
    address = address.strip()
    if not _ADDRESS.match(address):
        raise RecipientsError(path, line, f"{address!r} is not an email address")
    name = values.get("name")
    name = "" if name is None else str(name).strip()
    if any(c in name for c in "\r\n"):
        raise RecipientsError(path, line, "the name is on one line")
    if "scope" not in values:
        raise RecipientsError(path, line, "missing scope (national, region_2005:<codes>, region_2016:<codes> "
                                          "or department:<codes>)")
    try:
        scope = parse_scope(values["scope"])
    except ScopeError as exc:
        raise RecipientsError(path, line, f"scope: {exc}") from None
    return Recipient(address, name, scope, line)


def parse_scope(value) -> Scope:
    """'national', 'region_2005:25,23', 'region_2016:Normandie', {'department': [14, 50]}."""
    if value is None:
        return Scope.nation()
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ScopeError("a scope mapping has one level, e.g. {region_2005: [25, 23]}")
        ((level, codes),) = value.items()
        codes = codes if isinstance(codes, (list, tuple)) else [codes]
        return _scope(str(level), [_code(c) for c in codes])
    if not isinstance(value, str):
        raise ScopeError(f"{value!r} is not a scope (national, region_2005:25, department:14,50, ...)")
    text = value.strip()
    if text.lower() in _NATIONAL:
        return Scope.nation()
    level, sep, codes = text.partition(":")
    if not sep:
        raise ScopeError(f"{text!r} is not a scope: write national, or <level>:<codes> with level one of "
                         f"{', '.join(GEOGRAPHY)} (e.g. region_2005:25,23)")
    return _scope(level, [c.strip() for c in codes.split(",") if c.strip()])


def _code(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:02d}"  # YAML reads 25 as a number, and 01 as 1
    return str(value).strip()


def _scope(level: str, codes: list[str]) -> Scope:
    level = level.strip().lower().replace(" ", "_").replace("-", "_")
    level = _LEVEL_ALIASES.get(level, level)
    if level is None:
        raise ScopeError("say which regions: region_2005 (the 22+5 regions before 2016) or region_2016")
    if level not in GEOGRAPHY:
        raise ScopeError(f"unknown scope level {level!r}; valid: national, {', '.join(GEOGRAPHY)}")
    if not codes:
        raise ScopeError(f"a {level} scope needs at least one member")
    known = members(level)
    by_name = {_fold(label): code for code, label in known}
    codes_known = {code for code, _ in known}
    resolved = []
    for code in codes:
        if code in codes_known:
            resolved.append(code)
        elif code.isdigit() and len(code) == 1 and f"0{code}" in codes_known:
            resolved.append(f"0{code}")
        elif _fold(code) in by_name:
            resolved.append(by_name[_fold(code)])
        else:
            noun = "region" if level.startswith("region") else "department"
            raise ScopeError(f"unknown {noun} {code!r} in {level}; valid: "
                             f"{', '.join(f'{c} {n}' for c, n in known)}")
    return Scope(level, frozenset(resolved))


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "", text)
