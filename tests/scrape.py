"""Reading ``/metrics`` the way Prometheus does: the exposition text, parsed."""
from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in found
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def label_values(found: list[Sample], label: str) -> set[str]:
    return {s.labels[label] for s in found if label in s.labels}


async def scrape(client: Any, **headers: str) -> list[Sample]:
    """GET /metrics through ``client`` (an aiohttp test client or session with a base URL)."""
    resp = await client.get("/metrics", headers=headers or None)
    assert resp.status == 200, await resp.text()
    return samples(await resp.text())
