#!/usr/bin/env python3
"""Tests of the gameshard Helm chart (charts/gameshard), run by charts/test.

- The alert rules: every alert has a firing and a quiet case in alerts_test.yaml, and
  the rules use only the metrics the data plane and the operator export.
- The dashboard: the panels asked of it exist, their queries use only those metrics and
  the chart's recording rules, and each query returns data from synthetic series
  (promtool evaluates them).
- The templates, with Helm's own library (helm-sdkpy): lint, then installs into a
  stand-in API server (kube_stub.py) with several sets of values. Every rendered
  manifest is validated against the Kubernetes OpenAPI schemas (kubernetes-validate),
  the Prometheus Operator kinds it has no schema for by a structural check of our own;
  then the RBAC shape, the operator's pod, the monitoring objects and NOTES.txt.
- The CRD upgrade step of the chart's README, with kubectl on a real etcd and
  kube-apiserver (kube_apiserver.py).

Run with plain python3. A test whose tool or package is missing is skipped with the
reason, or fails when GAMESHARD_REQUIRE_TOOLS is set. Exits non-zero if any test fails.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "gameshard"
ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = HERE / "alerts_test.yaml"
CRD_FILE = CHART / "crds" / "gameshard.io_gameshards.yaml"

RELEASE = "gameshard"
NAMESPACE = "gameshard-system"
APP_VERSION = "0.1.0"
CHART_LABEL = "gameshard-0.1.0"

# The metrics the data plane pods and the operator export; alerts and dashboard may use
# nothing else (besides the chart's own recording rules).
DATAPLANE_METRICS = {
    *(f"gameshard_event_latency_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    *(f"gameshard_pipeline_latency_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    "gameshard_events_total",
    "gameshard_events_rejected_total",
    "gameshard_records_total",
    "gameshard_updates_total",
    "gameshard_dead_letters_total",
    "gameshard_partition_lag_records",
    "gameshard_uncommitted_records",
    "gameshard_records_since_snapshot",
    "gameshard_snapshot_age_seconds",
    "gameshard_owned_partitions",
    "gameshard_queue_depth",
    "gameshard_latency_target_seconds",
    "gameshard_updates_within_target_total",
    "gameshard_input_gap_records_total",
    *(f"gameshard_handoff_duration_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    "gameshard_thread_cpu_seconds_total",
}
OPERATOR_METRICS = {
    "gameshard_operator_reconciliations_total",
    "gameshard_operator_reconcile_failures_total",
    *(f"gameshard_operator_reconcile_duration_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    "gameshard_operator_replicas",
    "gameshard_operator_ready_replicas",
    "gameshard_operator_desired_replicas",
    "gameshard_operator_min_replicas",
    "gameshard_operator_max_replicas",
    "gameshard_operator_leader",
}
KNOWN_METRICS = DATAPLANE_METRICS | OPERATOR_METRICS

ALERT_NAMES = {
    "GameShardLatencyBudgetFastBurn",
    "GameShardLatencyBudgetSlowBurn",
    "GameShardLatencyBudgetDayBurn",
    "GameShardLatencyBudgetThreeDayBurn",
    "GameShardPartitionLagHigh",
    "GameShardNoEvents",
    "GameShardSnapshotTooOld",
    "GameShardInputRecordsLost",
    "GameShardMalformedSpike",
    "GameShardDataPlaneDown",
    "GameShardOperatorReconcileErrors",
    "GameShardAutoscalerAtLimit",
}

# The operator's rules on the namespaces it manages, as (apiGroups, resources, verbs):
# exactly what the operator does (e2e/tests/controlplane.rs runs it with these rules on a
# real API server), so a grant added here must be a request the operator makes.
OPERATOR_RULES = {
    (("gameshard.io",), ("gameshards",), frozenset({"list", "watch", "patch"})),
    (("gameshard.io",), ("gameshards/status", "gameshards/scale"), frozenset({"patch"})),
    (("apps",), ("statefulsets",), frozenset({"get", "list", "watch", "create", "patch"})),
    (("",), ("services",), frozenset({"list", "watch", "create", "patch"})),
    (("policy",), ("poddisruptionbudgets",), frozenset({"create", "patch"})),
    (("monitoring.coreos.com",), ("servicemonitors",), frozenset({"create", "patch"})),
    (("",), ("pods",), frozenset({"list"})),
    (("events.k8s.io",), ("events",), frozenset({"create", "patch"})),
}
LEASE_RULES = {(("coordination.k8s.io",), ("leases",), frozenset({"get", "create", "patch"}))}

# Verbs that no rule of the operator may grant on any resource: it deletes nothing (the
# garbage collector does), never replaces a whole object (server-side apply only), and
# never reads every object of a kind it only writes.
NEVER = {"delete", "deletecollection", "update", "*"}

# Cluster-scoped kinds the chart installs.
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

# Kinds the Kubernetes schemas do not describe (Prometheus Operator CRDs).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Values that turn on every optional part of the chart.
FULL_VALUES = {
    "watchNamespaces": ["a", "b"],
    "serviceMonitor": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "kafkaSecrets": ["kafka-creds"],
}

REQUIRE_TOOLS = bool(os.environ.get("GAMESHARD_REQUIRE_TOOLS"))


# ----------------------------------------------------------------------------- runner

TESTS = []


def test(*requires: str):
    """Registers a test that needs the named tools (see `missing_tool`)."""

    def register(fn):
        TESTS.append((fn, requires))
        return fn

    return register


def missing_tool(name: str) -> str | None:
    """Why the tool `name` cannot be used here, or None if it can."""
    if name == "promtool":
        return None if shutil.which("promtool") else "promtool not found (Debian package prometheus)"
    if name == "kubectl":
        return None if shutil.which("kubectl") else "kubectl not found"
    if name == "kube-apiserver":
        sys.path.insert(0, str(HERE))
        from kube_apiserver import binaries

        return binaries()[1] or None
    module = {"helm": "helm_sdkpy", "kubernetes-validate": "kubernetes_validate"}[name]
    if importlib.util.find_spec(module) is None:
        package = {"helm": "helm-sdkpy", "kubernetes-validate": "kubernetes-validate"}[name]
        return f"Python package {package} not installed"
    return None


def run_tests() -> int:
    passed = failed = skipped = 0
    for fn, requires in TESTS:
        name = fn.__name__.removeprefix("test_")
        missing = [why for why in map(missing_tool, requires) if why]
        if missing and not REQUIRE_TOOLS:
            print(f"SKIP {name}: {'; '.join(missing)}")
            skipped += 1
            continue
        started = time.monotonic()
        try:
            if missing:
                raise AssertionError(f"required tool missing: {'; '.join(missing)}")
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            if isinstance(e, AssertionError):
                frame = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__][-1]
                print(f"FAIL {name}: {str(e) or frame.line} (test_chart.py:{frame.lineno})")
            else:
                print(f"FAIL {name}: {e!r}")
                traceback.print_exc()
        else:
            passed += 1
            print(f"PASS {name} ({time.monotonic() - started:.1f}s)")
    print(f"chart: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def note(message: str) -> None:
    print(f"     note: {message}")


# ---------------------------------------------------------------------------- helpers


def load_yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def promql_metrics(expr: str) -> set[str]:
    """The metric and recorded-series names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if "gameshard" in n}


