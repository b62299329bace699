"""The Beam operator of the backfill DAGs: it keeps hold of each step's launcher and of its Dataflow job.

``BackfillBeamOperator`` is the Beam provider's ``BeamRunPythonPipelineOperator`` (provider 6.3) with
what a launcher that waits for its own job needs:

* **The launcher is held to its end.** The provider stops reading a Dataflow launcher's output once it
  has seen the job id and then polls the Dataflow API; here the launcher's output is read until it exits,
  and its exit status is the step's (the launchers wait for their job and fail when it does not end
  ``DONE``). The job id still counts from the moment the launcher prints Beam's line
  ``Created job with id: [ID]``: it goes to XCom at once (``dataflow_job_id``, ``dataflow_job_url``, the
  console link of the task), so a kill or a timeout can cancel the job.
* **Kill and timeout** (``on_kill``, and any failure while the launcher runs): the launcher is stopped
  with SIGTERM (then SIGKILL): it dies at once, without its clean-up. Not SIGINT: that would run the
  launcher's clean-up, which deletes the staged output folder its Dataflow job may still be writing.
  Then the job (its id read from the launcher's last lines if need be) is cancelled through the API.
  A launcher that fails after its job started gets its job cancelled too.
* **Deferrable** (``deferrable=True``, DataflowRunner only; ``backfill_config`` allows it for the steps
  whose launcher has nothing left to do once the job runs): once the job id is known the launcher is
  stopped (the job publishes its output itself) and the task defers to the provider's
  ``DataflowJobStateCompleteTrigger`` for the rest of its time limit. The provider's own deferrable mode
  is left off (``deferrable=False`` is passed on, whatever ``[operators] default_deferrable`` says): for a
  local runner it runs the whole pipeline inside the triggerer.
* ``timeout_minutes`` sets the task's ``execution_timeout`` from the run's settings (``execution_timeout``
  itself cannot be mapped); ``refuse`` fails the task at once with that one line (no retry).
"""

from __future__ import annotations

import datetime as dt
import queue
import shlex
import subprocess
import threading
import time

from airflow.providers.apache.beam.hooks.beam import BeamHook, beam_options_to_args
from airflow.providers.apache.beam.operators.beam import BeamBasePipelineOperator, BeamRunPythonPipelineOperator
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.providers.google.cloud.hooks.dataflow import JOB_ID_PATTERN
from airflow.providers.google.cloud.links.dataflow import DataflowJobLink

__all__ = ["BackfillBeamOperator", "step_task"]

CONSOLE = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
EOF_GRACE = 5.0  # seconds to wait for the output's end once the launcher has exited


class _Launcher:
    """One launcher process; two threads read its stdout and stderr line by line into a queue."""

    def __init__(self, cmd: list[str], cwd: str | None = None) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
        self.queue: queue.Queue = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, is_err), daemon=True)
            for stream, is_err in ((self.proc.stdout, False), (self.proc.stderr, True))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, is_err: bool) -> None:
        for raw in iter(stream.readline, b""):
            self.queue.put((is_err, raw.decode("utf-8", errors="replace").rstrip("\n")))
        self.queue.put(None)

    def lines(self):
        """(is_stderr, line) as they come, until both streams end (or the launcher has been gone a while)."""
        open_streams, exited_at = 2, None
        while open_streams:
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > EOF_GRACE:  # a child of it holds the pipes open
                        return
                continue
            if item is None:
                open_streams -= 1
            else:
                yield item

    def leftover(self) -> list[str]:
        """The lines nobody has taken yet, once the readers are done (the launcher stopped)."""
        for reader in self.readers:
            reader.join(timeout=EOF_GRACE)
        found = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return found
            if item is not None:
                found.append(item[1])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds (polls only: safe inside a signal handler)."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()


class _HeldBeamHook(BeamHook):
    """The provider's hook, whose launcher runs under :meth:`BackfillBeamOperator._hold`."""

    def __init__(self, runner: str, hold) -> None:
        super().__init__(runner=runner)
        self._hold = hold

    def _start_pipeline(
        self,
        variables: dict,
        command_prefix: list[str],
        process_line_callback=None,
        working_directory: str | None = None,
        is_dataflow_job_id_exist_callback=None,
    ) -> None:
        cmd = [*command_prefix, f"--runner={self.runner}", *beam_options_to_args(variables)]
        self._hold(cmd, process_line_callback, working_directory)


