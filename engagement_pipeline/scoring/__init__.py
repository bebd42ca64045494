"""Nightly scoring: `user_predictions`, one Parquet file of per-user predictions per UTC day (assets.py)."""
