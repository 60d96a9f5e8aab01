"""Reading a server's /metrics as a test would: fetch, parse with prometheus-client, look up."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape's samples, by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    # Each family's name and type as exposed (counters without `_total`).
    families: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; KeyError naming the near misses if absent."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            near = [dict(k[1]) for k in self.samples if k[0] == name]
            raise KeyError(f"no {name}{labels} in the scrape; with that name: {near}")
        return self.samples[key]

    def names(self) -> set[str]:
        """Every sample name in the scrape."""
        return {name for name, _ in self.samples}


def parse(text: str) -> Scrape:
    """Parse the Prometheus text format."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return Scrape(samples, families)


def fetch(port: int) -> str:
    """GET /metrics on 127.0.0.1:`port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


async def scrape(port: int | None) -> Scrape:
    """Fetch and parse a server's metrics (off the event loop: the server runs on it)."""
    assert port is not None, "the server serves no metrics"
    return parse(await asyncio.to_thread(fetch, port))
