"""deploy/prometheus: rules pass promtool (syntax and unit tests); the dashboard and the rules
only use metrics the gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.observe.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")


def _promtool(*args: str) -> None:
    res = subprocess.run(
        ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_check_rules() -> None:
    _promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_rules_unit_tests() -> None:
    _promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_check_config() -> None:
    _promtool("check", "config", "prometheus.yml")


def _exported() -> set[str]:
    names: set[str] = set()
    for fam in Metrics().registry.collect():
        base = fam.name
        if fam.type == "counter":
            names.add(base + "_total")
        elif fam.type == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        else:
            names.add(base)
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\bsshgw_[a-z_]+\b", text)) - {"sshgw_"}


def test_dashboard_uses_exported_metrics() -> None:
    doc = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert exprs
    used = set().union(*(_referenced(e) for e in exprs))
    assert used <= _exported(), used - _exported()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_alerts_use_exported_metrics() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    used = _referenced(text)
    assert used
    assert used <= _exported(), used - _exported()