def alert_rules() -> list[dict]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r]


def recorded_series() -> set[str]:
    return {r["record"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "record" in r}


def dashboard_targets(dashboard: dict) -> list[tuple[dict, dict]]:
    """(panel, target) for every query of the dashboard's panels."""
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner, target))
    return out


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------- Helm and the stub


class HelmFailed(Exception):
    """Helm refused to install the chart (the message is Helm's)."""




class Render:
    """One install of the chart: its manifest's objects, NOTES.txt and what the stand-in
    API server received."""

    def __init__(self, release: dict, created: list[dict], chart: Path):
        import yaml

        self.manifest = release["manifest"]
        self.objects = [o for o in yaml.safe_load_all(self.manifest) if o]
        # The chart's crds/ objects, which Helm creates before the manifest's.
        self.crds = [
            o for f in sorted((chart / "crds").glob("*.yaml")) for o in yaml.safe_load_all(f.read_text()) if o
        ]
        self.notes = release["info"].get("notes", "")
        self.created = created

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict:
        found = [
            o
            for o in self.of_kind(kind)
            if (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}, found {len(found)}"
        return found[0]

    def container(self) -> dict:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, containers
        return containers[0]


def helm_install(
    values: dict | None = None,
    release: str = RELEASE,
    chart: Path | None = None,
    server_version: str | None = None,
) -> Render:
    """Installs the chart with Helm into a fresh stand-in API server."""
    import helm_sdkpy
    from kube_stub import KubeStub

    chart = chart or CHART
    stub = KubeStub(server_version) if server_version else KubeStub()
    try:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=stub.kubeconfig())
        try:
            result = asyncio.run(
                helm_sdkpy.Install(config).run(
                    release, str(chart), values=values or None, wait=False, timeout=60
                )
            )
        except helm_sdkpy.HelmError as e:
            raise HelmFailed(str(e)) from None
        assert not stub.unexpected, f"Helm made requests the stand-in does not serve: {stub.unexpected}"
        render = Render(result, list(stub.created), chart)
    finally:
        stub.close()

    def names(objects: list[dict]) -> list[tuple[str, str, str]]:
        return sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")) for o in objects)

    sent, expected = names(render.created), names(render.crds + render.objects)
    assert sent == expected, f"objects created {sent} differ from the chart's {expected}"
    return render


_renders: dict[str, Render] = {}


def rendered(name: str) -> Render:
    """The chart installed with the named set of values (each installed once)."""
    values = {"default": {}, "full": FULL_VALUES}[name]
    if name not in _renders:
        _renders[name] = helm_install(copy.deepcopy(values))
    return _renders[name]


def expect_refusal(values: dict, *fragments: str, **kwargs) -> str:
    """Installs with `values` and asserts Helm refuses, with all `fragments` in its message."""
    try:
        helm_install(values, **kwargs)
    except HelmFailed as e:
        message = str(e)
        for fragment in fragments:
            assert fragment in message, f"Helm's refusal does not mention {fragment!r}: {message}"
        return message
    raise AssertionError(f"Helm installed the chart with {values} {kwargs}; it should refuse")


