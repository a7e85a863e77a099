"""REST API under /api/v1: a thin shell over the services."""
