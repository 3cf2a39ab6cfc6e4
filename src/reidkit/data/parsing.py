"""The ids and text of data set files, read strictly: one rule for every parser (Market-1501, DukeMTMC-reID,
MSMT17, CUHK03, VeRi-776, VehicleID, the folder/CSV layout and the attribute files).

Python's `int` alone is too lenient for ids: it accepts Unicode digits (`int("١٢")` is 12, while
`"²".isdigit()` is True and `int("²")` fails), underscores (`int("1_0")` is 10), surrounding spaces and numbers
of any length (a 23-digit id overflows the int64 tensors of pids much later). An id here is an optional minus
and 1 to `MAX_ID_DIGITS` ASCII digits 0-9, so every id is below 10⁹ and fits int32, int64 and float64 exactly.
List and CSV files must be UTF-8 (a byte-order mark is allowed).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from reidkit.errors import DatasetError

MAX_ID_DIGITS = 9
ID_TEXT = re.compile(rf"-?[0-9]{{1,{MAX_ID_DIGITS}}}", re.ASCII)
ID_RULE = f"ids and camera numbers in ASCII digits 0-9, at most {MAX_ID_DIGITS} of them"


def parse_id(text: str) -> int | None:
    """The integer `text` spells (an optional minus and 1 to `MAX_ID_DIGITS` ASCII digits), else None."""
    return int(text) if ID_TEXT.fullmatch(text) else None


def id_from_number(value: float) -> int | None:
    """The integer a number read from a MATLAB file holds (finite, whole, below 10^MAX_ID_DIGITS in size),
    else None."""
    number = float(value)
    if not math.isfinite(number) or number != round(number) or abs(number) >= 10 ** MAX_ID_DIGITS:
        return None
    return int(number)


def read_text(path: Path, layout: str) -> str:
    """The text of a UTF-8 list or CSV file, without a leading byte-order mark.

    Raises:
        DatasetError: the file is not UTF-8; the message names the file, the line and the fix.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DatasetError(f"{layout}: {path} line {line} is not UTF-8 text (byte 0x{data[error.start]:02x}); "
                           "save the file as UTF-8") from None
