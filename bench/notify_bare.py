"""The bare batched publisher loop the notify benchmark compares with.

    python -m bench.notify_bare --topic projects/P/topics/T --jobs DIR [--count N]

Reads job Avro files (``DIR/jobs/*/*.avro``, as ``backfill notify`` writes
them), builds the same messages as the pipeline does (the job as JSON, with
the attributes job_id, channel, campaign_id) *before* the clock starts, then
publishes them in a plain loop with one ``PublisherClient`` and the same batch
settings, and waits for every acknowledgement. Prints one JSON line:
``{"messages": N, "seconds": S}`` (first publish to last acknowledgement).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import fastavro
import pyarrow as pa

from transforms.notify.encode import json_messages


def _messages(folder: str, count: int) -> list[tuple[bytes, dict]]:
    out: list[tuple[bytes, dict]] = []
    for path in sorted(glob.glob(os.path.join(folder, "jobs", "*", "*.avro"))):
        with open(path, "rb") as handle:
            rows = list(fastavro.reader(handle))
        if not rows:
            continue
        table = pa.Table.from_pylist(rows)
        for data, row in zip(json_messages(table).to_pylist(), rows):
            out.append((data, {"job_id": row["job_id"], "channel": row["channel"], "campaign_id": row["campaign_id"]}))
            if len(out) >= count:
                return out
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify_bare", description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--jobs", required=True, help="an OUT folder of backfill notify (files mode)")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.types import BatchSettings

    messages = _messages(args.jobs, args.count)
    client = pubsub_v1.PublisherClient(
        batch_settings=BatchSettings(max_messages=args.batch, max_bytes=9_000_000, max_latency=0.05)
    )
    started = time.time()
    futures = [client.publish(args.topic, data, **attrs) for data, attrs in messages]
    for future in futures:
        future.result(timeout=300)
    seconds = time.time() - started
    client.stop()
    print(json.dumps({"messages": len(messages), "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
