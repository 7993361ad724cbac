"""Train the bundled sample model of relu-doctor.

A small CNN is trained on a procedural "shapes" dataset generated in code (no
downloads).  The recipe is deliberately a little careless: Adam with a learning
rate of 3e-2 (30x the usual 1e-3) for five epochs, then one epoch at 3e-3, with
coupled L2 weight decay on the conv/linear weights.  The large early updates
push some units' pre-activations (BN shift / linear bias) below zero for every
input; from then on those units get no gradient from the loss, and weight decay
shrinks their incoming weights, so they stay dead.  Nothing is zeroed or
planted by hand: the dead units are whatever training produced.  Biases and BN
parameters are not decayed (common practice), which keeps a dead unit's
pre-activation clearly negative rather than drifting towards -0.0.

Regenerate every artefact with::

    python sample_models/train.py

Importing this module does not train anything; ``build()`` returns an untrained
``SampleCNN`` so that ``--arch sample_models.train:build`` can load
``sample_cnn_state_dict.pt``.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT_DIR = Path(__file__).resolve().parent

CLASSES = ("square", "disc", "ring", "hbar", "vbar", "cross")
NUM_CLASSES = len(CLASSES)
IMAGE_SHAPE = (3, 16, 16)  # C, H, W

SEED = 0
N_TRAIN = 4096
N_TEST = 1024
N_SAMPLE = 512  # the first N_SAMPLE test images become sample_batch.npy

EPOCHS = 6
BATCH_SIZE = 64
LR = 3e-2  # deliberately high for Adam (30x the usual 1e-3)
LR_MILESTONES = [5]  # x0.1 for the last epoch, so the final weights settle
WEIGHT_DECAY = 5e-4  # coupled L2 (torch.optim.Adam), not AdamW


# --------------------------------------------------------------------------- #
# Procedural dataset
# --------------------------------------------------------------------------- #
def make_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` colour images of simple shapes and their labels.

    images: float32, shape (n, 3, 16, 16), values in [0, 1]
    labels: int64, shape (n,), index into ``CLASSES``

    Each image has a dim, slightly tinted background plus Gaussian noise and one
    shape with a random position, size, colour and brightness.
    """
    rng = np.random.default_rng(seed)
    c, h, w = IMAGE_SHAPE
    labels = rng.integers(0, NUM_CLASSES, size=n)

    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    yy = yy[None]  # (1, H, W)
    xx = xx[None]

    cy = rng.uniform(4.5, h - 5.5, size=(n, 1, 1)).astype(np.float32)
    cx = rng.uniform(4.5, w - 5.5, size=(n, 1, 1)).astype(np.float32)
    size = rng.uniform(2.5, 4.5, size=(n, 1, 1)).astype(np.float32)  # half-extent
    thick = rng.uniform(0.6, 1.4, size=(n, 1, 1)).astype(np.float32)  # bar half-width
    dy = yy - cy
    dx = xx - cx
    r = np.sqrt(dy * dy + dx * dx)

    masks = np.stack(
        [
            (np.abs(dy) <= size) & (np.abs(dx) <= size),  # square
            r <= size + 0.3,  # disc
            (r <= size + 0.3) & (r >= size - 1.2),  # ring
            (np.abs(dy) <= thick) & (np.abs(dx) <= size + 1.0),  # hbar
            (np.abs(dx) <= thick) & (np.abs(dy) <= size + 1.0),  # vbar
            ((np.abs(dy) <= thick) & (np.abs(dx) <= size + 1.0))
            | ((np.abs(dx) <= thick) & (np.abs(dy) <= size + 1.0)),  # cross
        ],
        axis=0,
    )  # (K, n, H, W)
    mask = masks[labels, np.arange(n)].astype(np.float32)[:, None]  # (n, 1, H, W)

    background = rng.uniform(0.0, 0.25, size=(n, 1, 1, 1)) * rng.uniform(0.6, 1.0, size=(n, c, 1, 1))
    colour = rng.uniform(0.2, 1.0, size=(n, c, 1, 1))
    colour[np.arange(n), rng.integers(0, c, size=n)] = 1.0  # at least one strong channel
    brightness = rng.uniform(0.5, 1.0, size=(n, 1, 1, 1))
    fg = colour * brightness
    img = background + mask * (fg - background)
    img = img + rng.normal(0.0, 0.06, size=(n, c, h, w))
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img, labels.astype(np.int64)


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def conv_block(c_in: int, c_out: int, act: nn.Module) -> nn.Sequential:
    name = "relu6" if isinstance(act, nn.ReLU6) else "relu"
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)),
                ("bn", nn.BatchNorm2d(c_out)),
                (name, act),
            ]
        )
    )


