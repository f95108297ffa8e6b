"""A seeded universe of fictitious Chinese companies: what the simulated EQC knows about.

Names are built from parts (region, trade name, industry, enterprise type) so that every full name, stem
and former name is unique: a lookup by any of them is unambiguous, which lets the data generator know the
right answer for every row. As registration requires (企业名称登记管理规定), no two companies of one
jurisdiction share a trade name within one industry: `北京华润科技` and `北京市华润科技` are one name.

Beside the companies, for the local matcher's proving ground (`make-data --variants realistic`):

- variant spellings of every third company that EQC's fuzzy search resolves to it (`Universe.variants`):
  another spelling of its organisation form, its region moved into brackets (or out of them), traditional
  characters, `集团` dropped, one wrong character;
- look-alikes that are other companies (`Universe.lookalikes`): a branch of every 25th company and a twin
  whose trade name differs by one character; namesakes of the same trade name in another industry or
  region come from the universe itself (`Universe.namesakes`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple, TypeVar

import opencc

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
    """All companies of one seed with the indexes a search needs.

    `companies` are the ones a month's customers are drawn from; `lookalikes` (company id -> kind -> the
    look-alike's id) are companies too, known to the search but never drawn as customers of their own;
    `variants` (company id -> kind -> spelling) are spellings the search resolves (a fuzzy match).
    """

    def __init__(self, companies: list[Company]) -> None:
        self.companies = companies
        self.by_id: dict[str, Company] = {}
        self._exact: dict[str, Company] = {}
        self._fuzzy: dict[str, Company] = {}
        self._by_trade: dict[str, list[Company]] = {}
        self.lookalikes: dict[str, dict[str, str]] = {}
        self.variants: dict[str, dict[str, str]] = {}
        for company in companies:
            self._add(company)

    def _add(self, company: Company) -> None:
        self.by_id[company.company_id] = company
        self._exact[company.name] = company
        self._fuzzy[company.stem] = company
        for former in company.former_names:
            self._fuzzy[former] = company
        self._by_trade.setdefault(company.trade_name, []).append(company)

    def add_lookalike(self, of: Company, kind: str, company: Company) -> None:
        self._add(company)
        self.lookalikes.setdefault(of.company_id, {})[kind] = company.company_id

    def add_variant(self, of: Company, kind: str, spelling: str) -> bool:
        """Make the search resolve `spelling` to `of` (False when the spelling is taken already)."""
        key = canonical_key(spelling)
        if key in self._exact or key in self._fuzzy:
            return False
        self._fuzzy[key] = of
        self.variants.setdefault(of.company_id, {})[kind] = spelling
        return True

    def namesakes(self, company: Company) -> list[Company]:
        """Other companies of the same trade name (any industry or region), in the universe's order."""
        return [c for c in self._by_trade.get(company.trade_name, ()) if c is not company]

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
    jurisdiction: str  # where it is registered: the province or city its name says, "" for none

    @property
    def name(self) -> str:
        return self.stem + self.etype


class _NameMaker:
    """Draws names from the parts; remembers every name and stem handed out so none repeats."""

    def __init__(self, rng: random.Random, taken: Callable[[str], bool] | None = None) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.registered: set[tuple[str, str, str]] = set()  # (jurisdiction, trade name, industry)
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
        registration = (drawn.jurisdiction, drawn.trade, drawn.industry)
        if name in used or stem in used or registration in self.registered or self._taken(name) or self._taken(stem):
            return False
        used.add(name)
        used.add(stem)
        self.registered.add(registration)
        return True

    def _draw(self, industry: str, etype: str, style: str) -> _Drawn:
        rng = self.rng
        pi = int(rng.random() * len(_PROVINCES))
        _full, short, cities = _PROVINCES[pi]
        city = _pick(rng, cities)
        if style == "bracket":
            trade = _pick(rng, self.trades)
            return _Drawn(f"{trade}（{city}）{industry}", etype, trade, pi, city, industry, city)
        if style == "ascii":
            trade = "".join(rng.choices(_LETTERS, k=2 + int(rng.random() * 3)))
            prefix = "" if rng.random() < 0.5 else city
            return _Drawn(f"{prefix}{trade}{industry}", etype, trade, pi, city, industry, prefix)
        if style == "digit":
            trade = f"第{1 + int(rng.random() * 30)}"
            return _Drawn(f"{city}市{trade}{industry}", etype, trade, pi, city, industry, city)
        trade = _pick(rng, self.trades)
        region = _pick(rng, (short, f"{city}市", city) if short != city else (short, f"{city}市"))
        return _Drawn(f"{region}{trade}{industry}", etype, trade, pi, city, industry, region.removesuffix("市"))

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
    universe = Universe([_company(maker, str(cid), codes) for cid in ids])
    # a generator of its own, so the companies above are the same with or without what follows
    extra = random.Random(f"eqc-enrich-universe-extra:{seed}")
    _add_lookalikes(universe, maker, extra, codes, set(ids))
    _add_variants(universe, extra)
    return universe


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


