#!/usr/bin/env python3
"""One SGD step of goten's plain mode against PyTorch, from the same weights and batch.

Where it sits: outside the Rust test suite (it needs PyTorch from PyPI); anyone can rerun it:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy safetensors
    cargo build --release -p goten
    /tmp/torchenv/bin/python scripts/pytorch-fidelity.py --models vgg11,resnet20

For each model it builds the PyTorch twin of goten's network (same layers, names and
layouts), draws PyTorch's own initial weights (BN scales and shifts perturbed so they are
tested too), saves them as safetensors, and runs `goten train --mode plain --init FILE
--no-augment` for one step on the first N training images as one batch. PyTorch takes the same
step (cross-entropy, SGD with momentum 0.9 and weight decay 5e-4) in float32 and in float64.
The loss and every exported tensor (weights after the step, BN running statistics) are
compared with the float64 step, relative to the change the step made (L2 over all tensors;
the worst single entry is reported too): goten passes when it is at least as close to that
exact step as PyTorch's own float32 step is (twice its error, or --tol, whichever is larger), and no single tensor is off by more than
--tensor-tol of its change. goten reorders the batch in secret and sums
in f64 where PyTorch sums in f32, so agreement is to float32 rounding, not bit for bit.
Prints one JSON line per model and a table; exits 1 when a model is out of tolerance.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


class Vgg(nn.Module):
    """goten's VGG-BN: torchvision's feature numbering, no biases, a 512-512 classifier."""

    def __init__(self, cfg, classes=10):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512, bias=False), nn.ReLU(),
            nn.Linear(512, 512, bias=False), nn.ReLU(),
            nn.Linear(512, classes, bias=False))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    """torchvision's BasicBlock: the shortcut is a 1x1 conv + BN when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """goten's resnet20 (and the CIFAR-stem resnet18): torchvision's names."""

    def __init__(self, stem, stages, blocks, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        c = stem
        for s, (ch, stride) in enumerate(stages):
            layer = []
            for i in range(blocks):
                layer.append(Block(c, ch, stride if i == 0 else 1))
                c = ch
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.n = len(stages)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.n):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name):
    if name == "vgg11":
        return Vgg([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"])
    if name == "vgg16":
        return Vgg([64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                    512, 512, 512, "M", 512, 512, 512, "M"])
    if name == "resnet20":
        return ResNet(16, [(16, 1), (32, 2), (64, 2)], 3)
    if name == "resnet18":
        return ResNet(64, [(64, 1), (128, 2), (256, 2), (512, 2)], 2)
    raise SystemExit(f"no PyTorch twin for {name}")


def batch(data_dir, n):
    raw = np.fromfile(os.path.join(data_dir, "data_batch_1.bin"), dtype=np.uint8)
    rec = raw[: n * 3073].reshape(n, 3073)
    y = torch.from_numpy(rec[:, 0].astype(np.int64))
    px = torch.from_numpy(rec[:, 1:].reshape(n, 3, 32, 32).copy()).float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (px / 255.0 - mean) / std, y


def check(name, args, work):
    torch.manual_seed(args.seed)
    model = build(name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    init = os.path.join(work, f"{name}-init.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, init)
    out = os.path.join(work, f"{name}-goten.safetensors")
    cmd = [args.goten, "train", "--mode", "plain", "--model", name, "--data", args.data,
           "--train-limit", str(args.batch), "--batch", str(args.batch), "--test-limit", "16",
           "--steps", "1", "--lr", str(args.lr), "--schedule", "constant", "--no-augment",
           "--init", init, "--export", out, "--out", os.path.join(work, name), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"goten failed ({run.returncode}):\n{run.stderr}")
    goten_loss = json.loads(run.stdout.strip().splitlines()[-1])["train_loss"]

    x, y = batch(args.data, args.batch)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ref = {}
    for dt in (torch.float32, torch.float64):
        m = build(name)
        m.load_state_dict(start)
        m = m.to(dt)
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        loss = F.cross_entropy(m(x.to(dt)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref[dt] = ({k: v.detach().double() for k, v in m.state_dict().items()}, loss.item())
    ours = load_file(out)
    (exact, loss64), (torch32, loss32) = ref[torch.float64], ref[torch.float32]
    # Per tensor: the largest difference from PyTorch's float64 step, relative to the largest
    # change that step made (a sensitive measure: the weights themselves barely move).
    worst = {"goten": (0.0, ""), "torch32": (0.0, "")}
    # |difference| / |change| in the L2 norm, over all tensors together and per tensor. A ReLU
    # whose input is within rounding of 0 can take the other branch in either float32
    # computation and move a few entries of some tensors (up to a few per cent of a tensor's
    # change, measured); a wrong layer moves all of its entries (about 100 %).
    sq = {"goten": 0.0, "torch32": 0.0, "change": 0.0}
    rows = 0
    for k, v in exact.items():
        if k.endswith("num_batches_tracked"):
            continue
        if tuple(ours[k].shape) != tuple(v.shape):
            raise SystemExit(f"{name}: {k} has shape {tuple(ours[k].shape)} in goten, {tuple(v.shape)} in PyTorch")
        change = float(((v - start[k].double()) ** 2).sum())
        sq["change"] += change
        rows += 1
        for who, t in (("goten", ours[k].double()), ("torch32", torch32[k])):
            diff = float(((t - v) ** 2).sum())
            sq[who] += diff
            err = (diff / max(change, 1e-300)) ** 0.5
            if err > worst[who][0]:
                worst[who] = (err, k)
    loss_err = abs(goten_loss - loss64) / abs(loss64)
    l2 = {w: (sq[w] / max(sq["change"], 1e-300)) ** 0.5 for w in ("goten", "torch32")}
    # Within float32 tolerance: goten is at least as close to the exact step as PyTorch's own
    # float32 step is (twice its error, with a floor for runs where both are nearly exact).
    bound = max(args.tol, 2.0 * l2["torch32"])
    ok = (l2["goten"] <= bound and worst["goten"][0] <= args.tensor_tol
          and loss_err <= 1e-5)
    return {"model": name, "batch": args.batch, "lr": args.lr, "tensors": rows,
            "loss_goten": goten_loss, "loss_pytorch_f32": loss32, "loss_pytorch_f64": loss64,
            "loss_rel_err": loss_err, "goten_l2": l2["goten"], "torch32_l2": l2["torch32"],
            "goten_err": worst["goten"][0],
            "goten_worst": worst["goten"][1], "torch32_err": worst["torch32"][0],
            "torch32_worst": worst["torch32"][1], "bound": bound, "ok": ok}


def test_batch(data_dir, n):
    raw = np.fromfile(os.path.join(data_dir, "test_batch.bin"), dtype=np.uint8)
    n = min(n, raw.size // 3073)
    rec = raw[: n * 3073].reshape(n, 3073)
    y = torch.from_numpy(rec[:, 0].astype(np.int64))
    px = torch.from_numpy(rec[:, 1:].reshape(n, 3, 32, 32).copy()).float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (px / 255.0 - mean) / std, y


def evaluate(name, args, work):
    """Trains briefly in goten's plain mode, exports, and has PyTorch score the export."""
    out = os.path.join(work, f"{name}-trained.safetensors")
    cmd = [args.goten, "train", "--mode", "plain", "--model", name, "--data", args.data,
           "--train-limit", "2000", "--test-limit", str(args.eval_images), "--batch", "32",
           "--steps", str(args.eval_steps), "--lr", "0.05", "--seed", str(args.seed),
           "--export", out, "--out", os.path.join(work, name + "-eval"), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"goten failed ({run.returncode}):\n{run.stderr}")
    goten_acc = json.loads(run.stdout.strip().splitlines()[-1])["test_accuracy"]
    model = build(name)
    state = {k: v for k, v in load_file(out).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    x, y = test_batch(args.data, args.eval_images)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 250]).argmax(1) for i in range(0, len(y), 250)])
    torch_acc = float((pred == y).float().mean())
    # goten reports a percentage or a fraction depending on the field; normalise to a fraction.
    g = goten_acc / 100.0 if goten_acc > 1.0 else goten_acc
    diff = abs(g - torch_acc) * len(y)
    return {"model": name, "images": len(y), "steps": args.eval_steps, "goten_accuracy": g,
            "pytorch_accuracy": torch_acc, "differing_images": round(diff), "ok": diff <= 1}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vgg11,resnet20")
    p.add_argument("--data", default=os.path.join(here, "../../shared/data/cifar-10-batches-bin"))
    p.add_argument("--goten", default=os.path.join(here, "../target/release/goten"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=2e-3,
                   help="floor of the accepted L2 difference from PyTorch's float64 step over "
                        "all tensors, relative to the step's change")
    p.add_argument("--tensor-tol", type=float, default=0.1,
                   help="largest accepted L2 difference of any one tensor, relative to its change")
    p.add_argument("--eval", action="store_true",
                   help="instead: train briefly in goten, export, and compare PyTorch's test "
                        "accuracy of the export with the accuracy goten reports")
    p.add_argument("--eval-steps", type=int, default=60)
    p.add_argument("--eval-images", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = []
    if args.eval:
        with tempfile.TemporaryDirectory() as work:
            for name in args.models.split(","):
                r = evaluate(name, args, work)
                results.append(r)
                print(json.dumps(r), flush=True)
        print(f"{'model':<10} {'images':>6} {'goten acc':>10} {'pytorch acc':>12} {'differ':>7}")
        for r in results:
            print(f"{r['model']:<10} {r['images']:>6} {r['goten_accuracy']:>10.4f} "
                  f"{r['pytorch_accuracy']:>12.4f} {r['differing_images']:>7}"
                  f"{'' if r['ok'] else '  <- differ'}")
        sys.exit(0 if all(r["ok"] for r in results) else 1)
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            r = check(name, args, work)
            results.append(r)
            print(json.dumps(r), flush=True)
    print("errors against PyTorch's float64 step, relative to the change the step made: "
          "L2 over all tensors, and of the worst tensor")
    print(f"{'model':<10} {'tensors':>7} {'loss goten':>11} {'loss f64':>11} {'loss err':>9} "
          f"{'goten L2':>9} {'torch32 L2':>10} {'goten tensor':>12} {'torch32 tensor':>14}")
    for r in results:
        print(f"{r['model']:<10} {r['tensors']:>7} {r['loss_goten']:>11.6f} "
              f"{r['loss_pytorch_f64']:>11.6f} {r['loss_rel_err']:>9.2e} {r['goten_l2']:>9.2e} "
              f"{r['torch32_l2']:>10.2e} {r['goten_err']:>12.2e} {r['torch32_err']:>14.2e}"
              f"{'' if r['ok'] else '  <- over tolerance'}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