class SampleCNN(nn.Module):
    """conv-bn-relu x2, maxpool, conv-bn-relu6, GAP, fc-relu, fc.

    ReLU sites (module names): block1.relu (16 ch), block2.relu (32 ch),
    block3.relu6 (32 ch, ReLU6), fc1_relu (64 units).
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.block1 = conv_block(3, 16, nn.ReLU())
        self.block2 = conv_block(16, 32, nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block3 = conv_block(32, 32, nn.ReLU6())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32, 64)
        self.fc1_relu = nn.ReLU()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.block2(x)
        x = self.pool(x)
        x = self.block3(x)
        x = self.flatten(self.gap(x))
        x = self.fc1_relu(self.fc1(x))
        return self.head(x)


def build() -> SampleCNN:
    """Untrained SampleCNN, for loading ``sample_cnn_state_dict.pt``."""
    return SampleCNN(NUM_CLASSES)


# --------------------------------------------------------------------------- #
# Dead-ReLU check (plain forward hooks)
# --------------------------------------------------------------------------- #
def dead_report(model: nn.Module, x: torch.Tensor) -> list[tuple[str, int, int, float, float]]:
    """Per ReLU/ReLU6 module: (name, dead, total, dead_margin, alive_margin) over batch ``x``.

    A unit (conv channel or linear feature) is dead if its output is never > 0
    for any sample and any spatial position.  The margins show how far from the
    0 threshold the verdicts are: ``dead_margin`` is the highest pre-activation
    reached by any dead unit (<= 0), ``alive_margin`` the smallest per-unit peak
    pre-activation among live units (> 0); nan where there is no such unit.
    """
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.ReLU, nn.ReLU6)):

            def hook(_m, inp, out, name=name):
                reduce_dims = [d for d in range(out.dim()) if d != 1]
                stats[name] = ((out > 0).amax(dim=reduce_dims), inp[0].amax(dim=reduce_dims))

            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(x)
    for hk in hooks:
        hk.remove()
    report = []
    for name, (ever_pos, peak) in stats.items():
        dead = ~ever_pos
        dead_margin = float(peak[dead].max()) if dead.any() else float("nan")
        alive_margin = float(peak[ever_pos].min()) if ever_pos.any() else float("nan")
        report.append((name, int(dead.sum()), dead.numel(), dead_margin, alive_margin))
    return report


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- #
# Training + export
# --------------------------------------------------------------------------- #
def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> None:
    # Common practice: L2 on conv/linear weights only, not on biases or BN affine params.
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.Adam(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=LR_MILESTONES, gamma=0.1)
    gen = torch.Generator().manual_seed(SEED + 1)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        sched.step()
        print(f"epoch {epoch + 1}/{EPOCHS}  loss {total / n:.4f}  test acc {accuracy(model, xt, yt):.4f}")


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"exported model disagrees with the eager model: {what}")


def export_all(model: nn.Module, sample: torch.Tensor) -> None:
    model.eval()
    # clone: a view would make torch.export.save serialise the whole 512-image storage
    example = sample[:8].clone()
    with torch.no_grad():
        ref = model(sample)

    # state dict
    torch.save(model.state_dict(), OUT_DIR / "sample_cnn_state_dict.pt")
    reloaded = build()
    reloaded.load_state_dict(torch.load(OUT_DIR / "sample_cnn_state_dict.pt", weights_only=True))
    reloaded.eval()
    with torch.no_grad():
        _check(torch.allclose(reloaded(sample), ref, atol=1e-5), "state dict")

    # TorchScript
    scripted = torch.jit.script(model)
    scripted.save(str(OUT_DIR / "sample_cnn.pt"))
    ts = torch.jit.load(str(OUT_DIR / "sample_cnn.pt"))
    with torch.no_grad():
        _check(torch.allclose(ts(sample), ref, atol=1e-5), "TorchScript")

    # torch.export with a dynamic batch dimension
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, OUT_DIR / "sample_cnn.pt2")
    ep2 = torch.export.load(OUT_DIR / "sample_cnn.pt2").module()
    with torch.no_grad():
        for bs in (1, 7, 32, sample.shape[0]):
            _check(torch.allclose(ep2(sample[:bs]), ref[:bs], atol=1e-5), f"torch.export, batch {bs}")

    # ONNX (TorchScript-based exporter)
    onnx_path = OUT_DIR / "sample_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter is asked for on purpose
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(onnx_path)))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for bs in (1, 7, 32, sample.shape[0]):
        (out,) = sess.run(["logits"], {"input": sample[:bs].numpy()})
        _check(np.allclose(out, ref[:bs].numpy(), atol=1e-4), f"ONNX, batch {bs}")


def main() -> None:
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)

    x_np, y_np = make_shapes(N_TRAIN, seed=SEED + 100)
    xt_np, yt_np = make_shapes(N_TEST, seed=SEED + 200)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    xt, yt = torch.from_numpy(xt_np), torch.from_numpy(yt_np)

    model = build()
    t_train = time.perf_counter()
    train(model, x, y, xt, yt)
    t_train = time.perf_counter() - t_train
    model.eval()

    sample_x, sample_y = xt_np[:N_SAMPLE], yt_np[:N_SAMPLE]
    np.save(OUT_DIR / "sample_batch.npy", sample_x)
    np.save(OUT_DIR / "sample_labels.npy", sample_y)
    sample = torch.from_numpy(sample_x)

    export_all(model, sample)

    test_acc = accuracy(model, xt, yt)
    sample_acc = accuracy(model, sample, torch.from_numpy(sample_y))
    print()
    print(f"test accuracy   : {test_acc:.4f} ({N_TEST} held-out images)")
    print(f"sample accuracy : {sample_acc:.4f} (sample_batch.npy, {N_SAMPLE} images)")
    print("dead units on sample_batch.npy (never > 0):")
    print(f"  {'site':<12} {'dead / total':<18}  {'max pre-act (dead)':>18}  {'min peak (alive)':>16}")
    for name, dead, total, dead_margin, alive_margin in dead_report(model, sample):
        frac = f"({100.0 * dead / total:.1f}%)"
        print(f"  {name:<12} {dead:>3} / {total:<3} {frac:<8}  {dead_margin:>18.3g}  {alive_margin:>16.3g}")
    digest = hashlib.sha256((OUT_DIR / "sample_batch.npy").read_bytes()).hexdigest()
    print(f"sample_batch.npy sha256 {digest}")
    print(f"time: training {t_train:.1f} s, total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
