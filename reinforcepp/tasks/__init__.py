"""Synthetic and benchmark task generators (prompt/answer rows)."""
