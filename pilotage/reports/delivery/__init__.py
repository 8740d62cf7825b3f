"""Delivery: configuration, recipients, SMTP sending, the archive of sent messages, message building.

Names are imported on first use (like `pilotage.cubes`), so that reading the
configuration does not import the mail machinery.
"""

from __future__ import annotations

from pilotage.lazy import lazy_getattr

_HOME = {
    "Config": "pilotage.reports.delivery.config",
    "ConfigError": "pilotage.reports.delivery.config",
    "SmtpSettings": "pilotage.reports.delivery.config",
    "load_config": "pilotage.reports.delivery.config",
    "find_config": "pilotage.reports.delivery.config",
    "example_config": "pilotage.reports.delivery.config",
    "Recipient": "pilotage.reports.delivery.recipients",
    "RecipientsError": "pilotage.reports.delivery.recipients",
    "load_recipients": "pilotage.reports.delivery.recipients",
    "send_message": "pilotage.reports.delivery.smtp",
    "SendResult": "pilotage.reports.delivery.smtp",
    "DeliveryError": "pilotage.reports.delivery.smtp",
    "PermanentFailure": "pilotage.reports.delivery.smtp",
    "TemporaryFailure": "pilotage.reports.delivery.smtp",
    "Archive": "pilotage.reports.delivery.archive",
    "ArchiveError": "pilotage.reports.delivery.archive",
    "ArchivedMessage": "pilotage.reports.delivery.archive",
    "build_weekly_message": "pilotage.reports.delivery.message",
    "attachment_digests": "pilotage.reports.delivery.message",
}

__all__ = sorted(_HOME)

__getattr__ = lazy_getattr(__name__, _HOME)
