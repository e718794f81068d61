"""The mutating admission webhook, as a sidecar-framework plugin: `sidecars run injector`.

The API server POSTs an AdmissionReview to `https://<service>/mutate` for each Pod being created in
the namespaces and objects the MutatingWebhookConfiguration selects; the answer is a JSON Patch made
by the same injection as `sidecars inject`. It fails open (see review.py): a problem admits the Pod
unchanged, with a warning for the user, a counted refusal and one log line per distinct problem.
The certificate comes from a mounted Secret and is reloaded when it changes (see tls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from sidecars.core import Check, Context, Sidecar
from sidecars.core.http import start_server
from sidecars.core.telemetry import LogLimiter
from sidecars.injector.inject import Options
from sidecars.injector.metrics import InjectorMetrics
from sidecars.injector.review import Answer, answer
from sidecars.injector.settings import InjectorSettings
from sidecars.injector.tls import CertificateReloader

PATH = "/mutate"


@dataclass(frozen=True)
class Serving:
    """What `lifespan()` loaded and opened: the certificate in use and the listener's port."""

    reloader: CertificateReloader
    listen_port: int


class Injector(Sidecar[InjectorSettings]):
    name = "injector"
    description = "mutating admission webhook: injects the sidecars into Pods that ask for them"
    Settings = InjectorSettings

    def __init__(self, settings: InjectorSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.options = Options(
            classic=settings.classic,
            image_prefix=settings.image_prefix,
            image_tag=settings.image_tag,
            images=dict(settings.images),
        )
        self.metrics = InjectorMetrics(context.metrics.registry)
        self._serving: Serving | None = None
        self._stopped = asyncio.Event()
        # Each distinct refusal logged once (the core bounds how many it remembers).
        self._refusals = LogLimiter(self.log, None)

    @property
    def serving(self) -> Serving:
        """What `lifespan()` opened: `run()` and the reviews happen only within it."""
        if self._serving is None:
            raise RuntimeError("the injector's lifespan() has not been entered")
        return self._serving

    @property
    def listen_port(self) -> int:
        """The port the webhook is bound to (the one chosen when `listen_port` is 0)."""
        return self.serving.listen_port

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        settings = self.settings
        reloader = CertificateReloader(
            settings.tls_cert_file,
            settings.tls_key_file,
            poll_secs=settings.tls_poll_secs,
            log=self.log,
            on_reload=self._on_reload,
        )
        self.metrics.certificate_loaded.set_to_current_time()
        async with contextlib.AsyncExitStack() as stack:
            app = web.Application(client_max_size=settings.max_review_bytes)
            app.router.add_post(PATH, self._review)
            server = await start_server(
                app, settings.listen_host, settings.listen_port, ssl_context=reloader.server_context
            )
            stack.push_async_callback(server.close)
            self._serving = Serving(reloader, server.port)
            self.log.info("webhook listening", port=server.port, path=PATH, mode=self._mode())
            yield

    def _mode(self) -> str:
        return "classic" if self.options.classic else "native"

    async def run(self, ready: Callable[[], None]) -> None:
        reloader = self.serving.reloader
        self.context.spawn("certificate-watcher", reloader.watch)
        ready()
        await self._stopped.wait()

    async def drain(self) -> None:
        # Readiness already answers 503, so the Service stops sending reviews; those in flight finish
        # while the listener is closed in the lifespan's exit.
        self._stopped.set()

    def checks(self) -> Sequence[Check]:
        def certificate() -> str | None:
            error = self._serving.reloader.last_error if self._serving is not None else None
            return f"the new certificate was rejected, the previous one is in use: {error}" if error else None

        return [Check("certificate", certificate, readiness=True, warn=True)]

    def _on_reload(self, ok: bool, error: str | None) -> None:
        metrics = self.metrics
        if ok:
            metrics.certificate_reloads.labels(result="ok").inc()
            metrics.certificate_loaded.set(time.time())
            self.log.info("certificate reloaded")
        else:
            metrics.certificate_reloads.labels(result="rejected").inc()
            self.log.warning("certificate reload rejected: the previous certificate stays in use", error=error)

    async def _review(self, request: web.Request) -> web.Response:
        base = self.context.metrics
        base.events_in.inc()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            too_large = Answer(
                status=413, body={}, outcome="refused", reason="too_large", detail="review larger than max_review_bytes"
            )
            self._count(too_large)
            return web.Response(status=413, text=f"review larger than {self.settings.max_review_bytes} bytes\n")
        result = answer(raw, self.options)
        self._count(result)
        base.events_out.inc()
        return web.json_response(result.body, status=result.status)

    def _count(self, result: Answer) -> None:
        self.metrics.reviews.labels(outcome=result.outcome, dry_run=str(result.dry_run).lower()).inc()
        if result.outcome == "injected":
            self.log.info("injected", detail=result.detail, dry_run=result.dry_run)
        if result.reason is None:
            return
        self.metrics.refused.labels(reason=result.reason).inc()
        self.context.metrics.events_dropped.labels(reason=result.reason).inc()
        self._refusals.warning(
            "review refused: the Pod is admitted unchanged",
            key=f"{result.reason}:{result.detail}",
            reason=result.reason,
            detail=result.detail,
        )
