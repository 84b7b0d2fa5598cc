"""Fixtures of the service tests."""

from tests.app.answer_cache_common import faq_vendor, writes

__all__ = ["faq_vendor", "writes"]
