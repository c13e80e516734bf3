"""Bulk work from a CSV of customers: `wallet-proxy tags import` and `wallet-proxy warm`."""
