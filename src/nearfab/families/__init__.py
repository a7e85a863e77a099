"""Product-family plug-ins; bootstrap registers them with the core's registry."""
