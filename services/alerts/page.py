"""The human-readable page of one alert, in English and Khmer: what CAP `<web>` opens.

CAP 1.2 section 3.2.2 defines `<web>` as "the identifier of the hyperlink associating
additional information with the alert message": a person follows it, so it must be a page,
not the JSON of `GET /alerts/{id}`. Served by the alerts service beside the CAP files
(`GET /alerts/{id}.html`), built from the same row, history and `AlertMessage` as the CAP
message, so the page and the message cannot disagree. Pure: data in, HTML text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any, Final

from services.alerts import texts
from services.alerts.model import AlertMessage, CapSource, cap_time

__all__ = ["alert_page"]

_STATUS_BANNER: Final[Mapping[str, tuple[str, str]]] = {
    "Exercise": ("EXERCISE — not a real alert", "សមយុទ្ធ — មិនមែនជាការព្រមានពិតទេ"),
    "Test": ("TEST — not a real alert", "សារសាកល្បង — មិនមែនជាការព្រមានពិតទេ"),
}
_STATE_WORDS: Final[Mapping[str, tuple[str, str]]] = {
    "firing": ("active", "កំពុងមាន"),
    "escalated": ("escalated", "កើនកម្រិត"),
    "deescalated": ("lowered", "បន្ថយកម្រិត"),
    "acknowledged": ("acknowledged by operators", "ប្រតិបត្តិករបានទទួលស្គាល់"),
    "resolved": ("ended", "បានបញ្ចប់"),
}
_CSS: Final = """
body{font:16px/1.5 system-ui,'Noto Sans Khmer',sans-serif;margin:0 auto;max-width:46rem;
padding:1rem;color:#1b1b1b}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin-top:1.5rem}
.banner{background:#5b2a86;color:#fff;font-weight:700;padding:.6rem;border-radius:4px}
.sev-danger{border-left:6px solid #8b0000}.sev-warning{border-left:6px solid #d35400}
.sev-watch{border-left:6px solid #e6b800}.sev-advisory{border-left:6px solid #2e86c1}
section{padding-left:.8rem;margin:1rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:600}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.25rem;
text-align:left}
"""


def _t(at: datetime | None, source: CapSource) -> str:
    return cap_time(at, source.tz) if at is not None else "—"


def _either(row: Mapping[str, Any], name: str, fallback: str) -> Any:
    """`row[name]`, else `row[fallback]` (rows recorded before `name` was kept)."""
    value = row.get(name)
    return row.get(fallback) if value is None else value


def _num(value: Any) -> str:
    return "—" if value is None else texts.format_number(float(value), "en")


def alert_page(
    alert: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    msg: AlertMessage,
    source: CapSource,
) -> str:
    """The alert's page: both languages' headline, description and instruction, its area,
    severity, CAP status, times, the value that raised it and its history."""
    rendered = texts.render_all(msg, source.tz)
    en, km = rendered["en"], rendered["km"]
    area_en = texts.place_name(msg.area.name, "en", msg.area.name_km)
    area_km = texts.place_name(msg.area.name, "km", msg.area.name_km)
    banner = _STATUS_BANNER.get(msg.status)
    unit = escape(msg.unit)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{escape(en.headline)} — CityWatch</title><style>{_CSS}</style></head><body>",
    ]
    if banner is not None:
        parts.append(
            f'<p class="banner" data-status="{escape(msg.status)}">{escape(banner[0])}'
            f' / <span lang="km">{escape(banner[1])}</span></p>'
        )
    for lang, text in (("en", en), ("km", km)):
        parts.append(
            f'<section lang="{lang}" class="sev-{escape(msg.severity)}">'
            f"<h1>{escape(text.headline)}</h1>"
            f"<p>{escape(text.description)}</p>"
            f"<p><strong>{escape(text.instruction)}</strong></p></section>"
        )
    state_en, state_km = _STATE_WORDS.get(msg.state, (msg.state, msg.state))
    rows = [
        ("Area / តំបន់", f'{escape(area_en)} / <span lang="km">{escape(area_km)}</span>'),
        (
            "Severity / កម្រិត",
            f"{escape(texts.severity_name(msg.severity, 'en'))} / "
            f'<span lang="km">{escape(texts.severity_name(msg.severity, "km"))}</span>',
        ),
        ("State / ស្ថានភាព", f'{escape(state_en)} / <span lang="km">{escape(state_km)}</span>'),
        ("CAP status", escape(msg.status)),
        ("Started / ចាប់ផ្តើម", escape(_t(alert.get("started_at"), source))),
        ("Issued / ចេញផ្សាយ", escape(_t(msg.sent, source))),
        ("Ended / បញ្ចប់", escape(_t(alert.get("resolved_at"), source))),
        (
            "Value that raised it / តម្លៃដែលបង្កការព្រមាន",
            f"{_num(_either(alert, 'trigger_value', 'value'))} {unit} "
            f"({escape(texts.metric_name(msg.metric, 'en')) if msg.metric else ''})",
        ),
        (
            "Read at / អានម៉ោង",
            escape(_t(alert.get("trigger_at") or alert.get("started_at"), source)),
        ),
        ("Level / កម្រិតកំណត់", f"{_num(alert.get('threshold'))} {unit}"),
        ("Latest value / តម្លៃចុងក្រោយ", f"{_num(alert.get('last_value'))} {unit}"),
        ("CAP message", f'<a href="{escape(source.cap_url(msg.alert_id))}">{msg.identifier}</a>'),
    ]
    parts.append("<h2>Details / ព័ត៌មានលម្អិត</h2><dl>")
    parts.extend(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    parts.append("</dl><h2>History / ប្រវត្តិ</h2><table><thead><tr>")
    parts.append("<th>Reading time</th><th>Issued</th><th>Change</th><th>Severity</th>")
    parts.append("<th>Value</th></tr></thead><tbody>")
    for e in events:
        word = _STATE_WORDS.get(str(e.get("state")), (str(e.get("state")), ""))[0]
        parts.append(
            f"<tr><td>{escape(_t(e.get('at'), source))}</td>"
            f"<td>{escape(_t(e.get('recorded_at'), source))}</td>"
            f"<td>{escape(word)}</td><td>{escape(str(e.get('severity') or ''))}</td>"
            f"<td>{_num(_either(e, 'trigger_value', 'value'))} {unit}</td></tr>"
        )
    parts.append(f"</tbody></table><p>{escape(source.sender_name_en)}")
    if source.contact:
        parts.append(f" · {escape(source.contact)}")
    parts.append("</p></body></html>")
    return texts.nfc("".join(parts))
