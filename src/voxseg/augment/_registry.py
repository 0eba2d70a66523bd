"""The augmentation registry: intensity transforms by name.

A transform is built as ``factory(config=section, spatial_dims=d, dummy_2d=flag)`` for the
built-in names (their section of ``AugmentationConfig``) and as
``factory(spatial_dims=d, dummy_2d=flag, **config.custom[name])`` for a user's own
(a registered name, ``"mypkg.mod:MyTransform"`` or an entry point in
``voxseg.augmentations``). It is called as ``transform(image [b, c, *sp], generator)``,
may change ``image`` in place, and returns the result.
"""

from __future__ import annotations

from voxseg._registry import Registry

AUGMENTATIONS: Registry = Registry("augmentations")
