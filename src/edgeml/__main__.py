"""`python -m edgeml` runs the CLI."""

from edgeml.cli import main

main()
