"""Delivery: configuration, recipients, SMTP sending, the archive of sent messages, message building.

Names are imported on first use (like `pilotage.cubes`), so that reading the
configuration does not import the mail machinery.
"""

from __future__ import annotations

from importlib import import_module

_HOME = {
    "Config": "pilotage.delivery.config",
    "ConfigError": "pilotage.delivery.config",
    "SmtpSettings": "pilotage.delivery.config",
    "load_config": "pilotage.delivery.config",
    "find_config": "pilotage.delivery.config",
    "example_config": "pilotage.delivery.config",
    "Recipient": "pilotage.delivery.recipients",
    "RecipientsError": "pilotage.delivery.recipients",
    "load_recipients": "pilotage.delivery.recipients",
    "send_message": "pilotage.delivery.smtp",
    "SendResult": "pilotage.delivery.smtp",
    "DeliveryError": "pilotage.delivery.smtp",
    "PermanentFailure": "pilotage.delivery.smtp",
    "TemporaryFailure": "pilotage.delivery.smtp",
    "Archive": "pilotage.delivery.archive",
    "ArchiveError": "pilotage.delivery.archive",
    "ArchivedMessage": "pilotage.delivery.archive",
    "build_weekly_message": "pilotage.delivery.message",
    "attachment_digests": "pilotage.delivery.message",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'pilotage.delivery' has no attribute {name!r}")
