"""What a .raw file of the wrong size is said to hold (ea62a14), where the size fits more than one type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qtool.errors import DataError
from qtool.io.raw import InputSpec, check_file


def test_int32_ids_for_an_int64_input_are_not_sent_to_float32(tmp_path: Path) -> None:
    """int32 token ids, --use_native_input_files, an int64 input: the hint said 'its size is 8 float32 values: drop
    --use_native_input_files', and without the flag the ids read as float32 were refused as subnormal."""
    path = tmp_path / "ids.raw"
    np.arange(8, dtype=np.int32).tofile(path)
    with pytest.raises(DataError) as error:
        check_file(path, InputSpec("ids", np.dtype(np.int64), (1, 8)), "list.txt:1", native=True)
    assert "int32 values want .astype(np.int64), the input's own type" in error.value.hint, error.value.hint


def test_float32_values_for_a_float16_input_drop_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "x.raw"
    np.zeros(8, np.float32).tofile(path)
    with pytest.raises(DataError) as error:
        check_file(path, InputSpec("x", np.dtype(np.float16), (1, 8)), "list.txt:1", native=True)
    assert error.value.hint.startswith("its size is 8 float32 values: drop --use_native_input_files"), error.value.hint


@pytest.mark.parametrize(("dtype", "says"), [(np.uint8, "64 1-byte values (uint8 pixels?)"),
                                             (np.float16, "64 2-byte values (float16? int16?)"),
                                             (np.float64, "64 float64 values")])  # fmt: skip
def test_a_float32_input_given_its_values_in_another_width_is_told_to_cast(tmp_path: Path, dtype, says) -> None:
    """A uint8 image saved as .raw for a float32 input: the hint said 'if its 16 float32 values are what the model
    takes, give convert or quantize their dims: --input_dim image D0,D1,...', which no newcomer's mistake is."""
    path = tmp_path / "x.raw"
    np.zeros(64, dtype).tofile(path)
    with pytest.raises(DataError) as error:
        check_file(path, InputSpec("image", np.dtype(np.float32), (1, 1, 8, 8)), "list.txt:1")
    assert error.value.hint == f"its size is {says}: a .raw file is float32 (write it with .astype(np.float32)), " \
                               "or an .npy file carries its own type", error.value.hint


def test_a_batch_in_one_file_for_a_batch_of_1_is_told_so(tmp_path: Path) -> None:
    """A dynamic-batch model (convert fixes the batch to 1) given four samples dumped as one .raw file: the hint said
    'if its 256 float32 values are what the model takes, give convert or quantize their dims: --input_dim image
    D0,D1,...', leaving the user to work out the batch."""
    path = tmp_path / "batch.raw"
    np.zeros((4, 1, 8, 8), np.float32).tofile(path)
    with pytest.raises(DataError) as error:
        check_file(path, InputSpec("image", np.dtype(np.float32), (1, 1, 8, 8)), "list.txt:1")
    assert error.value.hint.startswith("its size is 4 inputs of that size: a batch? a .raw file holds one inference, "
                                       "and a dynamic batch is fixed to 1: one sample a file, or --input_dim image "
                                       "4,1,8,8; if its 256 float32 values are what the model takes"), error.value.hint
