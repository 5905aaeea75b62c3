"""``python -m geochip`` runs the command line."""

from geochip.cli import main

main()
