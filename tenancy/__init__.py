"""Tenancy: who is calling (API key -> tenant and user), admission and settlement against their
limits and budgets, and their usage read-out.
"""
