"""Vendor connectors: one module per vendor behind the interface in ``connectors.base``."""
