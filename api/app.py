"""The FastAPI application: intake, carers and families, webhooks, health, the console."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from api import console as console_routes
from api import errors, metrics, routes, session, stream, voice, webhooks
from api.limits import BodySizeLimit
from dispatch.bootstrap import bootstrap
from dispatch.db import READ_ONLY, make_engine
from dispatch.domain.policy import load_policies
from dispatch.messagebus import MessageBus
from dispatch.unit_of_work import UnitOfWork, session_factory
from schemas.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.database_url, settings=settings)
    policies = load_policies(settings.policy_dir)
    bus: MessageBus = bootstrap(engine, policies, dispatcher_phone=settings.dispatcher_phone)
    readers = session_factory(engine, read_only=True)

    app = FastAPI(title="돌봄콜 dolbom", version="0.1.0",
                  description="Dispatch for Gwangju's emergency childcare services.")
    app.state.settings = settings
    app.state.bus = bus
    app.state.policies = policies
    app.state.engine = engine
    # Routes write through the bus; what they read afterwards (and auth) reads only.
    app.state.uow_factory = lambda: UnitOfWork(readers)
    app.state.metrics = metrics.registry_for(engine, settings.kafka_bootstrap)
    app.state.session_secret = session.session_secret()
    app.add_middleware(BodySizeLimit)
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    app.include_router(voice.router)
    app.include_router(session.router)
    app.include_router(stream.router)
    app.include_router(console_routes.router)

    @app.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        try:
            with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok"})

    console_html = (resources.files("api") / "static" / "console.html").read_text("utf-8")

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    def console() -> HTMLResponse:
        # The page holds no data: it asks for a token and reads the API with it.
        return HTMLResponse(console_html, headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                       "script-src 'self' 'unsafe-inline'"})

    return app
