"""`llmops operator run`: metrics and health endpoints, leader election, then Kopf until SIGTERM.

Shutdown is graceful: SIGTERM sets the stop flag, Kopf finishes the handlers in flight, and the leader
releases its Lease so the standby replica takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import kopf
from aiohttp import web
from kubernetes import client, config
from prometheus_client import start_http_server

from ..settings import OperatorSettings
from .handlers import Controller, register
from .kube import USER_AGENT, KubeWriter
from .leader import LeaderElector
from .metrics import OperatorMetrics

log = logging.getLogger("llmops.operator")

# Kopf adds its finalizer only to resources that a timer, a daemon or a deletion handler could run for; this
# operator registers none of them, so no resource gets it. Earlier builds had Kopf timers, so every resource got it:
# Kopf removes it, under this name, from a resource that still carries one.
FINALIZER = "llmops.dev/finalizer"
ANNOTATION_PREFIX = "llmops.dev"
EXIT_LOST_LEADERSHIP = 2


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """All Kopf settings in one place (see Kopf's configuration docs)."""
    out = kopf.OperatorSettings()
    out.persistence.finalizer = FINALIZER
    out.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    out.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    out.posting.enabled = False  # our reconcilers post their own Events, under our field manager (kube.py)
    out.peering.standalone = True  # leader election is ours (see leader.py)
    out.watching.server_timeout = 300  # re-list every ~5 minutes so a missed event is corrected
    out.watching.client_timeout = 330
    out.watching.connect_timeout = 10
    out.networking.error_backoffs = [1, 2, 5, 10, 30]
    return out


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    """The handlers this operator serves, in their own registry (importing never registers globally)."""
    registry = kopf.OperatorRegistry()
    # Credentials as the kubernetes client finds them: in-cluster token, else KUBECONFIG.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    register(registry, controller)
    return registry


async def _health_server(port: int, leading: asyncio.Event, standby_ok: asyncio.Event) -> web.AppRunner:
    """/healthz answers 200 while the process's loop runs; /readyz 200 once leading or on standby."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ready = leading.is_set() or standby_ok.is_set()
        return web.Response(status=200 if ready else 503, text="leader" if leading.is_set() else "standby")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


def _api_client() -> client.ApiClient:
    """A client that names itself as the operator's field manager, for writes that pass none explicitly."""
    api = client.ApiClient()
    api.user_agent = USER_AGENT
    return api


def _load_kube_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


async def serve(settings: OperatorSettings, metrics: OperatorMetrics) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    leading, standby_ok = asyncio.Event(), asyncio.Event()
    runner = await _health_server(settings.health_port, leading, standby_ok) if settings.health_port else None
    elector = None
    try:
        _load_kube_config()
        if settings.leader_election:
            elector = LeaderElector(client.CoordinationV1Api(_api_client()), settings.lease_name,
                                    settings.lease_namespace, settings.pod_name, settings.lease_duration_seconds)
            election = asyncio.create_task(elector.run(stop))
            standby_ok.set()
            log.info("waiting for lease %s/%s as %s", settings.lease_namespace, settings.lease_name,
                     settings.pod_name)
            await _first(elector.acquired.wait(), stop.wait())
            if stop.is_set():
                return 0
            asyncio.create_task(_stop_when(elector.lost, stop))
        leading.set()
        metrics.leader.set(1)
        log.info("starting Kopf (%s)", "all namespaces" if settings.clusterwide else settings.watch_namespaces)
        writer = KubeWriter(_api_client(), on_write=lambda write: metrics.api_writes.labels(write).inc())
        controller = Controller(settings, writer, metrics)
        await kopf.operator(
            registry=build_registry(controller),
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=settings.clusterwide,
            namespaces=settings.watch_namespaces,
            stop_flag=stop,
        )
        log.info("Kopf has stopped")
        return EXIT_LOST_LEADERSHIP if elector is not None and elector.lost.is_set() else 0
    finally:
        metrics.leader.set(0)
        stop.set()
        if elector is not None:
            await asyncio.gather(election, return_exceptions=True)
            await asyncio.to_thread(elector.release)
        if runner is not None:
            await runner.cleanup()


async def _first(*awaitables: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]  # type: ignore[arg-type]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


async def _stop_when(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    stop.set()


def run(settings: OperatorSettings | None = None) -> int:
    settings = settings or OperatorSettings.from_env(os.environ)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = OperatorMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    return asyncio.run(serve(settings, metrics))
