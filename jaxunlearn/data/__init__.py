"""Data: datasets as host arrays, forget-set builders, keep masks and on-device augmentation."""

from jaxunlearn.data._augment import random_crop_flip
from jaxunlearn.data._convert import convert_archive
from jaxunlearn.data._datasets import Dataset
from jaxunlearn.data._datasets import carve_holdout
from jaxunlearn.data._datasets import decode_jpeg_bytes
from jaxunlearn.data._datasets import default_cache_dir
from jaxunlearn.data._datasets import load_dataset
from jaxunlearn.data._datasets import NO_FLIP
from jaxunlearn.data._datasets import flip_ok
from jaxunlearn.data._datasets import load_digits
from jaxunlearn.data._datasets import load_npz
from jaxunlearn.data._datasets import load_tfds
from jaxunlearn.data._membership import as_keep_mask
from jaxunlearn.data._membership import as_key
from jaxunlearn.data._membership import keep_indices
from jaxunlearn.data._membership import keep_mask
from jaxunlearn.data._splits import ForgetSplit
from jaxunlearn.data._splits import SPEC_HELP
from jaxunlearn.data._splits import make_forget_split
from jaxunlearn.data._splits import parse_forget_spec
from jaxunlearn.data._splits import validate_split

__all__ = (
    "carve_holdout", "convert_archive",
    "Dataset", "ForgetSplit", "SPEC_HELP", "as_keep_mask", "as_key", "decode_jpeg_bytes", "default_cache_dir",
    "keep_indices",
    "NO_FLIP", "flip_ok", "keep_mask", "load_dataset", "load_digits", "load_npz", "load_tfds", "make_forget_split",
    "parse_forget_spec", "random_crop_flip", "validate_split",
)