def rule_set(rules: list[dict]) -> set:
    """RBAC rules as comparable (apiGroups, resources, verbs) tuples; asserts none of
    them names resources (the secrets rule is checked on its own)."""
    out = set()
    for r in rules:
        assert "resourceNames" not in r, f"unexpected resourceNames in {r}"
        out.add((tuple(r["apiGroups"]), tuple(r["resources"]), frozenset(r["verbs"])))
    return out


def split_secret_rules(rules: list[dict]) -> tuple[list[dict], list[dict]]:
    secrets = [r for r in rules if "secrets" in r.get("resources", [])]
    return [r for r in rules if r not in secrets], secrets


def assert_standard_labels(obj: dict, release: str = RELEASE) -> None:
    labels = obj["metadata"].get("labels", {})
    what = f"{obj['kind']} {obj['metadata']['name']}"
    expected = {
        "app.kubernetes.io/name": "gameshard",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/version": APP_VERSION,
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": CHART_LABEL,
    }
    for key, value in expected.items():
        assert labels.get(key) == value, f"{what}: label {key} is {labels.get(key)!r}, not {value!r}"
    assert labels.get("app.kubernetes.io/component") in ("operator", "monitoring"), (
        f"{what}: component {labels}"
    )


# ------------------------------------------------------------------------------ tests


@test()
def test_alert_tests_cover_every_alert():
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts == ALERT_NAMES, f"alerts.yaml has {sorted(alerts)}, expected {sorted(ALERT_NAMES)}"
    fires, quiet = set(), set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in alerts, f"test {case['name']!r} checks an unknown alert {name}"
            exp = check.get("exp_alerts") or []
            if exp:
                fires.add(name)
                for a in exp:
                    assert a.get("exp_labels") and a.get("exp_annotations"), (
                        f"{name} in {case['name']!r}: a firing case must give labels and annotations"
                    )
            else:
                quiet.add(name)
    assert not alerts - fires, f"alerts without a firing case: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"alerts without a quiet case: {sorted(alerts - quiet)}"


@test()
def test_alert_rules_use_known_metrics_and_document_themselves():
    assert list(load_yaml(ALERTS)) == ["groups"], "alerts.yaml must hold only `groups:`"
    recorded = recorded_series()
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            unknown = promql_metrics(rule["expr"]) - KNOWN_METRICS - recorded
            assert not unknown, f"{name} reads unknown series {sorted(unknown)}"
            if "record" in rule:
                continue
            assert rule["labels"].get("severity") in ("page", "ticket"), f"{name}: severity {rule['labels']}"
            annotations = rule["annotations"]
            assert set(annotations) == {"summary", "description"}, f"{name}: annotations {set(annotations)}"
            for text in annotations.values():
                assert "$labels.shard" in text, f"{name}: an annotation does not name the shard: {text!r}"
    # The recorded ratios exist for the seven windows the burn-rate alerts read.
    windows = {re.sub(r".*ratio_rate", "", r) for r in recorded}
    assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}, windows


@test()
def test_dashboard_has_the_panels_asked_for():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "gameshard" and dashboard["title"] == "GameShard"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for var in ("namespace", "shard"):
        assert promql_metrics(variables[var]["query"]["query"]) <= KNOWN_METRICS, variables[var]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    cells: dict[tuple[int, int], str] = {}  # grid cells, to find overlapping panels
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f'panel {panel["title"]!r} is wider than the grid'
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f'panels {other!r} and {panel["title"]!r} overlap'

    targets = dashboard_targets(dashboard)
    recorded = recorded_series()
    for panel, target in targets:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        unknown = promql_metrics(target["expr"]) - KNOWN_METRICS - recorded
        assert not unknown, f"panel {panel['title']!r} reads unknown series {sorted(unknown)}"

    def panel_with(*patterns: str) -> bool:
        """Whether one panel has queries matching every pattern (regular expressions)."""
        by_panel: dict[int, list[str]] = {}
        for panel, target in targets:
            by_panel.setdefault(panel["id"], []).append(target["expr"])
        return any(all(any(re.search(p, e) for e in exprs) for p in patterns) for exprs in by_panel.values())

    wanted = {
        "events/s by outcome": [r"by \(outcome\).*gameshard_events_total"],
        "p50/p99 latency vs the target": [
            r"histogram_quantile\(0\.5, .*gameshard_event_latency_seconds_bucket",
            r"histogram_quantile\(0\.99, .*gameshard_event_latency_seconds_bucket",
            r"gameshard_latency_target_seconds",
        ],
        "share of updates within the target": [
            r"gameshard_updates_within_target_total.*\) / .*gameshard_event_latency_seconds_count",
        ],
        "rejections by reason": [r"by \(reason\).*gameshard_events_rejected_total"],
        "partition lag": [r"by \(shard, partition\).*gameshard_partition_lag_records"],
        "uncommitted records": [r"gameshard_uncommitted_records"],
        "records since snapshot": [r"gameshard_records_since_snapshot"],
        "snapshot age": [r"gameshard_snapshot_age_seconds"],
        "queue depth": [r"gameshard_queue_depth"],
        "owned partitions per pod": [r"by \(pod\).*gameshard_owned_partitions"],
        "operator desired/ready/max replicas": [
            r"gameshard_operator_desired_replicas",
            r"gameshard_operator_ready_replicas",
            r"gameshard_operator_max_replicas",
        ],
        "reconcile errors": [r"gameshard_operator_reconcile_failures_total"],
    }
    missing = [what for what, patterns in wanted.items() if not panel_with(*patterns)]
    assert not missing, f"the dashboard has no panel for: {missing}"


