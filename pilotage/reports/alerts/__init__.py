"""Alerts (issue #5, part 4): rules watched every day, a state per (rule, member), an email on each change.

- `rules`: `alerts.yml`, parsed and checked;
- `evaluate`: every rule through the cube, one query per rule for all its members;
- `state`: the states and their history in the warehouse; a change of state is an event;
- `notify`: one email per recipient and run listing its events, never sent twice;
- `run`: the daily run (`run_alerts`) and the rows of `pilotage alerts list|history`.

Names are imported on first use, like `pilotage.reports.delivery` (the evaluation function is
`pilotage.reports.alerts.evaluate.evaluate`: its name is its module's).
"""

from __future__ import annotations

from pilotage.lazy import lazy_getattr

_HOME = {
    "AlertRulesError": "pilotage.reports.alerts.rules",
    "Rule": "pilotage.reports.alerts.rules",
    "Rules": "pilotage.reports.alerts.rules",
    "Threshold": "pilotage.reports.alerts.rules",
    "load_rules": "pilotage.reports.alerts.rules",
    "parse_rules": "pilotage.reports.alerts.rules",
    "example_rules": "pilotage.reports.alerts.rules",
    "example_rules_path": "pilotage.reports.alerts.rules",
    "Observation": "pilotage.reports.alerts.evaluate",
    "Evaluation": "pilotage.reports.alerts.evaluate",
    "AlertEvent": "pilotage.reports.alerts.state",
    "record": "pilotage.reports.alerts.state",
    "alert_states": "pilotage.reports.alerts.state",
    "alert_history": "pilotage.reports.alerts.state",
    "build_alert_message": "pilotage.reports.alerts.notify",
    "AlertRun": "pilotage.reports.alerts.run",
    "run_alerts": "pilotage.reports.alerts.run",
    "format_states": "pilotage.reports.alerts.run",
    "format_history": "pilotage.reports.alerts.run",
}

__all__ = sorted(_HOME)

__getattr__ = lazy_getattr(__name__, _HOME)
