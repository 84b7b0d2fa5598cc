"""What each eval answer cost, from the prices the service itself is configured with.

In-process the runner has the service's settings. Against `--url` it reads the `[prices]` table
of the service's TOML config (`--config`, or `HELLO_SHIP_CONFIG`), and only that table: the
runner's environment is not the service's, so the file's routes, tenants and keys mean nothing
here. The table is read by the service's own loader and parser, so a price the service would
refuse is refused here too, with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping

from config.env import EnvReader, SettingsError
from config.file import CONFIG_VAR, load_config_file
from config.tenants import read_prices, read_tenancy
from providers.spec import parse_route
from quota.ledger import NANO_USD_PER_USD
from quota.prices import FREE, Price
from tools.wire import Usage


def prices_from_config(path: str) -> dict[str, Price]:
    """The `[prices]` table of the config file at `path`; raises `SettingsError`."""
    table = load_config_file(EnvReader({CONFIG_VAR: path})).get("prices", {})
    config = {"prices": table}
    # The service checks each priced name against its chain; here the chain is the names.
    routes = []
    for name in table if isinstance(table, dict) else ():
        try:
            routes.append(parse_route(name, default_provider="(none)"))
        except ValueError as exc:
            problem = str(exc) if "/" in name else "is not a route name (provider/model)"
            raise SettingsError(f"{CONFIG_VAR}: prices.{name!r}", problem) from None
    # No tenants, so no USD budget that would need every route priced.
    return read_prices(config, tuple(routes), read_tenancy(EnvReader({}), {}, 1))


def cost_usd(prices: Mapping[str, Price], route: str | None, usage: Usage) -> float | None:
    """None when the route has no price or the answer no token counts. The demo model is
    free unless priced, as the service bills it."""
    if route is None or usage.input_tokens is None or usage.output_tokens is None:
        return None
    price = prices.get(route, FREE if route.startswith("demo/") else None)
    if price is None:
        return None
    return price.nano_usd(usage.input_tokens, usage.output_tokens) / NANO_USD_PER_USD