def _sample_series() -> list[dict]:
    """Synthetic series of every known metric, as a promtool test's input_series, for
    one data plane pod of shard games/zone-1 and the operator."""
    dp = 'namespace="games", pod="zone-1-0", shard="zone-1"'
    op = 'namespace="gameshard-system", pod="gameshard-operator-0"'
    shard = 'shard_namespace="games", shard="zone-1"'
    series = []

    def add(selector: str, values: str) -> None:
        series.append({"series": selector, "values": values})

    for histogram in ("gameshard_event_latency_seconds", "gameshard_pipeline_latency_seconds"):
        for le, step in (("0.0005", 90), ("0.001", 99), ("+Inf", 100)):
            add(f'{histogram}_bucket{{{dp}, le="{le}"}}', f"0+{step}x20")
        add(f"{histogram}_count{{{dp}}}", "0+100x20")
        add(f"{histogram}_sum{{{dp}}}", "0+0.05x20")
    for outcome in ("applied", "rejected", "malformed"):
        add(f'gameshard_events_total{{{dp}, outcome="{outcome}"}}', "0+100x20")
    add(f'gameshard_events_rejected_total{{{dp}, reason="dead"}}', "0+10x20")
    for counter in ("gameshard_records_total", "gameshard_updates_total", "gameshard_dead_letters_total"):
        add(f"{counter}{{{dp}}}", "0+10x20")
    for gauge in (
        "gameshard_partition_lag_records",
        "gameshard_uncommitted_records",
        "gameshard_records_since_snapshot",
        "gameshard_snapshot_age_seconds",
    ):
        add(f'{gauge}{{{dp}, partition="0"}}', "5x20")
    for gauge in ("gameshard_owned_partitions", "gameshard_queue_depth"):
        add(f"{gauge}{{{dp}}}", "1x20")
    # Target 1 ms: the updates within it are those of the 0.001 bucket.
    add(f"gameshard_latency_target_seconds{{{dp}}}", "0.001x20")
    add(f"gameshard_updates_within_target_total{{{dp}}}", "0+99x20")
    add(f'gameshard_input_gap_records_total{{{dp}, partition="0"}}', "0x20")
    for le in ("0.1", "+Inf"):
        add(f'gameshard_handoff_duration_seconds_bucket{{{dp}, le="{le}"}}', "0+1x20")
    add(f"gameshard_handoff_duration_seconds_count{{{dp}}}", "0+1x20")
    add(f"gameshard_handoff_duration_seconds_sum{{{dp}}}", "0+0.05x20")
    for thread in ("io", "state", "publisher"):
        add(f'gameshard_thread_cpu_seconds_total{{{dp}, thread="{thread}"}}', "0+30x20")
    for result in ("success", "failure"):
        add(f'gameshard_operator_reconciliations_total{{{op}, {shard}, result="{result}"}}', "0+1x20")
    add(f'gameshard_operator_reconcile_failures_total{{{op}, {shard}, reason="Conflict"}}', "0+1x20")
    for le in ("0.1", "+Inf"):
        add(f'gameshard_operator_reconcile_duration_seconds_bucket{{{op}, le="{le}"}}', "0+2x20")
    add(f"gameshard_operator_reconcile_duration_seconds_count{{{op}}}", "0+2x20")
    add(f"gameshard_operator_reconcile_duration_seconds_sum{{{op}}}", "0+0.1x20")
    for gauge, value in (
        ("replicas", 3),
        ("ready_replicas", 3),
        ("desired_replicas", 3),
        ("min_replicas", 1),
        ("max_replicas", 8),
    ):
        add(f"gameshard_operator_{gauge}{{{op}, {shard}}}", f"{value}x20")
    add(f"gameshard_operator_leader{{{op}}}", "1x20")
    assert {re.sub(r"\{.*", "", s["series"]) for s in series} == KNOWN_METRICS
    return series


@test("promtool")
def test_dashboard_queries_return_data():
    """Each panel query, with the namespace and shard variables set to games and zone-1,
    returns data from synthetic series (promtool: `absent(query)` must be empty)."""
    import yaml

    dashboard = json.loads(DASHBOARD.read_text())
    cases = []
    for panel, target in dashboard_targets(dashboard):
        expr = (
            target["expr"]
            .replace("$__rate_interval", "5m")
            .replace("$namespace", "games")
            .replace("$shard", "zone-1")
        )
        assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {expr}"
        cases.append({"expr": f"absent({expr})", "eval_time": "15m", "exp_samples": []})
    with tempfile.TemporaryDirectory() as tmp:
        test_file = Path(tmp) / "dashboard_test.yaml"
        test_file.write_text(
            yaml.safe_dump(
                {
                    "rule_files": [str(ALERTS)],
                    "evaluation_interval": "1m",
                    "tests": [
                        {"interval": "1m", "input_series": _sample_series(), "promql_expr_test": cases}
                    ],
                }
            )
        )
        result = run(["promtool", "test", "rules", str(test_file)])
    assert result.returncode == 0, f"promtool:\n{result.stdout}{result.stderr}"


