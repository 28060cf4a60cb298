"""`python -m dlrun`."""

from dlrun.cli import entry

entry()
