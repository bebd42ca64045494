"""Online scoring: `engagement serve` (server.py) scores raw rows with the same features (online_features.py)
against a history snapshot of the warehouse (history_snapshot.py, an asset)."""
