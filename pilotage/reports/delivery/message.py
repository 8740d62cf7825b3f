"""The weekly summary email of one recipient, from files already rendered.

The reports layer renders the HTML body (KPIs, a short table, and the main
chart referenced as `<img src="cid:chart@pilotage">`), the chart as PNG, the
workbook and the HTML report; this module only assembles them::

    multipart/mixed
      multipart/alternative
        text/plain                 (the body's text, for clients without HTML)
        multipart/related
          text/html                (the body)
          image/png                (the chart, Content-ID <chart@pilotage>, inline)
      application/vnd.openxmlformats-officedocument.spreadsheetml.sheet   (attached)
      text/html                    (attached report)

Attachments are base64-encoded as bytes, so each arrives byte for byte
(`attachment_digests` gives their sha256, for the archive).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from html.parser import HTMLParser
from pathlib import Path

CHART_CID = "chart@pilotage"  # the body shows the chart with <img src="cid:chart@pilotage">
MIME_TYPES = {
    ".xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ".html": ("text", "html"),
    ".htm": ("text", "html"),
    ".pdf": ("application", "pdf"),
    ".csv": ("text", "csv"),
    ".png": ("image", "png"),
    ".ods": ("application", "vnd.oasis.opendocument.spreadsheet"),
}
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def week_subject(region_label: str, week_label: str) -> str:
    """'Synthèse hebdomadaire — Basse-Normandie — semaine 11 (2006-W11)'."""
    match = _WEEK.match(week_label)
    if not match or not 1 <= int(match.group(2)) <= 53:
        raise ValueError(f"{week_label!r} is not an ISO week YYYY-Www (e.g. 2006-W11)")
    return f"Synthèse hebdomadaire — {region_label} — semaine {int(match.group(2))} ({week_label})"


def chart_cid(index: int) -> str:
    """The Content-ID of the body's index-th chart (0: chart@pilotage, 1: chart-2@pilotage, ...)."""
    return CHART_CID if index == 0 else f"chart-{index + 1}@pilotage"


def build_weekly_message(sender: str, recipient, region_label: str, week_label: str, html_body: str,
                         inline_png: bytes | Sequence[bytes] | None, attachments: Sequence[Path | str], *,
                         text_body: str | None = None, message_id: str | None = None) -> EmailMessage:
    """The weekly summary for one recipient (a `Recipient`, or an address / 'Name <address>').

    `inline_png`: the chart, or the charts, that the body shows, the first with
    `<img src="cid:chart@pilotage">`, the next ones with `cid:chart-2@pilotage`...
    (`chart_cid`); every chart given must be shown and every chart shown given.
    `text_body` defaults to the text of the HTML body.
    """
    images = [] if inline_png is None else [inline_png] if isinstance(inline_png, bytes) else list(inline_png)
    for index, image in enumerate(images):
        if f"cid:{chart_cid(index)}" not in html_body:
            raise ValueError(f"the chart is given but the HTML body does not show it (<img src=\"cid:{chart_cid(index)}\">)")
        if not image.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("the inline chart is not a PNG image")
    extra = re.findall(r"cid:(chart(?:-\d+)?@pilotage)", html_body)
    missing = sorted(set(extra) - {chart_cid(i) for i in range(len(images))})
    if missing:
        raise ValueError(f"the HTML body shows cid:{missing[0]} but no chart is given for it")
    to = recipient.formatted if hasattr(recipient, "formatted") else str(recipient)
    if not parseaddr(to)[1]:
        raise ValueError(f"{to!r} is not an address")
    sender_address = parseaddr(sender)[1]
    if not sender_address:
        raise ValueError(f"{sender!r} is not an address")

    message = EmailMessage()
    message["Subject"] = week_subject(region_label, week_label)
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = message_id or make_msgid("pilotage", domain=sender_address.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic replies
    message["Content-Language"] = "fr"
    message.set_content(text_body if text_body is not None else html_to_text(html_body))
    message.add_alternative(html_body, subtype="html")
    html_part = message.get_payload()[1]
    for index, image in enumerate(images):
        html_part.add_related(image, "image", "png", cid=f"<{chart_cid(index)}>", disposition="inline",
                              filename="graphique.png" if index == 0 else f"graphique-{index + 1}.png")
    for attachment in attachments:
        path = Path(attachment)
        maintype, subtype = _mime_type(path)
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message


def _mime_type(path: Path) -> tuple[str, str]:
    if path.suffix.lower() in MIME_TYPES:
        return MIME_TYPES[path.suffix.lower()]
    guessed, _ = mimetypes.guess_type(path.name)
    return tuple(guessed.split("/", 1)) if guessed else ("application", "octet-stream")


def attachment_digests(message: EmailMessage) -> list[dict]:
    """The files a message carries (attachments and inline images): name, type, size, sha256, for the archive."""
    found = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() not in ("attachment", "inline"):
            continue
        data = part.get_payload(decode=True) or b""
        found.append({"name": part.get_filename(), "type": part.get_content_type(),
                      "disposition": part.get_content_disposition(), "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    return found


class _Text(HTMLParser):
    _BLOCKS = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "li", "table", "section", "header", "footer"}
    _SKIP = {"style", "script", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("\t")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(f"[{alt}]")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [re.sub(r"[ \t]+", lambda m: "\t" if "\t" in m.group() else " ", line).strip()
             for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n"
