"""pilotage.toml: read into frozen dataclasses; every wrong or missing setting named, with the file."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from pilotage.reports.delivery.config import Config, ConfigError, example_config, find_config, load_config

GOOD = """
[paths]
warehouse = "w.duckdb"
drops = "drops"
output = "out"
recipients = "recipients.csv"

[smtp]
host = "smtp.example.org"
security = "ssl"
user = "pilotage"
password_env = "PILOTAGE_SMTP_PASSWORD"

[mail]
sender = "Pilotage <pilotage@example.org>"

[weekly]
weekday = "mardi"
"""


def write(tmp_path, text):
    path = tmp_path / "pilotage.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_found_in_working_folder(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.path == path
    assert config.warehouse == tmp_path / "w.duckdb" and config.output == tmp_path / "out"
    assert config.archive == tmp_path / "out" / "deliveries.sqlite" and config.alerts is None
    assert (config.smtp.port, config.smtp.security, config.smtp.timeout) == (465, "ssl", 30.0)
    assert config.weekday == 1 and config.weekday_name == "tuesday"
    assert config.smtp.password({"PILOTAGE_SMTP_PASSWORD": "x"}) == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sender = "other"


def test_example_is_valid_and_commented(tmp_path):
    text = example_config()
    assert text.count("#") > 10 and "password =" not in text
    config = load_config(write(tmp_path, text))
    assert isinstance(config, Config) and config.smtp.password_env == "PILOTAGE_SMTP_PASSWORD"
    assert config.weekday == 0 and config.smtp.port == 587


@pytest.mark.parametrize("change, key, words", [
    (lambda d: d["paths"].pop("warehouse"), "paths.warehouse", "missing"),
    (lambda d: d["smtp"].pop("host"), "smtp.host", "missing"),
    (lambda d: d.pop("mail"), "mail.sender", "missing"),
    (lambda d: d["smtp"].update(security="tls"), "smtp.security", "starttls, ssl, none"),
    (lambda d: d["smtp"].update(port=70000), "smtp.port", "1 to 65535"),
    (lambda d: d["smtp"].update(port="25"), "smtp.port", "integer"),
    (lambda d: d["smtp"].update(timeout=0), "smtp.timeout", "seconds"),
    (lambda d: d["smtp"].update(password="hunter2"), "smtp.password", "never written in the file"),
    (lambda d: d["smtp"].update(password_env="hunter 2!"), "smtp.password_env", "not an environment variable"),
    (lambda d: d["smtp"].pop("password_env"), "smtp.password_env", "smtp.user is set"),
    (lambda d: d["smtp"].update(hots="x"), "smtp.hots", "unknown setting"),
    (lambda d: d.update(alert={}), "alert", "unknown section"),
    (lambda d: d["mail"].update(sender="pilotage"), "mail.sender", "not an email address"),
    (lambda d: d["weekly"].update(weekday="someday"), "weekly.weekday", "not a weekday"),
    (lambda d: d["weekly"].update(weekday=8), "weekly.weekday", "not a weekday"),
    (lambda d: d["paths"].update(drops=3), "paths.drops", "must be a string"),
])
def test_wrong_or_missing_setting_named(tmp_path, change, key, words):
    data = tomllib.loads(GOOD)
    change(data)
    path = write(tmp_path, _dump(data))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.key == key
    assert str(error.value).startswith(f"{path}: {key}: ") and words in str(error.value)


def test_password_variable_unset_named(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="PILOTAGE_SMTP_PASSWORD.*not set") as error:
        config.smtp.password({})
    assert error.value.key == "smtp.password_env"


def test_no_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no pilotage.toml in .*pilotage init"):
        find_config(folder=tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "other.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[paths\n"))


def _dump(data: dict) -> str:
    def value(v):
        return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return "\n".join(f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                     for section, table in data.items())
