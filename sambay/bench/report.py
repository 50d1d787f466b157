"""The output of the GPU kernel benchmarks (`sambay bench kernels | attention`, and the A/B tools in tools/):
printed lines, plus JSON rows measured against the device's ceilings, measured in the same process."""

from __future__ import annotations

from pathlib import Path

from sambay.bench.meta import header_lines, write_json


class Report:
    """Lines printed as they come (and appended to `text_path`), and timing rows for the JSON file at
    `json_path`. Both files are rewritten as the run goes, so a run cut off at a time limit keeps what it
    measured."""

    def __init__(self, benchmark: str, meta: dict | None = None, json_path: Path | str | None = None,
                 text_path: Path | str | None = None):
        self.benchmark, self.meta, self.json_path = benchmark, meta, json_path
        self.text_path = Path(text_path) if text_path else None
        if self.text_path:
            self.text_path.parent.mkdir(parents=True, exist_ok=True)
            self.text_path.write_text("")
        self.lines: list[str] = []
        self.rows: list[dict] = []
        self.summary: dict = {}
        self.copy_gb_s = float("nan")  # device-to-device copy bandwidth, bytes read + written
        self.matmul_tflops = float("nan")  # 8192^3 bf16 matmul

    def say(self, msg: str = "") -> None:
        print(msg, flush=True)
        self.lines.append(msg)
        if self.text_path:
            with self.text_path.open("a") as f:
                f.write(msg + "\n")

    def header(self) -> None:
        for line in header_lines(self.meta):
            self.say(line)

    def set_ceilings(self, copy_gb_s: float, matmul_tflops: float) -> None:
        self.copy_gb_s, self.matmul_tflops = copy_gb_s, matmul_tflops
        self.flush()

    def timing(self, section: str, case: str, ms: float, nbytes: float | None = None, flops: float | None = None,
               **extra) -> dict:
        """Record one timed case: its time and, given the bytes it must move or the FLOPs it must do, the
        achieved rate against the measured ceiling. Returns the row."""
        row = {"section": section, "case": " ".join(case.split()), "ms": ms}
        if nbytes is not None:
            gb_s = nbytes / ms / 1e6
            row.update(bytes=nbytes, gb_per_s=gb_s, of_copy_bandwidth=gb_s / self.copy_gb_s)
        if flops is not None:
            tflops = flops / ms / 1e9
            row.update(flops=flops, tflops=tflops, of_matmul_peak=tflops / self.matmul_tflops)
        row.update(extra)
        self.rows.append(row)
        self.flush()
        return row

    def failure(self, section: str, case: str, error: BaseException | str) -> None:
        self.rows.append({"section": section, "case": case, "error": str(error)[:300]})
        self.flush()

    def flush(self) -> None:
        if self.json_path is not None:
            write_json(self.json_path, {"meta": self.meta, "benchmark": self.benchmark,
                                        "ceilings": {"copy_gb_per_s": self.copy_gb_s,
                                                     "bf16_matmul_tflops": self.matmul_tflops},
                                        "rows": self.rows, "summary": self.summary})


def do_bench_ms(fn, warmup: int = 50, rep: int = 300, graph: bool = False) -> float:
    """Median time of `fn` in ms (triton.testing; warm-up excluded). `graph`: as CUDA-graph replays, for
    launches shorter than Python's launch overhead."""
    from triton.testing import do_bench, do_bench_cudagraph

    if graph:
        return do_bench_cudagraph(fn, rep=200, return_mode="median")
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def measure_ceilings(device: str = "cuda") -> tuple[float, float]:
    """(copy bandwidth in GB/s counting bytes read + written, over 1 GiB buffers far larger than L2;
    bf16 8192^3 matmul TFLOP/s)."""
    import torch

    a = torch.empty(1 << 30, dtype=torch.uint8, device=device).random_(0, 255)
    b = torch.empty_like(a)
    copy_gb_s = 2 * a.numel() / do_bench_ms(lambda: b.copy_(a)) / 1e6
    a = b = None  # free the buffers (rebinding keeps the closure valid)
    m = 8192
    x = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    y = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    tflops = 2 * m**3 / do_bench_ms(lambda: x @ y) / 1e9
    x = y = None
    torch.cuda.empty_cache()
    return copy_gb_s, tflops
