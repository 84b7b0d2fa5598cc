"""`hello-ship serve` pointed at each vendor's protocol by environment alone, as
docs/providers.md says."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import service_process
from tests.sse import parse_sse
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import VENDORS, Vendor


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda vendor: vendor.name)
def test_serve_streams_from_the_configured_vendor_and_logs_no_key_even_at_debug(
        vendor: Vendor, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(vendor)
    env = {**vendor.env(upstream), "LOG_LEVEL": "DEBUG"}
    with service_process(env) as running, httpx.Client(timeout=10) as client:
        streamed = client.post(running.url + "/chat/stream", json={"message": "Say hello."})
        upstream.api_key = "a-different-key"  # now the vendor refuses ours and quotes it
        # Another question: the answer cache would serve the first one's answer again.
        refused = client.post(running.url + "/chat", json={"message": "Tell me a joke."})
        running.wait_for_log("request_end", http_status=503)
    tokens = [item.data["token"] for item in parse_sse(streamed.text) if item.event == "token"]
    assert "".join(tokens) == "Hello, world!"
    assert refused.json()["error"]["code"] == "provider_unavailable"
    key = env.get(f"{vendor.env_prefix}_API_KEY") or env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("AWS_SECRET_ACCESS_KEY", key)
    assert key and all(key[-8:] not in line and secret[-8:] not in line
                       for line in running.lines)
    # DEBUG shows the service's own lines, never the SDKs' request dumps.
    assert not [r for r in running.log_records() if r["logger"].split(".")[0] in
                ("openai", "anthropic", "httpx2", "httpcore2", "botocore", "aiobotocore")]
