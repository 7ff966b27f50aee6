"""A real, throwaway Kubernetes control plane for tests (envtest for Python, plus fake nodes).

``TestCluster`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
local processes (binaries from ``build.sh``) on free 127.0.0.1 ports, with fresh PKI in a temp
dir. kwok plays the kubelet for four fake nodes, so Deployments, Jobs, garbage collection,
scheduling (taints, extended resources such as nvidia.com/gpu) behave as in a real cluster,
while no container ever runs. Pods go Running (and Ready) as soon as they are bound; a test ends
one with ``finish_pod()``, holds one back from Ready with ``set_pod_ready()`` (see kwok-stages.yaml
for how). Pod IPs are loopback addresses (``pod_cidr``), so a test can serve on a pod's IP and port
(``http_server()``) and a client that dials ``http://<podIP>:<port>`` reaches it.

    with TestCluster() as cluster:
        subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])

CLI (for ``make cluster-up`` / ``make cluster-down``)::

    python tests/cluster/cluster.py up [--foreground]   # prints the admin kubeconfig path
    python tests/cluster/cluster.py down

Only the standard library, ``cryptography`` and ``pyyaml`` are used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
FAKE_EXIT_CODE_ANNOTATION = "llmops.dev/fake-exit-code"
FAKE_RUN_DURATION_ANNOTATION = "llmops.dev/fake-run-duration"
# Running but not Ready, for the reason given as the value (see kwok-stages.yaml, llmops-pod-not-ready);
# the kwok stage records what it wrote in a pod condition of the same name.
FAKE_NOT_READY_ANNOTATION = "llmops.dev/fake-not-ready"
FAKE_NOT_READY_MESSAGE_ANNOTATION = "llmops.dev/fake-not-ready-message"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.0.0.0/24"
# Pod IPs come from a loopback /16, 127.N.0.0/16 with N in [128, 254] picked per cluster (so a second cluster on
# the machine, e.g. `make cluster-up` next to a test run, rarely hands out the same addresses). All of 127.0.0.0/8
# is local on Linux: a test binds a server to exactly a pod's IP and container port, and whatever dials
# http://<podIP>:<port> (the operator's metric scrapes) reaches it. The API server accepts loopback pod IPs
# (status.podIPs only has to be a valid IP) but not in Endpoints/EndpointSlices, so the endpoint controllers are
# off and Services have no endpoints (see README.md). N = 255 is left out: 127.255.255.255 is loopback's broadcast.
# $LLMOPS_POD_CIDR or TestCluster(pod_cidr=...) chooses another range (kwok hands out its addresses in order).
POD_CIDR_SECOND_OCTETS = range(128, 255)
# Every fake node's address: kwok serves the kubelet API (container logs) for all of them on one loopback port,
# and the API server reaches a node's kubelet at its InternalIP and status.daemonEndpoints port.
NODE_IP = "127.0.0.1"
KWOK_GROUP, KWOK_VERSION = "kwok.x-k8s.io", "v1alpha1"

# (name, labels, allocatable, taints) of the fake nodes.
NODES: list[tuple[str, dict[str, str], dict[str, str], list[dict[str, str]]]] = [
    *(
        (f"cpu-{i}", {"llmops.dev/pool": "cpu"}, {"cpu": "32", "memory": "128Gi", "pods": "110"}, [])
        for i in range(2)
    ),
    *(
        (
            f"gpu-{i}",
            {"llmops.dev/pool": "gpu", "nvidia.com/gpu.present": "true"},
            {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
            [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        )
        for i in range(2)
    ),
]


class ClusterError(RuntimeError):
    pass


class ApiError(ClusterError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def binaries_dir() -> Path:
    """$LLMOPS_K8S_BIN, else whatever build.sh prints (it returns at once when cached)."""
    if env := os.environ.get("LLMOPS_K8S_BIN"):
        return Path(env)
    out = subprocess.run(["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


# --- PKI ------------------------------------------------------------------------------------


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    server_sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=True, key_encipherment=False)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True, key_encipherment=True)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH] if server_sans else [ExtendedKeyUsageOID.CLIENT_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    b = b.add_extension(
        x509.KeyUsage(content_commitment=False, data_encipherment=False, key_agreement=False,
                      encipher_only=False, decipher_only=False, **usage),
        critical=True,
    )
    if server_sans:
        b = b.add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_pki(d: Path) -> None:
    """One CA signs both the serving cert and client certs (like envtest); plus the SA key pair."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("llmops-test-ca"), ca_key, ca=True)
    (d / "ca.crt").write_bytes(_pem(ca))
    _write_key(d / "ca.key", ca_key)

    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    sans += [x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                       "kubernetes.default.svc.cluster.local")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1")]
    kubelet_sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(NODE_IP))]
    for name, subject, server in (
        ("apiserver", _name("kube-apiserver"), sans),
        ("admin", _name("llmops-admin", "system:masters"), None),  # RBAC superuser group
        # kwok's kubelet API (pod logs) serves with this; the API server checks it against the CA.
        ("kubelet", _name("kwok-kubelet"), kubelet_sans),
        ("apiserver-kubelet-client", _name("kube-apiserver-kubelet-client"), None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        (d / f"{name}.crt").write_bytes(_pem(_cert(subject, key, (ca, ca_key), server_sans=server)))
        _write_key(d / f"{name}.key", key)

    # Service-account tokens are signed by the apiserver (TokenRequest) with this key and
    # verified with its public half; RSA is what every consumer supports.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(d / "sa.key", sa_key)
    (d / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def kubeconfig_dict(server: str, ca_pem: bytes, user: dict[str, str], name: str = "llmops-test") -> dict[str, Any]:
    """A self-contained kubeconfig (all data inline, so it can be copied anywhere)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server,
                                                "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }


# --- processes ------------------------------------------------------------------------------


def _free_port(taken: set[int]) -> int:
    # Bind-to-0 then close: racy in theory, fine in practice for a local test run.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


# One watchdog process per cluster, in its own session. It reads the process-group ids of the
# control plane on stdin. Only the test process holds the pipe's write end, so EOF without a
# "stop" line means that process died without calling stop() (crash, SIGKILL, os._exit): the
# watchdog then kills the groups and removes the workdir, so an aborted run leaks nothing.
# (PR_SET_PDEATHSIG would be simpler but fires when the *thread* that started the child exits.)
_WATCHDOG = """
import os, shutil, signal, sys
pgids = []
for line in sys.stdin:
    if line.strip() == "stop":
        sys.exit(0)
    pgids.append(int(line))
for pgid in pgids:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
if sys.argv[1:]:
    shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class _Proc:
    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as out:
            # Own session = own process group: stop() signals the whole group.
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


class TestCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok with 2 cpu and 2 gpu nodes.

    Attributes after start(): ``kubeconfig`` (admin, system:masters), ``server`` (https URL),
    ``ca_file`` / ``ca_pem``, ``workdir`` (PKI, logs under workdir/logs).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, bin_dir: Path | None = None, *, keep_workdir: bool | None = None, timeout: float = 90,
                 pod_cidr: str | None = None) -> None:
        self._bin_arg = bin_dir
        self.pod_cidr = ipaddress.IPv4Network(
            pod_cidr or os.environ.get("LLMOPS_POD_CIDR") or f"127.{random.choice(POD_CIDR_SECOND_OCTETS)}.0.0/16")
        # Keep PKI and logs after stop() for debugging: keep_workdir=True or LLMOPS_CLUSTER_KEEP=1.
        self.keep_workdir = bool(os.environ.get("LLMOPS_CLUSTER_KEEP")) if keep_workdir is None else keep_workdir
        self.timeout = timeout
        self._procs: list[_Proc] = []
        self._watchdog: subprocess.Popen[str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._workdir: Path | None = None
        self._kubelet_port = 0
        self.server = ""

    # Context manager -------------------------------------------------------------------------
    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ClusterError("cluster not started")
        return self._workdir

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    # Lifecycle -------------------------------------------------------------------------------
    def start(self) -> TestCluster:
        bin_dir = self._bin_arg or binaries_dir()
        self._workdir = Path(tempfile.mkdtemp(prefix="llmops-cluster-"))
        try:
            self._watchdog = subprocess.Popen(
                # -I and cwd="/": the repo root has a folder `operator` that would shadow the stdlib's.
                [sys.executable, "-I", "-c", _WATCHDOG, *([] if self.keep_workdir else [str(self._workdir)])],
                stdin=subprocess.PIPE, text=True, start_new_session=True, cwd="/",
            )
            self._start(bin_dir)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise
        return self

    def _start(self, bin_dir: Path) -> None:
        w, pki, logs = self.workdir, self.workdir / "pki", self.workdir / "logs"
        logs.mkdir()
        make_pki(pki)
        ports: set[int] = set()
        etcd_client, etcd_peer, api_port, self._kubelet_port = (_free_port(ports) for _ in range(4))
        self.server = f"https://127.0.0.1:{api_port}"
        user = {
            "client-certificate-data": base64.b64encode((pki / "admin.crt").read_bytes()).decode(),
            "client-key-data": base64.b64encode((pki / "admin.key").read_bytes()).decode(),
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(self.server, self.ca_pem, user)))
        self.kubeconfig.chmod(0o600)  # holds the admin key
        self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        self._ssl.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        kc = str(self.kubeconfig)

        etcd_url = f"http://127.0.0.1:{etcd_client}"
        self._spawn("etcd", [
            str(bin_dir / "etcd"), "--name=default", f"--data-dir={w / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync=true",  # throwaway data: durability only costs time
        ])
        self.wait_for("etcd healthy", lambda: b'"health":"true"' in _http_get(f"{etcd_url}/health"))

        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--etcd-servers={etcd_url}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC", "--allow-privileged=true",
            # Pod logs: the API server proxies them from the node's "kubelet", which is kwok's server.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            # The `kubernetes` Service's Endpoints may not point at 127.0.0.1 (validation rejects
            # loopback), so the reconciler would fail forever; nothing in this cluster needs them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ])
        self.wait_for("kube-apiserver /readyz", lambda: self._get_text("/readyz") == "ok")

        common = [f"--kubeconfig={kc}", "--leader-elect=false", "--secure-port=0"]
        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), *common,
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            # Not the endpoint controllers: pod IPs are loopback addresses (see POD_CIDR_SECOND_OCTETS), which
            # Endpoints and EndpointSlices may not contain, so every Service would get a Warning Event and retries
            # instead of endpoints; nothing here reads them (no kube-proxy, no DNS).
            "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",  # each controller acts with its own RBAC role
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ])
        self._spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), *common,
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        ])
        # kwok serves pod logs as a kubelet would, from files named by `Logs` objects (see set_pod_log): their
        # CRD must be established before kwok starts watching them.
        self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", _kwok_logs_crd())
        self.wait_for("kwok Logs CRD", self._logs_crd_established)
        (w / "pod-logs").mkdir()
        # HOME points into the workdir so a developer's ~/.kwok/kwok.yaml is not merged in.
        self._spawn("kwok", [
            str(bin_dir / "kwok"), f"--kubeconfig={kc}", f"--config={HERE / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--node-ip={NODE_IP}", f"--cidr={self.pod_cidr}",
            f"--server-address={NODE_IP}:{self._kubelet_port}", f"--node-port={self._kubelet_port}",
            f"--tls-cert-file={pki / 'kubelet.crt'}", f"--tls-private-key-file={pki / 'kubelet.key'}",
            "--enable-crds=Logs",
        ], env={**os.environ, "HOME": str(w)})

        for name, labels, alloc, taints in NODES:
            self.request("POST", "/api/v1/nodes", _node(name, labels, alloc, taints, NODE_IP, self._kubelet_port))
        self.wait_for("nodes Ready", self._nodes_ready)
        # Pod creation is refused (ServiceAccount admission) until the SA controller has made it.
        default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
        self.wait_for("default ServiceAccount", lambda: self._exists(default_sa))

    def stop(self, grace: float = 5) -> None:
        """SIGTERM each process group (clients first, etcd last), SIGKILL after `grace` seconds."""
        # _procs is in start order: etcd, apiserver, then the clients of the apiserver.
        for group in (self._procs[2:], self._procs[1:2], self._procs[:1]):
            for p in group:
                p.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for p in group:
                try:
                    p.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.signal(signal.SIGKILL)
                    p.popen.wait()
                p.signal(signal.SIGKILL)  # anything the process left in its group
        self._procs.clear()
        if self._watchdog is not None:
            try:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write("stop\n")
                self._watchdog.stdin.close()
            except BrokenPipeError:
                pass
            self._watchdog.wait()
            self._watchdog = None
        if self._workdir is not None and not self.keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # API helpers -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        """Call the API as admin; returns decoded JSON (or text). Raises ApiError on HTTP errors."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as resp:
                raw = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace")) from None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def kubectl(self, *args: str, input: str | None = None, kubectl: str = "kubectl") -> str:
        return subprocess.run([kubectl, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              check=True, capture_output=True, text=True).stdout

    def finish_pod(self, namespace: str, name: str, exit_code: int = 0, *, wait: bool = True) -> dict[str, Any]:
        """End a Running pod: 0 -> Succeeded, else Failed with that exit code in every container.

        Sets the llmops.dev/fake-exit-code annotation; kwok's llmops-pod-finish stage then writes
        the terminal status, exactly as it does for pods created with that annotation in their
        template (add llmops.dev/fake-run-duration, e.g. "5s", to have them run that long first).
        """
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        self.request("PATCH", path, {"metadata": {"annotations": {FAKE_EXIT_CODE_ANNOTATION: str(exit_code)}}},
                     content_type="application/merge-patch+json")
        want = "Succeeded" if exit_code == 0 else "Failed"
        if wait:
            self.wait_for(f"pod {namespace}/{name} {want}",
                          lambda: self.request("GET", path)["status"].get("phase") == want)
        pod: dict[str, Any] = self.request("GET", path)
        return pod

    def set_pod_ready(self, namespace: str, name: str, ready: bool, *, reason: str = "ReadinessProbeFailed",
                      message: str | None = None, wait: bool = True) -> dict[str, Any]:
        """Make a Running pod Ready, or not Ready for `reason` (what kubectl shows for it is kwok's doing).

        Not ready sets the llmops.dev/fake-not-ready annotation (and -message when given), as a pod template can;
        kwok's llmops-pod-not-ready stage then writes Ready/ContainersReady False and, by the reason, the
        containers' state: a waiting reason such as "ImagePullBackOff" or "CrashLoopBackOff" as
        state.waiting.reason; "ModelLoadFailed" as a crash loop whose lastState.terminated has exit code 78 and
        message "model failed to load: <message>"; any other reason (the default: a failing readiness probe) as
        a running container that is not ready. Calling it again with another reason or message rewrites that.
        Ready removes both annotations; llmops-pod-ready-again then makes the pod Ready.
        Returns the pod as it is afterwards (once kwok has written it, unless wait=False).
        """
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        annotations = ({FAKE_NOT_READY_ANNOTATION: None, FAKE_NOT_READY_MESSAGE_ANNOTATION: None} if ready else
                       {FAKE_NOT_READY_ANNOTATION: reason, FAKE_NOT_READY_MESSAGE_ANNOTATION: message})
        self.request("PATCH", path, {"metadata": {"annotations": annotations}},
                     content_type="application/merge-patch+json")

        def written() -> bool:
            conditions = {c["type"]: c for c in self.request("GET", path)["status"].get("conditions", [])}
            marker = conditions.get(FAKE_NOT_READY_ANNOTATION)
            if ready:
                return conditions.get("Ready", {}).get("status") == "True" and marker is None
            return (conditions.get("Ready", {}).get("status") == "False" and marker is not None
                    and marker.get("reason", "") == reason and marker.get("message", "") == (message or ""))

        if wait:
            self.wait_for(f"pod {namespace}/{name} {'Ready' if ready else f'not Ready ({reason})'}", written)
        pod: dict[str, Any] = self.request("GET", path)
        return pod

    def wait_for_pod_ips(self, namespace: str, label_selector: str, count: int) -> dict[str, str]:
        """Wait until exactly `count` pods match the selector, all Running with an IP; returns {pod name: IP}."""
        found: dict[str, str] = {}

        def addressed() -> bool:
            query = urllib.parse.urlencode({"labelSelector": label_selector})
            pods = self.request("GET", f"/api/v1/namespaces/{namespace}/pods?{query}")["items"]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            found.clear()
            found.update({p["metadata"]["name"]: p["status"]["podIP"] for p in live
                          if p["status"].get("phase") == "Running" and p["status"].get("podIP")})
            return len(live) == count == len(found)

        self.wait_for(f"{count} running pods with an IP for {label_selector} in {namespace}", addressed)
        return dict(found)

    def set_pod_log(self, namespace: str, pod: str, lines: list[str], container: str = "main") -> None:
        """Make `lines` the stdout of a pod's container, as `kubectl logs` and the pods/log API return it.

        kwok's kubelet API reads the file a `Logs` object (kwok.x-k8s.io, one per pod) names; call again with
        more lines to let the "workload" print more. The file is in the CRI log format a kubelet keeps.
        """
        path = self.workdir / "pod-logs" / f"{namespace}_{pod}_{container}.log"
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{stamp} stdout F {line}\n" for line in lines))
        tmp.rename(path)  # a reader sees the old log or the new one, never half of it
        logs = {"apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}", "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"logs": [{"containers": [container], "logsFile": str(path)}]}}
        try:
            self.request("POST", f"/apis/{KWOK_GROUP}/{KWOK_VERSION}/namespaces/{namespace}/logs", logs)
        except ApiError as e:
            if e.status != 409:  # already there: the new file content is all that changes
                raise

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path | None = None, *,
                                   create: bool = True, expiration_seconds: int = 86400) -> Path:
        """Write a kubeconfig that authenticates as the ServiceAccount (token from TokenRequest)."""
        if create:
            try:
                self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                             {"metadata": {"name": name, "namespace": namespace}})
            except ApiError as e:
                if e.status != 409:
                    raise
        tr = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                           "spec": {"expirationSeconds": expiration_seconds}})
        path = path or self.workdir / f"kubeconfig-{namespace}-{name}"
        cfg = kubeconfig_dict(self.server, self.ca_pem, {"token": tr["status"]["token"]}, f"{namespace}-{name}")
        cfg["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    # Internals -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc = _Proc(name, argv, self.workdir / "logs", env)
        self._procs.append(proc)
        assert self._watchdog is not None and self._watchdog.stdin is not None
        self._watchdog.stdin.write(f"{proc.popen.pid}\n")
        self._watchdog.stdin.flush()

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        """Poll `ready` until true (errors count as not yet), at most `timeout` seconds; fail fast
        with the log tail if any control-plane process has exited."""
        deadline = time.monotonic() + self.timeout
        while True:
            for p in self._procs:
                if p.popen.poll() is not None:
                    raise ClusterError(f"{p.name} exited ({p.popen.returncode}) while waiting for {what}:\n{p.tail()}")
            try:
                if ready():
                    return
            except (OSError, ApiError, KeyError, ValueError):
                pass  # not up yet
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.tail(8)}" for p in self._procs)
                raise ClusterError(f"timed out after {self.timeout}s waiting for {what}\n{tails}")
            time.sleep(0.2)

    def _get_text(self, path: str) -> str:
        return str(self.request("GET", path, timeout=5))

    def _exists(self, path: str) -> bool:
        self.request("GET", path, timeout=5)
        return True

    def _logs_crd_established(self) -> bool:
        crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/logs.{KWOK_GROUP}")
        return any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"].get("conditions") or [])

    def _nodes_ready(self) -> bool:
        items = self.request("GET", "/api/v1/nodes")["items"]
        return len(items) >= len(NODES) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            # TaintNodesByCondition puts not-ready:NoSchedule on new nodes until the node-lifecycle
            # controller sees them Ready; the scheduler would refuse them until then.
            and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints", []))
            for n in items
        )


