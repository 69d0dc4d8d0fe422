"""The REST API over the warehouse views (see issue: REST API)."""
