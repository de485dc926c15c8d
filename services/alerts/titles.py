"""An alert's titles in English and Khmer, rendered once, from the configured city.

A rule's `title_en` / `title_km` (rules.yaml) are templates; an alert's titles are those
templates filled with the transition's value, unit, device, area and severity
(`texts.fill_titles`). The area's names come from the city this deployment runs
(`settings.city_file`, via `CityAreas`), never from the shipped one: the English title
names the area by its English name without the parenthesised remark (`Stueng Hav`, not
the id `stueng-hav` nor `Stueng Hav (port and industrial coast)`), the Khmer one by its
Khmer name. The alerts service
renders the titles of a batch's transitions before it opens the storage transaction, so
storage only stores.
"""

from __future__ import annotations

from services.alerts.areas import CityAreas
from services.alerts.engine import Transition
from services.alerts.rules import Rule
from services.alerts.texts import fill_titles

__all__ = ["rule_titles", "transition_titles"]


def rule_titles(
    rule: Rule,
    areas: CityAreas,
    *,
    value: float,
    device: str | None,
    area: str | None,
    severity: str,
    category: str = "",
) -> tuple[str, str]:
    """`rule`'s titles (English, Khmer) for one alert of it in `area` of `areas`' city."""
    return fill_titles(
        rule.title_en,
        rule.title_km,
        value=value,
        unit=rule.unit(),
        device=device,
        area=areas.name_en(area),
        severity=severity,
        category=category,
        area_km=areas.name_km(area),
    )


def transition_titles(t: Transition, areas: CityAreas) -> tuple[str, str]:
    """The titles an alert carries after transition `t`: with the value that crossed the
    level (`trigger_value`), not the confirming reading's, which persistence may have read
    a reporting interval or more later."""
    return rule_titles(
        t.rule,
        areas,
        value=t.value if t.trigger_value is None else t.trigger_value,
        device=t.device_id,
        area=t.area,
        severity=t.severity,
        category=t.category,
    )