# --- look-alikes and variant spellings (the local matcher's proving ground) ------------------------------------

LOOKALIKE_EVERY = 25
VARIANT_EVERY = 3
_LOOKALIKE_IDS = range(1_000_000_000, 2_000_000_000)  # ids apart from the companies': never drawn twice

# one character a hurried typist writes for another (same sound or shape): facts about characters
_TYPOS = {
    "技": "枝",
    "科": "料",
    "贸": "茂",
    "易": "益",
    "业": "叶",
    "管": "官",
    "理": "里",
    "程": "成",
    "设": "没",
    "建": "健",
    "医": "依",
    "药": "要",
    "物": "务",
    "流": "留",
    "源": "元",
    "能": "农",
    "电": "店",
    "力": "立",
    "食": "实",
    "品": "晶",
    "实": "时",
    "投": "头",
    "资": "姿",
    "置": "至",
    "机": "机",
    "械": "戒",
    "化": "华",
    "工": "功",
    "材": "才",
    "料": "科",
    "环": "还",
    "保": "宝",
    "文": "闻",
    "传": "专",
    "媒": "煤",
    "汽": "气",
    "车": "东",
    "销": "消",
    "售": "兽",
    "农": "浓",
    "发": "法",
    "展": "占",
    "餐": "参",
    "饮": "钦",
    "咨": "资",
    "询": "洵",
    "酒": "洒",
    "店": "点",
    "信": "言",
    "息": "思",
    "术": "木",
    "子": "仔",
    "生": "声",
    "供": "共",
    "应": "映",
    "链": "连",
    "华": "化",
    "润": "闰",
    "达": "大",
    "泰": "太",
    "恒": "衡",
    "通": "同",
    "宏": "弘",
    "远": "园",
    "安": "按",
    "康": "糠",
    "和": "禾",
    "嘉": "加",
    "瑞": "睿",
    "祥": "详",
    "丰": "风",
    "利": "莉",
    "隆": "龙",
    "兴": "星",
    "昌": "唱",
    "德": "得",
    "海": "每",
    "天": "夫",
    "新": "欣",
    "金": "全",
    "中": "忠",
    "东": "冬",
    "方": "芳",
    "光": "广",
    "明": "名",
    "星": "兴",
    "云": "芸",
    "峰": "锋",
    "宇": "雨",
    "博": "搏",
    "汇": "惠",
    "聚": "巨",
    "融": "容",
    "创": "仓",
    "智": "志",
    "诚": "城",
    "正": "证",
    "永": "泳",
    "富": "福",
    "元": "园",
    "鼎": "顶",
    "凯": "恺",
    "旭": "旬",
    "辉": "晖",
    "腾": "藤",
    "飞": "非",
    "龙": "笼",
    "鹏": "朋",
}
_S2T = opencc.OpenCC("s2t")
_T2S = opencc.OpenCC("t2s")


def _lookalike(of: Company, *, company_id: str, name: str, trade: str, unite_code: str) -> Company:
    return replace(of, company_id=company_id, name=name, stem=name, trade_name=trade, former_names=(),
                   unite_code=unite_code)  # fmt: skip


