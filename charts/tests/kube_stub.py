"""A stand-in Kubernetes API server on the loopback interface, for Helm to install into.

helm-sdkpy exposes Helm's install action but not `helm template`, and Helm's install talks
to an API server: it reads the server version and API discovery, looks up each rendered
object, then creates it. This server answers exactly those requests, for the kinds the
chart renders, and records every object Helm creates. It keeps no other state: every
lookup is a 404 and every create succeeds, so each install sees an empty cluster.

A request it does not know is answered 404 and recorded in `unexpected`, so a test can
fail on it instead of Helm's behaviour changing unnoticed.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The server version the stand-in reports unless told otherwise.
DEFAULT_VERSION = "1.31.0"

# (group, version) -> [(resource, kind, namespaced)] for every kind the chart can render,
# plus the kinds Helm itself looks up.
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("configmaps", "ConfigMap", True),
        ("events", "Event", True),
        ("namespaces", "Namespace", False),
        ("pods", "Pod", True),
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
    ],
    ("apps", "v1"): [
        ("deployments", "Deployment", True),
        ("statefulsets", "StatefulSet", True),
    ],
    ("rbac.authorization.k8s.io", "v1"): [
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("clusterroles", "ClusterRole", False),
        ("rolebindings", "RoleBinding", True),
        ("roles", "Role", True),
    ],
    ("apiextensions.k8s.io", "v1"): [
        ("customresourcedefinitions", "CustomResourceDefinition", False),
    ],
    ("coordination.k8s.io", "v1"): [("leases", "Lease", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("monitoring.coreos.com", "v1"): [
        ("prometheusrules", "PrometheusRule", True),
        ("servicemonitors", "ServiceMonitor", True),
    ],
}

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

# /api/v1/... or /apis/<group>/<version>/..., then an optional namespace, the resource
# and an optional name.
_OBJECT_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?$"
)


def _discovery(path: str, server_version: str) -> dict | None:
    """The discovery document served at `path`, if it is a discovery path."""
    if path == "/version":
        major, minor, _ = server_version.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{server_version}",
            "platform": "linux/amd64",
        }
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for group, version in RESOURCES:
            if group:
                gv = {"groupVersion": f"{group}/{version}", "version": version}
                groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    for (group, version), resources in RESOURCES.items():
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if path == prefix:
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [
                    {
                        "name": name,
                        "singularName": kind.lower(),
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": _VERBS,
                    }
                    for name, kind, namespaced in resources
                ],
            }
    return None


def _known_resource(group: str, version: str, resource: str) -> bool:
    return any(name == resource for name, _, _ in RESOURCES.get((group, version), []))


class _Server(ThreadingHTTPServer):
    # Helm opens a connection per discovery request, all at once; the default listen
    # backlog of 5 drops some, which then retry a second later.
    request_queue_size = 64


class KubeStub:
    """Serves the stand-in API on 127.0.0.1 (an OS-chosen port) until `close()`, reporting
    Kubernetes `server_version` ("major.minor.patch")."""

    def __init__(self, server_version: str = DEFAULT_VERSION) -> None:
        self.created: list[dict] = []
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what: str) -> None:
                self._reply(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"{what} not found",
                        "reason": "NotFound",
                        "code": 404,
                    },
                )

            def _unexpected(self) -> None:
                with stub._lock:
                    stub.unexpected.append(f"{self.command} {self.path}")
                self._not_found(self.path)

            def _object_path(self):
                m = _OBJECT_PATH.match(self.path.split("?", 1)[0])
                if not m:
                    return None
                group = m["group"] or ""
                version = m["core"] or m["version"]
                if not _known_resource(group, version, m["resource"]):
                    return None
                return m

            def do_GET(self) -> None:
                doc = _discovery(self.path.split("?", 1)[0], server_version)
                if doc is not None:
                    self._reply(200, doc)
                elif (m := self._object_path()) and m["name"]:
                    # Helm looks each object up before creating it: the cluster is empty.
                    self._not_found(f'{m["resource"]} "{m["name"]}"')
                else:
                    self._unexpected()

            def do_POST(self) -> None:
                m = self._object_path()
                if not m or m["name"]:
                    self._unexpected()
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.created.append(body)
                body.setdefault("metadata", {})
                if m["namespace"]:
                    body["metadata"].setdefault("namespace", m["namespace"])
                body["metadata"].update(
                    uid=f"00000000-0000-0000-0000-{len(stub.created):012d}",
                    resourceVersion="1",
                    creationTimestamp="2024-01-01T00:00:00Z",
                )
                self._reply(201, body)

            do_PUT = do_PATCH = do_DELETE = _unexpected

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self) -> str:
        """A kubeconfig, as YAML text, that points at this server."""
        return (
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            f"- name: stub\n  cluster:\n    server: {self.url}\n"
            "users:\n"
            "- name: stub\n  user:\n    token: stub\n"
            "contexts:\n"
            "- name: stub\n  context:\n    cluster: stub\n    user: stub\n"
            "current-context: stub\n"
        )

    def reset(self) -> None:
        with self._lock:
            self.created.clear()
            self.unexpected.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
