"""Command-line interface (Typer): a thin shell over the services."""
