"""Art. 23 wording: a notice says it is free and asks for no money.

Beam-free. Decree 25 (Art. 23) lets an operator remind its users to register,
without adding to their burden: a notice may not ask for a fee, a payment, a
transfer or a tariff change. A text passes when

1. it holds a statement that the notice is free (:data:`FREE_PATTERNS`): 免费,
   免收 (免收资费, 免收工本费), 不收取任何费用, 不收费, 无需付费, 无需支付任何费用,
   无任何费用, "free of charge", "no fee", "at no cost", "you will not be
   charged" ...; and
2. once every such statement (and a few neutral words holding 费, such as
   消费者) is taken out, nothing is left that asks for money
   (:data:`FEE_PATTERNS`): fee and tariff words (收费, 费用, 资费, 话费, 套餐 ...), a
   request to pay (请缴纳, 需支付, 收取, 付款, 充值), a transfer (转账, 汇款, 打款), a
   deposit or fine, any other ...费 (工本费, 手续费), or an amount of money (10元,
   ￥10, 人民币, yuan).

The free statements are written so that a negated payment by the user ("若不缴费",
"if you don't pay") is not one of them: only a charge that is not made, or a
payment that is not needed, says the notice is free.

    >>> fee_wording("补登记免收资费，不收取任何费用。") is None
    True
    >>> fee_wording("补登记免费，补卡请缴纳工本费。")
    '缴纳'
    >>> says_free("无需付费")
    True
"""

from __future__ import annotations

import re

__all__ = ["FREE_PATTERNS", "FEE_PATTERNS", "NEUTRAL", "fee_wording", "says_free"]

_HAN = r"[\u4e00-\u9fff]"
_ANY = r"(?:任何|一切|额外|另外|相关|其他)?"
_NEED = r"(?:无需|无须|毋需|毋须|不需要|不需|不用|不必)"
_CHARGE_NOT_MADE = r"不(?:收取|另收|另外收取|会收取|会产生|产生|收|扣|会扣)"

FREE_PATTERNS = (
    r"免费",
    rf"免(?:收|除|缴|交){_ANY}(?:{_HAN}{{0,3}}?费用?)?",  # 免收, 免收资费, 免收工本费, 免除一切费用
    rf"{_CHARGE_NOT_MADE}{_ANY}{_HAN}{{0,3}}?费用?",  # 不收取任何费用, 不收费, 不产生费用, 不收取您任何费用
    rf"{_NEED}(?:再|额外|另外)?(?:付费|缴费|交费|付款|花钱|支付)(?:{_ANY}{_HAN}{{0,3}}?费用?)?",  # 无需付费, 无需支付
    rf"{_NEED}(?:再|额外|另外)?(?:缴纳|交纳|花费|付|缴|交|花){_ANY}{_HAN}{{0,3}}?费用?",  # 无需缴纳任何费用, 不用交费
    rf"{_NEED}(?:任何|一切|额外)?费用",  # 无需任何费用
    r"(?:无|没有)(?:任何|一切|额外)费用",  # 无任何费用
    r"零费用|分文不取|不花一分钱",
    r"\bfree(?:\s+of\s+(?:any\s+)?charges?)?\b",
    r"\b(?:fee|charge|cost)-free\b",
    r"\bno\s+(?:extra\s+|additional\s+|hidden\s+)?(?:charges?|fees?|costs?|payments?)\b",
    r"\bwithout\s+(?:any\s+)?(?:extra\s+)?(?:charges?|fees?|costs?|payments?)\b",
    r"\bat\s+no\s+(?:extra\s+|additional\s+)?(?:cost|charge)\b",
    r"\b(?:costs?|charges?)\s+nothing\b",
    r"\b(?:will|does|do|would)\s+not\s+(?:cost|charge)\b",
    r"\b(?:won't|doesn't|don't)\s+(?:cost|charge)\b",
    r"\b(?:will\s+not|won't)\s+be\s+charged\b",
    r"\b(?:no\s+need|do\s+not\s+need|don't\s+need|do\s+not\s+have|don't\s+have|need\s+not)\s+(?:to\s+)?pay\b",
    r"\bnothing\s+to\s+pay\b",
)
# Words that hold 费 and ask for nothing: taken out before the fee words are looked for.
NEUTRAL = ("消费者",)
FEE_PATTERNS = (
    # Chinese: fees and tariffs, requests to pay, transfers, deposits and fines, amounts of money
    r"收费|费用|付费|扣费|资费|缴费|交费|话费|充值|套餐|包月|月租|元/月|元每月",
    r"收取|缴纳|交纳|支付|付款|打款|扣款|转账|汇款|押金|保证金|罚款|滞纳金|违约金",
    rf"{_HAN}{{0,2}}费",  # any other ...费: 工本费, 手续费, 服务费
    r"\d+(?:\.\d+)?\s*(?:元|块|角|圆)|[一二两三四五六七八九十百千万]+\s*(?:元|块钱)|[¥￥]|人民币",
    # English, as whole words
    r"\bfees?\b",
    r"\bcharg(?:e|es|ed|ing)\b",
    r"\btariffs?\b",
    r"\bpa(?:y|ys|id|ying|yment|yments)\b",
    r"\bcosts?\b",
    r"\btop[- ]?up\b",
    r"\b(?:price|subscription)\s+plans?\b",
    r"/\s*month\b",
    r"\bdeposits?\b",
    r"\b(?:wire|bank|money)\s+transfers?\b|\btransfer\s+(?:money|funds)\b|\bremit\w*",
    r"\b(?:yuan|rmb|cny)\b|\$\s*\d",
)
_FREE = re.compile("|".join(FREE_PATTERNS), re.IGNORECASE)
_NEUTRAL = re.compile("|".join(map(re.escape, NEUTRAL)))
_FEE = re.compile("|".join(FEE_PATTERNS), re.IGNORECASE)


def says_free(text: str) -> bool:
    """Whether ``text`` states that the notice (or the registration) is free."""
    return _FREE.search(text) is not None


def fee_wording(text: str) -> str | None:
    """The first words of ``text`` that ask for money or a tariff change, once its free statements are out."""
    rest = _NEUTRAL.sub(" ", _FREE.sub(" ", text))
    found = _FEE.search(rest)
    return found.group(0) if found else None
