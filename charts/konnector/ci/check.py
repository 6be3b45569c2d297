"""Chart checks run by check.sh: lint, render, validate, RBAC and deployment invariants.

Exits non-zero on the first failing scenario, after printing every problem found in it.
"""

from __future__ import annotations

import copy
import io
import sys
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CI = Path(__file__).resolve().parent
CHART = CI.parent
RENDERED = CI / "rendered"
RELEASE = "konnector"
# The version the konnector is built against (k8s-openapi v1_33) and the newest the validator
# knows.
KUBE_VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]
# Kinds without a schema in kubernetes-validate, checked structurally below instead.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}


class Scenario:
    def __init__(
        self,
        name: str,
        namespace: str,
        values_file: str | None,
        control_plane: bool,
        claims_secrets: bool = False,
        snapshot: bool = False,
        fleet: bool = False,
    ) -> None:
        self.name = name
        self.fleet = fleet
        self.namespace = namespace
        self.values: dict[str, Any] = (
            yaml.safe_load((CI / values_file).read_text()) if values_file else {}
        )
        self.control_plane = control_plane
        self.claims_secrets = claims_secrets
        self.snapshot = snapshot
        rbac = self.values.get("rbac") or {}
        # The effective rbac.claimedResourcesScope (empty: namespaces in control-plane mode).
        self.claimed_scope: str = rbac.get("claimedResourcesScope") or (
            "namespaces" if control_plane and not fleet else "cluster"
        )
        self.lease_namespace: str = (self.values.get("leaderElection") or {}).get(
            "leaseNamespace"
        ) or namespace
        self.claimed_namespaces: list[str] = rbac.get("claimedResourceNamespaces") or []
        self.claimed_resources: set[tuple[str, str]] = {
            (c.get("apiGroup") or "", r)
            for c in rbac.get("claimedResources") or []
            for r in c.get("resources") or []
        }


SCENARIOS = [
    Scenario("default", "klutch-bind", None, control_plane=False, snapshot=True),
    Scenario("default-full", "klutch-bind", "default-full-values.yaml", False, claims_secrets=True),
    Scenario(
        "control-plane",
        "klutch-bind-team-a-app-1",
        "control-plane-values.yaml",
        control_plane=True,
        snapshot=True,
    ),
    Scenario(
        "control-plane-full",
        "klutch-bind-team-a-app-1",
        "control-plane-full-values.yaml",
        control_plane=True,
        claims_secrets=True,
    ),
    # Claimed Secrets per namespace (e2e_chart_rbac runs these two renderings).
    Scenario(
        "default-claims-namespaces",
        "klutch-bind",
        "default-claims-namespaces-values.yaml",
        control_plane=False,
        claims_secrets=True,
        snapshot=True,
    ),
    Scenario(
        "control-plane-claims",
        "klutch-bind-team-a-app-1",
        "control-plane-claims-values.yaml",
        control_plane=True,
        claims_secrets=True,
        snapshot=True,
    ),
    # The cluster-wide option kept for control-plane mode.
    Scenario(
        "control-plane-cluster-claims",
        "klutch-bind-team-a-app-1",
        "control-plane-cluster-claims-values.yaml",
        control_plane=True,
        claims_secrets=True,
    ),
    # Fleet mode (e2e_chart_rbac runs this rendering).
    Scenario(
        "fleet",
        "klutch-fleet",
        "fleet-values.yaml",
        control_plane=True,
        fleet=True,
        snapshot=True,
    ),
    Scenario(
        "fleet-full",
        "klutch-fleet",
        "fleet-full-values.yaml",
        control_plane=True,
        claims_secrets=True,
        fleet=True,
    ),
]

