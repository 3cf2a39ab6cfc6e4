"""`python -m reidkit` runs the command line (also the entry point for torchrun)."""

from reidkit.cli import main

raise SystemExit(main())
