"""mp1: one-step MeanFlow policies on 3D point clouds, with DP3 and FlowPolicy baselines."""

__version__ = "0.1.0"
