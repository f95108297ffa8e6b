"""The words a company name is built from, besides its region and its trade name (字号).

A registered name is region + trade name + industry words + organisation form (企业名称登记管理规定), and a
branch adds its place and kind after the whole. No package lists these words as names use them, so they are
listed here: the organisation forms of company and partnership law with their equivalent spellings, the
kinds of branch, and the industry words common in names (the 国民经济行业分类 terms as names shorten them).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BRACKET_FORMS", "BRANCH_KINDS", "FORMS", "GROUP", "INDUSTRY_WORDS"]

FORMS: Final[dict[str, str]] = {
    # company law: 有限责任公司 may be written 有限公司, 股份有限公司 may be written 股份公司 (公司法 art. 7)
    "有限责任公司": "有限公司",
    "有限公司": "有限公司",
    "股份有限公司": "股份有限公司",
    "股份公司": "股份有限公司",
    "股份合作公司": "股份合作公司",
    "总公司": "总公司",
    "公司": "公司",
    # partnership and sole-proprietorship law
    "特殊普通合伙企业": "特殊普通合伙",
    "普通合伙企业": "普通合伙",
    "有限合伙企业": "有限合伙",
    "合伙企业": "合伙企业",
    "个人独资企业": "个人独资企业",
    "专业合作社": "合作社",
    "合作社": "合作社",
    "事务所": "事务所",
    "研究院": "研究院",
    "研究所": "研究所",
    "企业": "企业",
    "厂": "厂",
}
"""Organisation form as written -> its canonical form; two forms are the same when their canonical forms are."""

BRACKET_FORMS: Final[dict[str, str]] = {
    "特殊普通合伙": "特殊普通合伙",
    "普通合伙": "普通合伙",
    "有限合伙": "有限合伙",
    "个人独资": "个人独资企业",
    "有限公司": "有限公司",
    "全民所有制": "全民所有制",
    "集体所有制": "集体所有制",
    "股份合作": "股份合作公司",
}
"""A form written in brackets after the name (`某某律师事务所（特殊普通合伙）`)."""

GROUP: Final[str] = "集团"

BRANCH_KINDS: Final[tuple[str, ...]] = (
    "分公司", "分行", "支行", "营业部", "分理处", "营业所", "分店", "分厂", "办事处", "分部", "分所", "分中心",
    "分院", "分社", "代表处", "分支机构",
)  # fmt: skip
"""The last word of a branch's name (`某某有限公司北京分公司`, `某某银行上海分行`)."""


def _words(text: str) -> frozenset[str]:
    """A list written as text, words apart by white space: easier to read and keep than a literal of strings."""
    return frozenset(text.split())


INDUSTRY_WORDS: Final[frozenset[str]] = _words(
    """
    科技 技术 信息 信息技术 信息科技 网络 网络科技 软件 数据 大数据 云计算 智能 人工智能 互联网 电子 电器 电气
    通信 通讯 数码 光电 半导体 微电子 集成电路 仪器 仪表 精密 光学 贸易 商贸 国际贸易 进出口 外贸 经贸 实业
    投资 控股 资本 资产 资产管理 管理 咨询 顾问 服务 商务 企业管理 发展 建设 建设工程 建筑 建筑工程 工程
    建材 装饰 装饰工程 设计 规划 市政 路桥 交通 运输 物流 供应链 供应链管理 仓储 快递 航运 航空 海运 港口 港务
    置业 地产 房地产 房地产开发 开发 物业 物业管理 物业服务 医药 药业 制药 生物 生物技术 生物科技 生物医药 医疗
    医疗器械 器械 健康 卫生 化工 化学 石化 石油 天然气 燃气 能源 新能源 电力 电源 热力 水务 供水 环保 环境
    环境工程 新材料 材料 钢铁 钢结构 金属 有色 矿业 煤业 煤炭 机械 设备 机电 自动化 制造 重工 汽车 汽车销售
    汽车服务 汽配 汽车零部件 零部件 配件 食品 饮料 酒业 茶业 乳业 农业 农业发展 农业科技 农牧 畜牧 养殖 林业
    渔业 种业 粮油 餐饮 餐饮管理 酒店 酒店管理 旅游 旅行社 文化 传媒 文化传媒 文化传播 传播 广告 影视 教育
    教育科技 培训 体育 娱乐 出版 印刷 包装 纺织 服装 服饰 鞋业 家具 家居 日用品 电商 电子商务 百货 超市 零售
    批发 连锁 金融 金融服务 银行 保险 证券 基金 基金管理 信托 期货 租赁 融资租赁 担保 典当 小额贷款 人力资源
    劳务 劳务派遣 安保 保安 清洁 家政 检测 认证 测绘 勘察 勘测 勘察设计 研究 研发 技术服务 工业 产业 国际 城投
    城建 水利 水电 电网 核电 风电 光伏 储能 船舶 航天 铁路 轨道交通 公路 隧道 港航 造纸 塑料 橡胶 玻璃 陶瓷 水泥
    木业 石材 照明 电缆 线缆 电池 电机 模具 五金 钢材 铝业 铜业 冶金 矿产 新能源科技 节能 节能科技 环保科技
    """
)
"""Industry words as names write them; a name's industry part is the longest run of these ending its core."""
