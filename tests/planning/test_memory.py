"""The analytic activation-memory estimate against a measured forward/backward."""

from __future__ import annotations

import pytest
import torch

from voxseg.nets.topology import Topology
from voxseg.planning.memory import activation_elements, check_memory_estimate, num_parameters
from voxseg.planning.rules import pooling_plan


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("topology", "patch", "channels", "classes"),
    [
        (Topology.simple(3, 4, 8, 64), (32, 32, 32), 1, 3),
        (Topology.simple(2, 5, 16, 128), (64, 64), 2, 4),
    ],
)
def test_estimate_matches_saved_activations(topology, patch, channels, classes):
    check = check_memory_estimate(topology, patch, channels, classes, batch_size=2)
    assert 0.9 < check.ratio < 1.1, check


def test_estimate_on_an_anisotropic_planned_topology():
    pool = pooling_plan([3.0, 0.8, 0.8], [8, 48, 48])
    n = len(pool.strides)
    topo = Topology(
        features_per_stage=[min(8 * 2**i, 64) for i in range(n)],
        kernel_sizes=pool.kernel_sizes,
        strides=pool.strides,
        n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1),
    )
    check = check_memory_estimate(topo, pool.patch_size, 1, 2)
    assert 0.8 < check.ratio < 1.25, check


def test_parameter_count_matches_the_network():
    from voxseg.nets import build_network

    topo = Topology.simple(3, 4, 8, 64)
    net = build_network("unet", in_channels=2, num_classes=3, topology=topo, patch_size=[16] * 3)
    counted = sum(p.numel() for p in net.parameters())
    assert num_parameters(topo, 2, 3) == pytest.approx(counted, rel=0.05)


def test_activation_elements_scale_with_the_patch():
    topo = Topology.simple(3, 4, 8, 64)
    assert activation_elements(topo, (64, 64, 64), 1, 2) == 8 * activation_elements(
        topo, (32, 32, 32), 1, 2
    )
