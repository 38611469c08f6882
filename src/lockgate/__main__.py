"""``python -m lockgate`` runs the CLI."""

from lockgate.cli.main import main

main()
