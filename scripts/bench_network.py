"""Swin UNETR forward and training step: medseg's network against stock MONAI, same weights, same input.

    python scripts/bench_network.py                      # forward fs12@64^3 and fs48@96^3, train step fs12@64^3
    python scripts/bench_network.py --cases train12 --repeats 9
    python scripts/bench_network.py --ablation --cases forward12 forward48   # each lever on its own

Stock is ``monai.networks.nets.SwinUNETR``; medseg is ``medseg.nets.SwinUNETR`` (fused window attention,
cached shift mask, oneDNN convolutions) loaded with the stock network's state_dict. The two run
alternately, ``--repeats`` times each after one warm-up call, and the script prints medians, their
ratio and, for the forward cases, the largest absolute difference between the two outputs. Time nothing
while another heavy process runs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

from medseg.losses import DiceBCELoss
from medseg.nets import SwinUNETR, fast_swin

CASES = {  # name: (feature_size, side, training)
    "forward12": (12, 64, False),
    "forward48": (48, 96, False),
    "forward48_128": (48, 128, False),
    "train12": (12, 64, True),
}


def _networks(feature_size: int):
    torch.manual_seed(0)
    stock = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size)
    fast = SwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size)
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def _forward_call(net, x):
    net.eval()

    def call():
        with torch.inference_mode():
            return net(x)

    return call


def _train_call(net, x, y):
    net.train()
    loss_fn = DiceBCELoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def call():
        loss = loss_fn(net(x), y)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return call


def run_case(name: str, repeats: int) -> dict:
    feature_size, side, training = CASES[name]
    stock, fast = _networks(feature_size)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, side, side, side, generator=generator)
    diff = None
    if training:
        y = (torch.rand(1, 3, side, side, side, generator=generator) > 0.7).float()
        calls = {"stock": _train_call(stock, x, y), "medseg": _train_call(fast, x, y)}
    else:
        calls = {"stock": _forward_call(stock, x), "medseg": _forward_call(fast, x)}
        diff = float((calls["stock"]() - calls["medseg"]()).abs().max())
    times = {"stock": [], "medseg": []}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for path, call in calls.items():
            start = time.perf_counter()
            call()
            times[path].append(time.perf_counter() - start)
    stock_s, medseg_s = statistics.median(times["stock"]), statistics.median(times["medseg"])
    return {
        "case": name,
        "stock": stock_s,
        "medseg": medseg_s,
        "ratio": stock_s / medseg_s,
        "max_abs_diff": diff,
        "times": times,
    }


def _with_levers(stock, classes):
    net = copy.deepcopy(stock)
    for module in net.modules():
        if type(module) in classes:
            module.__class__ = fast_swin.FAST_CLASSES[type(module)]
    return net


def _bf16_call(net, x):
    def call():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float()

    return call


def _onnx_call(net, x):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "net.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    array = x.numpy()
    return lambda: torch.from_numpy(session.run(None, {"image": array})[0])


def ablation(name: str, repeats: int) -> None:
    """Forward time of stock MONAI, then each lever of medseg.nets.fast_swin alone, then all of them, bf16
    autocast on top, two windows per forward, and ONNX Runtime on the exported (MONAI) graph."""
    feature_size, side, _ = CASES[name]
    stock, _ = _networks(feature_size)
    stock.eval()
    x = torch.randn(1, 4, side, side, side, generator=torch.Generator().manual_seed(1))
    variants = {"stock MONAI": stock}
    for cls in fast_swin.FAST_CLASSES:
        variants[f"+ {fast_swin.FAST_CLASSES[cls].__name__} only"] = _with_levers(stock, {cls})
    fast = _with_levers(stock, set(fast_swin.FAST_CLASSES))
    variants["medseg (all levers)"] = fast
    calls = {label: _forward_call(net, x) for label, net in variants.items()}
    calls["medseg + bf16 autocast"] = _bf16_call(fast, x)
    x2 = torch.cat([x, x.flip(2)])
    pair = _forward_call(fast, x2)
    calls["medseg, 2 windows per forward (per window)"] = pair
    calls["ONNX Runtime (exported MONAI graph)"] = _onnx_call(stock, x)
    reference = calls["stock MONAI"]()
    print(f"\n{name}: feature_size {feature_size}, 1x4x{side}^3, median of {repeats}")
    print("| variant | s (median) | speed-up vs stock | max abs diff vs stock |")
    print("|---|---|---|---|")
    base = None
    for label, call in calls.items():
        out = call()
        out = out[:1] if out.shape[0] == 2 else out
        diff = float((out.float() - reference).abs().max())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        t = statistics.median(times) / (2 if label.startswith("medseg, 2 windows") else 1)
        base = base or t
        print(f"| {label} | {t:.3f} | {base / t:.2f}x | {diff:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=["forward12", "forward48", "train12"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per path and case (default 5)")
    parser.add_argument("--ablation", action="store_true", help="forward cases: time each lever on its own")
    args = parser.parse_args()
    if args.ablation:
        for name in args.cases:
            ablation(name, args.repeats)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| case | feature_size | input | stock MONAI (s, median) | medseg (s, median) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases:
        r = run_case(name, args.repeats)
        feature_size, side, training = CASES[name]
        kind = "train step (fwd+bwd+AdamW)" if training else "forward"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        print(
            f"| {kind} | {feature_size} | 1x4x{side}^3 | {r['stock']:.3f} | {r['medseg']:.3f} "
            f"| {r['ratio']:.2f}x | {diff} |",
            flush=True,
        )
        for path, values in r["times"].items():
            print(f"<!-- {name} {path}: {', '.join(f'{t:.3f}' for t in values)} -->")


if __name__ == "__main__":
    main()
