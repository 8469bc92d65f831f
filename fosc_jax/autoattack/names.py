"""AutoAttack's attack names, labels and accepted spellings (nothing of the package
imported: the evaluation suite lists them in its errors and --help without the runner)."""
from __future__ import annotations

from typing import Optional

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
STANDARD_ORDER = ("apgd-ce", "apgd-t", "fab-t", "square")
NAMES = COMPONENTS + ("autoattack",)
LABELS = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
          "square": "Square", "autoattack": "AutoAttack"}
_ALIASES = {"autoattack": "autoattack", "aa": "autoattack", "apgdce": "apgd-ce",
            "apgd": "apgd-ce", "apgddlr": "apgd-dlr", "apgdt": "apgd-t", "fabt": "fab-t",
            "square": "square"}


def canonical_name(name: str) -> Optional[str]:
    """"APGD-T", "apgd_t", "AA", ... -> the attack's name, or None if not an AutoAttack one."""
    return _ALIASES.get(str(name).strip().lower().replace("-", "").replace("_", ""))
