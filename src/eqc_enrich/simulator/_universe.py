"""A seeded universe of fictitious Chinese companies: what the simulated EQC knows about.

Names are built from parts (region, trade name, industry, enterprise type) so that every full name, stem
and former name is unique: a lookup by any of them is unambiguous, which lets the data generator know the
right answer for every row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, TypeVar

EXACT = "全称精确匹配"
FUZZY = "模糊匹配"

# (full province name, short form, cities); municipalities name themselves as their only city.
_PROVINCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("北京市", "北京", ("北京",)),
    ("上海市", "上海", ("上海",)),
    ("天津市", "天津", ("天津",)),
    ("重庆市", "重庆", ("重庆",)),
    ("广东省", "广东", ("广州", "深圳", "珠海", "佛山", "东莞", "中山", "惠州", "汕头")),
    ("江苏省", "江苏", ("南京", "苏州", "无锡", "常州", "南通", "徐州", "扬州")),
    ("浙江省", "浙江", ("杭州", "宁波", "温州", "绍兴", "嘉兴", "金华", "台州")),
    ("山东省", "山东", ("济南", "青岛", "烟台", "潍坊", "淄博")),
    ("河南省", "河南", ("郑州", "洛阳", "新乡")),
    ("河北省", "河北", ("石家庄", "唐山", "保定")),
    ("湖北省", "湖北", ("武汉", "宜昌", "襄阳")),
    ("湖南省", "湖南", ("长沙", "株洲", "岳阳")),
    ("四川省", "四川", ("成都", "绵阳", "宜宾")),
    ("福建省", "福建", ("福州", "厦门", "泉州")),
    ("安徽省", "安徽", ("合肥", "芜湖", "蚌埠")),
    ("陕西省", "陕西", ("西安", "宝鸡")),
    ("辽宁省", "辽宁", ("沈阳", "大连", "鞍山")),
    ("吉林省", "吉林", ("长春",)),
    ("黑龙江省", "黑龙江", ("哈尔滨", "大庆")),
    ("江西省", "江西", ("南昌", "九江")),
    ("云南省", "云南", ("昆明", "曲靖")),
    ("贵州省", "贵州", ("贵阳", "遵义")),
    ("广西壮族自治区", "广西", ("南宁", "柳州", "桂林")),
    ("山西省", "山西", ("太原", "大同")),
    ("内蒙古自治区", "内蒙古", ("呼和浩特", "包头")),
    ("新疆维吾尔自治区", "新疆", ("乌鲁木齐",)),
    ("甘肃省", "甘肃", ("兰州",)),
    ("海南省", "海南", ("海口", "三亚")),
    ("宁夏回族自治区", "宁夏", ("银川",)),
    ("青海省", "青海", ("西宁",)),
)

# industry word in the name -> (lv1Name, lv2Name) of the 行业分类 label
INDUSTRIES: dict[str, tuple[str, str]] = {
    "科技": ("信息传输、软件和信息技术服务业", "软件和信息技术服务业"),
    "信息技术": ("信息传输、软件和信息技术服务业", "软件和信息技术服务业"),
    "电子": ("制造业", "计算机、通信和其他电子设备制造业"),
    "贸易": ("批发和零售业", "批发业"),
    "建设工程": ("建筑业", "土木工程建筑业"),
    "建设": ("建筑业", "房屋建筑业"),
    "医药": ("制造业", "医药制造业"),
    "生物技术": ("科学研究和技术服务业", "研究和试验发展"),
    "物流": ("交通运输、仓储和邮政业", "装卸搬运和运输代理业"),
    "供应链管理": ("租赁和商务服务业", "商务服务业"),
    "能源": ("电力、热力、燃气及水生产和供应业", "电力、热力生产和供应业"),
    "电力": ("电力、热力、燃气及水生产和供应业", "电力、热力生产和供应业"),
    "食品": ("制造业", "食品制造业"),
    "实业": ("批发和零售业", "零售业"),
    "投资": ("租赁和商务服务业", "商务服务业"),
    "置业": ("房地产业", "房地产业"),
    "机械": ("制造业", "通用设备制造业"),
    "化工": ("制造业", "化学原料和化学制品制造业"),
    "新材料": ("制造业", "非金属矿物制品业"),
    "环保": ("水利、环境和公共设施管理业", "生态保护和环境治理业"),
    "文化传媒": ("文化、体育和娱乐业", "广播、电视、电影和录音制作业"),
    "汽车销售": ("批发和零售业", "零售业"),
    "建材": ("批发和零售业", "批发业"),
    "农业发展": ("农、林、牧、渔业", "农业"),
    "物业管理": ("房地产业", "房地产业"),
    "餐饮管理": ("住宿和餐饮业", "餐饮业"),
    "咨询": ("租赁和商务服务业", "商务服务业"),
    "酒店管理": ("住宿和餐饮业", "住宿业"),
}
_INDUSTRY_WORDS = tuple(INDUSTRIES)

ENTERPRISE_TYPES = ("有限公司", "股份有限公司", "集团有限公司", "有限责任公司")
# weighted pools: drawing one item uniformly gives the intended shares
_TYPE_POOL = ("有限公司",) * 11 + ("股份有限公司",) * 4 + ("集团有限公司",) * 2 + ("有限责任公司",) * 3

# Characters that read like a trade name and carry no status-marker meaning.
_TRADE_CHARS = "".join(
    dict.fromkeys(
        "华润盛鑫达泰恒通信宏远安康和嘉瑞祥丰利隆兴昌源德海天新金中东方光明星辰云峰宇博汇聚融创智诚正永富元"
        "鼎晟凯旭辉腾飞龙凤鹏坤乾泓澜浩瀚锦绣宁静雅致胜捷速迅越卓航泽森林江河山川岳松柏"
        "翔宸煜炜烨琪璟瑾璐璋琳珂佳豪杰俊英伟毅恩惠仁义礼孝忠良善美月阳晨曦朗晴霞虹彩蓝青绿紫银铭铂钧"
    )
)
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志新春晓东海波宁琴云飞斌"
_STATUS_POOL = ("存续",) * 43 + ("在业",) * 5 + ("注销", "吊销")
_LETTERS = "ABCDEFGHJKLMNPRSTWXYZ"
_CAPITALS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 10000.0, 30000.0, 80000.0)

# Canonical form of a name: no whitespace, full-width ASCII as half-width, brackets full-width, upper case.
_FULLWIDTH: dict[int, int | str] = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULLWIDTH.update({ord("("): "（", ord(")"): "）", 0xFF08: "（", 0xFF09: "）"})


def canonical_key(text: str) -> str:
    """The simulator's own light canonicalization, so a lookup ignores spacing, width and case."""
    return "".join(text.split()).translate(_FULLWIDTH).upper()


