"""The original PandA algorithm in PyTorch, in the original operation order.

A faithful port of the algorithmic parts of the original ``model.py`` (``HOSVD``,
``decompose`` with ``stochastic=False``, ``decompose_autograd``, ``refine``), taking feature
tensors directly instead of sampling a generator. It is the parity oracle in the tests and the
baseline in the benchmarks.

Layout as the original: ``Z`` is ``[N, C, S]`` (``S = H * W``, ``s = h * W + w``),
``Uc`` is ``[C, R_C]``, ``Us`` is ``[S, R_S]``.
"""

from __future__ import annotations

import numpy as np
import torch


def to_torch_features(features) -> torch.Tensor:
    """NHWC features (numpy/JAX) -> the original's ``[N, C, S]`` tensor."""
    x = np.asarray(features, np.float32)
    N, H, W, C = x.shape
    return torch.from_numpy(np.ascontiguousarray(x.reshape(N, H * W, C).transpose(0, 2, 1)))


def hosvd(Z: torch.Tensor) -> torch.Tensor:
    """Left singular vectors of the mean channel scatter matrix (the original's ``HOSVD``)."""
    scat = 0
    for x in Z:  # mode-0 unfolding of a [C, S] matrix is itself
        scat = scat + x @ x.T
    U, _, _ = np.linalg.svd((scat / len(Z)).cpu().numpy())
    return torch.from_numpy(U)


def rec_loss(Z, Uc, Us):
    """The original's monitoring loss: mean over samples of ``||Z - Uc Uc^T Z Us Us^T||_F^2``."""
    rec = Uc @ (Uc.T @ Z @ Us) @ Us.T
    return torch.mean(torch.norm(Z - rec, p="fro", dim=[1, 2]) ** 2)


@torch.no_grad()
def decompose(Z: torch.Tensor, Uc: torch.Tensor, Us: torch.Tensor, lr: float, its: int):
    """Algorithm 1 with the original's manual gradients, summed over the batch, in the
    original's operation order (left to right, forming ``S x S`` products per sample)."""
    zeros = torch.zeros_like(Us)
    Us = torch.maximum(Us, zeros)
    z = Z.float()
    zt = torch.transpose(z, 1, 2)
    for _ in range(its):
        Us_g = -4 * (zt @ Uc @ Uc.T @ z @ Us) + 2 * (
            Us @ Us.T @ zt @ Uc @ Uc.T @ Uc @ Uc.T @ z @ Us + zt @ Uc @ Uc.T @ Uc @ Uc.T @ z @ Us @ Us.T @ Us
        )
        Us_g = torch.sum(Us_g, 0)
        Us = Us - lr * Us_g
        Us = torch.maximum(Us, zeros)

        Uc_g = -4 * (z @ Us @ Us.T @ zt @ Uc) + 2 * (
            Uc @ Uc.T @ z @ Us @ Us.T @ Us @ Us.T @ zt @ Uc + z @ Us @ Us.T @ Us @ Us.T @ zt @ Uc @ Uc.T @ Uc
        )
        Uc_g = torch.sum(Uc_g, 0)
        Uc = Uc - lr * Uc_g
    return Uc, Us


def decompose_autograd(Z: torch.Tensor, Uc: torch.Tensor, Us: torch.Tensor, lr: float, its: int):
    """The original's autograd variant: two Adam optimisers on the mean loss; the parts step is
    projected, then the loss is recomputed for the appearance step."""
    Uc = torch.nn.Parameter(Uc.clone())
    Us = torch.nn.Parameter(Us.clone())
    optS = torch.optim.Adam([Us], lr=lr)
    optC = torch.optim.Adam([Uc], lr=lr)
    zeros = torch.zeros_like(Us)
    for _ in range(its):
        loss = rec_loss(Z, Uc, Us)
        loss.backward(retain_graph=True)
        optS.step()
        Us.data = torch.maximum(Us.data, zeros)
        optS.zero_grad()
        optC.zero_grad()
        loss = rec_loss(Z, Uc, Us)
        loss.backward()
        optC.step()
        optS.zero_grad()
        optC.zero_grad()
    return Uc.detach(), Us.detach()