# Values that must not render, with the message the user sees.
MUST_FAIL = [
    (
        {"controlPlaneMode": {"enabled": True}, "appClusterKubeconfigSecret": {"name": "k"}},
        "bindingRootNamespace is required when controlPlaneMode.enabled is true",
    ),
    (
        {"controlPlaneMode": {"enabled": True}, "bindingRootNamespace": "r"},
        "appClusterKubeconfigSecret.name is required when controlPlaneMode.enabled is true",
    ),
    (
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.service.enabled",
    ),
    (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
    (
        {"rbac": {"claimedResourcesScope": "namespace"}},
        'rbac.claimedResourcesScope must be cluster or namespaces (or empty), not "namespace"',
    ),
    (
        {"rbac": {"claimedResourceNamespaces": ["team-a"]}},
        "rbac.claimedResourceNamespaces needs rbac.claimedResourcesScope=namespaces",
    ),
    (
        {"fleet": {"enabled": True}, "controlPlaneMode": {"enabled": True}},
        "fleet.enabled and controlPlaneMode.enabled exclude each other",
    ),
    (
        {"fleet": {"enabled": True}, "appClusterKubeconfigSecret": {"name": "k"}},
        "unset appClusterKubeconfigSecret.name",
    ),
    (
        {"fleet": {"enabled": True}, "bindingRootNamespace": "r"},
        "unset bindingRootNamespace",
    ),
    (
        {"fleet": {"enabled": True}, "rbac": {"claimedResourcesScope": "namespaces"}},
        "fleet.enabled needs rbac.claimedResourcesScope=cluster",
    ),
]


def render(values: dict[str, Any], namespace: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=namespace, is_install=True)


def documents(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for source in sorted(rendered):
        if not source.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[source]):
            if doc:
                docs.append((source, doc))
    return docs


def snapshot_text(rendered: dict[str, str]) -> str:
    out = io.StringIO()
    out.write("# Generated by charts/konnector/ci/check.sh --update. Do not edit.\n")
    for source in sorted(rendered):
        if not source.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[source]):
            if doc:
                out.write(f"---\n# Source: {source}\n")
                out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    return out.getvalue()


