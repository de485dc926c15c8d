"""The Atom feed (RFC 4287) of active alerts, as public alert hubs consume it. Pure.

Alert hubs (Google Public Alerts, WMO's alert hub, national aggregators) poll an index
feed and fetch the CAP message each entry links to; this follows OASIS "Example Practices:
CAP Feeds": one entry per alert, whose `link rel="alternate" type="application/cap+xml"`
points at the alert's CAP XML (`/cap/{alert id}.xml`), whose `id` stays the same for the
alert's whole life and whose `updated` moves with each new message, so a hub refetches
exactly the alerts that changed. Each entry also repeats the CAP fields hubs filter on
(event, severity, urgency, area ...) in the CAP namespace, as the US NWS index feed does,
so a reader can triage without fetching every CAP file.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from lxml import etree

from services.alerts import texts
from services.alerts.cap import CAP_MIME, CAP_NS, CAP_SEVERITY, expires_at, urgency_for
from services.alerts.model import AlertMessage, CapSource, cap_time

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_MIME = "application/atom+xml"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def is_active(msg: AlertMessage, now: datetime, source: CapSource | None = None) -> bool:
    """Whether an alert belongs in the feed: public, and not resolved, cancelled or expired
    at `now`.

    The feed is public: alert hubs and anyone may poll it and re-broadcast what it lists.
    An `operators` alert (a device's own health) is scope Restricted in its CAP and means
    nothing to the public, so it is not listed; operators see it in the alerts API and on
    the ops page, and fetch its CAP by its URL.
    """
    if msg.audience != "public":
        return False
    if msg.state == "resolved" or msg.msg_type == "Cancel":
        return False
    return expires_at(msg, source or CapSource()) > now


def _atom(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _cap(parent: etree._Element, tag: str, text: str) -> None:
    etree.SubElement(parent, f"{{{CAP_NS}}}{tag}").text = text


def build_feed(
    messages: Iterable[AlertMessage],
    source: CapSource | None = None,
    *,
    now: datetime,
    language: texts.Language = "en",
) -> bytes:
    """The Atom feed of the active alerts among `messages` (the latest message of each).

    `now` decides expiry and is the feed's `updated` when no alert is active (RFC 4287
    requires `updated` on the feed). Entries are newest first; their titles and summaries
    are in `language` (`en` or `km`), tagged with `xml:lang`.
    """
    src = source or CapSource()
    active = sorted(
        (m for m in messages if is_active(m, now, src)), key=lambda m: m.sent, reverse=True
    )
    feed_url = f"{src.base_url.rstrip('/')}/cap/feed.atom"
    root = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS, "cap": CAP_NS})
    root.set(_XML_LANG, texts.CAP_LANGUAGE[language])
    _atom(root, "id", feed_url)
    name = src.sender_name_en if language == "en" else src.sender_name_km
    title = "CityWatch alerts" if language == "en" else "ការជូនដំណឹង CityWatch"
    _atom(root, "title", texts.nfc(f"{title}: {name}"))
    _atom(root, "updated", cap_time(active[0].sent if active else now, src.tz))
    author = _atom(root, "author")
    _atom(author, "name", texts.nfc(name))
    if "@" in src.sender:
        _atom(author, "email", src.sender)
    link = _atom(root, "link")
    link.attrib.update({"rel": "self", "type": ATOM_MIME, "href": feed_url})
    _atom(root, "generator", "CityWatch")
    for msg in active:
        text = texts.render(msg, language, src.tz)
        entry = _atom(root, "entry")
        # One id per alert for its whole life (RFC 4287 4.2.6: an entry's id never changes).
        _atom(entry, "id", src.cap_url(msg.alert_id))
        _atom(entry, "title", text.headline)
        _atom(entry, "updated", cap_time(msg.sent, src.tz))
        _atom(entry, "published", cap_time(msg.onset, src.tz))
        _atom(entry, "summary", text.description)
        cap_link = _atom(entry, "link")
        cap_link.attrib.update(
            {"rel": "alternate", "type": CAP_MIME, "href": src.cap_url(msg.alert_id)}
        )
        web_link = _atom(entry, "link")
        web_link.attrib.update(
            {"rel": "related", "type": "text/html", "href": src.web_url(msg.alert_id)}
        )
        _cap(entry, "identifier", msg.identifier)
        _cap(entry, "event", text.event)
        _cap(entry, "sent", cap_time(msg.sent, src.tz))
        _cap(entry, "expires", cap_time(expires_at(msg, src), src.tz))
        _cap(entry, "status", msg.status)
        _cap(entry, "msgType", msg.msg_type)
        _cap(entry, "urgency", urgency_for(msg))
        _cap(entry, "severity", CAP_SEVERITY[msg.severity])
        _cap(entry, "certainty", msg.certainty)
        _cap(entry, "areaDesc", texts.place_name(msg.area.name, language, msg.area.name_km))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
