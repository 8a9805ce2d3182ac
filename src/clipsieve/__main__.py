"""``python -m clipsieve`` runs the command line."""

from clipsieve.cli import main

main()
