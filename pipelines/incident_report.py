"""The incident report (``OUT/incident.json`` and ``OUT/incident.html``), drawn from the job's counts.

Used by ``backfill incident`` (:mod:`pipelines.incident`): the job writes the
report from its summed counts (:func:`write_report_from_counts`, a step of
the pipeline); with ``--shred`` the launcher writes it again once the shred
is done, with what the shred did. Everything in it is a count, a field name,
a key version, a region code, a path or the operator's own text: never a
line_id list, token, mask or value (the lines are in ``OUT/affected_lines/``).
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from pipelines.manifest import write_json
from pipelines.render import pages

__all__ = ["EXPOSURE", "action_block", "build_report", "scope_text", "write_report", "write_report_from_counts"]

EXPOSURE = {
    "join": "tokens (keyed HMAC-SHA256) under join key {v}: whoever holds the key can test guessed values "
    "(document numbers, names, addresses) against them; masks were in the same rows",
    "vault": "data keys wrapped by vault key {v}: whoever holds the key and a copy of the vault tables can "
    "open every sealed value of these lines",
    "lines": "the listed lines' records as held by the operator: the identity fields named below may be "
    "exposed (tokens and masks in the base, sealed originals in the vault)",
}


def scope_text(scope: dict) -> str:
    if scope["kind"] == "key_version":
        return f"{scope['key_purpose']} key version {scope['key_version']}"
    return f"{scope['distinct']:,} line_id(s) listed in {scope['file']}"


def _scope(static: dict, block: dict) -> dict:
    """The static scope with what the job counted of it."""
    scope = dict(static["scope"])
    if scope["kind"] == "lines":
        scope.update(rows=block["listed_rows"], distinct=block["given"], duplicates=block["duplicates"])
        if block.get("unreadable_rows"):
            scope["unreadable_rows"] = block["unreadable_rows"]
    elif "vault_lines_not_in_base" in block:
        scope["vault_lines_not_in_base"] = block["vault_lines_not_in_base"]
    return scope


def action_block(block: dict, *, requested: bool, has_vault: bool, shred: dict | None = None) -> dict:
    """What was done: the shred's result (``shred_lines``'s dict and its log), or why nothing was shredded."""
    shredded = block["shredded"] if shred else 0  # the shred takes every line the job counted as shredded
    shreddable = block["shreddable"] if has_vault else None
    action = {
        "shred_requested": requested,
        "lines_shredded": shredded,
        "lines_not_shreddable": block["affected"] - shreddable if has_vault else None,
        "lines_shreddable_not_shredded": shreddable - shredded if has_vault else None,
        "new_vault_key_version": shred["new_vault_key_version"] if shred else None,
        "retired_vault_key_versions": shred["retired_vault_key_versions"] if shred else [],
        "shred_log": shred["shred_log"] if shred else None,
    }
    action["summary"] = _action_text(action, has_vault)
    return action


def _action_text(action: dict, has_vault: bool) -> str:
    if action["lines_shredded"]:
        return (
            f"{action['lines_shredded']:,} line(s) crypto-shredded: their data keys destroyed, every other data "
            f"key re-wrapped under {action['new_vault_key_version']}, "
            f"{', '.join(action['retired_vault_key_versions'])} retired"
        )
    if action["shred_requested"] and action["lines_shreddable_not_shredded"]:
        return f"shred requested: {action['lines_shreddable_not_shredded']:,} line(s) to shred (not done yet)"
    if action["shred_requested"]:
        return "shred requested: no affected line has a data key in the vault; nothing was shredded"
    if not has_vault:
        return "nothing was shredded (no vault given: shreddability not assessed)"
    return "nothing was shredded (assessment only)"


def build_report(static: dict, block: dict, action: dict) -> dict:
    """The report: ``static`` (what the launcher knew), the job's counts block, the action."""
    scope, by = _scope(static, block), block["by"]
    purpose = scope["key_purpose"] if scope["kind"] == "key_version" else "lines"
    return {
        "step": "incident",
        "incident_id": static["run_id"],
        "run_id": static["run_id"],
        "started": static["started"],
        "as_of": static["as_of"],
        "detected_at": static["detected_at"],
        "description": static["description"],
        "scope": scope,
        "what": {
            "exposure": EXPOSURE[purpose].format(v=scope.get("key_version")),
            "fields": by["field"],
            "vault_fields": by["vault_field"],
            "join_key_versions": by["join_key_version"],
            "vault_key_versions": by["vault_key_version"],
        },
        "how_many": {
            "lines": block["affected"],
            "lines_with_identity": block["lines_with_identity"],
            "subscribers_by_document": block["subscribers_by_document"],
            "lines_without_document": block["affected"] - by["field"].get("doc", 0),
        },
        "by_region": by["region"],
        # counted, never shown: a leaked list may hold anything (a name, a number) where a line_id belongs
        "unknown_line_ids": {"count": block["unknown"]},
        "action": action,
        "affected_lines": static["affected_lines"],
        "keys": static["keys"],
        "inputs": static["inputs"],
    }


def write_report(folder: str, report: dict) -> str:
    """``incident.json`` and ``incident.html`` into ``folder``; returns the page's path."""
    write_json(FileSystems.join(folder, "incident.json"), report)
    page = FileSystems.join(folder, "incident.html")
    with FileSystems.create(page) as handle:
        handle.write(pages.render("incident.html.j2", r=report, scope_text=scope_text(report["scope"])).encode())
    return page


def write_report_from_counts(counts: dict, folder: str, static: dict, summarise) -> list[str]:
    """The job's step: the report from the summed counts (nothing when they do not balance: Finalize fails)."""
    block, problems = summarise(counts or {})
    if problems:
        return []
    action = action_block(block, requested=static["shred"], has_vault=static["inputs"]["vault"] is not None)
    return [write_report(folder, build_report(static, block, action))]
