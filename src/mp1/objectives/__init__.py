"""Generative objectives over action chunks, independent of any network.

Each has `loss(net, x, cond, feature_loss=None, step=0) -> (loss, info)` (`step`, the training
step, drives schedules such as MeanFlow's warm start; the others ignore it) and
`sample(net, noise, cond, steps=None) -> x`; see `mp1.objectives.base` for the net contract.
"""

from mp1.objectives.consistency_flow import ConsistencyFlow
from mp1.objectives.diffusion import Diffusion
from mp1.objectives.dispersive import DispersiveLoss
from mp1.objectives.flow_matching import FlowMatching
from mp1.objectives.meanflow import MeanFlow
from mp1.objectives.regression import Regression

Objective = MeanFlow | FlowMatching | ConsistencyFlow | Diffusion | Regression

__all__ = ["ConsistencyFlow", "Diffusion", "DispersiveLoss", "FlowMatching", "MeanFlow", "Objective", "Regression"]
