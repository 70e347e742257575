"""`vw_text_float` is VW's own text parser, number for number: the decision log's exported lines depend on it to
make VW learn from JSON exactly what it learned from Tailor's text examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vowpalwabbit import pyvw

from policies import vw_text_float


@pytest.fixture(scope="module")
def vw() -> Iterator[list[pyvw.Workspace]]:
    """In a list: hypothesis would take a Workspace first argument's `setup_example` for its own hook."""
    workspace = pyvw.Workspace("--quiet --noconstant")
    yield [workspace]
    workspace.finish()


def parsed_by_vw(vw: list[pyvw.Workspace], text: str) -> float:
    example = vw[0].example(f"| x:{text}")
    try:
        values = [value for _, value in example.iter_features()]
    finally:
        vw[0].finish_example(example)
    return values[0] if values else 0.0  # VW drops a zero-valued feature


numbers = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(1e-30, 1e-3),
    st.integers(-(10**12), 10**12).map(float),
)
formats = st.sampled_from(["%.9g", "%r", "%.3f", "%.17g", "%.6e", "%g"])


@settings(max_examples=400, deadline=None)
@given(number=numbers, fmt=formats)
def test_it_reads_every_decimal_as_vw_does(vw: list[pyvw.Workspace], number: float, fmt: str) -> None:
    text = fmt % number
    assert vw_text_float(text) == parsed_by_vw(vw, text), text


@pytest.mark.parametrize("text", ["1.0986123", "0.3333333333333333", "6.46931e-08", "-1.0", "1e+20", "7", "-0"])
def test_known_decimals(vw: list[pyvw.Workspace], text: str) -> None:
    assert vw_text_float(text) == parsed_by_vw(vw, text)
