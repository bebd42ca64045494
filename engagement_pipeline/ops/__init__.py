"""Operational helpers every domain may use: atomic files, disk space, stalled runs. No domain code here."""
