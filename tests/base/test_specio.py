"""The hardened reader: every guard of base.specio.read_yaml / read_json, and bounded messages of from_mapping."""

import os
import threading
import time
from dataclasses import dataclass, field

import pytest

from base.errors import FormatError, SpecError
from base.specio import (
    INT_LIMIT,
    MAX_DEPTH,
    MAX_VALUES,
    clip,
    from_mapping,
    parse_json,
    parse_yaml,
    read_json,
    read_text_file,
    read_yaml,
    rng,
    short,
)


@dataclass(frozen=True)
class Spec:
    n: int = field(metadata=rng(ge=1))
    x: float = 1.0
    mode: str = "a"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: 2:4\n", r"unquoted 2:4 is read by YAML 1\.1 as the base-60 integer 124; quote it"),
        ("a: 1:30.5\n", r"base-60 number 90\.5; quote it"),
        ("a: 1\nb: 2\na: 3\n", r"duplicate key 'a' at line 3 \(first at line 1\)"),
        ("a: !!python/object:os.system {}\n", r"unsupported tag '!!python/object:os.system' at line 1"),
        ("a: !!python/name:os.system\n", r"unsupported tag"),
        ("a: !custom 3\n", r"unsupported tag '!custom'"),
        ("a: " + "9" * 400 + "\n", r"integer '9+\.\.\.9+' is out of range"),
        ("a: 9223372036854775808\n", r"out of range"),
        ("a: 1e400\n", r"overflows a 64-bit float"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", r"nested deeper than 32 levels"),
        ("a: &a [*a]\n", r"nested deeper than 32 levels \(or an alias refers to itself\)"),
        ("a: [1, 2\n", r"malformed YAML at line 2"),
        ("a: 2001-13-45\n", r"a value cannot be read \(month must be in 1\.\.12\)"),
    ],
)
def test_yaml_guards(text, match):
    with pytest.raises(SpecError, match=match):
        parse_yaml(text, "f.yaml")


def test_yaml_plain_values_still_read():
    assert parse_yaml('a: "2:4"\nb: 1e9\nc: 0x10\nd: .inf\ne: -3\nf: [1, 2]\n', "f") == {
        "a": "2:4",
        "b": 1e9,
        "c": 16,
        "d": float("inf"),
        "e": -3,
        "f": [1, 2],
    }
    assert parse_yaml(f"a: {INT_LIMIT}\n", "f") == {"a": INT_LIMIT}
    # merge keys may override what they merge: not a duplicate
    assert parse_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n", "f")["d"] == {"x": 3, "y": 2}


def test_alias_bomb_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {MAX_VALUES:,} values after expanding aliases"):
        parse_yaml("\n".join(lines), "bomb.yaml")
    assert time.perf_counter() - t0 < 30  # bounded (the full expansion is 9^9 values)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"a": 1, "a": 2}', r"duplicate key 'a'"),
        ('{"a": ' + "9" * 5000 + "}", r"out of range"),
        ('{"a": -9223372036854775809}', r"out of range"),
        ('{"a": 1e400}', r"overflows"),
        ('{"a": NaN}', r"NaN is not valid JSON"),
        ('{"a": -Infinity}', r"-Infinity is not valid JSON"),
        ("[" * 100000 + "]" * 100000, r"nested too deeply"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), r"nested deeper than 32"),
        ('{"a": 1', r"malformed JSON at line 1"),
    ],
)
def test_json_guards(text, match):
    with pytest.raises(SpecError, match=match):
        parse_json(text, "f.json")


def test_error_class_is_selectable():
    with pytest.raises(FormatError, match="duplicate"):
        parse_json('{"a": 1, "a": 1}', "m.json", FormatError)


def test_files_that_are_not_regular_files_refused(tmp_path):
    with pytest.raises(SpecError, match="is a directory"):
        read_yaml(tmp_path)
    with pytest.raises(SpecError, match="not a regular file"):
        read_yaml("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(SpecError, read_yaml, fifo)))
    t.start()
    t.join(10)
    assert not t.is_alive() and "not a regular file" in str(result[0].value)
    with pytest.raises(SpecError, match="no such YAML file"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="cannot open"):
        read_yaml("a\0b.yaml")


def test_size_cap_and_utf8(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(" " * 2000)
    with pytest.raises(SpecError, match="too large for a JSON file"):
        read_json(big, max_bytes=1000)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\); save the YAML file as UTF-8"):
        read_yaml(bad)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json(bom) == {"a": 1}
    assert read_text_file(bom, max_bytes=100) == '{"a": 1}'


def test_from_mapping_bounds_and_truncates():
    with pytest.raises(SpecError, match="integers are limited to"):
        from_mapping(Spec, {"n": 10**400}, "s.yaml")
    with pytest.raises(SpecError, match="out of range; give a smaller number"):
        from_mapping(Spec, {"n": 1, "x": 10**400}, "s.yaml")
    with pytest.raises(SpecError) as exc:
        from_mapping(Spec, {"n": 1, "mode": ["x" * 10**6] * 1000}, "s.yaml")
    assert len(str(exc.value)) < 200
    with pytest.raises(SpecError) as exc:
        from_mapping(Spec, {"n": 1, "k" * 10**6: 1}, "s.yaml")
    assert len(str(exc.value)) < 300


def test_short_and_clip_are_bounded():
    shared: list = ["x" * 1000]
    for _ in range(30):
        shared = [shared] * 9  # 9^30 leaves if expanded
    assert len(short(shared)) <= 60
    assert clip("a" * 500, 20) == "a" * 17 + "..."
