"""One module per method, wiring its four stages from molgen parts (installed as ``molgen.pipelines``).

Each module exports ``STAGES`` (a list of :class:`molgen.runner.Stage`) and ``load_model(checkpoint)``,
which rebuilds the trained model from a weights-only checkpoint dict.
"""
