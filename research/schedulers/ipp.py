"""IPython Parallel: ``DirectView.map`` (contiguous blocks, as the talk used it) and
``LoadBalancedView.map`` (one task per message by default).

By default each adapter starts a local cluster (one controller and ``n_workers`` engines on
127.0.0.1) whose profile and IPYTHONDIR live in the run's work directory, so nothing is written to
the home directory, and stops it again, waiting until every process is gone. With ``profile``,
``profile_dir``, ``cluster_id`` or ``connection_file`` it connects to a cluster that is already
running instead (the engines must be able to import this package) and leaves it running.

Stamps: a map is handed over as a whole, so every task gets the one submit stamp taken just
before ``map_async``. Receive stamps are per message: ``DirectView.map`` returns one block per
engine, and each task is stamped when its block arrives; a load-balanced map (chunksize 1) is
stamped per task. The native witness is ``AsyncResult.metadata``, one record per message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import ParamError
from ..params import Param
from ..tasks import (
    Outcome,
    PackedBlock,
    Task,
    execute_packed,
    execute_packed_block,
    noop,
    pack,
    set_worker_label,
    unpack_block,
)
from .base import RunOutput, paced, stamp_all, timeout_error
from .cluster import ClusterScheduler, check_worker_count

if TYPE_CHECKING:  # imported lazily: `list` and config checks work without ipyparallel
    import ipyparallel as ipp

#: Task schemes of ipyparallel's Python task scheduler that the ``scheme`` option accepts.
SCHEMES = ("leastload", "lru", "plainrandom", "twobin", "weighted")
#: Options that select an existing cluster instead of starting one.
EXISTING_KEYS = ("connection_file", "profile_dir", "profile", "cluster_id")
CONNECT_TIMEOUT_S = 10.0
#: Seconds to wait for a local cluster's engines to register (about 1.5 s each here).
ENGINE_TIMEOUT_S = 60.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

EXISTING_OPTIONS: dict[str, Param] = {
    "profile": Param("str", None, help="existing cluster: IPython profile name"),
    "profile_dir": Param("str", None, help="existing cluster: profile directory"),
    "cluster_id": Param("str", None, help="existing cluster: its cluster id in the profile"),
    "connection_file": Param("str", None, help="existing cluster: ipcontroller-client.json"),
}


def utc_ns(value: dt.datetime | str | None) -> int | None:
    """A metadata datetime (aware; naive ones are UTC, as ipyparallel writes them) as ns.

    A message header's date can still be its ISO 8601 text (jupyter_client leaves it so when
    its date parsing is off), hence strings too."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def connection_file(options: Mapping[str, Any]) -> Path:
    """The ``ipcontroller-client.json`` of the existing cluster ``options`` select."""
    if options.get("connection_file"):
        return Path(options["connection_file"]).expanduser()
    if options.get("profile_dir"):
        profile_dir = Path(options["profile_dir"]).expanduser()
    else:  # not IPython.paths.get_ipython_dir(): it creates the directory if it is missing
        ipython_dir = Path(os.environ.get("IPYTHONDIR") or "~/.ipython").expanduser()
        profile_dir = ipython_dir / f"profile_{options.get('profile') or 'default'}"
    cid = options.get("cluster_id")
    return profile_dir / "security" / (f"ipcontroller-{cid}-client.json" if cid
                                       else "ipcontroller-client.json")


