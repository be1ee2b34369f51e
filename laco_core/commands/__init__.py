"""One module per ``laco`` sub-command: ``add_parser(subparsers)`` sets ``func=run``."""
