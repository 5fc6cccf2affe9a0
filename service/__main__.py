"""`python -m service` runs the convtree command."""

from service.cli import main

main()
