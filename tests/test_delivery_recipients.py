"""Recipients files (CSV and YAML): scopes as cube Scopes; errors name the file, the line and the problem."""

from __future__ import annotations

import pytest

from pilotage.cubes import Scope
from pilotage.reports.delivery.recipients import Recipient, RecipientsError, load_recipients

CSV = """\
# who gets the weekly summaries
address;name;scope
dg@example.org;Direction générale;national
caen@example.org;DR Basse-Normandie;region_2005:25

normandie@example.org;DR Normandie;region_2016:Normandie
nord@example.org;"DR Nord; Picardie";region_2005:31,22
manche@example.org;UT Manche;department:14,50
"""

YAML = """\
recipients:
  - address: dg@example.org
    name: Direction générale
    scope: national
  - address: caen@example.org
    name: DR Basse-Normandie
    scope: {region_2005: [25]}
  - address: manche@example.org
    name: UT
    scope: department:14,50
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv(tmp_path):
    recipients = load_recipients(write(tmp_path, "r.csv", CSV))
    assert [r.address for r in recipients] == ["dg@example.org", "caen@example.org", "normandie@example.org",
                                               "nord@example.org", "manche@example.org"]
    assert recipients[0].scope == Scope.nation() and recipients[0].scope_label == "France entière"
    assert recipients[1].scope == Scope.of("region_2005", "25") and recipients[1].scope_label == "Basse-Normandie"
    assert recipients[2].scope == Scope.of("region_2016", "28")
    assert recipients[3].name == "DR Nord; Picardie" and recipients[3].scope.codes == {"31", "22"}
    assert recipients[4].scope.departments() == {"14", "50"} and recipients[4].line == 8
    assert recipients[1].formatted == "DR Basse-Normandie <caen@example.org>"


def test_yaml_same_as_csv(tmp_path):
    recipients = load_recipients(write(tmp_path, "r.yml", YAML))
    assert recipients == (Recipient("dg@example.org", "Direction générale", Scope.nation()),
                          Recipient("caen@example.org", "DR Basse-Normandie", Scope.of("region_2005", "25")),
                          Recipient("manche@example.org", "UT", Scope.of("department", "14", "50")))
    assert [r.line for r in recipients] == [2, 5, 8]


@pytest.mark.parametrize("row, words", [
    ("caen.example.org;DR;region_2005:25", "'caen.example.org' is not an email address"),
    ("caen@example.org;DR;region_2005:99", "unknown region '99' in region_2005"),
    ("caen@example.org;DR;region_2016:25", "unknown region '25' in region_2016"),
    ("caen@example.org;DR;department:999", "unknown department '999'"),
    ("caen@example.org;DR;canton:3", "unknown scope level 'canton'"),
    ("caen@example.org;DR;region:25", "region_2005"),
    ("caen@example.org;DR;Basse-Normandie", "is not a scope"),
    ("caen@example.org;DR", "expected 3 columns"),
    (";DR;national", "missing address"),
    ("dg@example.org;Again;national", "dg@example.org is already listed (line 2)"),
])
def test_csv_errors_name_file_and_line(tmp_path, row, words):
    path = write(tmp_path, "r.csv", f"address;name;scope\ndg@example.org;DG;national\n\n{row}\n")
    with pytest.raises(RecipientsError) as error:
        load_recipients(path)
    assert error.value.line == 4 and str(error.value).startswith(f"{path}, line 4: ")
    assert words in str(error.value)


def test_yaml_errors_name_line(tmp_path):
    path = write(tmp_path, "r.yaml", YAML.replace("[25]", "[25, 77]"))
    with pytest.raises(RecipientsError, match=r"r\.yaml, line 5: scope: unknown region '77'"):
        load_recipients(path)
    path = write(tmp_path, "r.yaml", YAML + "  - address: x@example.org\n    nom: X\n    scope: national\n")
    with pytest.raises(RecipientsError, match=r"line 11: unknown key\(s\) nom"):
        load_recipients(path)
    path = write(tmp_path, "r.yaml", "recipients:\n  - address: [\n")
    with pytest.raises(RecipientsError, match="not valid YAML"):
        load_recipients(path)


def test_file_errors(tmp_path):
    with pytest.raises(RecipientsError, match="file not found"):
        load_recipients(tmp_path / "none.csv")
    with pytest.raises(RecipientsError, match="no recipient"):
        load_recipients(write(tmp_path, "r.csv", "address;name;scope\n"))
    with pytest.raises(RecipientsError, match="unknown format"):
        load_recipients(write(tmp_path, "r.json", "[]"))