@test("helm")
def test_helm_lint():
    import helm_sdkpy

    def lint(chart: Path) -> list[dict]:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE)
        result = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
        return result.get("Messages") or []

    # Severities: 1 info, 2 warning, 3 error. Helm's JSON has no message text, only the
    # file; the only info expected is Chart.yaml's "icon is recommended".
    messages = lint(CHART)
    serious = [m for m in messages if m["Severity"] >= 2]
    assert not serious, f"helm lint: {serious}"
    infos = sorted({m["Path"] for m in messages})
    if infos:
        note(f"helm lint infos (no text in Helm's result) on: {', '.join(infos)}")

    # The same lint finds an error in a copy of the chart with a broken template, so an
    # empty result above means something.
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "gameshard"
        shutil.copytree(CHART, broken)
        service = broken / "templates" / "service.yaml"
        service.write_text(service.read_text() + "\n  broken: {{ .Values.nothing.here }}\n")
        assert any(m["Severity"] == 3 for m in lint(broken)), "lint missed a broken template"


@test("helm")
def test_crds_folder():
    """crds/ holds the GameShard CRD, which Helm creates before the templates."""
    text = CRD_FILE.read_text()
    assert [p.name for p in CRD_FILE.parent.iterdir()] == [CRD_FILE.name], "crds/ must hold only the CRD file"
    import yaml

    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", "expected one CRD"
    spec = docs[0]["spec"]
    assert spec["group"] == "gameshard.io" and spec["names"]["plural"] == "gameshards", spec["names"]
    assert "gs" in spec["names"].get("shortNames", []), "NOTES.txt tells users `kubectl get gs`"
    render = helm_install({}, chart=CHART)
    assert render.created[0]["kind"] == "CustomResourceDefinition", "Helm creates crds/ first"


@test("helm", "kubectl", "kube-apiserver")
def test_crd_upgrade_step_on_a_real_api_server():
    """`helm upgrade` leaves the CRD it installed from crds/ as it was; the README's
    step, a server-side apply of the new chart's crds/ that takes the fields over from
    Helm, upgrades it in place, and the GameShards stored meanwhile stay."""
    import helm_sdkpy
    import yaml
    from kube_apiserver import KubeApiServer, binaries

    def spec_properties(crd: dict) -> dict:
        return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]

    # The previous release of the chart: its CRD does not know spec.paused yet.
    new_crd = yaml.safe_load(CRD_FILE.read_text())
    assert "paused" in spec_properties(new_crd), "the test's new field is gone from the CRD"
    old_crd = copy.deepcopy(new_crd)
    del spec_properties(old_crd)["paused"]
    example = yaml.safe_load((HERE.parents[1] / "examples" / "gameshard.yaml").read_text())
    paused = copy.deepcopy(example)
    paused["spec"]["paused"] = True
    values = {"prometheusRule": {"enabled": False}}  # no monitoring.coreos.com CRDs here

    server = KubeApiServer(binaries()[0])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            old_chart = Path(tmp) / "gameshard"
            shutil.copytree(CHART, old_chart)
            (old_chart / "crds" / CRD_FILE.name).write_text(yaml.safe_dump(old_crd))
            config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=str(server.kubeconfig))
            asyncio.run(
                helm_sdkpy.Install(config).run(
                    RELEASE, str(old_chart), values=values, create_namespace=True, wait=False, timeout=120
                )
            )

        def crd() -> dict:
            return json.loads(server.kubectl("get", "crd", "gameshards.gameshard.io", "-o", "json").stdout)

        def stored_shard() -> dict:
            name, ns = example["metadata"]["name"], example["metadata"]["namespace"]
            return json.loads(server.kubectl("get", "gameshard", name, "-n", ns, "-o", "json").stdout)

        def apply_shard(shard: dict) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["kubectl", f"--kubeconfig={server.kubeconfig}", "apply", "-f", "-"],
                input=json.dumps(shard),
                capture_output=True,
                text=True,
                timeout=120,
            )

        server.kubectl("create", "namespace", example["metadata"]["namespace"])
        assert apply_shard(example).returncode == 0
        refused = apply_shard(paused)
        assert refused.returncode != 0 and 'unknown field "spec.paused"' in refused.stderr, refused

        asyncio.run(helm_sdkpy.Upgrade(config).run(RELEASE, str(CHART), values=values, wait=False, timeout=120))
        assert "paused" not in spec_properties(crd()), "helm upgrade changed the CRD; update the README"

        # Helm's field manager owns the CRD's fields: a plain server-side apply conflicts.
        plain = subprocess.run(
            ["kubectl", f"--kubeconfig={server.kubeconfig}", "apply", "--server-side", "-f", str(CRD_FILE.parent)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plain.returncode != 0 and "conflict" in plain.stderr, plain.stdout + plain.stderr

        # The README's step, twice: it upgrades, then changes nothing.
        for _ in range(2):
            server.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE.parent))
            upgraded = crd()
            assert upgraded["spec"]["versions"][0]["schema"] == new_crd["spec"]["versions"][0]["schema"]
            assert upgraded["spec"]["versions"][0]["additionalPrinterColumns"] == (
                new_crd["spec"]["versions"][0]["additionalPrinterColumns"]
            )
        assert stored_shard()["spec"]["partitions"] == example["spec"]["partitions"], "the GameShard is gone"
        accepted = apply_shard(paused)
        assert accepted.returncode == 0, f"the upgraded CRD refuses spec.paused: {accepted.stderr}"
        assert stored_shard()["spec"].get("paused") is True, stored_shard()["spec"]
    finally:
        server.close()


