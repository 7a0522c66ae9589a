"""Object-storage outages and storage errors (issue #15, defect 7), against moto over HTTP.

The store is moto's server behind a small TCP proxy that the tests cut (connections refused,
live ones dropped) and restore. Retries run on a virtual clock: ``brainomni.io.retry``'
``_now``/``_sleep`` are replaced so that a retry sleep advances virtual time instantly and
the proxy comes back once the virtual outage is over. The tests therefore run the real
retry logic with the *default* 180-s window and the real outage lengths (40 s, 10 min) in
a few seconds of wall time, and nothing depends on how fast the machine is. botocore's own
retries are switched off (``AWS_MAX_ATTEMPTS=1``, standard AWS configuration) so that every
wait is one of ours.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brainomni.ingest import IngestJob, SerialExecutor, read_ledger, run_job
from brainomni.io import retry as retry_module
from brainomni.io.retry import (
    DEFAULT_RETRY_S,
    EXIT_STORAGE_REFUSED,
    EXIT_STORAGE_UNREACHABLE,
    RETRY_ENV,
    RetryPolicy,
    StorageUnavailable,
    retry,
)
from tests.conftest import ROOT

# --------------------------------------------------------------------------- helpers


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target``; :meth:`cut` closes the listening
    socket and every open connection (clients see connection refused/reset), :meth:`restore`
    listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def restore(self) -> None:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        lst.settimeout(0.05)
        self.port = lst.getsockname()[1]
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def cut(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            lst.close()
        with self._lock:
            conns, self._open = list(self._open), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, lst: socket.socket) -> None:
        while self._listener is lst:
            try:
                client, _ = lst.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class VirtualClock:
    """Time that moves only when the retry loop sleeps; runs callbacks when it passes them."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.slept = 0.0
        self._at: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds
        self.slept += seconds
        due = [cb for when, cb in self._at if when <= self.t]
        self._at = [(when, cb) for when, cb in self._at if when > self.t]
        for cb in due:
            cb()

    def at(self, when: float, cb: Callable[[], None]) -> None:
        self._at.append((when, cb))


@pytest.fixture
def proxy(s3_server) -> Iterator[CuttableProxy]:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    p = CuttableProxy((host, int(port)))
    try:
        yield p
    finally:
        p.cut()


@pytest.fixture
def vclock(monkeypatch) -> VirtualClock:
    clock = VirtualClock()
    monkeypatch.setattr(retry_module, "_now", clock.now)
    monkeypatch.setattr(retry_module, "_sleep", clock.sleep)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore: no hidden retries of its own
    monkeypatch.delenv(RETRY_ENV, raising=False)  # the default window
    return clock


def _outage_executor(proxy: CuttableProxy, clock: VirtualClock, outage_s: float):
    class OutageExecutor(SerialExecutor):
        """Cuts the store when the first recording starts; restores it ``outage_s`` later."""

        def run(self, stage, work, on_result):
            proxy.cut()
            clock.at(clock.t + outage_s, proxy.restore)
            super().run(stage, work, on_result)

    return OutageExecutor


def _upload_tuh(s3_server, corpus, proxy, monkeypatch) -> tuple[str, str]:
    """The TUH corpus in a fresh bucket; all S3 traffic of the job goes through the proxy."""
    bucket = s3_server.make_bucket("outage")
    src = s3_server.upload_dir(corpus.root, f"{bucket}/tuh")
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    return src, f"{bucket}/out"


