"""Publishing a step's output folder safely: guards, ownership, write beside then switch, private files.

    with publishing(out, "merge", run_id, inputs={"--base": args.base, ...}, produces=MERGE_OUTPUTS) as pub:
        ...write everything under pub.stage (pub.path("base"), ...), manifest.json last...
    # OUT now holds the new output, whole; after an exception it holds the previous one, untouched

What every command that writes an output folder gets from here (Principle 8,
"Safe by default" in docs/architecture.md):

* **Guards on real paths** (:func:`check_apart`): an ``--out`` that is,
  contains or lies inside one of the run's inputs is refused in one line
  before anything is written. Local paths are compared after
  ``os.path.realpath`` (symbolic links resolved) and by device and inode
  (``os.path.samestat``: bind mounts, hard links); ``gs://`` and ``s3://``
  URIs as normalised strings. A glob input (``events/*.jsonl``) counts as
  its folder when ``--out`` is or contains it, and as the paths it can
  match when ``--out`` lies inside it.
* **Ownership** (:func:`check_owned`): a step may replace only a folder that
  a run of the same step created: one holding the marker ``.backfill.json``
  with its step (written when the folder is created), or, from before the
  marker existed, a ``manifest.json`` of that step. A new or empty folder is
  fine. Anything else is refused in one line; nothing is deleted.
* **Write beside, then switch** (:func:`publishing`): the run writes into a
  fresh sibling ``OUT.tmp-RUN_ID`` (mode 0700). On success its files are
  made private, ``_SUCCESS`` is written after the manifest, and the staged
  folder is exchanged with OUT in one ``renameat2(RENAME_EXCHANGE)`` (two
  renames where the file system lacks it). The entries of the previous
  output that the step does not produce (``audit/`` logs written beside a
  vault, anything else put there) are moved into the new OUT; the rest of the
  previous output is deleted only then. On an exception the staged folder is
  deleted and OUT is as it was: a failed or killed run never leaves a
  previous manifest beside partial output.
* **Recovery**: a run killed while staging leaves ``OUT.tmp-RUN_ID`` with its
  marker in state ``staging``; the marker is flock'ed by the live run, so the
  next run of the same step into the same OUT removes it only when no process
  holds the lock. A switch cut between its renames is completed by the next
  run. A staged folder a step asked to keep (:meth:`Publication.keep_on_failure`:
  retention after its shred, when the staged vault is the only one that
  opens) is never removed automatically.
* **Private files**: before the switch every staged folder is made 0700 and
  every file 0600 (:func:`private_tree`), whatever the umask; OUT and the
  staging folder are created 0700.

Object stores (``gs://``, ``s3://``) have no rename of a folder: there the
run writes into ``OUT.tmp-RUN_ID`` as well and the switch is
**copy-then-delete**: only once the staged output is complete, OUT's
``_SUCCESS`` is deleted, the step's previous entries are deleted, the staged
files are copied into OUT (Beam's ``FileSystems.rename``: copy, then delete),
``manifest.json``, the marker and ``_SUCCESS`` last, and the staged folder is
deleted. A reader that checks ``_SUCCESS`` never trusts a half-switched OUT;
a switch that fails leaves the complete staged copy at ``OUT.tmp-RUN_ID``.
Stale staged folders on object stores are not removed automatically (there
is no lock to tell a live run from a dead one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import socket
from typing import Iterable, Iterator, Mapping

from pipelines.io.publish_guards import (
    _STAGE,
    ATTEMPTS,
    MARKER,
    SUCCESS,
    _join,
    _marker,
    _now,
    _remote,
    _write_private,
    check_apart,
    check_owned,
    delete,
    make_private_dirs,
    owner,
    private_tree,
    require_folder,
)
from pipelines.io.staging import _commit_local, _recover, _seed, kept_stage

__all__ = [
    "MARKER",
    "SUCCESS",
    "Publication",
    "publishing",
    "commit_remote",
    "committed_remote",
    "writing_into",
    "check_apart",
    "check_owned",
    "kept_stage",
    "owner",
    "private_tree",
    "make_private_dirs",
]


# -- publishing ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Publication:
    """The run's staged output: write under ``stage``; ``final`` maps a staged path to where it will be."""

    out: str
    stage: str
    step: str
    run_id: str
    keep_reason: str | None = None
    produces: tuple[str, ...] = ()  # the top-level entries the step writes (see publishing)

    @property
    def remote(self) -> bool:
        return _remote(self.out)

    def path(self, *parts: str) -> str:
        return "/".join([self.stage.rstrip("/"), *parts]) if _remote(self.stage) else os.path.join(self.stage, *parts)

    def final(self, path: str) -> str:
        """``OUT.tmp-RUN/x`` -> ``OUT/x`` (as the user spelled OUT): the paths a manifest records."""
        if path == self.stage or path.startswith(self.stage.rstrip("/") + ("/" if _remote(path) else os.sep)):
            return self.out + path[len(self.stage) :]
        return path

    def written(self, *parts: str) -> str:
        """Where a file the job wrote is now, for the launcher to read back once the job is done: in the
        staged folder, or in OUT when the job published itself (object stores: pipelines/io/finalize.py)."""
        if self.remote and committed_remote(self.out, self.run_id):
            return "/".join([self.out.rstrip("/"), *parts])
        return self.path(*parts)

    def keep_on_failure(self, reason: str) -> None:
        """From here on a failure keeps the staged folder (it holds something that exists nowhere else)."""
        self.keep_reason = reason


