"""Run a stage's model work on a Ray cluster, with Ray Data, and get the results back in input order.

`rpt entropy`, `rpt rollout` and `rpt eval` cut their input into units (a chunk of documents, a
chunk of contexts) exactly as they do in one process. With `--ray`, the units go to a pool of Ray
Data map workers (`map_batches` with a callable class: each worker builds its model or engine once,
then takes unit after unit); the driver, the `rpt` process, reads and checks the input first, so a
bad record is the same one-line error, and merges the results back in input order, so the output is
the one the single process writes, record for record.

Why the results are the same: a unit is processed by the same code, with the same batches and
seeds, as in one process; only where it runs changes. Why a worker that dies costs nothing: Ray
restarts a map worker that died and runs its unit again; a unit's result enters the merge once, by
its sequence number, and a second copy would be an error (`OrderedMerge`).

Units and results travel pickled inside the rows of the Ray dataset (one unit per row): records are
free-form JSON whose fields Arrow could not always give one type (an id that is a string on one
line and an integer on the next), and pickling keeps them exactly as read.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rpt_cli.errors import InputError, RecordError, RuntimeFailure, SettingError, UsageError

INSTALL_COMMAND = "pip install 'rpt[ray]'"
INSTALL_HINT = f"--ray needs Ray Data, which is not installed; run: {INSTALL_COMMAND}"
LOCAL = "local"
MAX_RESTARTS = 3
AUTO = "auto"
# what a worker needs to find and run the same model as the driver, wherever it runs
FORWARDED_ENV = ("RPT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE")


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide: `address` is `local` (start a cluster on this machine for this run),
    `auto` (join the cluster this machine belongs to, as `ray start` or RAY_ADDRESS set it up) or
    a cluster address (`HOST:PORT`, `ray://HOST:PORT`)."""

    address: str
    workers: int = 2
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        if not self.address.strip():
            raise UsageError("--ray: give local, auto or a cluster address (HOST:PORT or ray://HOST:PORT)")
        if self.workers < 1:
            raise UsageError("--ray-workers must be at least 1")
        if self.gpus_per_worker < 0:
            raise UsageError("--ray-gpus-per-worker must be 0 or more")
        import importlib.util

        if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
            raise UsageError(INSTALL_HINT)


def ray_settings(address: str | None, workers: int, gpus_per_worker: float) -> RaySettings | None:
    """The settings of `--ray ADDRESS --ray-workers N --ray-gpus-per-worker G`, checked; None
    without `--ray` (then the other two must keep their defaults: they would be silently ignored)."""
    if address is None:
        if workers != 2 or gpus_per_worker != 0:
            raise UsageError("--ray-workers and --ray-gpus-per-worker apply with --ray only")
        return None
    settings = RaySettings(address, workers, gpus_per_worker)
    settings.check()
    return settings


# -------------------------------------------------------------------------------------------
# Errors across the process boundary
# -------------------------------------------------------------------------------------------


