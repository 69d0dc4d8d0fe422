"""``python -m runlytics``: the command line, as the ``runlytics`` script."""

from runlytics.cli import entry

entry()
