"""SMS rendering: segment counts at the 70/71 and 160/161 boundaries, masks, vectorised templates.

Expected counts are computed here from the rules of docs/regulation.md §4, not
taken from the code under test: GSM-7 160 in one part, 153 per part beyond;
UCS-2 70 and 67; the signature counts with its 【】, which are not GSM-7.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from transforms.notify.render import Template, mask_numbers, segment_count, segments_of, sign, sms_units

SIGNATURE = "某某通信"


def expected_parts(length: int, gsm: bool) -> int:
    single, multi = (160, 153) if gsm else (70, 67)
    return 1 if length <= single else math.ceil(length / multi)


@pytest.mark.parametrize("length", [1, 69, 70, 71, 134, 135, 201, 202])
def test_ucs2_boundaries_without_signature(length):
    text = "中" * length
    assert sms_units(text) == ("UCS2", length)
    assert segment_count(length, "UCS2") == expected_parts(length, gsm=False)
    assert segment_count(70, "UCS2") == 1 and segment_count(71, "UCS2") == 2


@pytest.mark.parametrize("length", [1, 159, 160, 161, 306, 307])
def test_gsm7_boundaries_without_signature(length):
    text = "a" * length
    assert sms_units(text) == ("GSM7", length)
    assert segment_count(length, "GSM7") == expected_parts(length, gsm=True)
    assert segment_count(160, "GSM7") == 1 and segment_count(161, "GSM7") == 2


@pytest.mark.parametrize("text_length", [63, 64, 65, 128, 129])
def test_signature_counts_with_its_brackets_and_forces_ucs2(text_length):
    head = sign(SIGNATURE)
    assert head == "【某某通信】" and len(head) == 6
    for body in ("a" * text_length, "中" * text_length):  # even plain ASCII text becomes UCS-2
        encoding, units = sms_units(head + body)
        assert encoding == "UCS2" and units == 6 + text_length
        assert segment_count(units, encoding) == expected_parts(6 + text_length, gsm=False)


def test_gsm7_extension_characters_count_two():
    assert sms_units("a" * 159 + "€") == ("GSM7", 161)
    assert segment_count(*reversed(sms_units("a" * 159 + "€"))) == 2
    assert sms_units("a" * 158 + "{") == ("GSM7", 160)
    assert sms_units("é" * 10)[0] == "GSM7" and sms_units("ê")[0] == "UCS2"  # é is in the table, ê is not


def test_astral_characters_take_two_ucs2_units():
    assert sms_units("😀" * 35) == ("UCS2", 70)
    assert sms_units("😀" * 35 + "a") == ("UCS2", 71)


def test_vectorised_segments_match_the_rule():
    units = np.array([1, 70, 71, 134, 135, 160, 161, 306, 307])
    for gsm in (True, False):
        got = segments_of(units, np.full(len(units), gsm))
        assert got.tolist() == [expected_parts(int(u), gsm) for u in units]


def _rendered(template: Template, numbers: list[str]):
    column = pa.array(numbers)
    values = {"msisdn_masked": mask_numbers(column), "region": pa.array(["110105"] * len(numbers))}
    text = template.render(values, len(numbers))
    units, gsm = template.sms_lengths(values, len(numbers))
    return text.to_pylist(), units, gsm


def test_rendered_batch_straddles_the_70_71_boundary_with_signature():
    # 【某某通信】 (6) + 53 or 54 + the 11-character mask (a fixed run of stars: every number's) = 70 or 71.
    for body, length, parts in ((53, 70, 1), (54, 71, 2)):
        template = Template.compile("免" * body + "{msisdn_masked}", "sms", "zh-CN", {}, head=sign(SIGNATURE))
        text, units, gsm = _rendered(template, ["13800138000", "1440075331530"])
        assert [len(t) for t in text] == units.tolist() == [length, length] and not gsm.any()
        assert segments_of(units, gsm).tolist() == [expected_parts(length, False)] * 2 == [parts] * 2
        assert text[0].startswith("【某某通信】") and text[0].endswith("138****8000")


def test_rendered_batch_straddles_the_160_161_boundary_without_signature():
    # a short number's mask (****NN, 6 characters) beside the 11 of every longer number's
    template = Template.compile("F" * 150 + "{msisdn_masked}", "sms", "en", {})
    text, units, gsm = _rendered(template, ["1234567", "1440075331530"])
    assert units.tolist() == [156, 161] and gsm.all() and text[0].endswith("****67")
    assert segments_of(units, gsm).tolist() == [expected_parts(156, True), expected_parts(161, True)] == [1, 2]


def test_vectorised_render_equals_one_by_one():
    constants = {"deadline": "2027年1月31日", "campaign_id": "c1", "wave": "2"}
    template = Template.compile(
        "{{注意}}号码{msisdn_masked}（{region}）请于{deadline}前办理，活动{campaign_id}-{wave}",
        "sms",
        "zh-CN",
        constants,
        head=sign(SIGNATURE),
    )
    numbers = ["13800138000", "01065529988", "1440075331530"]
    text, units, gsm = _rendered(template, numbers)
    masks = mask_numbers(pa.array(numbers)).to_pylist()
    for got, mask, n in zip(text, masks, units):
        assert got == template.render_one({"msisdn_masked": mask, "region": "110105"})
        assert sms_units(got) == ("UCS2", n)
    assert text[0] == "【某某通信】{注意}号码138****8000（110105）请于2027年1月31日前办理，活动c1-2"


def test_odd_values_switch_the_message_to_ucs2():
    template = Template.compile("Hi {region}", "sms", "en", {})
    values = {"region": pa.array(["110105", "北京"]), "msisdn_masked": pa.array(["", ""])}
    units, gsm = template.sms_lengths(values, 2)
    assert gsm.tolist() == [True, False] and units.tolist() == [9, 5]


def test_lengths_of_region_names_equal_the_whole_rendered_text(monkeypatch):
    """Region names (Chinese), GSM-7 extension and astral characters in values: each message's length and
    encoding is what sms_units says of its whole rendered text; values are measured once per distinct value."""
    import transforms.notify.render as render

    names = [
        "北京市朝阳区",
        "新疆维吾尔自治区巴音郭楞蒙古自治州库尔勒经济技术开发区",
        "Zone [A]",
        "😀区",
        None,
        "110105",
    ]
    numbers = ["13800138000", "1440075331530", "01065529988"]
    rows = [(names[i % len(names)], numbers[i % len(numbers)]) for i in range(3_000)]
    values = {
        "region": pa.array([r for r, _ in rows]),
        "msisdn_masked": mask_numbers(pa.array([n for _, n in rows])),
    }
    calls = []
    measure = render.text_units
    monkeypatch.setattr(render, "text_units", lambda text: calls.append(text) or measure(text))
    for head, body in (
        (sign(SIGNATURE), "请于{deadline}前在{region}办理，免费"),
        ("", "Hi {msisdn_masked} in {region}"),
    ):
        template = Template.compile(body, "sms", "zh-CN", {"deadline": "2027年1月31日"}, head=head)
        calls.clear()
        units, gsm = template.sms_lengths(values, len(rows))
        texts = template.render(values, len(rows)).to_pylist()
        assert len(calls) <= 1 + len(names)  # the literals, then each odd distinct value once
        calls.clear()
        expected = [measure_whole(t) for t in texts]
        assert [("GSM7" if g else "UCS2", int(u)) for g, u in zip(gsm, units)] == expected
        assert segments_of(units, gsm).tolist() == [expected_parts(u, enc == "GSM7") for enc, u in expected]
    assert {enc for enc, _ in expected} == {"GSM7", "UCS2"}  # the plain rows stay GSM-7 without a signature


def measure_whole(text: str) -> tuple[str, int]:
    """The rules of docs/regulation.md §4 applied to a whole message, written out here."""
    basic = set(
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    )
    extension = set("^{}\\[~]|€\f")
    if all(ch in basic or ch in extension for ch in text):
        return "GSM7", sum(2 if ch in extension else 1 for ch in text)
    return "UCS2", sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def test_masks_hide_the_middle_digits():
    """docs/keys-and-vault.md "Masks": first 3 + a fixed ``****`` + last 4, so a mask does not tell the length
    (a 13-digit IoT number and the fixed lines of 11 and 12 digits look alike)."""
    numbers = ["13800138000", "1440075331530", "01065529988", "075512345678", "12345", None]
    masked = mask_numbers(pa.array(numbers)).to_pylist()
    assert masked == ["138****8000", "144****1530", "010****9988", "075****5678", "****45", None]
    for number, mask in zip(numbers[:4], masked[:4]):
        assert mask == number[:3] + "****" + number[-4:] and number[3:-4] not in mask


def test_rows_rendered_with_their_own_template_match_each_template():
    """render_rows / sms_lengths_rows (one gather for every variant) give each row exactly what its own
    template renders and measures: templates of different shapes, nulls, and a GSM-7 and a UCS-2 text."""
    from transforms.notify.render import render_rows, sms_lengths_rows

    constants = {"deadline": "2027年1月31日"}
    templates = [
        Template.compile("Hi {msisdn_masked}, free", "sms", "en", constants),
        Template.compile(
            "请于{deadline}前为{msisdn_masked}在{region}办理，免费", "sms", "zh-CN", constants, head=sign(SIGNATURE)
        ),
        Template.compile("{region}{msisdn_masked}{region} free of charge", "sms", "en", constants),
    ]
    numbers = ["13800138000", "075512345678", None, "12345", "13912345678", "13600000000", "13700000000"]
    regions = ["110105", None, "370702", "110105", "€uro", "", "110105"]
    which = np.array([0, 1, 2, 2, 1, 0, 1])
    values = {"msisdn_masked": mask_numbers(pa.array(numbers, pa.string())), "region": pa.array(regions, pa.string())}
    texts = render_rows(templates, which, values, len(numbers)).to_pylist()
    units, gsm = sms_lengths_rows(templates, which, values, len(numbers))
    for i, t in enumerate(which):
        row = {name: pa.array(column.to_pylist()[i : i + 1], pa.string()) for name, column in values.items()}
        assert texts[i] == templates[t].render(row, 1).to_pylist()[0]
        one_units, one_gsm = templates[t].sms_lengths(row, 1)
        assert (int(units[i]), bool(gsm[i])) == (int(one_units[0]), bool(one_gsm[0]))
    assert (
        render_rows(templates[:1], None, values, len(numbers)).to_pylist()
        == templates[0].render(values, len(numbers)).to_pylist()
    )
    assert (
        render_rows(templates, np.array([], np.int64), {k: v.slice(0, 0) for k, v in values.items()}, 0).to_pylist()
        == []
    )
