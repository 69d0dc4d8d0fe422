"""The warehouse: schema, views, connections and migrations."""
