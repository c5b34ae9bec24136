"""bnb.optim's copy of the optimizers' traits equals the library's table (src/common/optim_traits.h)."""

import os
import re

from conftest import REPO

from bnb.optim import _traits


def _enum_values(header, prefix):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\b(" + prefix + r"\w+)\s*=\s*(\d+)", header)}


def c_traits():
    with open(os.path.join(REPO, "include", "bnb.h")) as f:
        ids = _enum_values(f.read(), "BNB_OPT_")
    with open(os.path.join(REPO, "src", "common", "optim_traits.h")) as f:
        text = f.read()
    rows = re.findall(r'X\((BNB_OPT_\w+), "(\w+)", (BNB_OPT_\w+), (\d+), (\d+), (\d+), (\d+), (\d+)\)', text)
    out = {}
    for opt, name, kernel, states, copies, bias, clip, b3a in rows:
        out[ids[opt]] = _traits.Traits(name, ids[kernel], int(states), int(copies), bias == "1", clip == "1",
                                       b3a == "1")
    return out


def test_python_traits_equal_the_c_table():
    table = c_traits()
    assert len(table) == 8, "the parser found too few rows of BNB_OPTIMIZERS"
    assert _traits.TRAITS == table


def test_parser_sees_a_change():
    changed = dict(c_traits())
    changed[_traits.LION] = changed[_traits.LION]._replace(states=2)
    assert changed != _traits.TRAITS