def _add_lookalikes(
    universe: Universe, maker: _NameMaker, rng: random.Random, codes: set[str], used_ids: set[int]
) -> None:
    """A branch (`某某有限公司深圳分公司`) and a one-character twin of every 25th company: other companies."""
    for index in range(0, len(universe.companies), LOOKALIKE_EVERY):
        company = universe.companies[index]
        province_index = int(rng.random() * len(_PROVINCES))
        city = _pick(rng, _PROVINCES[province_index][2])
        branch = f"{company.name}{city}分公司"
        if not universe.knows(branch):
            universe.add_lookalike(company, "branch", _lookalike(
                company, company_id=_fresh_id(rng, used_ids), name=branch, trade=company.trade_name,
                unite_code=_unite_code(rng, province_index, codes),
            ))  # fmt: skip
        twin = _twin(universe, maker, rng, company)
        if twin is not None:
            name, trade = twin
            universe.add_lookalike(company, "one_char", _lookalike(
                company, company_id=_fresh_id(rng, used_ids), name=name, trade=trade,
                unite_code=_unite_code(rng, province_index, codes),
            ))  # fmt: skip


def _fresh_id(rng: random.Random, used: set[int]) -> str:
    while True:
        candidate = int(rng.random() * len(_LOOKALIKE_IDS)) + _LOOKALIKE_IDS.start
        if candidate not in used:
            used.add(candidate)
            return str(candidate)


def _twin(universe: Universe, maker: _NameMaker, rng: random.Random, company: Company) -> tuple[str, str] | None:
    """The name with one character of its trade name changed (not to a typo of it): another company's name."""
    trade = company.trade_name
    if not trade or not all("\u4e00" <= char <= "\u9fff" for char in trade):
        return None
    for _ in range(20):
        at = int(rng.random() * len(trade))
        char = _pick(rng, _TRADE_CHARS)
        if char == trade[at] or _TYPOS.get(trade[at]) == char:
            continue
        other = trade[:at] + char + trade[at + 1 :]
        name = company.name.replace(trade, other, 1)
        if name != company.name and not universe.knows(name) and name not in maker.used:
            maker.used.add(name)
            return name, other
    return None


_FORM_SWAPS = (("有限责任公司", "有限公司"), ("股份有限公司", "股份公司"), ("有限公司", "有限责任公司"))


def _variant_spellings(company: Company, rng: random.Random) -> dict[str, str]:
    """The spellings of one company a sheet may carry that EQC still resolves to it."""
    name, spellings = company.name, {}
    for written, other in _FORM_SWAPS:
        if name.endswith(written) and not name.endswith("股份" + written if written == "有限公司" else "\0"):
            spellings["org_form"] = name[: -len(written)] + other
            break
    moved = _moved_region(company)
    if moved is not None:
        spellings["region_bracket"] = moved
    traditional = _S2T.convert(name)
    if traditional != name and _T2S.convert(traditional) == name:  # only a spelling that reads back the same
        spellings["traditional"] = traditional
    if name.endswith("集团有限公司"):
        spellings["dropped_group"] = name.replace("集团有限公司", "有限公司")
    typo = _typo(company, rng)
    if typo is not None:
        spellings["typo"] = typo
    return spellings


def _moved_region(company: Company) -> str | None:
    """`北京华润科技有限公司` <-> `华润（北京）科技有限公司`: the region before the trade name or after it."""
    name, trade = company.name, company.trade_name
    bracket = f"{trade}（{company.city}）"
    if name.startswith(bracket):
        return company.city + trade + name[len(bracket) :]
    at = name.find(trade)
    if at <= 0:
        return None
    region = name[:at].removesuffix("市")
    if region not in (company.city, company.province.removesuffix("省")):
        return None
    return f"{trade}（{region}）{name[at + len(trade) :]}"


def _typo(company: Company, rng: random.Random) -> str | None:
    """One character of the trade name or the industry words written as a character that sounds alike."""
    name, trade = company.name, company.trade_name
    at = name.find(trade)
    if at < 0:
        return None
    start = at + len(trade)
    industry = range(start, start + len(company.industry))
    places = [i for i in industry if name[i] in _TYPOS]
    if rng.random() < 0.3:  # now and then in the trade name, which no local match may accept
        places = [i for i in range(at, start) if name[i] in _TYPOS] or places
    if not places:
        return None
    i = _pick(rng, places)
    return name[:i] + _TYPOS[name[i]] + name[i + 1 :]


def _add_variants(universe: Universe, rng: random.Random) -> None:
    for index in range(0, len(universe.companies), VARIANT_EVERY):
        company = universe.companies[index]
        for kind, spelling in _variant_spellings(company, rng).items():
            universe.add_variant(company, kind, spelling)
