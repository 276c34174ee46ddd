"""Tests for lens_steer.specs: each spec language parsed against hand-expanded lists, and its one-line errors."""

from __future__ import annotations

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.specs import layer_label, parse_coeffs, parse_ints, parse_layers, parse_names


def test_layer_lists_in_every_form() -> None:
    assert parse_layers("4-6") == (4, 5, 6) and parse_layers([3, 1]) == (1, 3) and parse_layers(7) == (7,)
    assert parse_layers("10-12,3, 11") == (3, 10, 11, 12)
    assert parse_layers("1-3", n_layers=4) == (1, 2, 3)
    for layers in ((15,), (13, 14, 15), (3, 5, 7), (0, 1, 5)):
        assert parse_layers(layer_label(layers)) == layers  # labels read back


@pytest.mark.parametrize(
    ("spec", "n_layers", "words"),
    [
        ("x", None, ("cannot read layers 'x'", "write")),
        ("3-1", None, ("'3-1'", "backwards")),
        ("-1", None, ("-1", "negative", "give")),
        ("2-4", 4, ("layer 4", "0..3")),
        ("", None, ("no layers",)),
        (True, None, ("cannot read",)),
        ([1, "2"], None, ("cannot read",)),
    ],
)
def test_layer_list_errors_are_one_line(spec: object, n_layers: int | None, words: tuple[str, ...]) -> None:
    with pytest.raises(LensSteerError) as e:
        parse_layers(spec, n_layers=n_layers)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def test_integer_lists() -> None:
    assert parse_ints("3,1,2") == (1, 2, 3) and parse_ints("1-3") == (1, 2, 3)
    with pytest.raises(LensSteerError, match="control seeds '-2'"):
        parse_ints("-2", "control seeds")


def test_coefficient_grids() -> None:
    assert parse_coeffs("-2:2:0.5") == (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
    assert parse_coeffs("0:1:0.1") == tuple(round(0.1 * i, 10) for i in range(11))
    assert parse_coeffs("1:1:1") == (1.0,) and parse_coeffs("2,-1, 0.5") == (-1.0, 0.5, 2.0)
    for bad in ("1:0:0.5", "0:1:0", "nan", "a,b", "1:2"):
        with pytest.raises(LensSteerError) as e:
            parse_coeffs(bad)
        assert repr(bad) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["2:-2:0.5", "", " , ", "0:1:0", "0:1:-1", "a:b:c", "1:2", "nan,1", "0:inf:1"])
def test_bad_or_empty_coeff_grid_is_a_one_line_error(text: str) -> None:
    with pytest.raises(LensSteerError) as e:
        parse_coeffs(text)
    assert "\n" not in str(e.value) and repr(text) in str(e.value)


def test_name_lists_in_every_form() -> None:
    assert parse_names("age, religion,,age", "axis") == ("age", "religion")  # stripped, empty dropped, first kept
    assert parse_names(["b", " a "], "name") == ("b", "a")
    assert parse_names("x,y", "name", ("x", "y", "z")) == ("x", "y")
    upper = parse_names("Age,AGE,age", "category", ("AGE",), resolve=str.upper)  # resolved, then checked and deduped
    assert upper == ("AGE",)


@pytest.mark.parametrize(
    ("spec", "valid", "words"),
    [
        ("", None, ("empty axis list", "name at least one")),
        (" , ", ("age", "ses"), ("empty axis list", "name at least one of age, ses")),
        ("age,klingon", ("age", "ses"), ("unknown axis 'klingon'", "choose one of age, ses")),
        (3, None, ("cannot read axis list 3",)),
        (["age", 2], None, ("cannot read axis list",)),
    ],
)
def test_name_list_errors_are_one_line_and_list_the_valid_names(spec, valid, words) -> None:
    with pytest.raises(LensSteerError) as e:
        parse_names(spec, "axis", valid)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_a_name_list_raises_the_error_type_asked_for() -> None:
    from lens_steer.errors import DataError

    with pytest.raises(DataError, match="unknown subject 'x'"):
        parse_names("x", "subject", ("a",), error=DataError)
