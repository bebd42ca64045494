"""Monitoring: feature drift (drift.py), the realized-quality and drift checks (checks.py), the morning
report (report.py, with its SQL in sql/) and the plots they share (plots.py)."""
