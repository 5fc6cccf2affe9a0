"""Which text convtree can keep, and how the first string it cannot is named."""

from service.domain.text import first_unstorable, first_unstorable_in_json, storable


def test_only_u0000_and_lone_surrogates_cannot_be_kept():
    assert storable("\x01\x7f\x85\x9f\uffff\ufffe\U0001f600\U0010ffff\\u0000")
    assert not storable("a\x00") and not storable("\ud800") and not storable("x\udfff")


def test_the_first_string_that_cannot_be_kept_is_named_by_its_path():
    assert first_unstorable({"a": [1, {"b": "ok"}, {"c": "\x00"}]}) == ("a[2].c", "U+0000, which PostgreSQL text cannot hold")
    assert first_unstorable({"a": {"k\x00": 1}})[0] == "a.k\\u0000"
    assert first_unstorable("\udc00") == ("$", "a lone surrogate (U+DC00), which UTF-8 cannot encode")
    assert first_unstorable({"fine": ["\U0001f600", None, 1.5, True]}) is None


def test_json_is_looked_into_only_when_it_holds_an_escape():
    assert first_unstorable_in_json(b'{"a": "\\u0041\\ud83d\\ude00"}') is None
    assert first_unstorable_in_json(b'{"a": ["\\ud83d"]}') == ("a[0]", "a lone surrogate (U+D83D), which UTF-8 cannot encode")
    assert first_unstorable_in_json('{"m": {"k": "\\\\u0000"}}') is None  # an escaped backslash: text, not U+0000
    assert first_unstorable_in_json(b'{"not json": \\u0000') is None  # its reader refuses it for that
    deep = b"[" * 100_000 + b"\"\\u0000\"" + b"]" * 100_000
    assert first_unstorable_in_json(deep) == ("$", "nesting too deep for its text to be checked")
    assert first_unstorable([[[["\x00"]]]] * 2) == ("[0][0][0][0]", "U+0000, which PostgreSQL text cannot hold")
