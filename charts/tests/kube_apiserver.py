"""A real etcd and kube-apiserver on the loopback interface, for the chart tests that need
an API server's own behaviour (the CRD upgrade step), from the binaries that
scripts/controlplane builds into ~/.cache/gameshard/kube-<version>/.

The API server stores objects and nothing runs them: no controller manager, no nodes.
Authentication is a static token of a member of system:masters.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def binaries() -> tuple[Path | None, str]:
    """The folder holding etcd and kube-apiserver, or None and why not."""
    script = REPO / "scripts" / "controlplane"
    if script.exists():
        done = subprocess.run([str(script), "--check"], capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip().splitlines()[-1]), ""
        return None, f"scripts/controlplane --check: {done.stderr.strip() or 'not built'} (scripts/setup builds it)"
    cache = Path(os.environ.get("GAMESHARD_CACHE", Path.home() / ".cache" / "gameshard"))
    for folder in sorted(cache.glob("kube-v*"), reverse=True):
        if (folder / "etcd").exists() and (folder / "kube-apiserver").exists():
            return folder, ""
    return None, f"no etcd and kube-apiserver under {cache}/kube-v* (scripts/setup builds them)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KubeApiServer:
    """etcd and kube-apiserver in a temporary folder; `close()` stops both."""

    def __init__(self, bin_dir: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="gameshard-kube-"))
        self.processes: list[subprocess.Popen] = []
        try:
            self._start(bin_dir)
        except BaseException:
            self.close()
            raise

    def _start(self, bin_dir: Path) -> None:
        client, peer, api = _free_port(), _free_port(), _free_port()
        self._spawn(
            "etcd",
            bin_dir / "etcd",
            "--name=gameshard",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=gameshard=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        )
        key = self.dir / "service-account.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True, timeout=60
        )
        self.token = secrets.token_hex(16)
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        self.url = f"https://127.0.0.1:{api}"
        self._spawn(
            "kube-apiserver",
            bin_dir / "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # No kubernetes Service endpoints: a loopback address may not be one.
            "--endpoint-reconciler-type=none",
            f"--secure-port={api}",
            f"--cert-dir={self.dir / 'certs'}",
            # A setting of the API server only: nothing here routes to it.
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={key}",
            f"--service-account-signing-key-file={key}",
        )
        self.kubeconfig = self.dir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: test, cluster: {{server: '{self.url}', insecure-skip-tls-verify: true}}}}]\n"
            f"users: [{{name: admin, user: {{token: {self.token}}}}}]\n"
            "contexts: [{name: test, context: {cluster: test, user: admin, namespace: default}}]\n"
            "current-context: test\n"
        )
        self._wait_ready(timeout=120)

    def _spawn(self, name: str, program: Path, *args: str) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.processes.append(subprocess.Popen([str(program), *args], stdout=log, stderr=log))

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            for p, name in zip(self.processes, ("etcd", "kube-apiserver")):
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}):\n{self.log_tail(name)}")
            request = urllib.request.Request(
                f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
            )
            try:
                with urllib.request.urlopen(request, context=insecure, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready in {timeout} s:\n{self.log_tail('kube-apiserver')}")
            time.sleep(0.5)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Runs kubectl against this server; raises with its output if it fails."""
        done = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def close(self) -> None:
        for p in reversed(self.processes):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
