"""Words the synthetic names, firm names and addresses are built from (``dev.generate_data`` re-exports them).

Han surnames and given-name characters, names with the middle dot, Latin
names, organisation name parts and address parts. Plain data; no identity of
any real person is in here.
"""

from __future__ import annotations

# Most common Han surnames, most frequent first (weights fall with rank).
SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
) + ["欧阳", "司马", "诸葛", "上官"]
GIVEN_CHARS = list(
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂华建国文辉玲红鹏飞宇浩婷雪梅琳晨欣怡子轩涵然博睿思佳俊凯"
    "鑫宁丹波斌林海峰亮春云志新兰凤玉萍燕莉颖慧琪瑞嘉晓雨泽一诗梓宏德成晶倩帆阳旭东坤健虹荣"
)
# Names with the middle dot U+00B7 (docs/regulation.md §5).
MINORITY_FIRST = [
    "阿卜杜热合曼",
    "买买提",
    "艾力",
    "吐尔逊",
    "古丽娜尔",
    "迪丽努尔",
    "阿依古丽",
    "努尔兰",
    "热依拉",
    "帕提古丽",
    "阿迪力",
    "木合塔尔",
    "依明",
    "阿不都",
    "沙吾提",
    "玛依拉",
    "赛力克",
    "叶尔兰",
    "别克",
    "达吾列提",
    "阿斯哈尔",
    "巴合提亚尔",
]
MINORITY_SECOND = [
    "买买提",
    "艾力",
    "吐尔逊",
    "哈力克",
    "依明",
    "阿不都拉",
    "热合曼",
    "努尔",
    "托合提",
    "司马义",
    "卡德尔",
    "阿吾提",
    "巴拉提",
    "赛买提",
    "沙比提",
    "肉孜",
    "吾买尔",
    "艾合买提",
    "居马",
    "胡安",
]
DOT_LOOKALIKES = ["\u30fb", "\u2022", "."]  # folded to U+00B7 by the scan
LATIN_GIVEN = [
    "JOHN",
    "MICHAEL",
    "DAVID",
    "JAMES",
    "ROBERT",
    "MARIA",
    "ANNA",
    "ELENA",
    "SOPHIE",
    "THOMAS",
    "DANIEL",
    "ALEXANDER",
    "YUKI",
    "HIROSHI",
    "MINJUN",
    "SEOYEON",
    "PIERRE",
    "HANS",
    "IVAN",
    "OLGA",
]
LATIN_FAMILY = [
    "SMITH",
    "JOHNSON",
    "BROWN",
    "MILLER",
    "WILSON",
    "TANAKA",
    "SATO",
    "KIM",
    "LEE",
    "PARK",
    "MUELLER",
    "SCHMIDT",
    "DUBOIS",
    "MARTIN",
    "IVANOV",
    "PETROVA",
    "GARCIA",
    "ROSSI",
    "NGUYEN",
    "KHAN",
]

# Organisation names: city + trade name + industry + legal form. No 某某 here.
TRADE_NAMES = [
    "华信",
    "恒达",
    "宏远",
    "鑫源",
    "金盛",
    "永泰",
    "瑞丰",
    "德润",
    "博远",
    "天宇",
    "中联",
    "海纳",
    "汇通",
    "正泰",
    "新元",
    "东方",
    "盛世",
    "嘉禾",
    "明辉",
    "云帆",
    "卓越",
    "长城",
    "富华",
    "兴业",
    "安信",
    "锦程",
    "泰和",
    "佳诚",
    "华腾",
    "启明",
]
INDUSTRIES = [
    "科技",
    "信息技术",
    "贸易",
    "商贸",
    "建筑工程",
    "物流",
    "餐饮管理",
    "文化传媒",
    "电子",
    "机械设备",
    "房地产开发",
    "医药",
    "网络科技",
    "环保科技",
    "服装",
    "食品",
]
LEGAL_FORMS = ["有限公司", "有限公司", "有限公司", "有限责任公司", "股份有限公司"]
INSTITUTIONS = [
    "第一人民医院",
    "第二人民医院",
    "中医医院",
    "妇幼保健院",
    "疾病预防控制中心",
    "实验中学",
    "第三中学",
    "实验小学",
    "图书馆",
    "广播电视台",
    "职业技术学院",
    "档案馆",
]
SOCIAL_GROUPS = [
    "慈善总会",
    "个体劳动者协会",
    "青年企业家协会",
    "作家协会",
    "书法家协会",
    "老年体育协会",
    "建筑业协会",
    "律师协会",
    "物流与采购联合会",
    "摄影家协会",
]

# Address parts (docs/regulation.md §5: >= 6 characters with an admin keyword).
ROADS = [
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平路",
    "长江路",
    "新华路",
    "胜利路",
    "文化路",
    "光明街",
    "幸福路",
    "朝阳路",
    "青年路",
    "东风路",
    "黄河路",
    "滨江路",
    "迎宾大道",
    "科技园路",
    "工业大道",
    "学府路",
    "北京路",
    "南京路",
    "延安路",
    "花园街",
    "育才路",
    "团结路",
    "复兴路",
    "五一路",
    "槐树巷",
    "杨柳胡同",
]
TOWNS = ["新华镇", "城关镇", "东升镇", "永安镇", "清水镇", "红星乡", "太平乡", "白沙镇"]
VILLAGES = ["王家村", "李庄村", "新村", "前进村", "河东村", "张湾村", "石桥村", "柳树村"]
