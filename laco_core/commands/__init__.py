"""One module per ``laco`` sub-command: ``HELP`` (``DESCRIPTION``), ``add_flags(parser)`` and
``run(args)``; ``laco_core.cli`` makes each sub-parser from them."""
