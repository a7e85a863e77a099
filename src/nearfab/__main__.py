"""`python -m nearfab` runs the CLI."""

from nearfab.cli.main import app

app(prog_name="nearfab")