def _open_stage(target: str, step: str, run_id: str) -> tuple[str, str, int]:
    """Create the staged folder ``OUT.tmp-RUN_ID`` (0700) with its marker, flock'ed while this run lives."""
    stage = f"{target}{_STAGE}{run_id}"
    os.mkdir(stage, 0o700)
    os.chmod(stage, 0o700)
    marker = os.path.join(stage, MARKER)
    _write_private(marker, _marker(step, run_id, "staging", pid=os.getpid(), host=socket.gethostname()))
    lock = os.open(marker, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return stage, marker, lock


@contextlib.contextmanager
def publishing(
    out: str,
    step: str,
    run_id: str,
    *,
    inputs: Mapping | None = None,
    produces: Iterable[str] = (),
    seed: Iterable[str] = (),
    allow: Iterable[str] = (),
) -> Iterator[Publication]:
    """Stage a step's output beside OUT and switch it in at the end (see the module docstring).

    Args:
      out: the output folder, as the user gave it.
      step: the step's name (recorded in the marker; only that step's folders are replaced).
      run_id: names the staged folder ``OUT.tmp-RUN_ID``.
      inputs: flag -> paths, checked with :func:`check_apart` before anything is written.
      produces: the top-level entries the step writes (``base``, ``manifest.json``...): they replace the
        previous output's; every other entry of the previous output is kept.
      seed: entries of the previous output copied (hard links) into the staged folder first, for a step
        that adds to them (the report's ``parquet/`` partitions of other days).
      allow: inputs allowed inside OUT (see :func:`check_apart`).
    """
    require_folder(out)
    out = out.rstrip("/") or out
    if inputs is not None:
        check_apart(out, inputs, allow=allow)
    produces = set(produces)
    if _remote(out):
        with _publishing_remote(out, step, run_id, produces, seed) as pub:
            yield pub
        return
    target = os.path.realpath(os.path.expanduser(out))
    check_owned(out, step)
    _recover(target, step, produces)
    created = not os.path.exists(target)
    if created:
        make_private_dirs(os.path.dirname(target))
        os.mkdir(target, 0o700)
        _write_private(os.path.join(target, MARKER), _marker(step, run_id, "created"))
    stage, marker, lock = _open_stage(target, step, run_id)
    pub = Publication(out, stage, step, run_id, produces=tuple(sorted(produces)))
    try:
        try:
            for name in seed:
                if os.path.isdir(os.path.join(target, name)):
                    _seed(os.path.join(target, name), os.path.join(stage, name))
            yield pub
        except BaseException:
            if pub.keep_reason:
                _write_private(marker, _marker(step, run_id, "kept", reason=pub.keep_reason))
            else:
                shutil.rmtree(stage, ignore_errors=True)
            if created and os.path.isdir(target) and os.listdir(target) == [MARKER]:
                shutil.rmtree(target, ignore_errors=True)
            raise
        _commit_local(stage, target, step, run_id, produces)
    finally:
        os.close(lock)


@contextlib.contextmanager
def _publishing_remote(
    out: str, step: str, run_id: str, produces: set[str], seed: Iterable[str] = ()
) -> Iterator[Publication]:
    """Object stores: stage under ``OUT.tmp-RUN_ID``, then copy-then-delete (module docstring)."""
    check_owned(out, step)
    stage = f"{out}{_STAGE}{run_id}"
    pub = Publication(out, stage, step, run_id, produces=tuple(sorted(produces)))
    try:
        for name in seed:  # what the step adds to (the report's other days): copied in first, by the store
            _seed_remote(_join(out, name), _join(stage, name))
        yield pub
    except BaseException:
        if not pub.keep_reason:
            _remote_delete(stage)
        raise
    if committed_remote(out, run_id):  # the job published itself (pipelines/io/finalize.py)
        return
    commit_remote(out, stage, step, run_id, produces)


def committed_remote(out: str, run_id: str) -> bool:
    """OUT's ``_SUCCESS`` names this run: the switch is done."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(_join(out, SUCCESS)) as handle:
            return handle.read().decode("utf-8").strip() == run_id
    except Exception:  # no _SUCCESS (or unreadable): not committed by this run
        return False


def commit_remote(out: str, stage: str, step: str, run_id: str, produces: Iterable[str]) -> None:
    """The object-store switch: copy the complete staged output into OUT, ``manifest.json``, the marker and
    ``_SUCCESS`` last, then delete the staged folder (module docstring). Runs in the launcher or, on a
    distributed runner, in the job's last step (:mod:`pipelines.io.finalize`)."""
    from apache_beam.io.filesystems import FileSystems

    produces = set(produces)
    prefix = stage.rstrip("/") + "/"
    staged = sorted(m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list)
    # an attempt's files written after its job moved the chosen ones into place (a straggling retry) stay out
    rel = [r for r in (p[len(prefix) :] for p in staged) if r.split("/", 1)[0] != ATTEMPTS]
    top = {r.split("/", 1)[0] for r in rel}
    _remote_delete(_join(out, SUCCESS))
    for name in sorted((produces | top) - {MARKER, SUCCESS}):
        _remote_delete(_join(out, name))
    last = [r for r in rel if r == "manifest.json"]
    first = [r for r in rel if r != "manifest.json"]
    for r in first + last:
        FileSystems.rename([prefix + r], [_join(out, r)])
    for name, payload in (
        (MARKER, _marker(step, run_id, "published", committed=_now())),
        (SUCCESS, (run_id + "\n").encode("utf-8")),
    ):
        with FileSystems.create(_join(out, name)) as handle:
            handle.write(payload)
    _remote_delete(stage)


def _seed_remote(source: str, target: str) -> None:
    """Copy every object under ``source/`` to the same place under ``target/`` (the store copies them)."""
    from apache_beam.io.filesystems import FileSystems

    prefix = source.rstrip("/") + "/"
    try:
        found = [m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list]
    except Exception:  # nothing there yet
        found = []
    if found:
        FileSystems.copy(found, [target.rstrip("/") + "/" + p[len(prefix) :] for p in found])


def _remote_delete(path: str) -> None:
    try:
        delete(path)
    except Exception:  # best effort: what is left is never read as the output
        pass


@contextlib.contextmanager
def writing_into(out: str, step: str, run_id: str, *, inputs: Mapping | None = None) -> Iterator[str]:
    """For a step that adds to its folder rather than replacing it (notify: jobs, history, runs).

    Checks the guards and the ownership, creates OUT (0700, with its marker) when it is new, and makes
    everything in it private at the end, also after a failure; a new OUT that holds only its marker after a
    failure is removed. Yields OUT. Object stores: the guards and the ownership only.
    """
    require_folder(out)
    out = out.rstrip("/") or out
    if inputs is not None:
        check_apart(out, inputs)
    check_owned(out, step)
    if _remote(out):
        yield out
        return
    target = os.path.realpath(os.path.expanduser(out))
    created = not os.path.exists(target) and _create_with_marker(target, step, run_id)
    if not created and not os.path.exists(os.path.join(target, MARKER)):
        check_owned(out, step)  # made meanwhile by another run: its marker, or someone else's folder
    if not os.path.exists(os.path.join(target, MARKER)):
        _write_private(os.path.join(target, MARKER), _marker(step, run_id, "created"))
    os.chmod(target, 0o700)
    try:
        yield out
    except BaseException:
        if created and os.listdir(target) == [MARKER]:
            shutil.rmtree(target, ignore_errors=True)
        else:
            private_tree(target)
        raise
    private_tree(target)


def _create_with_marker(target: str, step: str, run_id: str) -> bool:
    """Create the folder ``target`` with its marker in one step (a private folder beside it, renamed into place):
    True when this run made it, False when another made it meanwhile (two runs into one new folder: the loser
    sees the winner's marker, never a folder without one). Nothing of this run is left behind either way."""
    import errno
    import tempfile

    parent = os.path.dirname(target)
    make_private_dirs(parent)
    made = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.new-", dir=parent)  # mode 0700
    try:
        _write_private(os.path.join(made, MARKER), _marker(step, run_id, "created"))
        os.rename(made, target)  # a folder that exists and is not empty is never replaced
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False
    finally:
        shutil.rmtree(made, ignore_errors=True)
