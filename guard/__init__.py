"""Guardrails: detectors of PII, secrets and blocked content, and the policies that act on them."""
