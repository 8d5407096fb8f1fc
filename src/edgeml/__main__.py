"""`python -m edgeml` runs the CLI."""

from edgeml.cli.app import main

main()