@torch.no_grad()
def refine(Z: torch.Tensor, Uc: torch.Tensor, Us: torch.Tensor, lr: float, its: int):
    """The original's per-sample refinement (one sample ``Z`` of shape ``[1, C, S]``)."""
    UsR = Us.clone()
    zeros = torch.zeros_like(Us)
    z = Z.float()
    zt = torch.transpose(z, 1, 2)
    for _ in range(its):
        g = -4 * (zt @ Uc @ Uc.T @ z @ UsR) + 2 * (
            UsR @ UsR.T @ zt @ Uc @ Uc.T @ Uc @ Uc.T @ z @ UsR + zt @ Uc @ Uc.T @ Uc @ Uc.T @ z @ UsR @ UsR.T @ UsR
        )
        g = torch.sum(g, 0)
        UsR = torch.maximum(UsR - lr * g, zeros)
    return UsR


# ---- the same cheap association of products that panda-jax uses (the fair engine comparison)


@torch.no_grad()
def decompose_fast(Z: torch.Tensor, Uc: torch.Tensor, Us: torch.Tensor, lr: float, its: int):
    """Algorithm 1 with panda-jax's association of products (no ``S x S`` products), in PyTorch."""
    zeros = torch.zeros_like(Us)
    Us = torch.maximum(Us, zeros)
    X = torch.einsum("ncs,sr->ncr", Z, Us)
    for _ in range(its):
        AtA, PtP = Uc.T @ Uc, Us.T @ Us
        Y = torch.einsum("ck,ncr->nkr", Uc, X)
        W = torch.einsum("kj,njr->nkr", AtA, Y)
        YtW = torch.einsum("nkr,nkq->rq", Y, W)
        V = torch.einsum("ck,nkr->ncr", Uc, -4.0 * Y + 2.0 * torch.einsum("nkr,rq->nkq", W, PtP))
        g = torch.einsum("ncs,ncr->sr", Z, V) + 2.0 * Us @ YtW
        Us = torch.maximum(Us - lr * g, zeros)
        X = torch.einsum("ncs,sr->ncr", Z, Us)
        PtP = Us.T @ Us
        U = torch.einsum("ncr,ck->nrk", X, Uc)
        T1 = torch.einsum("ncr,nrk->ck", X, U)
        M = torch.einsum("ncr,rq,nqk->ck", X, PtP, U)
        gA = -4.0 * T1 + 2.0 * Uc @ (Uc.T @ M) + 2.0 * M @ (Uc.T @ Uc)
        Uc = Uc - lr * gA
    return Uc, Us


def dcgan_generator(obj):
    """The DCGAN-tutorial generator in PyTorch (``nn.Sequential``, evaluation mode) with the
    weights of a read checkpoint (``convert.readers.read``): ``g(z [N, nz, 1, 1]) -> [N, 3, H, W]``.
    The baseline of the Jacobian timing in ``benchmarks.locality``."""
    from torch import nn

    from convert import dcgan

    sd = dcgan.state_dict(obj)
    cfg = dcgan.config_for(obj)[1]
    nz, ngf, nc, blocks = cfg["nz"], cfg["ngf"], cfg["nc"], cfg["blocks"]
    w = [ngf * 2 ** (blocks - l) for l in range(1, blocks + 1)]
    layers = [nn.ConvTranspose2d(nz, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
    for i in range(1, blocks):
        layers += [nn.ConvTranspose2d(w[i - 1], w[i], 4, 2, 1, bias=False), nn.BatchNorm2d(w[i]), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(w[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
    net = nn.Module()
    net.main = nn.Sequential(*layers)  # the tutorial's attribute name, so the keys match
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    return net.main.eval()