def _kwok_logs_crd() -> dict[str, Any]:
    """The CRD of kwok's namespaced `Logs` kind, as little of it as kwok's watch needs (kwok validates the spec
    itself): spec.logs[] = {containers: [names], logsFile: path, previousLogsFile: path, follow: bool}."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"logs.{KWOK_GROUP}"},
        "spec": {
            "group": KWOK_GROUP, "scope": "Namespaced",
            "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
            "versions": [{"name": KWOK_VERSION, "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                              "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                              "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}],
        },
    }


def _node(name: str, labels: dict[str, str], alloc: dict[str, str], taints: list[dict[str, str]],
          ip: str, kubelet_port: int) -> dict[str, Any]:
    # Status is accepted on create; kwok's node-initialize stage keeps the allocatable/addresses.
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok", **labels},
        },
        "spec": {"taints": taints},
        "status": {"allocatable": alloc, "capacity": alloc,
                   "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}},
    }


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bytes(resp.read())


@contextlib.contextmanager
def http_server(ip: str, port: int,
                handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve `handler` on ip:port (a pod's IP and container port) in a thread for the duration of the block.

    Pod IPs are loopback addresses, so this is the "container" that a client dialling http://<podIP>:<port>
    reaches. Each pod has its own IP, so every pod of a Deployment can serve on the same port.
    """
    server = http.server.ThreadingHTTPServer((ip, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"http-{ip}:{port}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- CLI ------------------------------------------------------------------------------------


def _state_dir() -> Path:
    return Path(os.environ.get("LLMOPS_CLUSTER_DIR", "/tmp/llmops-cluster"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _running_pid(state: Path) -> int | None:
    try:
        pid = int((state / "cluster.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def cmd_up(foreground: bool) -> int:
    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    kubeconfig = state / "kubeconfig"
    if _running_pid(state) and kubeconfig.exists():
        print(kubeconfig)
        return 0
    if not foreground:
        # Re-run ourselves detached in the foreground mode and wait for it to publish the kubeconfig.
        kubeconfig.unlink(missing_ok=True)
        with open(state / "cluster.log", "wb") as log:
            child = subprocess.Popen([sys.executable, __file__, "up", "--foreground"], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not kubeconfig.exists():
            if child.poll() is not None:
                sys.stderr.write((state / "cluster.log").read_text(errors="replace"))
                return 1
            time.sleep(0.3)
        print(kubeconfig)
        return 0

    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    (state / "cluster.pid").write_text(str(os.getpid()))
    try:
        with TestCluster() as cluster:
            # Publish atomically: the background parent polls for this file.
            tmp = state / "kubeconfig.tmp"
            shutil.copy(cluster.kubeconfig, tmp)
            tmp.rename(kubeconfig)
            print(f"cluster up: {cluster.server}  KUBECONFIG={kubeconfig}  pod IPs: {cluster.pod_cidr}  "
                  f"logs: {cluster.workdir}/logs", flush=True)
            while not stop:
                time.sleep(0.5)
    finally:
        kubeconfig.unlink(missing_ok=True)
        (state / "cluster.pid").unlink(missing_ok=True)
    return 0


def cmd_down() -> int:
    state = _state_dir()
    pid = _running_pid(state)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):  # its watchdog then kills the control plane
            os.kill(pid, signal.SIGKILL)
    for f in ("cluster.pid", "kubeconfig"):
        (state / f).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster (state in $LLMOPS_CLUSTER_DIR, default /tmp/llmops-cluster)")
    up.add_argument("--foreground", action="store_true", help="run until interrupted instead of detaching")
    sub.add_parser("down", help="stop the cluster started by `up`")
    args = ap.parse_args(argv)
    return cmd_up(args.foreground) if args.cmd == "up" else cmd_down()


if __name__ == "__main__":
    sys.exit(main())
