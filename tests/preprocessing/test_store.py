"""The chunked preprocessed store: round trips, dtypes, atomicity, chunk-local reads."""

from __future__ import annotations

import math

import blosc2
import numpy as np
import pytest

from voxseg.preprocessing.store import (
    L1_BYTES,
    CaseMeta,
    PreprocessedStore,
    blosc2_chunk_params,
)


def _meta(case_id: str, shape, **kw) -> CaseMeta:
    return CaseMeta(
        case_id=case_id,
        geometry={
            "shape": list(shape),
            "spacing": [1, 1, 1],
            "origin": [0, 0, 0],
            "direction": np.eye(3).tolist(),
        },
        bbox=[[0, s] for s in shape],
        shape_before_crop=list(shape),
        shape_after_crop=list(shape),
        spacing_before=[1.0] * 3,
        spacing_after=[1.0] * 3,
        shape_after_resampling=list(shape),
        foreground_locations={"1": [[1, 2, 3]]},
        classes=[0, 1],
        **kw,
    )


@pytest.mark.parametrize(
    ("storage", "dtype"), [("blosc2", "float32"), ("blosc2", "float16"), ("raw", "float32")]
)
def test_round_trip(tmp_path, rng, storage, dtype):
    data = rng.normal(size=(2, 20, 30, 25)).astype(np.float32)
    seg = rng.integers(0, 3, (1, 20, 30, 25))
    store = PreprocessedStore(tmp_path)
    store.write(
        "a",
        data,
        seg,
        _meta("a", (20, 30, 25), storage=storage, dtype=dtype),
        patch_size=(16, 16, 16),
    )
    store.write("b", data[:, :5], None, _meta("b", (5, 30, 25), storage=storage, dtype=dtype))
    assert store.case_ids() == ["a", "b"]
    d, s, meta = store.open("a")
    assert d.shape == data.shape and s.shape == seg.shape
    patch = d[:, 3:9, 4:20, 5:7]
    assert isinstance(patch, np.ndarray) and patch.dtype == np.dtype(dtype)
    tol = 1e-3 if dtype == "float16" else 0
    np.testing.assert_allclose(patch, data[:, 3:9, 4:20, 5:7], atol=tol * 4)
    np.testing.assert_array_equal(s[:, 3:9], seg[:, 3:9])
    assert s[...].dtype == np.int8
    assert meta.foreground_locations == {"1": [[1, 2, 3]]}
    assert store.open("b")[1] is None
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_unfinished_case_is_not_listed(tmp_path, rng):
    store = PreprocessedStore(tmp_path)
    (tmp_path / "x.b2nd").write_bytes(b"half")  # arrays without metadata: a killed write
    assert store.case_ids() == []


@pytest.mark.parametrize(
    ("shape", "patch", "itemsize"),
    [
        ((1, 200, 300, 300), (128, 128, 128), 4),
        ((2, 80, 160, 160), (40, 160, 160), 2),
        ((3, 1, 512, 512), (512, 512), 4),
        ((1, 20, 20, 20), (128, 128, 128), 4),
    ],
)
def test_chunk_params(shape, patch, itemsize):
    chunks, blocks = blosc2_chunk_params(shape, patch, itemsize)
    assert chunks[0] == blocks[0] == shape[0]
    assert all(b <= c <= s for b, c, s in zip(blocks, chunks, shape, strict=True))
    assert math.prod(blocks) * itemsize <= L1_BYTES or max(blocks[1:]) == 1
    if len(patch) == 2:
        assert chunks[1] == 1


def test_reading_a_patch_decompresses_only_its_blocks(tmp_path, rng):
    """Count block decompressions with a pass-through blosc2 user filter."""
    decoded = []

    def forward(src, dst, meta, schunk):
        dst[:] = src

    def backward(src, dst, meta, schunk):
        decoded.append(1)
        dst[:] = src

    filter_id = 201
    if filter_id not in blosc2.ufilters_registry:
        blosc2.register_filter(filter_id, forward, backward, "voxseg_test_count")
    else:
        blosc2.ufilters_registry[filter_id] = (forward, backward)
    old_threads = blosc2.set_nthreads(1)
    try:
        data = rng.normal(size=(1, 64, 64, 64)).astype(np.float32)
        store = PreprocessedStore(tmp_path)
        cparams = {"filters": [filter_id], "filters_meta": [0], "nthreads": 1}
        store.write(
            "a", data, None, _meta("a", (64, 64, 64)), patch_size=(16, 16, 16), cparams=cparams
        )
        d, _, _ = store.open("a")
        _, blocks = blosc2_chunk_params(data.shape, (16, 16, 16), 4)
        n_blocks = math.prod(s // b for s, b in zip(data.shape, blocks, strict=True))
        for lo, hi in [(16, 32), (10, 30), (5, 61)]:
            decoded.clear()
            patch = d[:, lo:hi, lo:hi, lo:hi]
            np.testing.assert_array_equal(patch, data[:, lo:hi, lo:hi, lo:hi])
            expected = math.prod((-(-hi // b)) - lo // b for b in blocks[1:])
            assert len(decoded) == expected
        decoded.clear()
        np.testing.assert_array_equal(d[...], data)
        assert len(decoded) == n_blocks
    finally:
        blosc2.set_nthreads(old_threads)