@dataclass(slots=True, eq=False)
class Company:
    """One company as EQC knows it; `name` is canonical (see `canonical_key`). Treat as read-only.

    Not frozen: a frozen dataclass costs a third of the universe's build time.
    """

    company_id: str
    name: str
    stem: str
    trade_name: str
    former_names: tuple[str, ...]
    unite_code: str
    province: str
    city: str
    le_rep: str
    reg_cap: float
    est_date: str
    registered_status: str
    industry: str


class Universe:
    """All companies of one seed with the indexes a search needs."""

    def __init__(self, companies: list[Company]) -> None:
        self.companies = companies
        self.by_id: dict[str, Company] = {}
        self._exact: dict[str, Company] = {}
        self._fuzzy: dict[str, Company] = {}
        self._by_trade: dict[str, list[Company]] = {}
        for company in companies:
            self.by_id[company.company_id] = company
            self._exact[company.name] = company
            self._fuzzy[company.stem] = company
            for former in company.former_names:
                self._fuzzy[former] = company
            self._by_trade.setdefault(company.trade_name, []).append(company)

    def search(self, key: str) -> list[tuple[Company, str]]:
        """Best match first (exact name, else former name or stem), then up to 3 namesakes by trade name."""
        canonical = canonical_key(key)
        best = self._exact.get(canonical)
        kind = EXACT
        if best is None:
            best, kind = self._fuzzy.get(canonical), FUZZY
        if best is None:
            return []
        others = [c for c in self._by_trade[best.trade_name][:4] if c is not best][:3]
        return [(best, kind), *((other, FUZZY) for other in others)]

    def knows(self, name: str) -> bool:
        """Whether the canonical form of `name` is any company's name, stem or former name."""
        key = canonical_key(name)
        return key in self._exact or key in self._fuzzy


_T = TypeVar("_T")


def _pick(rng: random.Random, items: Sequence[_T]) -> _T:
    """`rng.choice` without its per-call overhead (this runs a million times per universe)."""
    return items[int(rng.random() * len(items))]


class _Drawn(NamedTuple):
    stem: str
    etype: str
    trade: str
    province_index: int
    city: str
    industry: str

    @property
    def name(self) -> str:
        return self.stem + self.etype


