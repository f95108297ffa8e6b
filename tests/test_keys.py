"""Tests of the lookup keys: the domain doc's table, idempotence under adversarial input, temporary ids."""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.budget import examples

from eqc_enrich import keys
from eqc_enrich.keys import (
    ENTERPRISE_TYPES,
    INDEX_PRIORITY,
    MAX_KEY_LENGTH,
    STATUS_MARKERS,
    LookupType,
    clean_company_id,
    clean_plan_code,
    is_real_company_id,
    is_shortened_key,
    is_temp_company_id,
    normalize_name,
    plan_customer_key,
    temp_company_id,
)

# --- the table of enrichment-domain.md, one case per input -------------------------------------------

DOC_TABLE = [
    ("中国平安-已转出", "中国平安"),
    ("中国平安-待转出", "中国平安"),
    ("中国平安-清算", "中国平安"),
    ("中国平安（已转出）", "中国平安"),
    ("中国平安(终止)", "中国平安"),
    ("已转出-中国平安", "中国平安"),
    ("（已转出）中国平安", "中国平安"),
    ("  ABC  公司  ", "ABC公司"),
    ("China Life", "CHINALIFE"),
    ("abc（集团）公司", "ABC（集团）公司"),
    ("中国\t平安\n公司", "中国平安公司"),
    ("中国\u3000平安公司", "中国平安公司"),
    ("中国平安及下属子企业", "中国平安"),
    ("中国平安-养老", "中国平安"),
    ("中国平安-福利", "中国平安"),
    ("中国平安(团托)", "中国平安"),
    ("重庆机场集团有限公司(集团)", "重庆机场集团有限公司"),
    ("深圳市燃气集团股份有限公司（原单一，已转出）", "深圳市燃气集团股份有限公司"),
    ("沈阳市铁西区鑫奇天然食品经销处（普通合伙）", "沈阳市铁西区鑫奇天然食品经销处（普通合伙）"),
    ("中国（北京）科技", "中国（北京）科技"),
    ("中国平安（）", "中国平安"),
    ("中国平安-", "中国平安"),
    ("中国平安--", "中国平安"),
    ("中国平安Ａ", "中国平安A"),
    ("第１公司", "第1公司"),
    ("「测试公司」", "测试公司"),
    ("『测试公司』", "测试公司"),
    ("null", ""),
    ("N/A", ""),
    ("空白", ""),
]


@pytest.mark.parametrize(("raw", "key"), DOC_TABLE)
def test_doc_table(raw: str, key: str) -> None:
    assert normalize_name(raw) == key


# --- further rules and real names that must survive --------------------------------------------------

MORE_CASES = [
    ("华润（北京）医药有限公司", "华润（北京）医药有限公司"),
    ("华润(北京)医药有限公司", "华润（北京）医药有限公司"),
    ("TCL科技有限公司-已转出", "TCL科技有限公司"),
    ("ＴＣＬ科技有限公司", "TCL科技有限公司"),
    ("某某有限公司（有限公司）", "某某有限公司（有限公司）"),
    ("某某律师事务所（特殊普通合伙）", "某某律师事务所（特殊普通合伙）"),
    ("原平市煤炭公司", "原平市煤炭公司"),
    ("集合资产管理公司", "集合资产管理公司"),
    ("北京市（贰号）职业年金计划", "北京市（贰号）职业年金计划"),
    ("中国平安-A1", "中国平安"),
    ("中国平安-A1-B2", "中国平安"),
    ("中国平安（团托）", "中国平安"),
    ("中国平安——已转出", "中国平安"),
    ("中国平安_保留账户", "中国平安"),
    ("中国平安~已转移终止", "中国平安"),
    ("中国平安-已转出（集团）", "中国平安"),
    ("中国平安（北京）（已转出）", "中国平安"),
    ("（原单一，已转出）中国平安", "中国平安"),
    ("（已转出）-中国平安", "中国平安"),
    ("集合-中国平安", "中国平安"),
    ("原-原平市煤炭公司", "原平市煤炭公司"),
    ("中国平安终止", "中国平安终止"),
    ("COCA-COLA", "COCA-COLA"),
    ("中国平安.", "中国平安"),
    ("中国平安（（））", "中国平安"),
    # nested groups: the trailing group is the one whose `（` matches the final `）`
    ("某某公司（北京（朝阳）分部）", "某某公司"),
    ("甲（乙（丙）丁）", "甲"),  # the matching `（` right after the first character
    ("某某（甲）（乙（丙）丁）", "某某"),
    ("某某（a）b（c（d）e）", "某某（A）B"),
    ("某某公司（北京（朝阳）有限合伙）", "某某公司（北京（朝阳）有限合伙）"),  # a legal form inside: kept
    ("某某公司）北京（朝阳）分部）", "某某公司）北京（朝阳）分部）"),  # brackets that do not balance: kept
    ("中\u200b国平安", "中国平安"),
    ("＂中国平安＂", "中国平安"),
    ("ｃｈｉｎａ　ｌｉｆｅ", "CHINALIFE"),
    ("NULL-已转出", ""),
    ("n/a", ""),
    ("无", ""),
    ("——", ""),
    ("-", ""),
    ("", ""),
    ("   ", ""),
]


