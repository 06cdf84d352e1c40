"""Trajectory forecasters: ATOM (``network``), EGNO and the static baseline (``egno``), trained and used
through one LightningModule (``forecaster``)."""
from molgen.models.atom.forecaster import TrajectoryForecaster

__all__ = ["TrajectoryForecaster"]
