"""The example alert rules and dashboard in ops/: valid, tested, and about real metrics.

`promtool` checks the rules and runs their unit tests (ops/prometheus/*.test.yml). `make test`
installs it (Debian package prometheus); without it those tests skip on a developer machine
and fail under CI=true, where a skip would hide that they never ran.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

import telemetry.metrics as defined
from tests.programs import required_tool
from tests.test_docs import sections

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "ops" / "prometheus").glob("*.test.yml"))
DASHBOARD_MD = ROOT / "ops" / "grafana" / "dashboard.md"
DASHBOARD_JSON = ROOT / "ops" / "grafana" / "hello-ship.json"
OPS_FILES = [RULES, *RULE_TESTS, DASHBOARD_MD, DASHBOARD_JSON]
RUNBOOK = ROOT / "docs" / "runbook.md"
# Alerts that share one runbook section on purpose (none yet): name -> the other names.
SHARED_SECTIONS: dict[str, set[str]] = {}



def exposed_names() -> frozenset[str]:
    """The service's metric names as exposed (counters with _total, histograms by base
    name), from the definitions themselves, so renaming one breaks these files' tests."""
    names = set()
    for value in vars(defined).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.add(family.name + ("_total" if family.type == "counter" else ""))
    return frozenset(names)


METRICS = exposed_names()

# A metric name, not part of a recording rule's name (`job:hello_ship_x:rate5m`).
METRIC_NAME = re.compile(r"(?<![\w:])hello_ship_[a-z_]+")
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
# A recording rule name: level:metric:operations.
RECORDED_NAME = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")
PROMQL_BLOCK = re.compile(r"```promql\n(.*?)\n```", re.DOTALL)


def promtool() -> str:
    return required_tool("promtool")


def run_promtool(*args: str) -> None:
    proc = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def metric_names(text: str) -> set[str]:
    return {HISTOGRAM_SERIES.sub("", name) for name in METRIC_NAME.findall(text)}


def dashboard_queries() -> list[str]:
    return PROMQL_BLOCK.findall(DASHBOARD_MD.read_text())


