"""Weight interoperability with other frameworks."""

from resnet_jax.interop.pytorch import from_torch, to_torch

__all__ = ["from_torch", "to_torch"]