def _connect(options: Mapping[str, Any], ipython_dir: str) -> tuple[ipp.Client, Path]:
    """A client of the existing cluster ``options`` select, and its connection file.

    ``ipython_dir`` is passed only so that the client does not look up (and create) the
    default IPython directory; nothing is written there.
    """
    conn = connection_file(options)
    key = next(k for k in EXISTING_KEYS if options.get(k))
    if not conn.is_file():
        raise ParamError(key, f"{conn} not found: is the ipyparallel cluster running, with this "
                              "profile and cluster id?")
    import ipyparallel as ipp

    try:
        client = ipp.Client(str(conn), ipython_dir=ipython_dir, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        raise ParamError(key, f"cannot connect to the ipyparallel cluster of {conn} (is it "
                              f"still running?): {type(exc).__name__}: {exc}") from exc
    return client, conn


def listening_addresses(pids: Sequence[int]) -> list[str]:
    """``ip:port`` of every TCP socket the processes ``pids`` listen on."""
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(pid).net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN and c.laddr:
                    out.append(f"{c.laddr.ip}:{c.laddr.port}")
    return out


def check_loopback(conn: Path, pids: Sequence[int]) -> None:
    """Refuse a local cluster reachable from outside this host: its connection files must
    name 127.0.0.1 and its processes listen on loopback only. ipyparallel has no such check
    of its own (Dask and Ray refuse or default to loopback); anyone who can reach the ports
    and read the key can run code as this user."""
    bad = []
    for path in sorted(conn.parent.glob("ipcontroller-*.json")):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(path.read_text())
            # "interface" is what clients and engines connect to ("location" is only the host
            # name, for ssh tunnels).
            value = str(info.get("interface", ""))
            if value and "127.0.0.1" not in value:
                bad.append(f"{path.name}: interface = {value}")
    for addr in listening_addresses(pids):
        if not addr.startswith("127."):
            bad.append(f"a cluster process listens on {addr}")
    if bad:
        raise RuntimeError("the local ipyparallel cluster is reachable beyond this host ("
                           + "; ".join(bad) + "); it must bind to 127.0.0.1 only")


def _check_engines(conn: Path, n_engines: int, n_workers: int) -> None:
    check_worker_count(n_workers, n_engines, f"the existing ipyparallel cluster ({conn})",
                       "engine(s)")


def _describe(exc: BaseException) -> str:
    """One line for a failed message; a CompositeError wraps the engines' own errors."""
    inner = getattr(exc, "elist", None)
    text = "; ".join(f"{e[0]}: {e[1]}" for e in inner) if inner else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _outcomes(result: Any) -> list[Outcome]:
    """The outcomes in one message's result (a map chunk: a list, maybe nested once more, of
    outcomes packed as plain tuples by research.tasks.execute_packed, or of a DirectView
    block's research.tasks.PackedBlock)."""
    new = tuple.__new__
    if isinstance(result, PackedBlock):
        return unpack_block(result)
    if isinstance(result, tuple):
        return [result if isinstance(result, Outcome) else new(Outcome, result)]
    out: list[Outcome] = []
    for r in result:
        if type(r) is tuple:  # the common case, one check per task
            out.append(new(Outcome, r))
        else:
            out.extend(_outcomes(r))
    return out


class _Ipp(ClusterScheduler):
    """What both views share: the cluster, engine labels, running a map and collecting it."""

    options_spec = EXISTING_OPTIONS
    existing_keys = EXISTING_KEYS
    distributions = ("ipyparallel",)
    process_names = ("ipengine", "ipcontroller", "ipyparallel")
    # The launchers wait for their own processes: leave their zombies to them.
    reap_zombies = False
    #: Controller settings: only for a cluster this adapter starts.
    controller_keys: tuple[str, ...] = ()
    #: What a task's receive stamp marks (its message's arrival), for the run info.
    receive_stamps: str = ""
    #: Both views drive the same controller and engines: a sweep starts one cluster for both.
    cluster_family = "ipyparallel"

    @classmethod
    def cluster_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Controller settings at their defaults (None) are left out: ipp-direct has none,
        so a default ipp-lb and ipp-direct share one cluster."""
        out = super().cluster_options(options)
        return {k: v for k, v in out.items() if not (k in cls.controller_keys and v is None)}

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.conn: Path | None = None  # the cluster's ipcontroller-client.json
        self.cluster: ipp.Cluster | None = None
        self.client: ipp.Client | None = None
        self.engine_ids: list[int] = []
        self.engine_pids: dict[int, int] = {}
        self.task_scheme: str | None = None

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_options(raw)
        if out["connection_file"]:
            for key in ("profile", "profile_dir", "cluster_id"):
                if out[key]:
                    raise ParamError(key, "connection_file already names the cluster; give one "
                                          "or the other")
        if out["profile"] and out["profile_dir"]:
            raise ParamError("profile_dir", "give profile (a name) or profile_dir, not both")
        if cls.is_existing(out):
            for key in cls.controller_keys:
                if out[key] is not None:
                    raise ParamError(key, "is a controller setting; an existing cluster keeps "
                                          "its own. Drop it, or drop "
                                          f"{'/'.join(EXISTING_KEYS)} to start a local cluster")
        return out

    @staticmethod
    def is_existing(options: Mapping[str, Any]) -> bool:
        return any(options.get(k) for k in EXISTING_KEYS)

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        if not cls.is_existing(options):
            return
        client, conn = _connect(options, tempfile.gettempdir())
        try:
            n_engines = len(client.ids)
        finally:
            client.close(linger=0)
        _check_engines(conn, n_engines, n_workers)

    # -- lifecycle -------------------------------------------------------------------------
    def match_process(self, cmd: str) -> bool:
        """The controller, the engines and their nannies (``python -m ipyparallel.*``)."""
        return "ipyparallel" in cmd

    def _start_cluster(self) -> None:
        base = self.dir.make(self.workdir, self.name, prefix=f"research-{self.name}-")
        self._ipython_dir = str(base / "ipython")
        if self.existing:
            self.client, self.conn = _connect(self.options, self._ipython_dir)
            _check_engines(self.conn, len(self.client.ids), self.n_workers)
        else:
            self._start_local(base)
        assert self.client is not None and self.conn is not None
        self.engine_ids = sorted(self.client.ids)
        self.task_scheme = json.loads(self.conn.read_text()).get("task_scheme")
        self.warm(ENGINE_TIMEOUT_S)

    def _start_local(self, base: Path) -> None:
        import ipyparallel as ipp
        from traitlets.config import Config

        config = Config()
        # The controller and engines get their own IPYTHONDIR: nothing goes to the home dir.
        config.BaseLauncher.environment = {"IPYTHONDIR": self._ipython_dir}
        # A fresh profile per start: a killed controller leaves its connection files behind.
        profile_dir = Path(tempfile.mkdtemp(prefix="ipp-profile-", dir=base))
        self.cluster = ipp.Cluster(
            n=self.n_workers, profile_dir=str(profile_dir), cluster_id="research",
            controller_ip="127.0.0.1", controller_args=self.controller_args(), engines="local",
            delay=0, config=config, log_level=30,
        )
        self.cluster.start_cluster_sync()
        self._remember_procs()
        self.conn = profile_dir / "security" / "ipcontroller-research-client.json"
        self.client = self.cluster.connect_client_sync(ipython_dir=self._ipython_dir)
        self.client.wait_for_engines(self.n_workers, timeout=ENGINE_TIMEOUT_S)
        self._remember_procs()  # the engines' nanny processes exist now
        check_loopback(self.conn, [p.pid for p in self.procs.collect()])

    def controller_args(self) -> list[str]:
        """Command-line settings for the controller of a local cluster (none by default)."""
        return []

    def _remember_procs(self) -> None:
        """Note the controller and engine processes and their children, to wait for at exit."""
        cluster = self.cluster
        if cluster is None:
            return
        launchers = [cluster.controller] if cluster.controller else []
        for engine_set in cluster.engines.values():
            launchers.extend(getattr(engine_set, "launchers", {}).values())
        for launcher in launchers:
            proc = getattr(launcher, "process", None)
            if proc is not None:
                self.procs.add([proc], recursive=True)

    def _stop_cluster(self) -> None:
        try:
            if self.client is not None:
                self.client.close(linger=0)
            if self.cluster is not None:
                self._remember_procs()
                # Engines first: their nannies then reach the controller at once and exit,
                # instead of lingering 3 s trying to tell a controller that is already gone.
                try:
                    self.cluster.stop_engines_sync()
                finally:
                    self.cluster.stop_controller_sync()
        finally:
            self.cluster = self.client = None

    def warm(self, timeout_s: float = 60.0) -> None:
        """Label every engine ``engine-<id>`` (also importing the task code there)."""
        assert self.client is not None
        ars = {eid: self.client[eid].apply_async(set_worker_label, f"engine-{eid}")
               for eid in self.engine_ids}
        deadline = time.monotonic() + timeout_s
        try:
            self.engine_pids = {eid: ar.get(max(0.0, deadline - time.monotonic()))
                                for eid, ar in ars.items()}
        except Exception as exc:
            self.broken = True
            raise RuntimeError(f"{self.name}: engines did not answer the warm-up: "
                               f"{type(exc).__name__}: {exc}") from exc

    def info(self) -> dict[str, Any]:
        out = super().info()
        if self.existing:  # not ours: its memory is not measured here
            out["rss_mib"] = None
        out["connection_file"] = str(self.conn) if self.existing else None
        out["task_scheme"] = self.task_scheme
        return out

    # -- running ---------------------------------------------------------------------------
    @abstractmethod
    def _send(self, tasks: list[Task]) -> tuple[Any, list[list[int]]]:
        """Start the map: its AsyncMapResult, and the task ids each of its messages carries."""

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        """Send the map (or, with arrivals, one message per task as each is due), wait for
        every message, and stamp each task with its message's arrival.

        The stamps are ipyparallel's own: the client's I/O thread records when each reply
        arrived (``metadata["received"]``), whoever waits for it. A done-callback per message
        (``AsyncResult.split()`` builds a result object and futures for each) cost about
        0.9 ms per message here, 18% of a no-op's time through ``ipp-lb``."""
        if not tasks:
            return RunOutput([], {}, {})
        deadline = time.monotonic() + timeout_s
        submit: dict[int, int]
        blocks: list[list[int]]
        parts: list[Any]
        if self.arrivals:
            # Tasks arriving over time: one apply_async per task as each is due (the same
            # messages as a map of chunksize 1).
            submit, ar, blocks, parts = {}, None, [], []
            view = self.client.load_balanced_view()  # type: ignore[union-attr]
            for task in paced(tasks, self.arrivals, submit, deadline):
                parts.append(view.apply_async(execute_packed, tuple(task)))
                blocks.append([task.task_id])
            metadata = [p.metadata for p in parts]
            msg_ids = [p.msg_ids[0] for p in parts]
            all_in = all(p.wait(max(0.0, deadline - time.monotonic())) for p in parts)
            all_in = all_in and len(parts) == len(tasks)
        else:
            submit = stamp_all(tasks, time.time_ns())
            ar, blocks = self._send(list(tasks))
            metadata, msg_ids = ar.metadata, ar.msg_ids
            all_in = ar.wait(timeout_s)
        outcomes: list[Outcome] = []
        receive: dict[int, int] = {}
        failed: list[str] = []
        arrived = 0
        if ar is not None and all_in and ar.successful():
            # Every message came back whole: one get for all (the map's own join).
            outcomes = _outcomes(ar.get(0))
            stamps = [utc_ns(md["received"]) for md in metadata]
            arrived = len(stamps)
        else:  # a message failed, or the deadline passed: message by message
            if ar is not None:
                parts = list(ar.split())
            for part in parts:
                if not part.ready():
                    continue
                arrived += 1
                exc = part.exception() if hasattr(part, "exception") else None
                if exc is not None:  # the message failed as a whole: its engine died, or aborted
                    failed.append(_describe(exc))
                    continue
                got = _outcomes(part.get(0))
                outcomes.extend(got)
            stamps = [utc_ns(md.get("received")) for md in metadata]
        # Each task gets its message's arrival (a map block's tasks arrive together); a reply
        # without one (never seen here) gets the moment it was read.
        where = {tid: i for i, ids in enumerate(blocks) for tid in ids}
        now = time.time_ns()
        for o in outcomes:
            stamp = stamps[where[o.task_id]]
            receive[o.task_id] = now if stamp is None else stamp
        problems = []
        n_messages = len(tasks) if ar is None else len(msg_ids)
        if arrived < n_messages:
            self._abort([m for m, md in zip(msg_ids, metadata, strict=True)
                         if md.get("received") is None])
            problems.append(timeout_error(timeout_s))
        if failed:
            problems.append(f"{len(failed)} message(s) failed: {failed[0]}")
        error = "; ".join(problems) or None
        if error:
            self.broken = True  # a dead engine, or one still busy with an abandoned task
        native = None
        if self.collect_native:  # a table per trial, built after its last result
            native = self._native(metadata, blocks)
        info = {"messages": len(msg_ids), "receive_stamps": self.receive_stamps}
        return RunOutput(outcomes, submit, receive, error=error, native=native, info=info)

    def _abort(self, msg_ids: list[str]) -> None:
        """Drop the messages not yet started; interrupt the engines running ours (an engine
        ignores SIGINT while idle). Neither waits long: an engine may be dead."""
        assert self.client is not None
        with contextlib.suppress(Exception):
            self.client.abort(msg_ids, targets=self.engine_ids, block=False).result(2)
        with contextlib.suppress(Exception):
            self.client.send_signal("SIGINT", targets=self.engine_ids,
                                    block=False).result(2)

    @staticmethod
    def _native(metadata: Any, blocks: list[list[int]]) -> pd.DataFrame:
        rows = []
        for md, ids in zip(metadata, blocks, strict=True):
            eid = md.get("engine_id")
            rows.append({
                "task_id": ids[0] if len(ids) == 1 else None,
                "task_ids": list(ids),
                "worker": None if eid is None else f"engine-{eid}",
                "start_ns": utc_ns(md.get("started")),
                "end_ns": utc_ns(md.get("completed")),
                "submitted_ns": utc_ns(md.get("submitted")),
                "received_ns": utc_ns(md.get("received")),
                "engine_id": eid,
                "msg_id": md.get("msg_id"),
                "status": md.get("status"),
                "source": "ipp.metadata",
            })
        df = pd.DataFrame(rows)
        for col in ("task_id", "start_ns", "end_ns", "submitted_ns", "received_ns", "engine_id"):
            df[col] = df[col].astype("Int64")
        return df


def blocks_of(items: list[Any], n_parts: int) -> list[list[Any]]:
    """The non-empty contiguous parts ipyparallel's map sends, one message each, in order
    (its own partition: the first ``len % n_parts`` parts get one extra)."""
    from ipyparallel.client.map import Map

    parts = (Map().getPartition(items, p, n_parts) for p in range(n_parts))
    return [list(p) for p in parts if len(p)]


class IppDirect(_Ipp):
    """``DirectView.map`` over all engines: one contiguous block per engine, engine 0 first."""

    name = "ipp-direct"
    description = "ipyparallel DirectView.map (one contiguous block per engine)"
    receive_stamps = "per engine block"

    def _send(self, tasks: list[Task]) -> tuple[Any, list[list[int]]]:
        assert self.client is not None
        view = self.client.direct_view(self.engine_ids)
        blocks = blocks_of([t.task_id for t in tasks], len(self.engine_ids))
        # The blocks the view would cut, cut here (its own partition) and mapped one per
        # engine, as plain tuples run by one call per block and answered as arrays
        # (research.tasks.execute_packed_block): the same messages to the same engines,
        # without a Python call per record each way.
        packed = blocks_of(pack(tasks), len(self.engine_ids))
        return view.map_async(execute_packed_block, packed), blocks

    def bare_noop(self, n_tasks: int) -> None:
        assert self.client is not None
        self.client.direct_view(self.engine_ids).map_sync(noop, range(n_tasks))


class IppLoadBalanced(_Ipp):
    """``LoadBalancedView.map``: chunks of ``chunksize`` tasks, each to the engine the
    controller's task scheduler picks (``scheme``), at most ``hwm`` outstanding per engine."""

    name = "ipp-lb"
    description = "ipyparallel LoadBalancedView.map (chunksize 1: one message per task)"
    options_spec = {
        "chunksize": Param("int>0", 1, help="tasks per message"),
        "scheme": Param("str", None, SCHEMES,
                        help="task scheduler scheme (local cluster only); default: the "
                             "library's (leastload)"),
        "hwm": Param("int>=0", None, help="outstanding tasks per engine, 0 = no limit (local "
                                          "cluster only); default: the library's (1)"),
        **EXISTING_OPTIONS,
    }
    controller_keys = ("scheme", "hwm")
    receive_stamps = "per message"
    run_options = frozenset({"chunksize"})  # a map argument: no new cluster needed
    supports_arrivals = True  # tasks arriving over time: one apply_async each (run)

    @classmethod
    def workload_refusal(cls, params: Mapping[str, Any],
                         options: Mapping[str, Any]) -> tuple[str, str] | None:
        if params.get("arrival", "batch") != "batch" and (options.get("chunksize") or 1) > 1:
            return ("arrival", "tasks arriving over time go one message each; chunksize "
                               f"{options['chunksize']} needs the list up front (use 1)")
        return super().workload_refusal(params, options)

    def bare_noop(self, n_tasks: int) -> None:
        assert self.client is not None
        self.client.load_balanced_view().map_sync(noop, range(n_tasks),
                                                  chunksize=self.options["chunksize"])

    def controller_args(self) -> list[str]:
        traits = {"scheme": "scheme_name", "hwm": "hwm"}
        return [f"--TaskScheduler.{trait}={self.options[key]}" for key, trait in traits.items()
                if self.options[key] is not None]

    def _send(self, tasks: list[Task]) -> tuple[Any, list[list[int]]]:
        assert self.client is not None
        chunksize = self.options["chunksize"]
        blocks = blocks_of([t.task_id for t in tasks], -(-len(tasks) // chunksize))
        # Plain tuples on the wire (research.tasks.pack): a record class costs a lookup and a
        # Python call per pickle, each way.
        ar = self.client.load_balanced_view().map_async(execute_packed, pack(tasks),
                                                        chunksize=chunksize)
        return ar, blocks
