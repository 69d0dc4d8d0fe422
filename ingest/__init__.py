"""Ingest: turning training servers' files into warehouse facts."""
