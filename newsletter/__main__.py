"""`python -m newsletter` runs the operator CLI."""

from newsletter.cli import main

main()
