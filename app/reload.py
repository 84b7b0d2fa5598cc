"""Keys rotated without a restart.

On SIGHUP, and when the config file (`HELLO_SHIP_CONFIG`) or a route's `api_key_file` changes
(checked every `CONFIG_WATCH_S`), the configuration is read again and checked in full. Only
then do its tenant, admin and metrics keys, tenant policies, prices and provider keys replace
the running ones, all in one step between two requests; a request in flight finishes with
what it began with. A file that does not pass changes nothing: the failure is logged with its
reason and counted, and the next change or SIGHUP tries again. Routes and guard settings take
effect at start-up only; a change to them is reported as waiting for a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import anyio

from app.service import ChatService
from config.env import EnvReader, SettingsError
from config.file import load_config_file
from config.reload import Reread, file_states, reread, watched_files
from config.settings import Settings
from streaming.chain import RouteChain
from streaming.readiness import RouteChecks
from telemetry.metrics import CONFIG_LOADED, CONFIG_RELOADS
from tenancy.admission import Gatekeeper

logger = logging.getLogger("hello_ship.config")


class ConfigReloader:
    def __init__(self, env: Mapping[str, str], settings: Settings, service: ChatService,
                 gate: Gatekeeper, chain: RouteChain, checks: RouteChecks) -> None:
        self._env = dict(env)  # the process's own environment does not change under it
        self._settings = settings
        # What the running routes and guard were built from: changes to them wait for a restart.
        self._started_with: Mapping[str, Any] = load_config_file(EnvReader(self._env))
        self._service = service
        self._gate = gate
        self._chain = chain
        self._checks = checks
        self._files = watched_files(self._env, settings)
        self._states: tuple[Any, ...] = ()
        self._hup: anyio.Event | None = None

    async def run(self) -> None:
        """Watch until cancelled (the app's lifespan ends). Nothing here may end that
        lifespan: a failure is logged and counted, and the watch goes on."""
        self._hup = anyio.Event()
        CONFIG_LOADED.labels("start").set(time.time())
        for result in ("applied", "failed"):  # at 0 from the start, so a first failure is a rise
            CONFIG_RELOADS.labels(result)
        self._states = await anyio.to_thread.run_sync(file_states, self._files)
        restore = self._catch_sighup()
        watch_s = self._settings.config_watch_s or math.inf
        try:
            while True:
                with anyio.move_on_after(watch_s):
                    await self._hup.wait()
                if self._hup.is_set():
                    self._hup = anyio.Event()
                    await self.reload("sighup")
                elif await anyio.to_thread.run_sync(file_states, self._files) != self._states:
                    await self.reload("file_changed")
        finally:
            restore()

    async def reload(self, trigger: str) -> bool:
        """Read, check and apply the configuration; False when it was refused."""
        try:
            # Taken before reading: a write that lands while the files are read is a change
            # the next check sees.
            self._states = await anyio.to_thread.run_sync(file_states, self._files)
            result = await anyio.to_thread.run_sync(reread, self._env, self._settings,
                                                    self._started_with)
            was_open = self._settings.tenancy.open_mode
            self._apply(result)
        except Exception as exc:  # the states stay: not tried again until a file changes
            CONFIG_RELOADS.labels("failed").inc()
            if isinstance(exc, SettingsError):
                logger.error("config_reload_failed", extra={"trigger": trigger,
                                                            "reason": str(exc)})
            else:  # a bug, not the file: its stack, and the running configuration stays
                logger.exception("config_reload_failed", extra={
                    "trigger": trigger, "reason": f"internal error ({type(exc).__name__})"})
            return False
        CONFIG_RELOADS.labels("applied").inc()
        CONFIG_LOADED.labels(trigger).set(time.time())
        tenancy = result.tenancy
        logger.info("config_reloaded", extra={
            "trigger": trigger, "tenants": len(tenancy.policies), "keys": len(tenancy.keys),
            "admin_keys": len(tenancy.admin_keys), "metrics_keys": len(tenancy.metrics_keys),
            "keys_rotated": list(result.rotated), "restart_needed": list(result.restart_needed)})
        if tenancy.open_mode and not was_open:
            logger.warning("open_mode", extra={
                "detail": "the reloaded configuration has no API keys: every caller is the "
                          "'anonymous' tenant", "limits_backend": self._settings.quota.backend})
        if result.rotated:  # /ready tells at once whether the vendor takes the new key
            await self._checks.check_routes(result.rotated)
        return True

    def _apply(self, result: Reread) -> None:
        """No await in here: a request sees the old configuration or the new, never a mix."""
        self._service.settings = replace(self._service.settings, tenancy=result.tenancy,
                                         prices=result.prices)
        self._gate.reconfigure(result.tenancy, result.prices)
        for link in self._chain.links:
            use_key = getattr(link.provider, "use_key", None)
            if link.provider.route in result.rotated and use_key is not None:
                use_key(result.keys[link.provider.route])
        self._settings = replace(
            self._settings, tenancy=result.tenancy, prices=result.prices,
            routes=tuple(replace(route, credentials=result.keys[route.name])
                         if route.name in result.rotated else route
                         for route in self._settings.routes))

    def _catch_sighup(self) -> Callable[[], None]:
        """SIGHUP asks for a reload, as for most daemons, instead of ending the process."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signals reach only the main thread (embedded servers)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

        def restore() -> None:
            loop.remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # shutting down: nothing to reload

        return restore

    def _on_sighup(self) -> None:
        if self._hup is not None:
            self._hup.set()
