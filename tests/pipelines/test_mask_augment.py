import numpy as np
import torch
from scipy import ndimage

from voxseg.augment import AUGMENTATIONS
from voxseg.augment.mask import MASK_AUGMENTATION, morph, remove_components


def _mask(rng):
    m = np.zeros((12, 14, 16), bool)
    m[2:9, 3:10, 4:13] = True
    m[0:2, 0:3, 0:2] = True  # at the border
    m[rng.random(m.shape) < 0.05] = True
    return m


def test_dilation_and_erosion_match_scipy(rng):
    m = _mask(rng)
    cube = np.ones((5, 5, 5), bool)
    dil = morph(torch.from_numpy(m), 2, dilate=True).numpy() > 0.5
    ero = morph(torch.from_numpy(m), 2, dilate=False).numpy() > 0.5
    np.testing.assert_array_equal(dil, ndimage.binary_dilation(m, cube))
    np.testing.assert_array_equal(ero, ndimage.binary_erosion(m, cube, border_value=1))


def test_component_removal_keeps_or_drops_whole_components(rng):
    m = torch.from_numpy(_mask(rng))
    g = torch.Generator().manual_seed(0)
    assert not remove_components(m, g, 1.0).any()
    assert torch.equal(remove_components(m, g, 0.0), m)
    out = remove_components(m, g, 0.5).numpy()
    labels, n = ndimage.label(m.numpy(), np.ones((3, 3, 3)))
    for k in range(1, n + 1):
        part = out[labels == k]
        assert part.all() or not part.any()


def test_only_the_previous_prediction_channels_change(rng):
    transform = AUGMENTATIONS.get(MASK_AUGMENTATION)(channels=[1], p_morph=1.0, p_remove=0.0)
    image = torch.from_numpy(np.stack([rng.random((12, 14, 16)), _mask(rng)]).astype(np.float32))
    batch = image[None].repeat(3, 1, 1, 1, 1)
    out = transform(batch.clone(), torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[:, 0], batch[:, 0])
    assert set(torch.unique(out[:, 1]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(out[:, 1], batch[:, 1])
