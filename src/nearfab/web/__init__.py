"""Web pages (server-rendered, every asset served locally) and the HTTP server."""
