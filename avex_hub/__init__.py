"""avex-hub: Earth Species Project's esp-aves2 BEATs bioacoustic encoders through torch.hub and pip."""

__version__ = "0.1.0"
