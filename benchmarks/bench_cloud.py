"""Object storage and a cluster with no shared disk: prepare and predict from and to a local S3
server against the same runs on local disk, and on workers that see no disk of the client's.

A real S3-compatible server (moto's server mode) runs on 127.0.0.1 behind a small counting
proxy, so every request the toolkit's readers and writers make (GDAL's range reads, s3fs,
Icechunk) is counted with its bytes. Cases, each in its own process (peak RSS its own):

- ``prepare_disk`` / ``prepare_s3``: the scene's GeoTIFFs to a cube, on disk / from S3 to an
  Icechunk cube on S3 (threads). Reported: throughput ratio S3 / disk, GET requests and bytes
  read per byte of input, bytes written, peak RSS.
- ``predict_disk`` / ``predict_s3``: the cube and a U-Net (untrained: throughput needs none) to a
  prediction store, on disk / on S3.
- ``cluster_threads`` / ``cluster_private``: prepare and predict from and to S3 on the threaded
  scheduler / on a scheduler and two workers in mount namespaces of their own (a private tmpfs
  over the benchmark's folder: they see no file of the client's). Products compared for equality.

    python benchmarks/bench_cloud.py [--size 2000]
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, random_checkpoint, save, scene

from kerinci_xr.testing import dask_processes, private_namespaces

BUCKET = "kx-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Counting(http.server.BaseHTTPRequestHandler):
    """Forward every request to the S3 server; count requests and bytes by method."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    counts: dict[str, list[int]]
    lock = threading.Lock()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(*self.upstream, timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = f"{self.upstream[0]}:{self.upstream[1]}"
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        with self.lock:
            c = self.counts.setdefault(self.command, [0, 0, 0])
            c[0] += 1
            c[1] += len(data)
            c[2] += length
        self.send_response(resp.status, resp.reason)
        head = self.command == "HEAD"  # (a HEAD answers the object's length, with no body)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection") and (
                head or k.lower() != "content-length"
            ):
                self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args) -> None:
        pass