@pytest.mark.parametrize(("raw", "key"), MORE_CASES)
def test_more_cases(raw: str, key: str) -> None:
    assert normalize_name(raw) == key


def test_none_is_empty() -> None:
    assert normalize_name(None) == ""


# --- idempotence and other properties under adversarial strings -------------------------------------

_TOKENS = [
    *STATUS_MARKERS,
    *ENTERPRISE_TYPES,
    *'-_~—–―‐−〜（）()﹙﹚「」『』"，,、;；/.。…·',
    *" \t\n\r\u3000\xa0\u200b\ufeff",
    *"ａｚＡＺ０９－～＿．（）ｎ",
    *"aAzZ019",
    "及下属子企业",
    "团托",
    "养老",
    "福利",
    "NULL",
    "null",
    "N/A",
    "n/a",
    "空白",
    "无",
    "--",
    "——",
    "中国",
    "平安",
    "原平市",
    "公司",
    "北京",
    "集团",
    "单一",
    "有限公司",
]


def _adversarial() -> st.SearchStrategy[str]:
    """Names glued from the very pieces the rules react to, so rules can feed each other."""
    piece = st.one_of(
        st.sampled_from(_TOKENS),
        st.text(alphabet="".join(t for t in _TOKENS if len(t) == 1), max_size=3),
        st.text(max_size=2),
    )
    return st.lists(piece, max_size=14).map("".join)


_NAMES = st.one_of(_adversarial(), st.text(max_size=30))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("（已转出，原来的单一户）某公司", "某公司"),  # a list of status words: a 6-character word on a marker counts
        ("（已转出，原来的单一户头）某公司", "（已转出,原来的单一户头）某公司"),  # 7 characters: a name, kept
        ("（已转出，北京）某公司", "（已转出,北京）某公司"),  # a short word on no marker: not a status list
    ],
)
def test_a_leading_bracket_goes_only_when_it_lists_status_words(raw: str, key: str) -> None:
    assert normalize_name(raw) == key


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("（原）已转出-中国平安（集团）", "中国平安"),  # each removal uncovers the next rule's match
        ("中国平安（集团）（已转出）", "中国平安"),
        ("中国平安-已转出（集团）", "中国平安"),
        ("已转出-（已转出）中国平安", "中国平安"),
        ("中国平安-ABC-已转出", "中国平安"),
        ("NULL-已转出", ""),
    ],
)
def test_fixed_point_examples(raw: str, key: str) -> None:
    """Names that need more than one sweep of the rules: the key is where sweeping changes nothing."""
    assert normalize_name(raw) == key
    assert normalize_name(key) == key


@settings(max_examples=examples(2000), deadline=None)
@given(_NAMES)
def test_idempotent(text: str) -> None:
    key = normalize_name(text)
    assert normalize_name(key) == key


@settings(max_examples=examples(500), deadline=None)
@given(_NAMES)
def test_key_is_canonical(text: str) -> None:
    key = normalize_name(text)
    assert len(key) <= len(text)
    assert not any(char.isspace() for char in key)
    assert not any(code in keys._CHAR_MAP for code in map(ord, key))
    assert not re.search('[「」『』"]|（）|及下属子企业', key)
    assert not key.endswith(tuple("-_~—.。"))
    assert key not in keys.NAME_PLACEHOLDERS


_INVISIBLES = ["\x00", "\x01", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\u061c", "\u200e", "\u200f", "\u202a",
               "\u202e", "\u2066", "\u2069", "\ufeff"]  # fmt: skip


@settings(max_examples=examples(500), deadline=None)
@given(_NAMES, st.lists(st.tuples(st.integers(0, 40), st.sampled_from(_INVISIBLES)), max_size=6))
def test_control_and_bidirectional_characters_anywhere_leave_the_key_as_it_was(
    text: str, inserts: list[tuple[int, str]]
) -> None:
    """A NUL (which PostgreSQL cannot store), any control character, a bidirectional mark: nothing a reader
    sees, so the name meets the one written without them, on every backend."""
    spoiled = text
    for at, char in inserts:
        spoiled = spoiled[:at] + char + spoiled[at:]
    key = normalize_name(spoiled)
    assert key == normalize_name(text)
    assert not any(char in key for char in _INVISIBLES)


