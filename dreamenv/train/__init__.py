"""World-model training."""

from dreamenv.train.fit import FitConfig, fit

__all__ = ["FitConfig", "fit"]
