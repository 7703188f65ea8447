"""from_items builds plain columns without pyarrow's Python conversion (which imports pandas):
the tables must be exactly what pyarrow builds, for any input."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallpond.io.arrow import table_from_rows, table_from_values

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**64),  # the second: not int64
    st.floats(allow_nan=True, allow_infinity=True), st.text(), st.booleans(), st.none(),
    st.binary(max_size=4))
columns = st.one_of(st.lists(st.integers(-(2**63), 2**63 - 1)), st.lists(st.floats()),
                    st.lists(st.text()), st.lists(st.booleans()), st.lists(scalars))


def _pyarrow(build):
    try:
        return build()
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as error:
        return type(error)


def _same(ours, theirs):
    if isinstance(theirs, type):
        assert isinstance(ours, type) and issubclass(ours, theirs) or ours is theirs
    else:
        assert ours.schema == theirs.schema
        assert ours.equals(theirs) or ours.to_pylist() == theirs.to_pylist() or \
            repr(ours.to_pylist()) == repr(theirs.to_pylist())  # NaN != NaN


@given(values=columns)
def test_values_make_the_table_pyarrow_makes(values):
    _same(_pyarrow(lambda: table_from_values(values)),
          _pyarrow(lambda: pa.table({"item": values})))


@given(rows=st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), scalars, max_size=3),
                     min_size=1, max_size=8),
       plain=st.lists(st.tuples(st.integers(-5, 5), st.text(max_size=3), st.floats()),
                      min_size=1, max_size=8))
def test_rows_make_the_table_pyarrow_makes(rows, plain):
    _same(_pyarrow(lambda: table_from_rows(rows)), _pyarrow(lambda: pa.Table.from_pylist(rows)))
    dicts = [{"k": k, "s": s, "f": f} for k, s, f in plain]  # the fast path's shape
    _same(table_from_rows(dicts), pa.Table.from_pylist(dicts))


@pytest.mark.parametrize("items", ["[1, 2, 3]", "[{'a': 1, 's': 'x'}, {'a': 2, 's': 'y'}]"])
def test_plain_items_do_not_import_pandas(items):
    code = ("import sys\nfrom smallpond.io.arrow import table_from_rows, table_from_values\n"
            f"items = {items}\n"
            "t = table_from_rows(items) if isinstance(items[0], dict) else "
            "table_from_values(items)\n"
            "assert t.num_rows == len(items)\nprint('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
