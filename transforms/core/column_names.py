"""The column names a reader takes as a contract's columns: the contract's own, and the names operator exports give
them (``schemas/column_aliases.yaml``, docs/contract.md "Column names"): CSV, Parquet and Avro headers
(``pipelines/io/planning.py``) and the keys of JSON Lines objects (``transforms/core/rows.py``: registration files,
Pub/Sub message bodies).

    column_key(" MSISDN\ufeff")                       -> "msisdn"
    aliases(BASE)["手机号码"]                          -> "msisdn"
    contract_key("手机号码", BASE)                     -> "msisdn"  (a name outside the contract: its own key)

Names are compared trimmed, without a byte-order mark, ignoring case and full-width forms (NFKC), so
``ＭＳＩＳＤＮ`` and ``MSISDN`` are the contract's ``msisdn``. The table is read once per process.
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["column_key", "aliases", "contract_key"]


def column_key(name: str) -> str:
    """A column name as it is compared."""
    return unicodedata.normalize("NFKC", name.replace("\ufeff", "")).strip().lower()


@functools.lru_cache(maxsize=None)
def _table() -> dict[str, dict[str, str]]:
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("schemas").joinpath("column_aliases.yaml").read_text(encoding="utf-8"))
    table: dict[str, dict[str, str]] = {}
    for contract, columns in raw.items():
        found = table.setdefault(contract, {})
        for column, names in columns.items():
            for name in names:
                key = column_key(str(name))
                if found.setdefault(key, column) != column:
                    raise ValueError(f"column_aliases.yaml: {key!r} names two columns of the {contract}")
    return table


def aliases(contract) -> dict[str, str]:
    """Alias key -> the contract's column, for ``contract`` (a ``transforms.core.rows.Contract``)."""
    return _table().get(contract.name, {})


def contract_key(name: str, contract) -> str:
    """The contract column ``name`` stands for, or its own key when it stands for none."""
    key = column_key(name)
    return key if key in contract.columns else aliases(contract).get(key, key)
