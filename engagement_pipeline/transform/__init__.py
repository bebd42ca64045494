"""The SQL models: the top-level sql/ folder (staging -> intermediate -> marts) as Dagster assets (sql_models.py)."""