@test("helm")
def test_chart_requires_kubernetes_1_27():
    expect_refusal({}, "kubeVersion", server_version="1.26.9")
    assert helm_install({}, server_version="1.27.0").of_kind("Deployment")


@test("helm")
def test_values_schema_rejects_bad_values():
    for values, fragment in [
        ({"replica": 2}, "replica"),
        ({"image": {"repository": "x", "tag": "1", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"kafkaSecrets": "kafka-creds"}, "kafkaSecrets"),
        ({"serviceMonitor": {"enabled": True, "interval": "soon"}}, "interval"),
        ({"prometheusRule": {"enabled": True, "extra": 1}}, "extra"),
    ]:
        expect_refusal(values, fragment)


@test("helm", "kubernetes-validate")
def test_manifests_validate_against_kubernetes_schemas():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    versions = ["1.27.0", latest_version()]
    renders = [
        rendered("default"),
        rendered("full"),
        helm_install(
            {
                "leaderElection": {"enabled": False},
                "serviceAccount": {"create": False, "name": "existing"},
                "prometheusRule": {"enabled": False},
                "nodeSelector": {"pool": "ops"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                            ]
                        }
                    }
                },
                "imagePullSecrets": [{"name": "regcred"}],
                "podAnnotations": {"example.com/team": "games"},
                "podLabels": {"team": "games"},
                "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Games"}},
                "serviceMonitor": {"enabled": True, "scrapeTimeout": "10s", "labels": {"release": "kps"}},
            }
        ),
    ]
    checked = 0
    for render in renders:
        # The chart's own objects, and (once) the CRDs of crds/.
        for obj in render.objects + (render.crds if render is renders[0] else []):
            what = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            if obj["kind"] != "CustomResourceDefinition":  # the operator generates those
                assert_standard_labels(obj)
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", obj["metadata"]["name"]), what
            for value in obj["metadata"].get("labels", {}).values():
                assert len(value) <= 63 and re.fullmatch(
                    r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]?", value
                ), what
            if obj["kind"] in CRD_KINDS:
                check_monitoring_object(obj)
                continue
            assert obj["kind"] in CLUSTER_KINDS or obj["metadata"].get("namespace"), (
                f"{what}: namespaced objects name their namespace"
            )
            for version in versions:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    raise AssertionError(
                        f"{what} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}"
                    ) from None
                checked += 1
    note(f"{checked} validations (strict schemas of Kubernetes {' and '.join(versions)})")


def check_monitoring_object(obj: dict) -> None:
    """A structural check of the Prometheus Operator kinds."""
    what = f"{obj['kind']} {obj['metadata']['name']}"
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", what
    assert obj["metadata"].get("namespace") == NAMESPACE, what
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) == {"selector", "endpoints"}, f"{what}: {set(spec)}"
        assert spec["selector"]["matchLabels"], what
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}, f"{what}: {endpoint}"
            for key in ("interval", "scrapeTimeout"):
                if key in endpoint:
                    assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key]), (
                        f"{what}: {key} {endpoint[key]!r}"
                    )
    else:
        assert list(spec) == ["groups"], f"{what}: {set(spec)}"
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"], what
            for rule in group["rules"]:
                assert isinstance(rule["expr"], str), rule
                assert ("alert" in rule) != ("record" in rule), rule
                allowed = {"alert", "record", "expr", "for", "labels", "annotations"}
                assert set(rule) <= allowed, f"{what}: {set(rule) - allowed}"


@test("helm")
def test_rbac_cluster_wide_by_default():
    render = rendered("default")
    cluster_role = render.one("ClusterRole", RELEASE)
    assert rule_set(cluster_role["rules"]) == OPERATOR_RULES, cluster_role["rules"]
    binding = render.one("ClusterRoleBinding", RELEASE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RELEASE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    # Only the leader-election Role, in the release namespace.
    roles = render.of_kind("Role")
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in roles] == [
        (f"{RELEASE}-leader-election", NAMESPACE)
    ], roles
    assert rule_set(roles[0]["rules"]) == LEASE_RULES
    lease_binding = render.one("RoleBinding", f"{RELEASE}-leader-election", NAMESPACE)
    assert lease_binding["roleRef"]["name"] == f"{RELEASE}-leader-election"
    assert lease_binding["subjects"] == binding["subjects"]
    assert render.one("ServiceAccount", RELEASE, NAMESPACE)


@test("helm")
def test_rbac_per_namespace_with_watch_namespaces():
    render = rendered("full")
    assert not render.of_kind("ClusterRole") and not render.of_kind("ClusterRoleBinding")
    for ns in ("a", "b"):
        role = render.one("Role", RELEASE, ns)
        rules, secrets = split_secret_rules(role["rules"])
        assert rule_set(rules) == OPERATOR_RULES, role["rules"]
        assert secrets == [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kafka-creds"], "verbs": ["get"]}
        ], secrets
        binding = render.one("RoleBinding", RELEASE, ns)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    namespaces = sorted({r["metadata"]["namespace"] for r in render.of_kind("Role")})
    assert namespaces == ["a", "b", NAMESPACE], namespaces
    assert render.one("Role", f"{RELEASE}-leader-election", NAMESPACE)


