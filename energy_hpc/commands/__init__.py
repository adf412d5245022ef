"""One module per subcommand of ``energy-hpc``.

Each module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``, and keeps its
heavy imports inside ``run`` so that ``energy-hpc --help`` and a login node without torch stay fast.
"""