def test_a_nul_inside_a_name_is_dropped_from_its_key() -> None:
    assert normalize_name("中国平安\x00-已转出") == "中国平安"
    assert normalize_name("甲\u202e公司\x00") == "甲公司"
    assert normalize_name("\x00") == ""


def _ascii_swapcase(text: str) -> str:
    return "".join(char.swapcase() if char.isascii() else char for char in text)


def _to_full_width(text: str) -> str:
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


@settings(max_examples=examples(500), deadline=None)
@given(_adversarial(), _adversarial(), st.sampled_from([" ", "\t", "\u3000", "\n", "\xa0"]))
def test_spelling_variants_meet(left: str, right: str, space: str) -> None:
    key = normalize_name(left + right)
    assert normalize_name(left + space + right) == key
    assert normalize_name(_ascii_swapcase(left + right)) == key
    assert normalize_name(_to_full_width(left + right)) == key


# --- names longer than the index column -----------------------------------------------------------------


def _long_names() -> st.SearchStrategy[str]:
    """Names past MAX_KEY_LENGTH, with the adversarial pieces at both ends and around the cut at 200."""
    body = st.text(alphabet="中国平安公司有限北京ABCab123-_（）() 　", min_size=100, max_size=400)
    return st.builds(
        lambda head, left, middle, right, tail: head + left + middle + right + tail,
        _adversarial(), body, _adversarial(), body, _adversarial(),
    )  # fmt: skip


@settings(max_examples=examples(1000), deadline=None)
@given(_long_names())
def test_long_names_give_bounded_fixed_point_keys(text: str) -> None:
    key = normalize_name(text)
    assert len(key) <= MAX_KEY_LENGTH
    assert normalize_name(key) == key
    assert normalize_name(text) == key
    keys._normalize.cache_clear()  # the same key from scratch, not from the cache
    assert normalize_name(text) == key
    if is_shortened_key(key):
        assert len(key) == 217


@settings(max_examples=examples(300), deadline=None)
@given(_long_names(), st.sampled_from(["甲", "乙公司", "A"]))
def test_long_names_that_share_a_prefix_get_different_keys(text: str, ending: str) -> None:
    first, second = normalize_name(text + "丙" + ending), normalize_name(text + "丁" + ending)
    if len(first) > 200 and len(second) > 200:
        assert first != second


def test_shortened_key_form_is_fixed_and_documented() -> None:
    name = "中" * 300
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16].upper()
    key = normalize_name(name)
    assert key == "中" * 200 + "#" + digest
    assert digest == "FF396AA85ACBEC90"  # keys are stored: the scheme must never change
    assert is_shortened_key(key)
    assert normalize_name(key) == key
    assert temp_company_id(name, "s") == temp_company_id(key, "s")


def test_keys_up_to_the_limit_are_kept_whole() -> None:
    exact = "中" * MAX_KEY_LENGTH
    assert normalize_name(exact) == exact
    assert not is_shortened_key(exact)
    over = normalize_name(exact + "国")
    assert is_shortened_key(over)
    assert over.startswith("中" * 200 + "#")
    assert normalize_name(" 公司 " * 100) == "公司" * 100  # whitespace does not count: the key is measured


@pytest.mark.parametrize(
    "key", ["", "中国平安", "中" * 200 + "#ff396aa85acbec90", "中" * 199 + "#FF396AA85ACBEC90", "中" * 200 + "#FF39"]
)
def test_ordinary_keys_are_not_shortened(key: str) -> None:
    assert not is_shortened_key(key)


def _expected_char(char: str) -> str:
    """The per-character rule, from Unicode's own full-width folding rather than the table's offsets."""
    if char in "(（﹙":
        return "（"
    if char in ")）﹚":
        return "）"
    code = ord(char)
    if 0x21 <= code <= 0x7E or 0xFF01 <= code <= 0xFF5E:
        return unicodedata.normalize("NFKC", char).upper()
    return char


def test_the_char_map_is_the_documented_rule_and_nothing_else() -> None:
    expected = {code: _expected_char(chr(code)) for code in range(0x10000) if _expected_char(chr(code)) != chr(code)}
    assert keys._build_char_map() == expected
    assert expected == keys._CHAR_MAP


def test_mapping_fast_path_sees_every_mapped_char() -> None:
    for code in range(0x10000):
        assert (keys._NEEDS_MAPPING.match(chr(code)) is not None) == (code in keys._CHAR_MAP), hex(code)


# --- temporary ids ------------------------------------------------------------------------------------


def test_temp_id_doc_example() -> None:
    assert temp_company_id("中国平安", "test_salt") == "IN4MDGRBC4XLPPGTUE"


@pytest.mark.parametrize("variant", ["中国平安-已转出", " 中国 平安 ", "（已转出）中国平安", "中国平安(团托)"])
def test_temp_id_same_for_variants(variant: str) -> None:
    assert temp_company_id(variant, "test_salt") == "IN4MDGRBC4XLPPGTUE"