class S3:
    """moto's S3 server on one port, the counting proxy on another (what the toolkit is given)."""

    def __enter__(self) -> S3:
        moto_port, self.port = _free_port(), _free_port()
        self.log = open(WORK / "moto.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _Counting.upstream, _Counting.counts = ("127.0.0.1", moto_port), {}
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _Counting)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        while True:  # until the S3 server accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", moto_port)) == 0:
                    break
            if self.proc.poll() is not None:
                raise SystemExit("the S3 server did not start")
            time.sleep(0.05)
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"])
        self.client.create_bucket(Bucket=BUCKET)
        return self

    def counts(self) -> dict[str, list[int]]:
        with _Counting.lock:
            return {k: list(v) for k, v in _Counting.counts.items()}

    def reset(self) -> None:
        with _Counting.lock:
            _Counting.counts.clear()

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def _child(case: str, size: int, env: dict, *extra: str) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--child", "--case", case, "--size", str(size), *extra],
        capture_output=True,
        text=True,
        env=os.environ | env,
    )
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"benchmark child failed: {case}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def child(case: str, size: int, scheduler: str | None) -> None:
    from kerinci_xr import api

    folder = scene(size)
    local = WORK / f"cloud_{size}"
    s3 = f"s3://{BUCKET}/{size}"
    src = {"disk": str(folder), "s3": f"{s3}/scene"}
    where = "s3" if case.endswith(("s3", "plain", "threads", "private")) else "disk"
    out = f"{s3}/{case}" if where == "s3" else str(local / case)
    inputs = src["s3" if where == "s3" else "disk"]
    t0 = time.perf_counter()
    extra = {"scheduler": scheduler} if scheduler else {}
    if case == "prepare_s3_plain":  # the alternative to Icechunk: plain Zarr through fsspec, no set
        from kerinci_xr.cube import _encoding, _georeferenced, build_cube
        from kerinci_xr.legend import read_legend

        ds = _georeferenced(
            build_cube(
                f"{inputs}/Landsat_Kerinci_2023_v1.tif",
                f"{inputs}/LC_Image_v1.tif",
                legend=read_legend(f"{inputs}/lc.json"),
                chunks=1024,
            )
        )
        ds.to_zarr(
            f"{out}/cube.zarr",
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=_encoding(ds, 3, 3),
            storage_options={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
        )
    elif case.startswith(("prepare", "cluster")):
        api.prepare(
            f"{inputs}/Landsat_Kerinci_2023_v1.tif",
            labels=f"{inputs}/LC_Image_v1.tif",
            legend=f"{inputs}/lc.json",
            chunk=1024,
            out=f"{out}/cube.zarr",
            overwrite=True,
            **extra,
        )
    t1 = time.perf_counter()
    if case.startswith(("predict", "cluster")):
        cube = (
            f"{out}/cube.zarr"
            if case.startswith("cluster")
            else (
                f"{s3}/prepare_s3/cube.zarr" if where == "s3" else str(local / "prepare_disk" / "cube.zarr")
            )
        )
        model = f"{s3}/model.pt" if where == "s3" else str(local / "model.pt")
        api.predict(cube, model=model, out=f"{out}/prediction.zarr", overwrite=True, **extra)
    t2 = time.perf_counter()
    secs = {"prepare": t1 - t0, "predict": t2 - t1}
    total = (t2 - t0) if case.startswith("cluster") else secs[case.split("_")[0]]
    print(
        json.dumps(
            {
                "case": case,
                "size": size,
                "seconds": round(total, 2),
                "mpix_per_s": round(size * size / total / 1e6, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


def _equal(a: str, b: str) -> bool:
    import numpy as np

    from kerinci_xr.prediction import open_prediction

    x, y = open_prediction(a), open_prediction(b)
    return all(np.array_equal(x[v].values, y[v].values) for v in y.data_vars)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="prepare_disk")
    ap.add_argument("--size", type=int, default=2000, help="edge of the scene (default 2000)")
    ap.add_argument("--scheduler", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--base", type=int, default=16)
    args = ap.parse_args()
    if args.child:
        child(args.case, args.size, args.scheduler)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    size = args.size
    folder = scene(size)
    local = WORK / f"cloud_{size}"
    shutil.rmtree(local, ignore_errors=True)
    for case in ("prepare_disk", "predict_disk"):
        (local / case).mkdir(parents=True)
    input_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.name != "lc.json")
    rows, traffic = [], {}
    with S3() as s3:
        for p in folder.iterdir():
            s3.client.upload_file(str(p), BUCKET, f"{size}/scene/{p.name}")
        for case in ("prepare_disk", "prepare_s3", "prepare_s3_plain"):
            s3.reset()
            rows.append(_child(case, size, s3.env))
            traffic[case] = s3.counts()
        random_checkpoint(
            local / "prepare_disk" / "cube.zarr", local / "model.pt", depth=args.depth, base=args.base
        )
        s3.client.upload_file(str(local / "model.pt"), BUCKET, f"{size}/model.pt")
        for case in ("predict_disk", "predict_s3"):
            s3.reset()
            rows.append(_child(case, size, s3.env))
            traffic[case] = s3.counts()
        s3.reset()
        rows.append(_child("cluster_threads", size, s3.env))
        traffic["cluster_threads"] = s3.counts()
        why = private_namespaces(WORK)
        equal = None
        if why is None:
            root = Path(tempfile.mkdtemp(prefix="kx-bench-cluster-"))  # workers see none of WORK
            try:
                with dask_processes(root, hide=WORK, memory_limit="6GiB") as address:
                    s3.reset()
                    rows.append(_child("cluster_private", size, s3.env, "--scheduler", address))
                    traffic["cluster_private"] = s3.counts()
            finally:
                shutil.rmtree(root, ignore_errors=True)
            equal = _equal(
                f"s3://{BUCKET}/{size}/cluster_private/prediction.zarr",
                f"s3://{BUCKET}/{size}/cluster_threads/prediction.zarr",
            )
        else:
            print(f"no private mount namespaces here ({why}): the private cluster is skipped")
    by = {r["case"]: r for r in rows}
    for r in rows:
        t = traffic.get(r["case"], {})
        get = t.get("GET", [0, 0, 0])
        put = t.get("PUT", [0, 0, 0])
        r |= {"get_requests": get[0], "get_bytes": get[1], "put_requests": put[0], "put_bytes": put[2]}
        print(
            f"{r['case']:>16} {r['size']:>6}^2  {r['seconds']:>7.1f} s  {r['mpix_per_s']:>6.3f} Mpix/s  "
            f"peak RSS {r['peak_rss_mb']:>7.1f} MiB  GET {get[0]:>5} ({get[1] / 2**20:7.1f} MiB)  "
            f"PUT {put[0]:>4} ({put[2] / 2**20:7.1f} MiB)"
        )
    ratios = {
        "prepare_s3_vs_disk": round(by["prepare_s3"]["mpix_per_s"] / by["prepare_disk"]["mpix_per_s"], 3),
        "predict_s3_vs_disk": round(by["predict_s3"]["mpix_per_s"] / by["predict_disk"]["mpix_per_s"], 3),
        "prepare_icechunk_vs_plain_zarr": round(
            by["prepare_s3"]["mpix_per_s"] / by["prepare_s3_plain"]["mpix_per_s"], 3
        ),
        "prepare_s3_get_bytes_per_input_byte": round(by["prepare_s3"]["get_bytes"] / input_bytes, 3),
        "prepare_s3_get_requests": by["prepare_s3"]["get_requests"],
        "prepare_s3_rss_vs_disk": round(
            by["prepare_s3"]["peak_rss_mb"] / by["prepare_disk"]["peak_rss_mb"], 3
        ),
        "predict_s3_rss_vs_disk": round(
            by["predict_s3"]["peak_rss_mb"] / by["predict_disk"]["peak_rss_mb"], 3
        ),
    }
    if "cluster_private" in by:
        ratios["cluster_private_vs_threads"] = round(
            by["cluster_private"]["mpix_per_s"] / by["cluster_threads"]["mpix_per_s"], 3
        )
        ratios["cluster_private_equals_threads"] = equal
    for k, v in ratios.items():
        print(f"{k:>40}: {v}")
    save("bench_cloud", {"size": size, "input_bytes": input_bytes, "rows": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
