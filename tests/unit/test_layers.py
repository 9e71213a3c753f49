"""The one layer model (actstore.layers): every expected value is a literal worked out by
hand from METHODS.md (nearest layer = floor(d (L-1) + 1/2); grid i = floor((2i(L-1)+(g-1)) /
(2(g-1)))), or an independent float formula, never a value computed by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actstore.errors import InvalidInput, NotFound
from actstore.layers import (
    LayerRef,
    depth_grid,
    format_layers,
    nearest_layer,
    parse_layer_spec,
    relative_depth,
    resize_rows,
    resolve_index,
)


def ref_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def test_relative_depth():
    assert relative_depth(0, 16) == 0.0
    assert relative_depth(15, 16) == 1.0
    assert relative_depth(7, 29) == pytest.approx(0.25)
    assert [relative_depth(l_, 5) for l_ in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert relative_depth(0, 1) == 0.0  # a one-layer model is all at depth 0


def test_nearest_layer_half_up_literals():
    assert nearest_layer(0.5, 6) == 3  # 2.5 -> 3 (numpy's round-half-even gives 2)
    assert nearest_layer(0.5, 12) == 6  # 5.5 -> 6
    assert nearest_layer(0.3, 6) == 2  # 1.5 -> 2 (0.3 * 5 is 1.4999999999999998 in floats)
    assert nearest_layer(0.1, 6) == 1  # 0.5 -> 1 (numpy: 0)
    assert nearest_layer(0.29, 6) == 1
    assert nearest_layer(0.7, 1) == 0  # one-layer model
    assert nearest_layer(np.float32(0.5), 3) == 1
    for L in (2, 3, 16, 28, 61):
        for l_ in range(L):
            assert nearest_layer(l_ / (L - 1), L) == l_
    rng = np.random.default_rng(0)
    for d in rng.uniform(0, 1, 200):
        assert nearest_layer(d, 28) == ref_half_up(d * 27)


def test_depth_grid_literals():
    assert depth_grid(3, 6) == [0, 3, 5]  # 0, 2.5, 5: the grid ingest and ckaMatrix must agree on
    assert depth_grid(5, 6) == [0, 1, 3, 4, 5]  # 0, 1.25, 2.5, 3.75, 5
    assert depth_grid(3, 4) == [0, 2, 3]  # 1.5 -> 2
    assert depth_grid(9, 12) == [0, 1, 3, 4, 6, 7, 8, 10, 11]
    assert depth_grid(3, 24) == [0, 12, 23]
    assert depth_grid(2, 16) == [0, 15]
    assert depth_grid(16, 16) == list(range(16))
    for g, L in [(5, 16), (8, 28), (9, 28), (11, 61), (7, 7)]:
        assert depth_grid(g, L) == [ref_half_up(x) for x in np.linspace(0, L - 1, g)]


def test_parse_layer_spec_literals():
    assert parse_layer_spec("all", 4) == [0, 1, 2, 3]
    assert parse_layer_spec(None, 3) == [0, 1, 2]
    assert parse_layer_spec("0,2,-1", 6) == [0, 2, 5]
    assert parse_layer_spec("-1,5", 6) == [5]  # deduplicated
    assert parse_layer_spec("grid:3", 6) == [0, 3, 5]  # the bug of issue 11: ingest stored [0, 2, 5]
    assert parse_layer_spec("grid:5", 6) == [0, 1, 3, 4, 5]
    assert parse_layer_spec("grid:9", 12) == [0, 1, 3, 4, 6, 7, 8, 10, 11]
    assert parse_layer_spec("grid:9", 4) == [0, 1, 2, 3]  # a grid finer than the model: every layer
    assert parse_layer_spec("grid:3", 1) == [0]
    assert parse_layer_spec([3, -2], 4) == [2, 3]
    assert parse_layer_spec(-1, 4) == [3]


def test_ingest_grid_and_query_grid_agree_for_every_model_up_to_48_layers():
    for L in range(2, 49):
        for g in range(2, L + 1):
            assert parse_layer_spec(f"grid:{g}", L) == sorted(set(depth_grid(g, L)))
            assert depth_grid(g, L) == [ref_half_up(i * (L - 1) / (g - 1)) for i in range(g)]


def test_layer_ref_resolution():
    every6, every12 = list(range(6)), list(range(12))
    assert LayerRef("m", depth=0.5).resolve(6, every6) == 3
    assert LayerRef("m", depth=0.5).resolve(12, every12) == 6
    assert LayerRef("m", depth=0.0).resolve(6, every6) == 0
    assert LayerRef("m", depth=1.0).resolve(6, every6) == 5
    assert LayerRef("m", layer=-1).resolve(6, every6) == 5
    assert LayerRef("m", layer=2).resolve(6, every6) == 2
    # only some layers stored: the nearest stored one, ties deeper
    assert LayerRef("m", depth=0.5).resolve(6, [0, 3, 5]) == 3
    assert LayerRef("m", depth=0.5).resolve(6, [0, 2, 5]) == 2  # 2.5: 2 is 0.5 away, 5 is 2.5
    assert LayerRef("m", depth=0.5).resolve(6, [0, 2, 3, 5]) == 3  # 2 and 3 tie: deeper
    assert LayerRef("m", depth=0.9).resolve(6, [0, 5]) == 5


def test_layer_errors_name_the_value_and_what_is_allowed():
    with pytest.raises(InvalidInput, match=r"depth must be in \[0, 1\], got 1.2"):
        nearest_layer(1.2, 16)
    with pytest.raises(InvalidInput, match=r"depth must be in \[0, 1\], got nan"):
        nearest_layer(float("nan"), 16)
    with pytest.raises(InvalidInput, match=r"depth must be a number in \[0, 1\], got '0.5'"):
        nearest_layer("0.5", 16)
    with pytest.raises(InvalidInput, match=r"grid must be at least 2 \(first and last layer\), got 1"):
        depth_grid(1, 16)
    with pytest.raises(InvalidInput, match=r"grid must be an integer, got 2.5"):
        depth_grid(2.5, 16)
    with pytest.raises(InvalidInput, match=r"grid 7 asks for more layers than the model has \(6\); use grid <= 6"):
        depth_grid(7, 6)
    with pytest.raises(InvalidInput, match=r"layer 16 is out of range for a model with 16 layers: allowed 0..15"):
        relative_depth(16, 16)
    with pytest.raises(InvalidInput, match=r"layer must be an integer, got True"):
        relative_depth(True, 16)
    with pytest.raises(InvalidInput, match=r"a model has at least one layer, got n_layers=0"):
        depth_grid(3, 0)
    with pytest.raises(InvalidInput, match=r"layer 6 is out of range for model 'm': allowed 0..5 or -6..-1"):
        resolve_index(6, 6, "m")
    for bad, msg in [
        ("7", r"layer 7 is out of range for a model with 6 layers: allowed 0..5 or -6..-1"),
        ("-7", "out of range"),
        ("grid:1", "G must be at least 2"),
        ("grid:x", "grid:G"),
        ("a,b", "'a' is not an integer"),
    ]:
        with pytest.raises(InvalidInput, match=msg):
            parse_layer_spec(bad, 6)
    with pytest.raises(InvalidInput, match=r"give exactly one of layer or depth for model 'm'"):
        LayerRef("m").resolve(6, [0])
    with pytest.raises(InvalidInput, match=r"give exactly one of layer or depth"):
        LayerRef("m", layer=1, depth=0.5).resolve(6, [0])
    with pytest.raises(NotFound, match=r"layer 4 of model 'm' is not stored; stored layers: 0-2, 5"):
        LayerRef("m", layer=4).resolve(6, [0, 1, 2, 5])
    with pytest.raises(NotFound, match=r"model 'm' has no stored layers"):
        LayerRef("m", depth=0.5).resolve(6, [])


def test_format_layers():
    assert format_layers([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert format_layers([]) == "none"


def test_layer_ref_parse_literals():
    assert LayerRef.parse("pythia-70m:3") == LayerRef("pythia-70m", layer=3)
    assert LayerRef.parse("llama:-1") == LayerRef("llama", layer=-1)
    assert LayerRef.parse("qwen@0.5") == LayerRef("qwen", depth=0.5)
    assert LayerRef.parse("a@1") == LayerRef("a", depth=1.0)
    assert LayerRef.parse("a@0") == LayerRef("a", depth=0.0)
    assert LayerRef.parse("qwen2.5-0.5b:12") == LayerRef("qwen2.5-0.5b", layer=12)
    assert LayerRef.parse("org:name:2") == LayerRef("org:name", layer=2)  # the last ':' separates
    assert LayerRef.parse("m@x@0.25") == LayerRef("m@x", depth=0.25)  # the last '@' separates
    # a parsed reference resolves like a constructed one
    assert LayerRef.parse("m@0.5").resolve(6, list(range(6))) == 3
    assert LayerRef.parse("m:-1").resolve(6, list(range(6))) == 5


@pytest.mark.parametrize(
    "text,message",
    [
        ("llama", "bad layer 'llama': use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH"),
        (":3", "bad layer ':3': use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH"),
        ("", "bad layer '': use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH"),
        ("llama:x", "bad layer number in 'llama:x': use MODEL:LAYER with an integer LAYER"),
        ("llama:1.5", "bad layer number in 'llama:1.5': use MODEL:LAYER with an integer LAYER"),
        ("llama:", "bad layer number in 'llama:': use MODEL:LAYER with an integer LAYER"),
        ("qwen@half", "bad depth in 'qwen@half': use MODEL@DEPTH with DEPTH in [0, 1]"),
        ("qwen@1.5", "bad depth in 'qwen@1.5': use MODEL@DEPTH with DEPTH in [0, 1]"),
        ("qwen@-0.1", "bad depth in 'qwen@-0.1': use MODEL@DEPTH with DEPTH in [0, 1]"),
        ("qwen@nan", "bad depth in 'qwen@nan': use MODEL@DEPTH with DEPTH in [0, 1]"),
        ("@0.5", "bad depth in '@0.5': use MODEL@DEPTH with DEPTH in [0, 1]"),
    ],
)
def test_layer_ref_parse_errors(text, message):
    with pytest.raises(InvalidInput) as err:
        LayerRef.parse(text)
    assert str(err.value) == message


def test_resize_rows_literals():
    # every layer stored: the depth grid with repeats allowed (positions j (L-1) / (g-1))
    assert resize_rows(range(6), 6, 3) == [0, 3, 5]  # 0, 2.5 -> 3, 5
    assert resize_rows(range(4), 4, 7) == [0, 1, 1, 2, 2, 3, 3]  # 0, .5, 1, 1.5, 2, 2.5, 3
    assert resize_rows(range(16), 16, 2) == [0, 15]
    assert resize_rows(range(3), 3, 4) == [0, 1, 1, 2]  # 0, 2/3 -> 1, 4/3 -> 1, 2
    # positions into stored, not layer numbers
    assert resize_rows([0, 2, 4], 5, 5) == [0, 1, 1, 2, 2]  # layer 1: tie 0/2 -> 2; 3: tie -> 4
    assert resize_rows([4, 0, 2], 5, 5) == [1, 2, 2, 0, 0]  # same layers, stored in another order
    # the nearest stored layer to the ROUNDED layer: depth 0.25 of L = 5 is layer 1, stored
    # [0, 3] -> 0 (distance 1 vs 2)
    assert resize_rows([0, 3], 5, 5) == [0, 0, 1, 1, 1]  # layers 0, 1, 2, 3, 4
    assert resize_rows([0, 2], 3, 3) == [0, 1, 1]  # layer 1: tie 0/2 -> deeper 2
    assert resize_rows([7], 12, 4) == [0, 0, 0, 0]
    # agrees with depth_grid when g <= L and every layer is stored
    for g, L in [(5, 16), (8, 28), (9, 28), (11, 61)]:
        assert resize_rows(range(L), L, g) == depth_grid(g, L)


@pytest.mark.parametrize(
    "stored, L, size, msg",
    [
        (range(4), 4, 1, "size must be at least 2"),
        ([], 4, 3, "stored holds no layers"),
        ([0, 4], 4, 3, "stored layer 4 is out of range for a model with 4 layers: allowed 0..3"),
        ([1, 1], 4, 3, "stored layer 1 is listed twice"),
        ([0, 1], 0, 3, "a model has at least one layer"),
        ([0, 1], 4, 2.0, "size must be an integer"),
    ],
)
def test_resize_rows_errors(stored, L, size, msg):
    with pytest.raises(InvalidInput, match=msg):
        resize_rows(stored, L, size)
