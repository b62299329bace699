"""Document labels and junk values of operator exports (``dev.generate_data`` re-exports them).

Nationalities and military prefixes for document numbers, the document
labels operator exports use (docs/regulation.md §1.3), the labels the policy
does not accept, and the junk values of §6. Plain data.
"""

from __future__ import annotations

# (ISO 3166 alpha-3, numeric) for foreign documents.
NATIONALITIES = [
    ("USA", "840"),
    ("GBR", "826"),
    ("JPN", "392"),
    ("KOR", "410"),
    ("DEU", "276"),
    ("FRA", "250"),
    ("RUS", "643"),
    ("AUS", "036"),
    ("CAN", "124"),
    ("SGP", "702"),
    ("IND", "356"),
    ("PAK", "586"),
]
MILITARY_PREFIXES = list("南北沈兰济广成京")

# Document labels of operator exports (docs/regulation.md §1.3; the Chinese
# document names where section 1.3 has none). Index 0 is the canonical code.
DOC_LABELS: dict[str, list[str]] = {
    "RESIDENT_ID": [
        "RESIDENT_ID",
        "01",
        "0",
        "1",
        "2",
        "101",
        "身份证",
        "身份证",
        "身份证",
        "居民身份证(18位)",
        "IDCARD",
        "IdCard",
        "0-本地身份证",
        "1-外地身份证",
    ],
    "HOUSEHOLD_REGISTER": ["HOUSEHOLD_REGISTER", "户口簿", "户口薄", "户口本", "04", "HUKOUBU"],
    "TEMP_RESIDENT_ID": ["TEMP_RESIDENT_ID", "临时身份证", "41", "TempId"],
    "MILITARY_ID": ["MILITARY_ID", "军官证", "士兵证", "士官证", "02", "103", "PLA", "SoldierID"],
    "ARMED_POLICE_ID": ["ARMED_POLICE_ID", "警官证", "09", "104", "PolicePaper"],
    "HK_MACAO_TRAVEL_PERMIT": ["HK_MACAO_TRAVEL_PERMIT", "港澳证", "17", "107"],
    "TAIWAN_TRAVEL_PERMIT": ["TAIWAN_TRAVEL_PERMIT", "台胞证", "42", "108"],
    "HMT_RESIDENCE_PERMIT": ["HMT_RESIDENCE_PERMIT", "港澳台居民居住证"],
    "FOREIGN_PASSPORT": ["FOREIGN_PASSPORT", "护照", "护照", "03", "105", "PASSPORT", "A-护照"],
    "FOREIGN_PERMANENT_RESIDENT_ID": ["FOREIGN_PERMANENT_RESIDENT_ID", "外国人永久居留身份证"],
    "USCC": ["USCC", "统一社会信用代码"],
    "BUSINESS_LICENSE": ["BUSINESS_LICENSE", "营业执照", "营业执照", "06", "201", "BusinessLicence"],
    "ORG_CODE": ["ORG_CODE", "组织机构代码证", "组织机构代码证", "14", "205"],
    "PUBLIC_INSTITUTION_CERT": ["PUBLIC_INSTITUTION_CERT", "事业单位法人证书"],
    "SOCIAL_GROUP_CERT": ["SOCIAL_GROUP_CERT", "社会团体法人登记证书"],
}
FIRST_GENERATION_LABEL = "身份证15位"
NOT_ACCEPTED_PERSON = [
    "驾驶证",
    "学生证",
    "社保卡",
    "工作证",
    "暂住证",
    "残疾证",
    "测试证",
    "虚拟证件",
    "预开户编号",
    "实名制待核实",
    "其他",
    "其它",
    "99",
    "199",
]
NOT_ACCEPTED_ORG = ["集团编号", "客户标识码", "物联产品", "小微企业虚拟证件", "测试号码证件类型", "部队番号证件"]
UNKNOWN_LABELS = ["身份卡", "88", "身分证", "居住证明", "OTHER_ID", "证件"]

# Junk values (docs/regulation.md §6; docs/policy.md "Names").
PLACEHOLDER_PERSON_NAMES = [
    "未知",
    "测试",
    "某某代办",
    "某代办",
    "本人",
    "机主本人",
    "临时账户",
    "批量受理",
    "批开卡",
    "无",
    "test",
    "NULL",
    "某某",
    ".",
    "-",
]
PLACEHOLDER_ORG_NAMES = ["测试", "过户", "其他", "测试卡", "未知", ".", "-", "NULL"]
BAD_ADDRESSES = ["哈哈", "不详", "北京", "无", "未知", "同上", "详见身份证地址", "本地", "暂无", "上海"]
BAD_BIRTH_DATES = [
    (1900, 2, 29),
    (2023, 2, 29),
    (1990, 13, 1),
    (1990, 1, 0),
    (1985, 6, 31),
    (2031, 1, 1),
    (2027, 6, 15),
    (1870, 1, 1),
]

# Enum junk (dead letters BAD_ENUM / BAD_DATE).
BAD_LINE_TYPES = ["PREPAID", "VOIP", "IOT"]
BAD_KINDS = ["PERSONAL_VIP", "GROUP_X"]
BAD_STATUSES = ["PREPAID", "NORMAL_1", "PENDING"]
BAD_DATES = ["2019-13-40", "2021-02-30", "0000-00-00", "2018-07-32", "20190231"]