class _NameMaker:
    """Draws names from the parts; remembers every name and stem handed out so none repeats."""

    def __init__(self, rng: random.Random, taken: Callable[[str], bool] | None = None) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self._taken = taken or (lambda _key: False)
        self.trades = self._trade_pool(4_000)

    def _trade_pool(self, count: int) -> list[str]:
        pool: list[str] = []
        seen: set[str] = set()
        while len(pool) < count:
            trade = "".join(self.rng.choices(_TRADE_CHARS, k=2 if self.rng.random() < 0.7 else 3))
            if trade not in seen:
                seen.add(trade)
                pool.append(trade)
        return pool

    def _claim(self, drawn: _Drawn) -> bool:
        """Take the name and its stem if both are still free."""
        name, stem, used = drawn.name, drawn.stem, self.used
        if name in used or stem in used or self._taken(name) or self._taken(stem):
            return False
        used.add(name)
        used.add(stem)
        return True

    def _draw(self, industry: str, etype: str, style: str) -> _Drawn:
        rng = self.rng
        pi = int(rng.random() * len(_PROVINCES))
        _full, short, cities = _PROVINCES[pi]
        city = _pick(rng, cities)
        if style == "bracket":
            trade = _pick(rng, self.trades)
            return _Drawn(f"{trade}（{city}）{industry}", etype, trade, pi, city, industry)
        if style == "ascii":
            trade = "".join(rng.choices(_LETTERS, k=2 + int(rng.random() * 3)))
            prefix = "" if rng.random() < 0.5 else city
            return _Drawn(f"{prefix}{trade}{industry}", etype, trade, pi, city, industry)
        if style == "digit":
            trade = f"第{1 + int(rng.random() * 30)}"
            return _Drawn(f"{city}市{trade}{industry}", etype, trade, pi, city, industry)
        trade = _pick(rng, self.trades)
        region = _pick(rng, (short, f"{city}市", city) if short != city else (short, f"{city}市"))
        return _Drawn(f"{region}{trade}{industry}", etype, trade, pi, city, industry)

    def fresh(self, industry: str, etype: str, style: str) -> _Drawn:
        """Draw until the candidate and its stem are unused (switching industry on a clash)."""
        for _ in range(1_000):
            drawn = self._draw(industry, etype, style)
            if self._claim(drawn):
                return drawn
            industry = _pick(self.rng, _INDUSTRY_WORDS)
        raise RuntimeError("name space exhausted")  # pragma: no cover - only with absurd sizes


def _style(rng: random.Random) -> str:
    """Mostly plain names; some with a bracketed region, a few with ASCII letters or digits."""
    roll = rng.random()
    if roll < 0.08:
        return "bracket"
    if roll < 0.11:
        return "ascii"
    if roll < 0.125:
        return "digit"
    return "plain"


def _draw_fresh(maker: _NameMaker) -> _Drawn:
    rng = maker.rng
    etype = _pick(rng, _TYPE_POOL)
    return maker.fresh(_pick(rng, _INDUSTRY_WORDS), etype, _style(rng))


def _unite_code(rng: random.Random, province_index: int, used: set[str]) -> str:
    """18 characters: 91, a 6-digit region code, a 10-character body (hex digits are valid code chars)."""
    while True:
        code = f"91{11 + province_index:02d}{int(rng.random() * 10_000):04d}{rng.getrandbits(40):010X}"
        if code not in used:
            used.add(code)
            return code


def _person(rng: random.Random) -> str:
    given = _pick(rng, _GIVEN) + (_pick(rng, _GIVEN) if rng.random() < 0.6 else "")
    return _pick(rng, _SURNAMES) + given


def _former_names(maker: _NameMaker, drawn: _Drawn) -> tuple[str, ...]:
    """About 10% of companies were renamed once or twice; old names keep industry and type."""
    rng = maker.rng
    if rng.random() >= 0.10:
        return ()
    count = 2 if rng.random() < 0.3 else 1
    return tuple(maker.fresh(drawn.industry, drawn.etype, "plain").name for _ in range(count))


def _est_date(rng: random.Random) -> str:
    return f"{1985 + int(rng.random() * 38)}-{1 + int(rng.random() * 12):02d}-{1 + int(rng.random() * 28):02d}"


def _company(maker: _NameMaker, company_id: str, codes: set[str]) -> Company:
    rng = maker.rng
    drawn = _draw_fresh(maker)
    return Company(
        company_id=company_id,
        name=drawn.name,
        stem=drawn.stem,
        trade_name=drawn.trade,
        former_names=_former_names(maker, drawn),
        unite_code=_unite_code(rng, drawn.province_index, codes),
        province=_PROVINCES[drawn.province_index][0],
        city=drawn.city,
        le_rep=_person(rng),
        reg_cap=_pick(rng, _CAPITALS) * _pick(rng, (1.0, 1.0, 1.5, 2.0)),
        est_date=_est_date(rng),
        registered_status=_pick(rng, _STATUS_POOL),
        industry=drawn.industry,
    )


def generate_universe(seed: int, size: int) -> Universe:
    """Build the universe from scratch (uncached)."""
    if size < 1:
        raise ValueError(f"universe size must be positive, got {size}")
    rng = random.Random(seed)
    maker = _NameMaker(rng)
    ids = rng.sample(range(100_000_000, 1_000_000_000), size)
    codes: set[str] = set()
    return Universe([_company(maker, str(cid), codes) for cid in ids])


def build_universe(seed: int, size: int = 60_000) -> Universe:
    """The universe of a seed; cached because the simulator and the data generator both need it (read-only)."""
    return _cached_universe(seed, size)  # positional, so (7) and (7, 60_000) share one cache entry


@lru_cache(maxsize=4)
def _cached_universe(seed: int, size: int) -> Universe:
    return generate_universe(seed, size)


def invent_absent_names(universe: Universe, rng: random.Random, count: int) -> list[str]:
    """Canonical names of fictitious companies that neither the universe nor each other know (stems too)."""
    maker = _NameMaker(rng, taken=universe.knows)
    return [_draw_fresh(maker).name for _ in range(count)]