def json_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    return [target["expr"] for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def rule_blocks(kind: str) -> list[str]:
    """The text of each `- alert:` or `- record:` entry of alerts.yml."""
    entries = re.split(r"\n(?=\s*- (?:alert|record|name):)", RULES.read_text())
    return [entry for entry in entries if re.match(rf"\s*- {kind}:", entry)]


def test_rules_pass_promtool_check() -> None:
    run_promtool("check", "rules", str(RULES.relative_to(ROOT)))


@pytest.mark.parametrize("tests_file", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass(tests_file: Path) -> None:
    run_promtool("test", "rules", str(tests_file.relative_to(ROOT)))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # Each query as a recording rule: `promtool check rules` parses it.
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for number, query in enumerate(dashboard_queries()):
        rules.append(f"      - record: dashboard:query_{number}:check")
        rules.append("        expr: |")
        query = query.replace("$job", "hello-ship")
        rules.extend(f"          {line}" for line in query.splitlines())
    path = tmp_path / "dashboard-queries.yml"
    path.write_text("\n".join(rules) + "\n")
    run_promtool("check", "rules", str(path))


def test_dashboard_json_matches_its_description() -> None:
    assert dashboard_queries(), "no ```promql blocks in dashboard.md"
    assert json_queries() == dashboard_queries()


@pytest.mark.parametrize("path", OPS_FILES, ids=lambda path: path.name)
def test_only_the_services_metrics_are_used(path: Path) -> None:
    used = metric_names(path.read_text())
    assert used, f"no hello_ship_ metric named in {path.name}"
    assert used <= METRICS, f"{path.name} names unknown metrics: {sorted(used - METRICS)}"


def test_the_dashboard_shows_every_metric() -> None:
    assert metric_names(DASHBOARD_MD.read_text()) == METRICS


def test_recording_rules_used_are_defined() -> None:
    text = RULES.read_text()
    defined = set(re.findall(r"- record: (\S+)", text))
    used = set()
    for path in (RULES, DASHBOARD_MD, DASHBOARD_JSON):
        used |= set(RECORDED_NAME.findall(path.read_text()))
    assert used <= defined, f"not recorded in alerts.yml: {sorted(used - defined)}"
    assert defined <= used, f"recorded but never read: {sorted(defined - used)}"


def runbook_urls() -> dict[str, set[str]]:
    """Each alert's name -> the runbook_url of its rules (a name may have several rules)."""
    urls: dict[str, set[str]] = {}
    for alert in rule_blocks("alert"):
        name = alert.split("alert:", 1)[1].split()[0]
        found = re.findall(r"\n\s+runbook_url: \"([^\"]*)\"", alert)
        urls.setdefault(name, set()).update(found or {""})
    return urls


def test_every_alert_has_a_severity_and_a_runbook() -> None:
    alerts = rule_blocks("alert")
    assert len(alerts) >= 8
    for alert in alerts:
        name = alert.split("alert:", 1)[1].split()[0]
        assert re.search(r"\n\s+severity: (critical|warning)\n", alert), name
        for annotation in ("summary", "description"):
            assert re.search(rf"\n\s+{annotation}: \S", alert), (name, annotation)
        assert re.search(r'\n\s+runbook_url: "docs/runbook\.md#[\w-]+"(\n|$)', alert), name


def test_each_alert_has_its_own_runbook_section() -> None:
    """The runbook_url's anchor is a heading of docs/runbook.md whose section names the
    alert, and alerts about different things do not share one."""
    found = sections(RUNBOOK)
    urls = runbook_urls()
    by_anchor: dict[str, set[str]] = {}
    for name, targets in urls.items():
        assert len(targets) == 1, f"{name}: its rules point at {sorted(targets)}"
        anchor = next(iter(targets)).removeprefix("docs/runbook.md#")
        assert anchor in found, f"{name}: no heading #{anchor} in docs/runbook.md"
        assert name in found[anchor], f"{name}: its section #{anchor} does not name it"
        by_anchor.setdefault(anchor, set()).add(name)
    for anchor, names in by_anchor.items():
        for name in names:
            assert names - {name} <= SHARED_SECTIONS.get(name, set()), (
                f"#{anchor} is the section of {sorted(names)}")


def runbook_queries() -> list[str]:
    """The runbook's PromQL: one query a line in its ```promql blocks (some in list items,
    indented), `#` comments left out."""
    queries = []
    for block in re.findall(r"```promql\n(.*?)\n\s*```", RUNBOOK.read_text(), re.DOTALL):
        for line in block.splitlines():
            query = "" if line.lstrip().startswith("#") else line.split("  #", 1)[0].strip()
            if query:
                queries.append(query)
    return queries


def test_the_runbook_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = runbook_queries()
    assert queries, "no ```promql blocks in docs/runbook.md"
    rules = ["groups:", "  - name: runbook", "    rules:"]
    for number, query in enumerate(queries):
        rules += [f"      - record: runbook:query_{number}:check", "        expr: |",
                  f"          {query}"]
    path = tmp_path / "runbook-queries.yml"
    path.write_text("\n".join(rules) + "\n")
    run_promtool("check", "rules", str(path))


def test_the_runbook_names_only_the_services_metrics_and_rules() -> None:
    text = RUNBOOK.read_text()
    used = metric_names(text)
    assert used <= METRICS, f"docs/runbook.md names unknown metrics: {sorted(used - METRICS)}"
    recorded = set(re.findall(r"- record: (\S+)", RULES.read_text()))
    unknown = set(RECORDED_NAME.findall(text)) - recorded
    assert not unknown, f"docs/runbook.md names rules alerts.yml does not record: {sorted(unknown)}"


def test_the_slo_alerts_exist() -> None:
    names = {alert.split("alert:", 1)[1].split()[0] for alert in rule_blocks("alert")}
    assert {"HelloShipStreamTTFTHigh", "HelloShipErrorBudgetBurn",
            "HelloShipFallbackTrafficHigh", "HelloShipCostSpike"} <= names
