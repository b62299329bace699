"""What the manifest of ``backfill retention`` says that is known before its last job (which adds the counts:
``Finalize``), and where the purge's shred log is kept. Used by :mod:`pipelines.retention`."""

from __future__ import annotations

import datetime as dt
import os

from apache_beam.io.filesystems import FileSystems

from pipelines.common import runner_name
from pipelines.manifest import keys_block, policy_block

__all__ = ["manifest_static", "shred_log"]


def manifest_static(job, cutoff: dt.date, found: dict, shred: dict | None) -> dict:
    """What the manifest says that is known before the last job; the job adds the counts (Finalize)."""
    from transforms.crypto.keyset import Keyset

    after, before = Keyset.load(job.args.keys), job.keys_before
    sample = found["purged_line_ids"]
    return {
        "step": "retention",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "retention": {
            "years_after_termination": job.policy.retention_years,
            "purge_terminated_on_or_before": cutoff.isoformat(),
            "rule": "purged when as_of > terminated_on + years (29 Feb + years = 28 Feb without a 29th); "
            "TERMINATED lines without terminated_on are kept",
        },
        "keys": {
            **keys_block(after, vault=False),
            "vault_before": before["vault"],
            "vault_after": after.primary_vault_version,
            "vault_versions_before": before["vault_versions"],
            "vault_versions_after": after.versions("vault"),
            "retired": shred["retired_vault_key_versions"] if shred else [],
        },
        "inputs": {"base": list(job.args.base), "base_files": job.files, "vault": job.args.vault},
        "outputs": {
            "base": FileSystems.join(job.out, "base"),
            "vault": job.out_vault,
            "purged": FileSystems.join(job.out, "purged"),
            "in_place": job.in_place,
            "shred_log": shred_log(job.out_vault, job.args.keys) if shred else None,
        },
        "purged_line_ids": sample,  # the first ones; OUT/purged lists every one
        "purged_line_ids_complete": len(sample) == found["purge"]["purged"],
        "runner": runner_name(job.options),
        "timings": job.timer.as_dict(),
    }


def shred_log(out_vault: str, keys_path: str) -> str:
    """OUT/audit/shred.jsonl: beside the published vault, as ``backfill keys shred`` would keep it; for a vault in
    an object store, the keyset's own audit folder of that vault (``backfill keys shred`` keeps it there too)."""
    if "://" in out_vault:
        from transforms.crypto.registry import vault_audit_dir

        return FileSystems.join(vault_audit_dir(out_vault, keys_path), "shred.jsonl")
    return os.path.join(os.path.dirname(os.path.normpath(out_vault)), "audit", "shred.jsonl")