@test("helm")
def test_rbac_secrets_only_by_name():
    """No rendering grants list or watch on Secrets, nor get without resourceNames, nor
    any wildcard; kafkaSecrets in cluster-wide mode gives a named `get` in the ClusterRole."""
    cluster_wide = helm_install({"kafkaSecrets": ["kafka-creds", "other-creds"]})
    _, secrets = split_secret_rules(cluster_wide.one("ClusterRole")["rules"])
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kafka-creds", "other-creds"],
            "verbs": ["get"],
        }
    ], secrets
    for render in (rendered("default"), rendered("full"), cluster_wide):
        for role in render.of_kind("Role") + render.of_kind("ClusterRole"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert not NEVER & set(rule["verbs"]), f"{role['metadata']['name']}: {rule}"
                if rule["resources"] != ["pods"]:
                    continue
                assert rule["verbs"] == ["list"], f"the operator only lists pods: {rule}"
                if "secrets" in rule["resources"]:
                    assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
                    assert rule.get("resourceNames"), rule
    # Without kafkaSecrets, no rule mentions Secrets at all.
    for role in rendered("default").of_kind("ClusterRole") + rendered("default").of_kind("Role"):
        assert not split_secret_rules(role["rules"])[1], role


@test("helm")
def test_operator_deployment():
    render = rendered("default")
    deployment = render.one("Deployment", RELEASE, NAMESPACE)
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["serviceAccountName"] == RELEASE
    c = render.container()
    assert c["image"] == f"ghcr.io/gameshard/gameshard-operator:{APP_VERSION}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == [
        "run",
        "--metrics-addr",
        "0.0.0.0:8080",
        "--dataplane-image",
        f"ghcr.io/gameshard/gameshard-dataplane:{APP_VERSION}",
        "--leader-election",
    ], c["args"]
    assert c["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "RUST_LOG", "value": "info"},
    ], c["env"]
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert key not in pod["spec"], f"{key} rendered without a value"

    full = rendered("full").container()
    assert full["args"][-3:] == ["--namespaces", "a,b", "--leader-election"], full["args"]


@test("helm")
def test_operator_probes_have_explicit_timeouts():
    """The kubelet's default probe timeout (1 s) is not left to chance, and liveness, which
    restarts the operator, is the more patient of the two."""
    c = rendered("default").container()
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["timeoutSeconds"] == 5 and ready["timeoutSeconds"] == 2, (live, ready)
    for probe in (live, ready):
        assert probe["timeoutSeconds"] < probe["periodSeconds"], probe


@test()
def test_burn_rate_tiers_follow_the_multiwindow_scheme():
    """The latency alerts are the SRE workbook's four tiers: (burn rate, long window,
    short window, severity), and nothing else pages beside them for the same incident."""
    tiers = {}
    for rule in alert_rules():
        found = re.findall(r"ratio_rate(\w+) > \(([0-9.]+) \* 0\.01\)", rule["expr"])
        if found:
            (short, rate), (long, rate_again) = found
            assert rate == rate_again, f"{rule['alert']}: two burn rates {found}"
            tiers[rule["alert"]] = (float(rate), long, short, rule["labels"]["severity"])
    assert sorted(tiers.values()) == [
        (1.0, "3d", "6h", "ticket"),
        (3.0, "1d", "2h", "ticket"),
        (6.0, "6h", "30m", "page"),
        (14.4, "1h", "5m", "page"),
    ], tiers
    # Lag is a cause whose symptom, latency, already pages.
    lag = next(r for r in alert_rules() if r["alert"] == "GameShardPartitionLagHigh")
    assert lag["labels"]["severity"] == "ticket", lag["labels"]


