"""The names a client may put in `model`, and the routes each name stands for.

    default                  the configured chain, in order, with its fallbacks
    openai/gpt-4o-mini       a route by its name: that route, then the chain's routes after it
    gpt-4o-mini              a route by its vendor model name (the first route serving it)
    fast                     an alias a route gives itself (`aliases = ["fast"]` in [[routes]])

A tenant's `models = [...]` lists the names it may use; the routes those names stand for are
all it may be answered by, so the fallbacks after a route it picked are only those it may use
too. Without `models`, a tenant may use every name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.env import SettingsError
from config.file import CONFIG_VAR
from providers.spec import RouteSpec
from tenancy.identity import Tenancy

DEFAULT_MODEL = "default"
ALIAS = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


@dataclass(frozen=True, slots=True)
class ModelName:
    name: str
    route: str | None  # None: the whole chain
    owner: str  # the vendor behind it, for `owned_by` in GET /v1/models


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    chain: tuple[str, ...]  # route names, in chain order
    names: Mapping[str, ModelName]  # in the order GET /v1/models lists them

    def allowed(self, model: str, listed: tuple[str, ...] | None) -> bool:
        """Whether a tenant with `listed` models (None: all) may ask for `model`."""
        if model not in self.names:
            return False
        if listed is None or model in listed:
            return True
        route = self.names[model].route
        return route is not None and route in self._routes_of(listed)

    def routes_for(self, model: str, listed: tuple[str, ...] | None) -> tuple[str, ...]:
        """The routes that may answer `model`, in chain order; `model` must be `allowed`."""
        route = self.names[model].route
        start = 0 if route is None else self.chain.index(route)
        permitted = set(self.chain) if listed is None else self._routes_of(listed)
        later = [name for name in self.chain[start + 1:] if name in permitted]
        return (self.chain[start], *later) if route is not None else tuple(
            name for name in self.chain if name in permitted)

    def permitted(self, listed: tuple[str, ...] | None) -> tuple[str, ...]:
        """The routes a tenant with `listed` models may be answered by, in chain order."""
        if listed is None:
            return self.chain
        routes = self._routes_of(listed)
        return tuple(name for name in self.chain if name in routes)

    def listing(self, listed: tuple[str, ...] | None) -> list[ModelName]:
        return [entry for entry in self.names.values() if self.allowed(entry.name, listed)]

    def _routes_of(self, listed: Sequence[str]) -> set[str]:
        routes: set[str] = set()
        for name in listed:
            entry = self.names.get(name)
            if entry is not None:
                routes.update(self.chain if entry.route is None else (entry.route,))
        return routes


def build_catalog(routes: Sequence[RouteSpec]) -> ModelCatalog:
    """A name stands for one route only; a vendor model name served by two routes stands for
    the first."""
    names: dict[str, ModelName] = {DEFAULT_MODEL: ModelName(DEFAULT_MODEL, None, "hello-ship")}

    def add(name: str, route: RouteSpec, explicit: bool) -> None:
        taken = names.get(name)
        if taken is None:
            names[name] = ModelName(name, route.name, route.provider)
        elif explicit and taken.route != route.name:
            raise SettingsError(f"{CONFIG_VAR}: routes.aliases",
                                f"{name!r} already names {taken.route or 'the chain'}")

    for route in routes:
        add(route.name, route, explicit=True)
    for route in routes:
        for alias in route.aliases:
            add(alias, route, explicit=True)
    for route in routes:
        add(route.model, route, explicit=False)
    return ModelCatalog(tuple(route.name for route in routes), names)


def read_aliases(entry: Mapping[str, object], where: str) -> tuple[str, ...]:
    raw = entry.get("aliases", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) and ALIAS.fullmatch(a)
                                            for a in raw):
        raise SettingsError(f"{where}.aliases", "must be a list of names of 1-64 letters, "
                                                "digits and _ . : -")
    return tuple(raw)


def check_tenant_models(tenancy: Tenancy, catalog: ModelCatalog) -> None:
    """Every name a tenant lists is one the service answers to."""
    for tenant, policy in tenancy.policies.items():
        for name in policy.models or ():
            if name not in catalog.names:
                raise SettingsError(f"{CONFIG_VAR}: tenants.{tenant}.models",
                                    f"{name!r} is no model of this service; known: "
                                    f"{', '.join(catalog.names)}")


def catalog_for(routes: Sequence[str], configured: ModelCatalog) -> ModelCatalog:
    """The configured catalog if these are its routes; else one of these routes' own names
    (a chain built of other providers, as tests and embedders do)."""
    if tuple(routes) == configured.chain:
        return configured
    specs = []
    for name in routes:
        provider, _, model = name.partition("/")
        specs.append(RouteSpec(provider, model))
    return build_catalog(specs)
