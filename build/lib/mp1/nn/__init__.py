"""Networks shared by every policy: the point-cloud encoder and the conditional 1-D UNet."""

from mp1.nn.encoder import EncoderConfig, ObservationEncoder, PointCloudEncoder
from mp1.nn.unet import ConditionalUnet1D, UnetConfig

__all__ = ["ConditionalUnet1D", "EncoderConfig", "ObservationEncoder", "PointCloudEncoder", "UnetConfig"]
