"""Intensity normalisation schemes, registered by name in :data:`NORMALIZATIONS`.

A plan names a scheme per channel (``ct``, ``zscore``, ``rescale_to_0_1``, ``rgb_to_0_1``,
``none``, ``nyul``, or a plug-in's); planning chooses it from the channel's name and
preprocessing applies it. Every built-in registers when this package is imported.
"""

from voxseg.normalization import nyul
from voxseg.normalization.nyul import fit_nyul, nyul_normalization
from voxseg.normalization.schemes import (
    CHANNEL_NAME_TO_SCHEME,
    MASKABLE,
    NORMALIZATIONS,
    Normalizer,
    normalize,
    scheme_for_channel,
)

__all__ = [
    "CHANNEL_NAME_TO_SCHEME",
    "MASKABLE",
    "NORMALIZATIONS",
    "Normalizer",
    "fit_nyul",
    "normalize",
    "nyul",
    "nyul_normalization",
    "scheme_for_channel",
]
