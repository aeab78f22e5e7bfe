"""Tiled encoding on large planes: per-tile overhead, opening a cached plane, peak memory.

Three measurements with a seeded random-weight ``sam2.1_hiera_tiny`` (weights do not change
speed), fp32, ``torch.inference_mode``, ``--threads`` CPU threads:

1. ``overhead``: a 2560 x 2560 uint16 plane (3 x 3 tiles of 1024, overlap 256) encoded by
   :meth:`ImagePredictor.encode_all` with an in-memory cache and with a disk cache, against the
   same tiles encoded by hand (read region, ``apply_window``, ``to_model_input``,
   ``model.encode_image``). The approaches alternate tile by tile: ``encode_all`` drives, and its
   ``progress`` callback encodes the same tile with the two other approaches (order alternating)
   before the next tile starts, so machine load hits all three alike. Which tiled variant drives
   alternates by repetition (the other one calls ``features(tile)``, the body of ``encode_all``'s
   loop). Every repetition uses fresh predictors, caches and disk folders. The ratio is the
   median over tiles of tiled / hand for the same tile.
2. ``open``: an 8192 x 8192 uint16 zarr plane (chunks 1024) whose disk cache already holds the
   tiles a click needs (one ``predict`` by another predictor first). A fresh child process then
   times ``open_image`` + ``set_image`` (window from a data sample) + the first ``predict``, for a
   click held to 1 tile (a small object) and to 4 tiles (the disc) (``--open-tiles``), and then a
   second ``predict`` (features in memory: decoding alone). Children alternate between the two.
3. ``memory``: a 16384 x 16384 uint16 zarr plane (512 MiB, chunks 1024), dim noise with a bright
   disc of radius 700 across a tile corner. A fresh child opens it, sets it, clicks the disc and
   reports peak RSS (``ru_maxrss``) and the tiles encoded; then encodes the first tile row with
   the default 2 GiB cache (``--cache-mib`` to see evictions) and reports RSS again.

With random weights every mask fills its whole tile, so growth would run to ``max_tiles`` (64
tiles, minutes of encoding). Parts 2 and 3 therefore cap a prompt's tiles (part 3:
``--max-tiles``, default 4, the tiles the disc spans); the encoded tiles then follow the
predictor's growth order, not the disc.
All sizes scale with the model input S (``--quick``: S = 256, so planes are 640, 2048, 4096).

Usage::

    .venv/bin/python benchmarks/bench_tiling.py               # ~7 min on 2 shared CPU cores
    .venv/bin/python benchmarks/bench_tiling.py --quick       # smoke run at S = 256, ~1 min
    .venv/bin/python benchmarks/bench_tiling.py --parts overhead --repeats 3 --json out.json
    .venv/bin/python benchmarks/bench_tiling.py --parts memory --cache-mib 256   # LRU evictions
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import zarr

from napari_sam2.engine import (
    CacheKey,
    EmbeddingCache,
    ImagePredictor,
    IntensityWindow,
    Prompt,
    apply_window,
    open_image,
    to_model_input,
)
from napari_sam2.engine.tiling import Tile, tile_starts
from napari_sam2.model import VARIANTS, Sam2Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_result_child

VARIANT = "sam2.1_hiera_tiny"
SEED = 0
PARTS = ("overhead", "open", "memory")
OVERHEAD_TARGET = 1.10
OPEN_TARGET_S = 1.0
RSS_TARGET_BYTES = 4e9
DIM, BRIGHT = (900, 1100), 20000
"""Background noise range and disc value (uint16 counts)."""


# ---------------------------------------------------------------------------- setup helpers
@dataclass(frozen=True)
class Geometry:
    """Plane sizes for model input S: the sizes named in the docstring times S / 1024."""

    image_size: int
    overhead_hw: int
    open_hw: int
    memory_hw: int
    chunk: int
    disc_radius: float

    @classmethod
    def for_size(cls, s: int) -> Geometry:
        f = s / 1024
        return cls(s, round(2560 * f), round(8192 * f), round(16384 * f), round(1024 * f), 700 * f)

    @property
    def overlap(self) -> int:
        return self.image_size // 4

    def disc_centre(self, plane_hw: int) -> float:
        """Middle of the overlap of tiles 1 and 2 along an axis: the disc spans 2 x 2 tiles."""
        starts = tile_starts(plane_hw, self.image_size, self.overlap)
        return (starts[2] + starts[1] + self.image_size) / 2


def synthetic_block(rows: slice, cols: slice, geom: Geometry, plane_hw: int, seed: int) -> np.ndarray:
    """Rows x cols of the test plane: uniform dim noise and one bright disc. (h, w) uint16."""
    rng = np.random.default_rng(seed)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    block = rng.integers(*DIM, size=(h, w), dtype=np.uint16)
    c, r = geom.disc_centre(plane_hw), geom.disc_radius
    yy = np.arange(rows.start, rows.stop)[:, None] - c
    xx = np.arange(cols.start, cols.stop)[None, :] - c
    block[yy**2 + xx**2 <= r * r] = BRIGHT
    return block


def write_plane(path: Path, plane_hw: int, geom: Geometry) -> float:
    """Write the test plane as a zarr v3 array, one chunk row at a time; returns seconds."""
    t0 = time.perf_counter()
    array = zarr.create_array(
        store=str(path), shape=(plane_hw, plane_hw), chunks=(geom.chunk, geom.chunk), dtype="uint16"
    )
    for i, r0 in enumerate(range(0, plane_hw, geom.chunk)):
        rows = slice(r0, min(r0 + geom.chunk, plane_hw))
        array[rows, :] = synthetic_block(rows, slice(0, plane_hw), geom, plane_hw, seed=SEED + i)
    return time.perf_counter() - t0


def build_model(image_size: int) -> Sam2Model:
    """The seeded random-weight model; equal weights (and cache keys) in every process."""
    torch.manual_seed(SEED)
    cfg = VARIANTS[VARIANT]
    if image_size != cfg.image_size:
        cfg = replace(cfg, name=f"{VARIANT}-{image_size}", image_size=image_size)
    return Sam2Model(cfg).eval()


def click_prompt(geom: Geometry, plane_hw: int) -> Prompt:
    c = geom.disc_centre(plane_hw)
    return Prompt(points=[[c, c]], labels=[1])


def proc_status_mib(field: str) -> float | None:
    """A /proc/self/status field (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_child(kind: str, spec: dict, threads: int) -> dict:
    """Run this script as a fresh process for ``kind`` ("open" or "rss"); returns its RESULT."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-spec", json.dumps(spec),
           "--threads", str(threads)]  # fmt: skip
    return run_result_child(cmd, f"{kind} child")


# ---------------------------------------------------------------------------- 1. encoding overhead
class HandEncoder:
    """The tiles encoded without the predictor: read, window, model input, encode (kept alive)."""

    def __init__(self, model: Sam2Model, plane: np.ndarray, window: IntensityWindow) -> None:
        self.model, self.plane, self.window = model, plane, window
        self.kept = []

    def __call__(self, tile: Tile) -> float:
        start = time.perf_counter()
        r0, c0, r1, c1 = tile.bounds()  # every tile lies inside this plane
        region = self.plane[r0:r1, c0:c1].copy()
        x = to_model_input(apply_window(region, self.window), self.model.config.image_size)  # (3, S, S)
        with torch.inference_mode():
            self.kept.append(self.model.encode_image(x[None]))
        return time.perf_counter() - start


def timed_features(predictor: ImagePredictor):
    def encode(tile: Tile) -> float:
        start = time.perf_counter()
        predictor.features(tile)
        return time.perf_counter() - start

    return encode


def bench_overhead(model: Sam2Model, geom: Geometry, args, tmp: Path) -> dict:
    hw = geom.overhead_hw
    plane = synthetic_block(slice(0, hw), slice(0, hw), geom, hw, seed=SEED)
    probe = ImagePredictor(model)
    probe.set_image(plane)
    window, tiles = probe.window, probe.grid.tiles
    dirs = iter(range(10**6))

    def fresh(kind: str) -> ImagePredictor:
        directory = tmp / f"cache-{kind}-{next(dirs)}" if kind == "disk" else None
        p = ImagePredictor(model, cache=EmbeddingCache(directory=directory))
        p.set_image(plane, window=window)
        return p

    print(f"[overhead] {hw} x {hw} plane, {len(tiles)} tiles; warm-up", flush=True)
    HandEncoder(model, plane, window)(tiles[0])
    timed_features(fresh("memory"))(tiles[0])
    timed_features(fresh("disk"))(tiles[0])

    times = {name: [] for name in ("hand", "memory", "disk")}  # per (repetition, tile), in order
    for rep in range(args.repeats):
        gc.collect()
        driver = "memory" if rep % 2 == 0 else "disk"
        other = "disk" if driver == "memory" else "memory"
        predictors = {"memory": fresh("memory"), "disk": fresh("disk")}
        others = {"hand": HandEncoder(model, plane, window), other: timed_features(predictors[other])}
        mark = [0.0]

        def progress(done: int, total: int, driver=driver, others=others, mark=mark) -> None:
            times[driver].append(time.perf_counter() - mark[0])
            order = list(others) if done % 2 else list(others)[::-1]
            for name in order:
                times[name].append(others[name](tiles[done - 1]))
            mark[0] = time.perf_counter()

        mark[0] = time.perf_counter()
        predictors[driver].encode_all(progress=progress)
        n = len(tiles)
        msg = "  ".join(f"{k} {statistics.median(v[-n:]):.3f}" for k, v in times.items())
        print(
            f"[overhead] rep {rep + 1}/{args.repeats} ({driver} drives encode_all), s/tile: {msg}", flush=True
        )
        del predictors, others

    result = {"plane_hw": hw, "tiles": len(tiles), "repeats": args.repeats, "times_s": times}
    for name in ("memory", "disk"):
        ratios = [a / b for a, b in zip(times[name], times["hand"])]
        result[f"{name}_ratio"] = statistics.median(ratios)
        result[f"{name}_ratio_range"] = (min(ratios), max(ratios))
        result[f"{name}_ratio_of_sums"] = sum(times[name]) / sum(times["hand"])
    for name, v in times.items():
        result[f"{name}_s_per_tile"] = statistics.median(v)
    result["components_s"] = components(model, plane, window, tiles[0], tmp)
    worst = max(result["memory_ratio"], result["disk_ratio"])
    if args.profile or (worst > OVERHEAD_TARGET and not args.quick):
        result["profile"] = profile_encode_all(fresh("disk"))
    return result


def components(model: Sam2Model, plane: np.ndarray, window: IntensityWindow, tile: Tile, tmp: Path) -> dict:
    """Median seconds of the non-encoding steps for one tile (cheap, so repeated)."""
    s = model.config.image_size
    r0, c0, r1, c1 = tile.bounds()
    with torch.inference_mode():
        feats = model.encode_image(to_model_input(apply_window(plane[r0:r1, c0:c1], window), s)[None])
    key = CacheKey("bench", (), tile.bounds(), "bench", window.as_tuple(), s)
    out = {"prepare": [], "memory_put": [], "disk_put": [], "disk_get": []}
    for i in range(5):
        t0 = time.perf_counter()
        to_model_input(apply_window(plane[r0:r1, c0:c1].copy(), window), s)
        t1 = time.perf_counter()
        EmbeddingCache().put(key, feats)
        t2 = time.perf_counter()
        directory = tmp / f"components-{i}"
        EmbeddingCache(directory=directory).put(key, feats)
        t3 = time.perf_counter()
        got = EmbeddingCache(directory=directory).get(key)  # a new cache object: read from disk
        t4 = time.perf_counter()
        if got is None:
            raise RuntimeError(f"the disk cache entry written to {directory} could not be read back")
        for name, t in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            out[name].append(t)
    return {name: statistics.median(v) for name, v in out.items()}


def profile_encode_all(predictor: ImagePredictor) -> dict:
    """cProfile one ``encode_all`` with a disk cache: where the time outside the encoder goes."""
    print("[overhead] profiling encode_all with a disk cache", flush=True)
    prof = cProfile.Profile()
    prof.runcall(predictor.encode_all)
    st = pstats.Stats(prof)
    wanted = {
        "encode_all": "encode_all", "backend.encode": "encode", "cache.put": "put",
        "cache.get": "get", "_write_disk": "_write_disk", "_tile_input": "_tile_input",
        "_sha256": "_sha256",
    }  # fmt: skip
    cumulative = dict.fromkeys(wanted, 0.0)
    for (filename, _, func), (_, _, _, ct, _) in st.stats.items():
        if "napari_sam2" not in filename:
            continue
        for label, name in wanted.items():
            if func == name and (label != "backend.encode" or filename.endswith("predictor.py")):
                cumulative[label] += ct
    st.sort_stats("tottime").print_stats(12)
    return cumulative


# ---------------------------------------------------------------------------- 2. open a cached plane
def bench_open(model: Sam2Model, geom: Geometry, args, tmp: Path) -> dict:
    hw = geom.open_hw
    path, cache_dir = tmp / f"plane-{hw}.zarr", tmp / "cache-open"
    print(f"[open] writing a {hw} x {hw} uint16 zarr plane", flush=True)
    write_s = write_plane(path, hw, geom)
    prompt = click_prompt(geom, hw)
    populate = ImagePredictor(
        model, cache=EmbeddingCache(directory=cache_dir), max_tiles=max(args.open_tiles)
    )
    t0 = time.perf_counter()
    populate.set_image(str(path))
    pred = populate.predict(prompt)
    populate_s = time.perf_counter() - t0
    print(
        f"[open] wrote in {write_s:.1f} s; populated {len(pred.tiles)} tiles in {populate_s:.1f} s",
        flush=True,
    )
    del populate, pred
    runs = {cap: [] for cap in args.open_tiles}
    for i in range(args.open_repeats):
        for cap in args.open_tiles if i % 2 == 0 else args.open_tiles[::-1]:  # alternate the order
            spec = {"path": str(path), "cache": str(cache_dir), "image_size": geom.image_size,
                    "max_tiles": cap, "click": prompt.points[0].tolist()}  # fmt: skip
            r = run_child("open", spec, args.threads)
            runs[cap].append(r)
            print(f"[open] child {i + 1}/{args.open_repeats}, max_tiles {cap}: open {r['open_s']:.3f}  "
                  f"set {r['set_image_s']:.3f}  predict {r['predict_s']:.3f}  total {r['total_s']:.3f} s  "
                  f"({r['disk_hits']} disk hits, {r['misses']} misses)", flush=True)  # fmt: skip
    out = {"plane_hw": hw, "write_s": write_s, "populate_s": populate_s, "by_max_tiles": {}}
    for cap, rs in runs.items():
        row = {name: statistics.median(r[name] for r in rs) for name in rs[0] if name.endswith("_s")}
        row.update(tiles=rs[0]["tiles"], children=len(rs), runs=rs,
                   all_hits=all(r["misses"] == 0 and r["disk_hits"] == r["tiles"] for r in rs))  # fmt: skip
        out["by_max_tiles"][cap] = row
    return out


def child_open(spec: dict) -> dict:
    t0 = time.perf_counter()
    model = build_model(spec["image_size"])
    t1 = time.perf_counter()
    predictor = ImagePredictor(
        model, cache=EmbeddingCache(directory=spec["cache"]), max_tiles=spec["max_tiles"]
    )
    t2 = time.perf_counter()
    source = open_image(spec["path"])
    t3 = time.perf_counter()
    predictor.set_image(source)  # window: robust percentiles of a sample of the data
    t4 = time.perf_counter()
    pred = predictor.predict(Prompt(points=[spec["click"]], labels=[1]))
    t5 = time.perf_counter()
    stats = predictor.cache.stats
    predictor.predict(Prompt(points=[spec["click"]], labels=[1]))  # features now in memory: decoding only
    t6 = time.perf_counter()
    return {
        "model_s": t1 - t0, "predictor_s": t2 - t1, "open_s": t3 - t2, "set_image_s": t4 - t3,
        "predict_s": t5 - t4, "predict_again_s": t6 - t5, "total_s": t5 - t2, "tiles": len(pred.tiles),
        "disk_hits": stats.disk_hits, "misses": stats.misses,
    }  # fmt: skip


# ---------------------------------------------------------------------------- 3. peak memory
def bench_memory(geom: Geometry, args, tmp: Path) -> dict:
    hw = geom.memory_hw
    path = tmp / f"plane-{hw}.zarr"
    print(f"[memory] writing a {hw} x {hw} uint16 zarr plane ({hw * hw * 2 / 2**20:.0f} MiB)", flush=True)
    write_s = write_plane(path, hw, geom)
    print(f"[memory] wrote in {write_s:.1f} s; child: open, set_image, click"
          + ("" if args.no_row else ", first tile row"), flush=True)  # fmt: skip
    spec = {"path": str(path), "image_size": geom.image_size, "max_tiles": args.max_tiles,
            "click": click_prompt(geom, hw).points[0].tolist(), "row": not args.no_row,
            "cache_mib": args.cache_mib}  # fmt: skip
    out = run_child("rss", spec, args.threads)
    out.update(plane_hw=hw, write_s=write_s)
    return out


def child_rss(spec: dict) -> dict:
    model = build_model(spec["image_size"])
    gc.collect()
    out = {"rss_model_mib": proc_status_mib("VmRSS")}
    cache = (
        EmbeddingCache() if spec["cache_mib"] is None else EmbeddingCache(max_bytes=spec["cache_mib"] * 2**20)
    )
    predictor = ImagePredictor(model, cache=cache, max_tiles=spec["max_tiles"])
    predictor.set_image(open_image(spec["path"]))
    out["rss_set_image_mib"] = proc_status_mib("VmRSS")
    t0 = time.perf_counter()
    pred = predictor.predict(Prompt(points=[spec["click"]], labels=[1]))
    out["predict_s"] = time.perf_counter() - t0
    out.update(
        peak_rss_click_mib=ru_maxrss_mib(), hwm_click_mib=proc_status_mib("VmHWM"),
        tiles_decoded=len(pred.tiles), tiles_encoded_click=predictor.cache.stats.misses,
        rss_click_mib=proc_status_mib("VmRSS"),
    )  # fmt: skip
    del pred
    if spec["row"]:
        row = [t for t in predictor.grid.tiles if t.index[0] == 0]
        t0 = time.perf_counter()
        for tile in row:
            predictor.features(tile)
        gc.collect()
        cache = predictor.cache
        out.update(
            row_tiles=len(row), row_s=time.perf_counter() - t0, rss_row_mib=proc_status_mib("VmRSS"),
            peak_rss_row_mib=ru_maxrss_mib(), cache_mib=cache.nbytes / 2**20,
            cache_budget_mib=cache.max_bytes / 2**20, cache_entries=len(cache),
            evictions=cache.stats.evictions, tiles_encoded_total=cache.stats.misses,
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------- report
def machine_info(args) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu, "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "zarr": zarr.__version__, "python": platform.python_version(),
        "variant": VARIANT, "image_size": args.image_size, "max_tiles": args.max_tiles,
    }  # fmt: skip
    with contextlib.suppress(OSError):
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    return info


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def summary_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, result) rows for the final table."""
    rows = []
    if "overhead" in res:
        o = res["overhead"]
        n = f"{o['tiles']} tiles x {o['repeats']} rep"
        rows.append((f"1. by hand, s/tile (median, {n})", f"{o['hand_s_per_tile']:.3f}", "", "-"))
        for name in ("memory", "disk"):
            rows.append((f"1. encode_all, {name} cache, s/tile", f"{o[f'{name}_s_per_tile']:.3f}", "", "-"))
        for name in ("memory", "disk"):
            lo, hi = o[f"{name}_ratio_range"]
            rows.append((
                f"1. ratio tiled ({name}) / hand (median per tile; range; ratio of sums)",
                f"{o[f'{name}_ratio']:.3f} ({lo:.2f}-{hi:.2f}; {o[f'{name}_ratio_of_sums']:.3f})",
                f"<= {OVERHEAD_TARGET:.2f}", verdict(o[f"{name}_ratio"] <= OVERHEAD_TARGET),
            ))  # fmt: skip
        c = o["components_s"]
        rows.append((
            "1. non-encode steps, s/tile: prepare / memory put / disk put / disk get",
            f"{c['prepare']:.3f} / {c['memory_put']:.3f} / {c['disk_put']:.3f} / {c['disk_get']:.3f}", "", "-",
        ))  # fmt: skip
    if "open" in res:
        hw = res["open"]["plane_hw"]
        for o in res["open"]["by_max_tiles"].values():
            what = f"2. {hw}^2 zarr, click over {o['tiles']} tile(s) (median of {o['children']} children):"
            rows.append((f"{what} open_image / set_image / first predict (second predict), s",
                         f"{o['open_s']:.3f} / {o['set_image_s']:.3f} / {o['predict_s']:.3f} "
                         f"({o['predict_again_s']:.3f})", "", "-"))  # fmt: skip
            rows.append((f"{what} total, s", f"{o['total_s']:.3f}", f"< {OPEN_TARGET_S:.1f}",
                         verdict(o["total_s"] < OPEN_TARGET_S and o["all_hits"])))  # fmt: skip
        o = next(iter(res["open"]["by_max_tiles"].values()))
        rows.append(("2. (not counted) model build / ImagePredictor(), s",
                     f"{o['model_s']:.2f} / {o['predictor_s']:.3f}", "", "-"))  # fmt: skip
    if "memory" in res:
        m = res["memory"]
        hw = m["plane_hw"]
        rows.append((f"3. RSS after model build / set_image ({hw}^2 zarr), MiB",
                     f"{m['rss_model_mib']:.0f} / {m['rss_set_image_mib']:.0f}", "", "-"))  # fmt: skip
        rows.append((
            f"3. peak RSS after click (ru_maxrss; {m['tiles_encoded_click']} tiles encoded, "
            f"{m['predict_s']:.1f} s), MiB", f"{m['peak_rss_click_mib']:.0f}",
            f"<= {RSS_TARGET_BYTES / 2**20:.0f} (4 GB)", verdict(m["peak_rss_click_mib"] * 2**20 <= RSS_TARGET_BYTES),
        ))  # fmt: skip
        if "row_tiles" in m:
            rows.append((
                f"3. after first row ({m['row_tiles']} tiles, {m['tiles_encoded_total']} encoded in all): "
                "RSS / peak RSS, MiB", f"{m['rss_row_mib']:.0f} / {m['peak_rss_row_mib']:.0f}",
                f"<= {RSS_TARGET_BYTES / 2**20:.0f}", verdict(m["peak_rss_row_mib"] * 2**20 <= RSS_TARGET_BYTES),
            ))  # fmt: skip
            rows.append((
                f"3. cache after row: MiB in memory ({m['cache_entries']} entries, {m['evictions']} evicted)",
                f"{m['cache_mib']:.0f}", f"<= {m['cache_budget_mib']:.0f} budget",
                verdict(m["cache_mib"] <= m["cache_budget_mib"]),
            ))  # fmt: skip
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    print("\n| measure | value | target | result |\n|---|---:|---:|:---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="smoke run: S = 256 (all planes / 4), 1 repeat each")
    p.add_argument(
        "--image-size", type=int, default=None, help="model input S (default 1024; 256 with --quick)"
    )
    p.add_argument("--repeats", type=int, default=None,
                   help="overhead: repetitions of all tiles per approach (default 2; 1 with --quick)")  # fmt: skip
    p.add_argument("--open-repeats", type=int, default=None,
                   help="open: fresh child processes timed (default 3; 1 with --quick)")  # fmt: skip
    p.add_argument(
        "--max-tiles", type=int, default=4, help="memory: most tiles the click may grow over (default 4)"
    )
    p.add_argument("--open-tiles", default="1,4",
                   help="open: comma-separated max_tiles of the timed clicks (default 1,4: a small object, the disc)")  # fmt: skip
    p.add_argument("--no-row", action="store_true", help="memory: skip encoding the first tile row")
    p.add_argument("--cache-mib", type=int, default=None,
                   help="memory: EmbeddingCache budget in MiB (default: the default cache, 2048)")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="overhead: cProfile one encode_all (automatic when the ratio misses its target)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where to write the planes (~0.7 GB; default temp)"
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--child", choices=("open", "rss"), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if unknown := sorted(set(args.parts) - set(PARTS)):
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if args.image_size is None:
        args.image_size = 256 if args.quick else 1024
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.open_repeats is None:
        args.open_repeats = 1 if args.quick else 3
    args.open_tiles = [int(v) for v in args.open_tiles.split(",") if v.strip()]
    if args.repeats < 1 or args.open_repeats < 1 or args.max_tiles < 1 or min(args.open_tiles, default=0) < 1:
        p.error("--repeats, --open-repeats, --max-tiles and --open-tiles must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        with torch.inference_mode():
            out = (child_open if args.child == "open" else child_rss)(json.loads(args.child_spec))
        print("RESULT " + json.dumps(out), flush=True)
        return
    info = machine_info(args)
    print(json.dumps(info), flush=True)
    geom = Geometry.for_size(args.image_size)
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_tiling-") as tmp:
        model = build_model(args.image_size) if {"overhead", "open"} & set(args.parts) else None
        with torch.inference_mode():
            if "overhead" in args.parts:
                results["overhead"] = bench_overhead(model, geom, args, Path(tmp))
            if "open" in args.parts:
                results["open"] = bench_open(model, geom, args, Path(tmp))
        del model
        gc.collect()
        if "memory" in args.parts:
            results["memory"] = bench_memory(geom, args, Path(tmp))
    info["total_s"] = time.perf_counter() - start
    with contextlib.suppress(OSError):
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print_table(summary_rows(results))
    print(
        f"\ntotal {info['total_s']:.0f} s; load average {info.get('loadavg_start')} -> {info.get('loadavg_end')}"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
