"""Parses scraped /metrics texts with prometheus_client's parsers and prints them as JSON.

    metrics_parse.py FILE...

Each file is parsed twice: by the Prometheus text parser and by the strict OpenMetrics parser
(the text is served as OpenMetrics), which must find the same samples. Prints, per file,
{"families": {name: type}, "samples": [{"name", "labels", "value", "family", "type"}]} as the
OpenMetrics parser read them; a file either parser refuses fails the script.
"""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


def samples(families):
    out = []
    for family in families:
        for s in family.samples:
            out.append(
                {
                    "name": s.name,
                    "labels": dict(s.labels),
                    "value": s.value,
                    "family": family.name,
                    "type": family.type,
                }
            )
    return out


def main():
    result = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        prometheus = samples(text_string_to_metric_families(text))
        families = list(openmetrics_families(text))
        openmetrics = samples(families)
        key = lambda s: (s["name"], sorted(s["labels"].items()), s["value"])
        assert sorted(map(key, prometheus)) == sorted(map(key, openmetrics)), path
        result.append(
            {"families": {f.name: f.type for f in families}, "samples": openmetrics}
        )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