@test("helm")
def test_operator_pod_is_hardened():
    for render in (rendered("default"), rendered("full")):
        pod_sc = render.one("Deployment")["spec"]["template"]["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 65532, pod_sc
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, pod_sc
        sc = render.container()["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, sc
        assert sc["readOnlyRootFilesystem"] is True, sc
        assert sc["allowPrivilegeEscalation"] is False, sc
        assert sc["capabilities"] == {"drop": ["ALL"]}, sc
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, sc
        assert not sc.get("privileged"), sc


@test("helm")
def test_values_reach_the_pod():
    render = helm_install(
        {
            "image": {"repository": "registry.example.com/op", "tag": "1.2.3", "pullPolicy": "Always"},
            "dataplaneImage": {"repository": "registry.example.com/dp", "tag": "4.5.6"},
            "replicas": 2,
            "logLevel": "debug,kube=info",
            "leaderElection": {"enabled": True},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "nodeSelector": {"pool": "ops"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {}},
            "podAnnotations": {"example.com/a": "b"},
            "podLabels": {"team": "games"},
            "imagePullSecrets": [{"name": "regcred"}],
        },
        release="prod",
    )
    deployment = render.one("Deployment", "prod-gameshard")
    pod = deployment["spec"]["template"]
    c = render.container()
    assert deployment["spec"]["replicas"] == 2
    assert c["image"] == "registry.example.com/op:1.2.3" and c["imagePullPolicy"] == "Always"
    assert c["args"][4] == "registry.example.com/dp:4.5.6", c["args"]
    assert {"name": "RUST_LOG", "value": "debug,kube=info"} in c["env"]
    # Helm merges the given resources into the defaults.
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "256Mi"}}
    assert pod["spec"]["nodeSelector"] == {"pool": "ops"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["spec"]["affinity"] == {"podAntiAffinity": {}}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"] == {"example.com/a": "b"}
    assert pod["metadata"]["labels"]["team"] == "games"
    for obj in render.objects:
        assert_standard_labels(obj, release="prod")
        assert obj["metadata"]["name"].startswith("prod-gameshard"), obj["metadata"]["name"]


@test("helm")
def test_leader_election_off():
    render = helm_install({"leaderElection": {"enabled": False}})
    assert "--leader-election" not in render.container()["args"]
    assert not render.of_kind("Role") and not render.of_kind("RoleBinding"), "no Lease role without election"
    expect_refusal({"replicas": 2, "leaderElection": {"enabled": False}}, "leaderElection.enabled")


@test("helm")
def test_existing_service_account():
    render = helm_install({"serviceAccount": {"create": False, "name": "existing"}})
    assert not render.of_kind("ServiceAccount")
    assert render.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    for binding in render.of_kind("ClusterRoleBinding") + render.of_kind("RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "existing", "namespace": NAMESPACE}]
    expect_refusal({"serviceAccount": {"create": False, "name": ""}}, "serviceAccount.name")


@test("helm")
def test_metrics_service_and_service_monitor():
    default = rendered("default")
    assert not default.of_kind("ServiceMonitor"), "the ServiceMonitor is off by default"
    render = rendered("full")
    service = render.one("Service", f"{RELEASE}-metrics", NAMESPACE)
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    pod_labels = render.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items(), "the Service selects the operator pods"
    monitor = render.one("ServiceMonitor", RELEASE, NAMESPACE)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http-metrics", "path": "/metrics", "interval": "30s"}]
    labelled = helm_install(
        {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}}}
    )
    monitor = labelled.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"


@test("helm")
def test_prometheus_rule_is_the_alerts_file():
    render = rendered("default")
    rule = render.one("PrometheusRule", RELEASE, NAMESPACE)
    assert rule["spec"] == {"groups": load_yaml(ALERTS)["groups"]}, (
        "the PrometheusRule differs from files/alerts.yaml"
    )
    assert rule["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    labelled = helm_install({"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}})
    assert labelled.one("PrometheusRule")["metadata"]["labels"]["release"] == "kps"
    assert not helm_install({"prometheusRule": {"enabled": False}}).of_kind("PrometheusRule")


@test("helm")
def test_grafana_dashboard_configmap():
    assert not rendered("default").of_kind("ConfigMap"), "the dashboard is off by default"
    cm = rendered("full").one("ConfigMap", f"{RELEASE}-dashboard", NAMESPACE)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["gameshard.json"]) == json.loads(DASHBOARD.read_text())


@test("helm")
def test_notes():
    notes = rendered("default").notes
    for text in (
        "examples/gameshard.yaml",
        "kubectl get gs",
        f"svc/{RELEASE}-metrics",
        "every namespace",
        "serviceMonitor.enabled=true",
        f"PrometheusRule {NAMESPACE}/{RELEASE}",
        "grafanaDashboard.enabled=true",
        "kafkaSecrets",
    ):
        assert text in notes, f"NOTES.txt (default values) lacks {text!r}:\n{notes}"
    notes = rendered("full").notes
    for text in (
        "the namespaces a, b",
        "must be one of: a, b",
        "these Secrets, by name: kafka-creds",
        f"ServiceMonitor {NAMESPACE}/{RELEASE}",
        f"ConfigMap {NAMESPACE}/{RELEASE}-dashboard",
    ):
        assert text in notes, f"NOTES.txt (full values) lacks {text!r}:\n{notes}"


@test()
def test_values_file_is_documented():
    """Every key of values.yaml, down to the second level, has a comment just above it
    (the contents of resources are Kubernetes' own and exempt)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    parent = None
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent = len(m[1])
        if indent == 0:
            parent = m[2]
        if indent > 2 or (indent == 2 and parent == "resources"):
            continue
        assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"values.yaml:{i + 1}: {m[2]} has no comment"


def main() -> int:
    # Helm's Go library reads its settings from the environment the process started with:
    # run again with a private Helm home and the in-memory release store.
    if "GAMESHARD_HELM_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="gameshard-helm-")
        env = dict(
            os.environ,
            GAMESHARD_HELM_HOME=home,
            HELM_DRIVER="memory",
            HELM_CACHE_HOME=f"{home}/cache",
            HELM_CONFIG_HOME=f"{home}/config",
            HELM_DATA_HOME=f"{home}/data",
        )
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sys.path.insert(0, str(HERE))
    try:
        import yaml  # noqa: F401 - every test reads YAML
    except ImportError:
        why = "Python package PyYAML not installed"
        if REQUIRE_TOOLS:
            print(f"FAIL all chart tests: {why}")
            print(f"chart: 0 passed, {len(TESTS)} failed, 0 skipped")
            return 1
        print(f"SKIP all chart tests: {why}")
        print(f"chart: 0 passed, 0 failed, {len(TESTS)} skipped")
        return 0
    try:
        return run_tests()
    finally:
        shutil.rmtree(os.environ["GAMESHARD_HELM_HOME"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