def validate(doc: dict[str, Any], where: str, problems: list[str]) -> None:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in NO_SCHEMA:
        check_service_monitor(doc, where, problems)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: invalid for Kubernetes {e.version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: {e.message}")


def check_service_monitor(doc: dict[str, Any], where: str, problems: list[str]) -> None:
    spec = doc.get("spec") or {}
    endpoints = spec.get("endpoints") or []
    if not spec.get("selector", {}).get("matchLabels"):
        problems.append(f"{where}: ServiceMonitor without spec.selector.matchLabels")
    if not endpoints or any(set(e) - {"port", "path", "interval", "scrapeTimeout"} for e in endpoints):
        problems.append(f"{where}: ServiceMonitor endpoints missing or with unexpected fields")
    if any(e.get("port") != "metrics" or e.get("path") != "/metrics" for e in endpoints):
        problems.append(f"{where}: ServiceMonitor must scrape port metrics at /metrics")


def name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def check_rbac(docs: list[tuple[str, dict[str, Any]]], s: Scenario, problems: list[str]) -> None:
    for source, doc in docs:
        if doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        where = f"{s.name}: {source}: {name_of(doc)}"
        for i, rule in enumerate(doc.get("rules") or []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                for value in rule.get(field) or []:
                    if "*" in value:
                        problems.append(f"{where}: rule {i} uses a wildcard in {field}: {value!r}")
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: rule {i} grants non-resource URLs")
            for verb in ("escalate", "bind", "impersonate"):
                if verb in rule.get("verbs", []):
                    problems.append(f"{where}: rule {i} grants {verb}")
    check_claimed_scope(docs, s, problems)
    if s.fleet:
        check_fleet_leases(docs, s, problems)
    kinds = {doc.get("kind") for _, doc in docs}
    for kind in ("ServiceAccount", "RoleBinding", "ClusterRoleBinding"):
        if kind not in kinds:
            problems.append(f"{s.name}: no {kind} rendered")
    sa = next(d for _, d in docs if d.get("kind") == "ServiceAccount")["metadata"]["name"]
    for _, doc in docs:
        if doc.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            subjects = doc.get("subjects") or []
            expected = [{"kind": "ServiceAccount", "name": sa, "namespace": s.namespace}]
            if subjects != expected:
                problems.append(f"{s.name}: {name_of(doc)} binds {subjects}, not only the chart's SA")


def check_fleet_leases(
    docs: list[tuple[str, dict[str, Any]]], s: Scenario, problems: list[str]
) -> None:
    """Fleet mode: cluster-wide, Leases may only be created, or read and renewed by the app
    cluster Lease's name; unrestricted Lease rights (the heartbeats) only in the lease namespace."""
    lease_name = (s.values.get("leaderElection") or {}).get("leaseName") or "klutch-bind"
    for _, doc in docs:
        kind = doc.get("kind")
        if kind not in ("Role", "ClusterRole"):
            continue
        for i, rule in enumerate(doc.get("rules") or []):
            if "leases" not in (rule.get("resources") or []):
                continue
            verbs = set(rule.get("verbs") or [])
            where = f"{s.name}: {name_of(doc)} rule {i}"
            if kind == "Role":
                if doc["metadata"].get("namespace") != s.lease_namespace:
                    problems.append(f"{where}: Lease rights outside the lease namespace")
                continue
            if verbs == {"create"}:
                continue
            if not verbs <= {"get", "list", "watch", "update"}:
                problems.append(f"{where}: cluster-wide Lease verbs {sorted(verbs)}")
            if rule.get("resourceNames") != [lease_name]:
                problems.append(f"{where}: cluster-wide Lease rights not limited to {lease_name}")
    roles = [
        d for _, d in docs
        if d.get("kind") == "Role" and d["metadata"].get("namespace") == s.lease_namespace
        and any("leases" in (r.get("resources") or []) for r in d.get("rules") or [])
    ]
    if len(roles) != 1:
        problems.append(f"{s.name}: expected one heartbeat Lease Role in {s.lease_namespace}")


def granted(role: dict[str, Any]) -> set[tuple[str, str]]:
    """(apiGroup, resource) pairs a Role or ClusterRole grants any verb on."""
    return {
        (group, resource)
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
    }


def check_claimed_scope(
    docs: list[tuple[str, dict[str, Any]]], s: Scenario, problems: list[str]
) -> None:
    """Where Secrets and the claimed resources are granted: cluster-wide only in `cluster` scope;
    in `namespaces` scope only through the unbound ClusterRole `<ns>-<fullname>-claimed-resources`
    and RoleBindings of it in the listed namespaces."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _, doc in docs:
        by_kind.setdefault(doc.get("kind", ""), []).append(doc)
    cluster_roles = {d["metadata"]["name"]: d for d in by_kind.get("ClusterRole", [])}
    bound_cluster_wide = {
        d["roleRef"]["name"]
        for d in by_kind.get("ClusterRoleBinding", [])
        if d["roleRef"]["kind"] == "ClusterRole"
    }
    claimed_role = f"{s.namespace}-{RELEASE}-claimed-resources"
    claimed_label = "klutch.anynines.com/aggregate-to-konnector-claimed"
    for name in sorted(bound_cluster_wide):
        role = cluster_roles.get(name)
        if role is None:
            problems.append(f"{s.name}: ClusterRoleBinding to unrendered ClusterRole {name}")
            continue
        rights = granted(role)
        claimed_cluster_wide = s.claims_secrets and s.claimed_scope == "cluster"
        if ("", "secrets") in rights and not claimed_cluster_wide:
            # Fleet mode reads the kubeconfig Secrets from one watch of all Secrets: list and
            # watch only, nothing more.
            verbs = {
                v
                for rule in role.get("rules") or []
                if "secrets" in (rule.get("resources") or [])
                for v in rule.get("verbs") or []
            }
            if not (s.fleet and verbs == {"list", "watch"}):
                problems.append(
                    f"{s.name}: ClusterRole/{name}: Secrets granted cluster-wide ({sorted(verbs)})"
                )
        if s.claimed_scope == "namespaces":
            if rights & s.claimed_resources:
                problems.append(
                    f"{s.name}: ClusterRole/{name}: claimed resources "
                    f"{sorted(rights & s.claimed_resources)} granted cluster-wide in namespaces scope"
                )
            selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
            if any(claimed_label in (sel.get("matchLabels") or {}) for sel in selectors):
                problems.append(
                    f"{s.name}: ClusterRole/{name} is bound cluster-wide and aggregates the "
                    "claimed-resource ClusterRoles"
                )
    role_bindings = by_kind.get("RoleBinding", [])
    claimed_bindings = sorted(
        d["metadata"]["namespace"] for d in role_bindings if d["roleRef"]["name"] == claimed_role
    )
    if s.claimed_scope == "cluster":
        if claimed_role in cluster_roles or claimed_bindings:
            problems.append(f"{s.name}: {claimed_role} rendered in cluster scope")
        return
    role = cluster_roles.get(claimed_role)
    if role is None:
        problems.append(f"{s.name}: namespaces scope without ClusterRole {claimed_role}")
        return
    # Aggregated: the listed rules come from the ClusterRoles its selectors pick out.
    selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
    rights = granted(role)
    for other in cluster_roles.values():
        labels = other["metadata"].get("labels") or {}
        if any(
            (sel.get("matchLabels") or {}).items() <= labels.items() for sel in selectors
        ):
            rights |= granted(other)
    if not s.claimed_resources <= rights:
        problems.append(
            f"{s.name}: {claimed_role} lacks {sorted(s.claimed_resources - rights)}"
        )
    if claimed_bindings != sorted(s.claimed_namespaces):
        problems.append(
            f"{s.name}: RoleBindings of {claimed_role} in {claimed_bindings}, "
            f"expected {sorted(s.claimed_namespaces)}"
        )


def check_deployment(docs: list[tuple[str, dict[str, Any]]], s: Scenario, problems: list[str]) -> None:
    deployments = [d for _, d in docs if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        problems.append(f"{s.name}: expected one Deployment, got {len(deployments)}")
        return
    d = deployments[0]
    where = f"{s.name}: {name_of(d)}"
    spec = d["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    args = c.get("args") or []
    expect = {
        "replicas": spec.get("replicas") == 2,
        "POD_NAME from the downward API": {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c.get("env", []),
        "POD_NAMESPACE from the downward API": {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c.get("env", []),
        "liveness /healthz on the health port": c.get("livenessProbe", {}).get("httpGet") == {"path": "/healthz", "port": "health"},
        "readiness /readyz on the health port": c.get("readinessProbe", {}).get("httpGet") == {"path": "/readyz", "port": "health"},
        "runAsNonRoot": c["securityContext"].get("runAsNonRoot") is True and pod["securityContext"].get("runAsNonRoot") is True,
        "readOnlyRootFilesystem": c["securityContext"].get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation false": c["securityContext"].get("allowPrivilegeEscalation") is False,
        "capabilities drop ALL": c["securityContext"].get("capabilities", {}).get("drop") == ["ALL"],
        "seccomp RuntimeDefault": c["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "resources": bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")),
        "serviceAccountName": bool(pod.get("serviceAccountName")),
        "--health-probe-bind-address": any(a.startswith("--health-probe-bind-address=:") for a in args),
        "--metrics-bind-address": any(a.startswith("--metrics-bind-address=:") for a in args),
        "--lease-name": any(a.startswith("--lease-name=") for a in args),
    }
    per_cluster = s.control_plane and not s.fleet
    cp_flags = {
        "--control-plane-mode=true": s.control_plane,
        "--fleet=true": s.fleet,
        "--fleet-selector=": s.fleet and bool((s.values.get("fleet") or {}).get("selector")),
        "--app-cluster-kubeconfig-secret-name=": per_cluster,
        "--app-cluster-kubeconfig-secret-namespace=": per_cluster,
        "--app-cluster-kubeconfig-secret-key=": per_cluster,
        "--binding-root-namespace=": per_cluster,
    }
    for flag, wanted in cp_flags.items():
        present = any(a.startswith(flag) for a in args)
        expect[f"{flag} {'present' if wanted else 'absent'}"] = present == wanted
    expect[f"--lease-namespace={s.lease_namespace}"] = f"--lease-namespace={s.lease_namespace}" in args
    for what, ok in expect.items():
        if not ok:
            problems.append(f"{where}: {what}")
    pdbs = [d for _, d in docs if d.get("kind") == "PodDisruptionBudget"]
    # Fleet mode: one replica (and its share of the app clusters) evicted at a time.
    budget = {"maxUnavailable": 1} if s.fleet else {"minAvailable": 1}
    if len(pdbs) != 1 or {k: v for k, v in pdbs[0]["spec"].items() if k != "selector"} != budget:
        problems.append(f"{s.name}: expected one PodDisruptionBudget with {budget}")
    services = [d for _, d in docs if d.get("kind") == "Service"]
    if len(services) != 1 or services[0]["spec"]["ports"][0].get("targetPort") != "metrics":
        problems.append(f"{s.name}: expected one metrics Service")


def check_scenario(s: Scenario, update: bool) -> list[str]:
    problems: list[str] = []
    report = helm.lint(
        CHART, s.values, strict=True, namespace=s.namespace, kube_version="v" + KUBE_VERSIONS[0]
    )
    for message in report.get("messages") or []:
        if message.get("severity", 0) >= 2:
            problems.append(f"{s.name}: lint: {message.get('path')}: {message.get('error')}")
    problems.extend(f"{s.name}: lint: {e}" for e in report.get("errors") or [])
    rendered = render(s.values, s.namespace)
    docs = documents(rendered)
    for source, doc in docs:
        for field in ("apiVersion", "kind"):
            if not doc.get(field):
                problems.append(f"{s.name}: {source}: document without {field}")
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(f"{s.name}: {source}: document without metadata.name")
        validate(doc, f"{s.name}: {source}: {name_of(doc)}", problems)
    check_rbac(docs, s, problems)
    check_deployment(docs, s, problems)
    if s.snapshot:
        path = RENDERED / f"{s.name}.yaml"
        text = snapshot_text(rendered)
        if update:
            RENDERED.mkdir(exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                print(f"   wrote {path.relative_to(CHART.parent.parent)}")
        elif not path.exists() or path.read_text() != text:
            problems.append(
                f"{s.name}: {path.relative_to(CHART.parent.parent)} is out of date; "
                "run `bash charts/konnector/ci/check.sh --update`"
            )
    kinds = sorted({d["kind"] for _, d in docs})
    print(f"   {s.name}: {len(docs)} manifests ({', '.join(kinds)})")
    return problems


def check_crds() -> list[str]:
    problems: list[str] = []
    with helm.Chart.load(CHART) as chart:
        crds = chart.crds
    if not crds:
        problems.append("crds/: no CRDs found")
    for crd in crds:
        for doc in yaml.safe_load_all(crd["data"]):
            if doc:
                validate(doc, f"{crd['filename']}: {name_of(doc)}", problems)
    print(f"   crds: {len(crds)} files")
    return problems


def check_must_fail() -> list[str]:
    problems: list[str] = []
    for values, message in MUST_FAIL:
        try:
            render(values, "klutch-bind")
        except helm.HelmError as e:
            if message not in str(e):
                problems.append(f"values {values}: failed with {e}, expected {message!r}")
            continue
        problems.append(f"values {values}: rendered, expected failure {message!r}")
    print(f"   invalid values: {len(MUST_FAIL)} rejected")
    return problems


def main() -> int:
    update = "--update" in sys.argv[1:]
    started = time.monotonic()
    helm.disable_logging()
    print(f"== konnector chart: helm {helm.helm_sdk_version()}, "
          f"kubernetes-validate {kubernetes_validate.version.__version__}, "
          f"Kubernetes {', '.join(KUBE_VERSIONS)}")
    problems: list[str] = []
    for s in SCENARIOS:
        problems += check_scenario(s, update)
    problems += check_crds()
    problems += check_must_fail()
    for p in problems:
        print(f"ERROR {p}", file=sys.stderr)
    took = time.monotonic() - started
    if problems:
        print(f"== chart check FAILED: {len(problems)} problems ({took:.1f}s)", file=sys.stderr)
        return 1
    print(f"== chart check passed ({took:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
