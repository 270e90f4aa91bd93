"""Demonstration stores (DP3 zarr layout) and the sequence dataset."""

from mp1.data.dataset import PointCloudDataset
from mp1.data.store import EpisodeStore, StoreError, load_store, write_store

__all__ = ["EpisodeStore", "PointCloudDataset", "StoreError", "load_store", "write_store"]