def test_temp_id_depends_on_salt_and_name() -> None:
    assert temp_company_id("中国平安", "other") != temp_company_id("中国平安", "test_salt")
    assert temp_company_id("中国人寿", "test_salt") != temp_company_id("中国平安", "test_salt")


@pytest.mark.parametrize("name", [None, "", "   ", "0", " 0 ", "空白", "\u3000空白\u3000"])
def test_no_temp_id_for_blank_names(name: str | None) -> None:
    assert temp_company_id(name, "test_salt") is None


def test_temp_id_for_empty_key_uses_empty_marker() -> None:
    assert temp_company_id("null", "s") == temp_company_id("N/A", "s")
    assert temp_company_id("null", "s") is not None


@settings(max_examples=examples(300), deadline=None)
@given(_NAMES, st.text(max_size=8))
def test_temp_id_shape_and_stability(name: str, salt: str) -> None:
    first = temp_company_id(name, salt)
    assert first == temp_company_id(name, salt)
    assert first is None or re.fullmatch("IN[A-Z2-7]{16}", first)


# --- ids and plan codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, "", "  ", "N", "na", " N/A ", "None", "NULL", "nan", float("nan"), float("inf"), True]
)
def test_placeholder_ids_are_not_real(value: object) -> None:
    assert not is_real_company_id(value)
    assert clean_company_id(value) is None


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        (" 600000001 ", "600000001"),
        (600000001, "600000001"),
        (600000001.0, "600000001"),
        (Decimal("600000001.00"), "600000001"),
        (12.5, "12.5"),  # not a whole number: printed as it is
        (Decimal("600000001.50"), "600000001.50"),
        (Decimal("6E+2"), "600"),
        ("IN4MDGRBC4XLPPGTUE", "IN4MDGRBC4XLPPGTUE"),
        ("NAB", "NAB"),
    ],
)
def test_real_ids_are_cleaned(value: object, cleaned: str) -> None:
    assert is_real_company_id(value)
    assert clean_company_id(value) == cleaned


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        (" P0190 ", "P0190"),
        ("z0001", "z0001"),
        (None, ""),
        ("", ""),
        ("N/A", ""),
        ("空白", ""),
        (1001.0, "1001"),
        (Decimal("inf"), ""),
    ],
)
def test_clean_plan_code(value: object, cleaned: str) -> None:
    assert clean_plan_code(value) == cleaned


def test_plan_customer_key() -> None:
    assert plan_customer_key("P0190", normalize_name("中国平安-已转出")) == "P0190|中国平安"


def test_lookup_types() -> None:
    assert [str(kind) for kind in LookupType] == [
        "plan_code",
        "customer_name",
        "plan_customer",
        "former_name",
        "account_name",
        "account_number",
    ]
    assert INDEX_PRIORITY == ("plan_code", "customer_name", "plan_customer", "former_name")


def test_a_temporary_id_is_recognised_and_a_real_one_is_not() -> None:
    temp = temp_company_id("示例科技有限公司", "salt")
    assert temp is not None
    assert is_temp_company_id(temp)
    assert is_temp_company_id(f" {temp} ")
    assert not is_temp_company_id("600000001")
    assert not is_temp_company_id(temp + "X")
    assert not is_temp_company_id("IN" + "1" * 16)  # base32 has no 1


# --- the same rules over a column ------------------------------------------------------------------------


_SPACES_AND_MARKS = st.text(alphabet=keys.PYTHON_WHITESPACE + "ａＡa（）()-_。.公司", max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _NAMES, _SPACES_AND_MARKS)))
def test_normalize_names_gives_every_value_the_key_normalize_name_gives(texts: list[str | None]) -> None:
    """The column form takes a shortcut for most names (no Python call): it must never give another key."""
    assert keys.normalize_names(pl.Series(texts, dtype=pl.String)).to_list() == [normalize_name(t) for t in texts]


def test_normalize_names_agrees_on_the_documented_cases_and_long_names() -> None:
    texts = [raw for raw, _ in (*DOC_TABLE, *MORE_CASES)] + ["某" * 300, "某" * 254 + "。", "N/A", "\ufeff公司"]
    assert keys.normalize_names(pl.Series(texts)).to_list() == [normalize_name(t) for t in texts]


def test_python_whitespace_is_every_character_re_calls_whitespace() -> None:
    """The column form removes whitespace with polars' regex engine, whose `\\s` differs from Python's: it
    is handed Python's set explicitly, and this is that set."""
    spaces = "".join(chr(code) for code in range(sys.maxunicode + 1) if re.match(r"\s", chr(code)))
    assert spaces == keys.PYTHON_WHITESPACE
