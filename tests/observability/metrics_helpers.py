"""Reading ``/metrics`` in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(client) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    return parse(resp.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, or None."""
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def series(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    """Label sets of the samples of ``name`` that include ``labels``."""
    want = set(labels.items())
    return [dict(lab) for (n, lab) in samples if n == name and want <= set(lab)]
