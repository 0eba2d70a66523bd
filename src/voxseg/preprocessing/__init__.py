"""Preprocessing: normalisation, resampling and the chunked preprocessed store."""

from voxseg.normalization import NORMALIZATIONS, normalize, scheme_for_channel
from voxseg.preprocessing.inverse import restore_to_original
from voxseg.preprocessing.preprocessor import preprocess_case, preprocess_dataset
from voxseg.preprocessing.store import CaseMeta, PreprocessedStore, blosc2_chunk_params

__all__ = [
    "NORMALIZATIONS",
    "CaseMeta",
    "PreprocessedStore",
    "blosc2_chunk_params",
    "normalize",
    "preprocess_case",
    "preprocess_dataset",
    "restore_to_original",
    "scheme_for_channel",
]