class BackfillBeamOperator(BeamRunPythonPipelineOperator):
    """``BeamRunPythonPipelineOperator`` that holds its launcher and its Dataflow job (module docstring)."""

    def __init__(self, *, timeout_minutes: float | None = None, deferrable: bool = False, refuse=None, **kwargs):
        super().__init__(deferrable=False, **kwargs)
        if timeout_minutes:
            self.execution_timeout = dt.timedelta(minutes=float(timeout_minutes))
        self.detach = bool(deferrable)
        self.refuse = refuse
        self._launcher: _Launcher | None = None
        self._detached = False
        self._started = time.monotonic()

    def execute(self, context):
        if self.refuse:
            self.log.error("%s: %s", self.task_id, self.refuse)
            raise AirflowFailException(self.refuse)
        self._started = time.monotonic()
        self.detach = self.detach and self.runner == "DataflowRunner"
        return super().execute(context)

    def _init_pipeline_options(self, *args, **kwargs):
        result = super()._init_pipeline_options(*args, **kwargs)
        self.beam_hook = _HeldBeamHook(self.runner, self._hold)
        return result

    @property
    def dataflow_job_id(self):
        return self._dataflow_job_id

    @dataflow_job_id.setter
    def dataflow_job_id(self, value) -> None:
        first = bool(value and not self._dataflow_job_id and self._execute_context)
        BeamBasePipelineOperator.dataflow_job_id.fset(self, value)  # the provider pushes dataflow_job_id
        if first:
            self._execute_context["ti"].xcom_push(key="dataflow_job_url", value=self._job_url())
            DataflowJobLink.persist(
                context=self._execute_context,
                region=self.dataflow_config.location,
                job_id=value,
                project_id=self.dataflow_config.project_id,
            )
            self.log.info("Dataflow job %s: %s", value, self._job_url())

    def _job_url(self) -> str:
        config = self.dataflow_config
        return CONSOLE.format(region=config.location, job_id=self._dataflow_job_id, project=config.project_id)

    def _job(self) -> dict:
        return {"dataflow_job_id": self.dataflow_job_id, "dataflow_job_url": self._job_url()}

    def _hold(self, cmd: list[str], on_line, cwd: str | None) -> None:
        """Run the launcher and follow its output to its end (or, detaching, to its job id)."""
        self.log.info("Running command: %s", shlex.join(cmd))
        launcher = self._launcher = _Launcher(cmd, cwd)
        try:
            for is_err, line in launcher.lines():
                if on_line:
                    on_line(line)
                (self.log.warning if is_err else self.log.info)(line)
                if self.detach and self.dataflow_job_id:
                    self._detached = True
                    self.log.info("Dataflow job %s runs: its launcher is stopped, the triggerer waits", self._job())
                    return
            code = launcher.proc.wait()
        finally:
            launcher.stop()
        self.log.info("Process exited with return code: %s", code)
        if code != 0:
            self._cancel_job()
            raise AirflowException(f"the launcher of {self.task_id} failed with exit code {code}")

    def execute_on_dataflow(self, context):
        self.beam_hook.start_python_pipeline(
            variables=self.snake_case_pipeline_options,
            py_file=self.py_file,
            py_options=self.py_options,
            py_interpreter=self.py_interpreter,
            py_requirements=self.py_requirements,
            py_system_site_packages=self.py_system_site_packages,
            process_line_callback=self.process_line_callback,
        )
        if self._detached:
            self._defer_to_job()
        return self._job() if self.dataflow_job_id else None

    def _defer_to_job(self) -> None:
        from airflow.providers.google.cloud.triggers.dataflow import DataflowJobStateCompleteTrigger

        left = None
        if self.execution_timeout:
            seconds = self.execution_timeout.total_seconds() - (time.monotonic() - self._started)
            left = dt.timedelta(seconds=max(60.0, seconds))
        trigger = DataflowJobStateCompleteTrigger(
            job_id=self.dataflow_job_id,
            project_id=self.dataflow_config.project_id,
            location=self.dataflow_config.location,
            gcp_conn_id=self.gcp_conn_id,
            poll_sleep=self.dataflow_config.poll_sleep,
            impersonation_chain=self.dataflow_config.impersonation_chain,
        )
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"job": self._job()}, timeout=left)

    def execute_complete(self, context, event: dict, job: dict | None = None):
        super().execute_complete(context, event)
        return job

    def _cancel_job(self) -> None:
        if not (self.dataflow_hook and self._dataflow_job_id):
            return
        try:
            self.log.info("Cancelling Dataflow job %s", self._dataflow_job_id)
            self.dataflow_hook.cancel_job(
                job_id=self._dataflow_job_id,
                project_id=self.dataflow_config.project_id,
                location=self.dataflow_config.location,
            )
        except Exception as exc:  # the task fails anyway; say what is left running
            self.log.error("could not cancel Dataflow job %s (%s): cancel it yourself", self._job_url(), exc)

    def on_kill(self) -> None:
        """Stop the launcher, then cancel its job (its id maybe only in the launcher's last lines)."""
        launcher = self._launcher
        if launcher is not None:
            launcher.stop()
            for line in launcher.leftover() if not self._dataflow_job_id else ():
                match = JOB_ID_PATTERN.search(line)
                if match:
                    self._dataflow_job_id = match.group("job_id_python") or match.group("job_id_java")
        self._cancel_job()


def step_task(step, due):
    """The mapped launch task of one step (``backfill_config.Step``), over ``due``'s list of launches."""
    return BackfillBeamOperator.partial(
        task_id=step.name,
        py_file=step.module,
        py_options=["-m"],
        trigger_rule="none_failed",
        execution_timeout=step.timeout,
    ).expand_kwargs(due)