def pack_error(exc: BaseException) -> tuple:
    """An exception raised in a worker, as plain values: rpt's errors keep their kind (and so their
    one-line message and exit status on the driver); anything else is a runtime failure."""
    if isinstance(exc, InputError):
        return ("input", exc.source, exc.line, exc.reason)
    if isinstance(exc, SettingError):
        return ("setting", exc.setting, exc.template)
    if isinstance(exc, UsageError):
        return ("usage", str(exc))
    if isinstance(exc, RecordError):
        return ("record", str(exc))
    if isinstance(exc, RuntimeFailure):
        return ("runtime", str(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ("runtime", f"a Ray worker failed: {type(exc).__name__}: {first}")


def unpack_error(packed: tuple) -> Exception:
    kind, *fields = packed
    if kind == "input":
        return InputError(*fields)
    if kind == "setting":
        return SettingError(*fields)
    if kind == "usage":
        return UsageError(*fields)
    if kind == "record":
        return RecordError(*fields)
    return RuntimeFailure(*fields)


# -------------------------------------------------------------------------------------------
# The map worker
# -------------------------------------------------------------------------------------------


class UnitWorker:
    """A Ray Data map worker: `factory()` builds the unit processor (loading the model) once, then
    every row's unit goes through it. Errors come back as values (`pack_error`): an rpt error is the
    user's to fix, and Ray would otherwise retry the constructor of a worker whose model cannot load
    forever."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]):
        try:
            self.process, self.error = factory(), None
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which reports it
            self.process, self.error = None, pack_error(exc)

    def __call__(self, batch: dict) -> dict:
        out = []
        for payload in batch["payload"]:
            if self.error is not None:
                result = ("error", self.error)
            else:
                try:
                    result = ("ok", self.process(pickle.loads(payload)))
                except Exception as exc:  # noqa: BLE001 - handed to the driver, which reports it
                    result = ("error", pack_error(exc))
            out.append(pickle.dumps(result))
        return {"seq": batch["seq"], "payload": out}


def worker_class(factory: Callable[[], Callable[[Any], Any]]) -> type:
    """A UnitWorker class with `factory` built in. Given as a constructor argument instead, the
    factory would sit in Ray's object store, and Ray's core logs an error line on the terminal
    for every restartable actor whose constructor arguments do."""

    class BoundUnitWorker(UnitWorker):
        def __init__(self):
            super().__init__(factory)

    return BoundUnitWorker


class OrderedMerge:
    """Results that arrive in any order, handed on in sequence order; a sequence number seen twice
    (a retried unit whose first result got through after all) or never is an error, not a silent
    duplicate or gap."""

    def __init__(self, count: int):
        self.count, self.next, self.pending = count, 0, {}

    def add(self, seq: int, value) -> Iterator:
        if seq < self.next or seq in self.pending or not 0 <= seq < self.count:
            raise RuntimeFailure(f"ray: unit {seq} came back twice (or was never sent)")
        self.pending[seq] = value
        while self.next in self.pending:
            yield self.pending.pop(self.next)
            self.next += 1

    def finish(self) -> None:
        if self.next != self.count:
            raise RuntimeFailure(f"ray: {self.count - self.next} of {self.count} units never came back")


# -------------------------------------------------------------------------------------------
# The cluster
# -------------------------------------------------------------------------------------------


class RayCluster:
    """A connection to a Ray cluster for one run: `local` starts one (as many CPUs as this machine
    has, at least one per worker) and ends it on close; an address joins one and leaves it running."""

    def __init__(self, settings: RaySettings):
        self.settings = settings
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        try:
            import ray
        except Exception as exc:  # noqa: BLE001 - installed but broken
            raise UsageError(
                f"Ray is installed but does not load ({exc}); reinstall it: pip install 'rpt[ray]'"
            ) from None
        from rpt_cli.generation.vllm_backend import _stdout_to_stderr

        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        options: dict = dict(
            include_dashboard=False,
            # the run reports itself; workers' own logs stay in Ray's log folder
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env={"env_vars": env} if env else None,
        )
        if settings.address == LOCAL:
            # a new cluster even where RAY_ADDRESS names another: `local` promises this machine only
            options["address"] = "local"
            options["num_cpus"] = max(os.cpu_count() or 1, settings.workers)
        else:
            options["address"] = settings.address
        started = time.perf_counter()
        try:
            # the cluster's processes inherit file descriptor 1, which may carry the JSONL output
            with _stdout_to_stderr():
                ray.init(**options)
        except ConnectionError as exc:
            raise UsageError(f"--ray {settings.address}: cannot connect ({_first_line(exc)})") from None
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--ray {settings.address}: {_first_line(exc)}") from None
        self.start_seconds = time.perf_counter() - started
        import warnings

        with warnings.catch_warnings():
            # Ray Data's first DataContext sets its own deprecated fields (use_polars, …) and warns
            # about them: nothing rpt does or could change
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray.data")
            import ray.data

            context = ray.data.DataContext.get_current()
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        self._ray = ray

    def map_units(
        self,
        units: Iterable[Any],
        factory: Callable[[], Callable[[Any], Any]],
        *,
        on_result: Callable[[Any], None] | None = None,
    ) -> Iterator[Any]:
        """Each unit through `factory()`'s processor on the cluster's workers; the results in the
        units' order. `on_result` sees each result as it arrives (for progress)."""
        import ray.data

        rows = [{"seq": seq, "payload": pickle.dumps(unit)} for seq, unit in enumerate(units)]
        if not rows:
            return
        merge = OrderedMerge(len(rows))
        import warnings

        with warnings.catch_warnings():
            # a library path we cannot change: Ray Data 2.60 takes an actor's restart limits only as
            # free `ray_remote_args`, which it calls deprecated (to go in Ray 2.64); the named
            # parameters it points to (label_selector, resources, max_calls, ...) hold no restart
            # limit. The `ray` extra is pinned to 2.60.0: revisit this call when the pin moves
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                worker_class(factory),
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(self.settings.workers, len(rows))),
                num_cpus=1,
                num_gpus=self.settings.gpus_per_worker or None,
                # a dead worker is restarted and its unit sent again, a few times (Ray Data's
                # default is forever): a unit that kills every worker it meets (out of memory)
                # ends the run instead of looping
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_RESTARTS,
            )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for seq, payload in zip(batch["seq"], batch["payload"]):
                    status, value = pickle.loads(payload)
                    if status == "ok" and on_result is not None:
                        on_result(value)
                    yield from merge.add(int(seq), (status, value))
        except self._ray.exceptions.RayError as exc:
            raise RuntimeFailure(f"ray: {_first_line(exc)}") from None
        merge.finish()

    def results(self, units: Iterable[Any], factory, *, on_result=None) -> Iterator[Any]:
        """`map_units`, raising a unit's error (in input order, as the single process would meet it)."""
        for status, value in self.map_units(units, factory, on_result=on_result):
            if status == "error":
                raise unpack_error(value)
            yield value

    def close(self) -> None:
        ray, self._ray = getattr(self, "_ray", None), None
        if ray is not None:
            ray.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "AUTO",
    "LOCAL",
    "OrderedMerge",
    "RayCluster",
    "RaySettings",
    "UnitWorker",
    "pack_error",
    "ray_settings",
    "unpack_error",
]