def _pipeline(name: str):
    spec = importlib.util.spec_from_file_location(f"h6_{name}", ROOT / "pipelines" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- the retry window


def test_retry_window_covers_an_outage_shorter_than_it_and_fails_after_it(vclock):
    """The window starts at the first failure, sleeps never pass its end, the last try is at
    its end; defaults: 180 s (>= 2 min), from ``BRAINOMNI_STORAGE_RETRY_S`` when set."""
    assert RetryPolicy().total_s == DEFAULT_RETRY_S >= 120

    def down_until(t_end: float):
        def call():
            if vclock.t < t_end:
                raise ConnectionRefusedError("connect call failed")
            return "ok"

        return call

    start = vclock.t
    assert retry(down_until(start + 40.0)) == "ok"  # before the old policy's 5 tries / ~4 s
    assert 40.0 <= vclock.t - start <= DEFAULT_RETRY_S
    start = vclock.t
    with pytest.raises(StorageUnavailable) as info:
        retry(down_until(start + 600.0))
    assert vclock.t - start == pytest.approx(DEFAULT_RETRY_S)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert RETRY_ENV in str(info.value)


def test_nested_retries_share_one_window(vclock):
    calls = []

    def inner():
        calls.append(vclock.t)
        raise ConnectionResetError("reset")

    start = vclock.t
    with pytest.raises(StorageUnavailable):
        retry(lambda: retry(inner, what="inner"), what="outer")
    assert vclock.t - start == pytest.approx(DEFAULT_RETRY_S)  # not two windows


def test_window_from_environment_and_its_validation(monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "7.5")
    assert RetryPolicy().total_s == 7.5
    monkeypatch.setenv(RETRY_ENV, "soon")
    with pytest.raises(ValueError, match=RETRY_ENV):
        RetryPolicy()


def test_refusals_are_not_retried():
    from botocore.exceptions import ClientError, NoCredentialsError

    def client_error(code: str, status: int) -> Exception:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
        )

    for exc in (
        client_error("InvalidAccessKeyId", 403),
        client_error("ExpiredToken", 400),
        client_error("SignatureDoesNotMatch", 403),
        NoCredentialsError(),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ):
        assert retry_module.is_refused(exc) and not retry_module.is_transient(exc), exc
    wrapped = ConnectionError("wrapper")
    wrapped.__cause__ = client_error("AccessDenied", 403)
    assert not retry_module.is_transient(wrapped)  # a refusal inside a transient-looking error
    for exc in (client_error("SlowDown", 503), client_error("InternalError", 500)):
        assert retry_module.is_transient(exc) and not retry_module.is_refused(exc)


# --------------------------------------------------------------------------- outages during an ingest


def test_ingest_survives_a_40_second_outage(
    s3_server, tuh_v1_corpus, proxy, vclock, monkeypatch, tmp_path
):
    """40 s of refused connections (source and destination on the same store) while the
    first recording starts: the default 180-s window covers it and every recording ends ok.
    Before: 5 tries with sleeps of at most ~4 s in all, then the job aborted."""
    src, dest = _upload_tuh(s3_server, tuh_v1_corpus, proxy, monkeypatch)
    n = 1  # one recording is enough (its store check, staging and writes all retry)
    job = IngestJob(sources=(tuh_v1_corpus.source(src),), dest=dest, limit=n, progress_every_s=0)
    summary = run_job(job, _outage_executor(proxy, vclock, 40.0)())
    assert proxy.is_up and vclock.slept >= 40.0  # the outage happened and was waited out
    assert summary["by_outcome"] == {"ok": n}
    rows = read_ledger(dest)
    assert [r.outcome for r in rows] == ["ok"] * n and all(r.store for r in rows)


def _expected_failures(n_tasks: int, window: float, outage: float) -> int:
    """Serial tasks, each first checking its store: a task whose window ends inside the
    outage fails, then its ledger write waits (a window, or until the outage ends)."""
    t, failed = 0.0, 0
    for _ in range(n_tasks):
        if t + window < outage:
            failed += 1
            t += window  # the check gave up
            t = min(t + window, max(t, outage))  # the ledger part: written or given up
        else:
            t = max(t, outage)
    return failed


def test_ingest_10_minute_outage_gives_failed_rows_and_a_clean_exit(
    s3_server, tuh_v1_corpus, proxy, vclock, monkeypatch, capsys
):
    """A 10-minute outage outlasts the 180-s window: the recordings it hits are failed rows
    (error class StorageUnavailable, also the first one whose ledger part could not be
    written: the job keeps it and compacts it in), the job exits 0 with a summary that says
    so (failed rows are redone by the next run). Before: an exception aborted the job, no
    rows."""
    src, dest = _upload_tuh(s3_server, tuh_v1_corpus, proxy, monkeypatch)
    mod = _pipeline("ingest")
    import brainomni.ingest

    # brainomni ingest (which the pipeline runs) takes its executor from brainomni.ingest
    monkeypatch.setattr(brainomni.ingest, "SerialExecutor", _outage_executor(proxy, vclock, 600.0))
    args = [
        "--source",
        f"{src} kind=tuh name={tuh_v1_corpus.name} version={tuh_v1_corpus.version}",
        "--dest",
        dest,
        "--executor",
        "serial",
        "--progress-every",
        "0",
    ]
    assert mod.main(args) == 0
    out = capsys.readouterr().out
    n = len(tuh_v1_corpus.recordings)
    failed = _expected_failures(n, DEFAULT_RETRY_S, 600.0)
    assert 0 < failed < n  # the timeline exercises both cases
    rows = read_ledger(dest)
    assert len(rows) == n
    bad = [r for r in rows if r.outcome == "failed"]
    assert len(bad) == failed and {r.error_class for r in bad} == {"StorageUnavailable"}
    assert all(r.reason.startswith(r.uri) and "unavailable for 180 s" in r.reason for r in bad)
    assert "failed: StorageUnavailable" in out and "rerun the same command" in out
    assert {r.outcome for r in rows} - {"failed"} == {"ok"}


