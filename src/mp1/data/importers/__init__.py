"""Importers for what robots already record, each into a store made through `EpisodeRecorder`:

* `mp1.data.importers.bag`: ROS 1 and ROS 2 bags (needs ``rosbags``: ``pip install 'mp1[robot]'``);
* `mp1.data.importers.hdf5`: robomimic / LIBERO HDF5 files (needs ``h5py``, same extra).

Each source (a bag, a demo) becomes one episode, committed on its own; the store lists the
sources it holds, so that running an interrupted import again skips them and appends the rest.
"""

from mp1.data.importers.common import CloudSettings, ImportResult, RecordingError

__all__ = ["CloudSettings", "ImportResult", "RecordingError"]
