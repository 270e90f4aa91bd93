"""Demonstration stores (DP3 zarr layout) and the sequence dataset."""

from mp1.data.dataset import DeviceBatches, PointCloudDataset
from mp1.data.store import EpisodeStore, StoreError, load_store, write_store

__all__ = ["DeviceBatches", "EpisodeStore", "PointCloudDataset", "StoreError", "load_store", "write_store"]