# --------------------------------------------------------------------------- one line per tool


@pytest.fixture
def dead_endpoint(monkeypatch, s3_server) -> str:
    """An endpoint nothing listens on; no retry window, no botocore retries (fast)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv(RETRY_ENV, "0")
    return url


def _one_line(err: str, endpoint: str) -> str:
    lines = [x for x in err.splitlines() if x.strip() and " WARNING " not in x]
    assert len(lines) == 1, err
    assert "Traceback" not in err and endpoint in lines[0] and "Fix" in lines[0]
    return lines[0]


def test_inspect_json_prints_json_when_the_endpoint_is_wrong(dead_endpoint, capsys):
    from brainomni.cli import main

    rc = main(["inspect", "s3://bucket/rec.edf", "--json", "--endpoint-url", dead_endpoint])
    cap = capsys.readouterr()
    assert rc == EXIT_STORAGE_UNREACHABLE
    d = json.loads(cap.out)
    assert d["outcome"] == "error" and d["error"]["kind"] == "storage"
    assert dead_endpoint in d["error"]["message"]
    _one_line(cap.err, dead_endpoint)


def test_missing_credentials_are_one_line_with_exit_4(dead_endpoint, monkeypatch, capsys):
    from brainomni.cli import main

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    rc = main(["inspect", "s3://bucket/rec.edf", "--storage-retry-s", "0"])
    line = _one_line(capsys.readouterr().err, dead_endpoint)
    assert rc == EXIT_STORAGE_REFUSED and "AWS_ACCESS_KEY_ID" in line
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        (
            "ingest",
            ["--source", "s3://bucket/tuh kind=tuh name=t version=1", "--executor", "serial"],
        ),
        (
            "pack",
            ["--source", "s3://bucket/corpus", "--profile", "tokenizer-10s", "--executor", "local"],
        ),
    ],
)
def test_pipelines_wrong_endpoint_is_one_line(dead_endpoint, tool, argv, tmp_path, capsys):
    rc = _pipeline(tool).main([*argv, "--dest", str(tmp_path / "out")])
    assert rc == EXIT_STORAGE_UNREACHABLE
    _one_line(capsys.readouterr().err, dead_endpoint)


def _manifest(tmp_path: Path, shards_root: str, shard: bytes) -> Path:
    import hashlib

    from brainomni.formats.manifest import MANIFEST_FORMAT, content_hash

    m = {
        "format": MANIFEST_FORMAT,
        "shards_root": shards_root,
        "shards": [
            {
                "path": "train/shard-000000.tar",
                "sha256": hashlib.sha256(shard).hexdigest(),
                "bytes": len(shard),
                "samples": 1,
                "split": "train",
            }
        ],
    }
    m["content_hash"] = content_hash(m)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(m))
    return path


def test_verify_tells_unreachable_storage_from_a_corrupt_shard(
    s3_server, monkeypatch, tmp_path, capsys
):
    """Same manifest, same (damaged) shard: exit 1 when the store answers (the shard is
    corrupt), exit 3 when it cannot be reached (nothing is said about the shard)."""
    publish = _pipeline("publish")
    bucket = s3_server.make_bucket("verify")
    s3_server.put_bytes(f"{bucket}/train/shard-000000.tar", b"not a tar archive" * 40)
    path = _manifest(tmp_path, bucket, b"the bytes the manifest expects")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv(RETRY_ENV, str(DEFAULT_RETRY_S))  # restored after --storage-retry-s
    assert publish.main(["verify", str(path)]) == 1
    assert "FAIL train/shard-000000.tar" in capsys.readouterr().out

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    assert publish.main(["--storage-retry-s", "0", "verify", str(path)]) == EXIT_STORAGE_UNREACHABLE
    out = capsys.readouterr().out
    assert "STORAGE train/shard-000000.tar" in out and dead in out and "FAIL" not in out
