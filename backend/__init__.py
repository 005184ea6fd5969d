"""Isotropic3D backend: models, diffusion, NeRF/SDS and the service. Needs torch (the ``backend`` extra)."""

__version__ = "0.1.0"
