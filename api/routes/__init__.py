"""The API's routers, one module per resource; create_app includes them in an order that matters
(see api/app.py)."""
