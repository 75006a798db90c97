"""``python -m gateway`` runs the gateway, as the ``opencue-gateway`` command does."""
import sys

from .cli import main

sys.exit(main())
