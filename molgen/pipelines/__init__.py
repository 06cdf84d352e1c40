"""One module per method, wiring its stages from molgen parts; ``shared`` holds stages several pipelines use.

Each pipeline module exports ``STAGES`` (a list of :class:`molgen.runner.Stage`).
"""
