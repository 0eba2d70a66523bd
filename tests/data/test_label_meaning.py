"""The meaning of dataset.json's labels (outputs, regions, names) has one owner,
``DatasetInfo``, which planning, training and prediction all read."""

from voxseg.data import DatasetInfo


def _info(labels, order=None):
    return DatasetInfo(
        channel_names={"0": "CT"}, labels=labels, numTraining=1, regions_class_order=order
    )


def test_plain_labels_have_one_output_per_value_up_to_the_largest():
    info = _info({"background": 0, "liver": 1, "tumour": 3, "ignore": 9})
    assert info.regions is None and info.region_values is None
    assert info.num_outputs == 4  # 0, 1, 2 (no label), 3; ignore is not an output
    assert info.class_names == ["liver", "class_2", "tumour"]


def test_regions_have_one_output_each_painted_in_their_order():
    info = _info({"background": 0, "kidney": [1, 2], "tumour": 2}, order=[1, 2])
    assert info.regions == [[1, 2], [2]]
    assert info.num_outputs == 2
    assert info.region_values == [1, 2]
    assert info.class_names == ["kidney", "tumour"]
    assert _info({"background": 0, "a": [1, 2], "b": [2]}).region_values == [1, 2]
