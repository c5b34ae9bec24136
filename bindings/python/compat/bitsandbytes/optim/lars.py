"""bitsandbytes.optim.lars: bnb.optim.LARS as bitsandbytes' classes
LARS, LARS8bit, LARS32bit
(built in _families.py; the shared machinery is in optimizer.py)."""

import torch

from ._families import define

__all__ = ["LARS", "LARS8bit", "LARS32bit", "PytorchLARS"]

LARS, LARS8bit, LARS32bit = define(__name__, "LARS")


class PytorchLARS(torch.optim.Optimizer):
    """LARS in plain torch operations (no libbnb call), as bitsandbytes offers it beside LARS:
    SGD with momentum, coupled weight decay, optional dampening and Nesterov momentum, and the
    step scaled down to max_unorm * ||p|| when its norm is larger (max_unorm = 0: no clipping).
    momentum = 0 steps along the (decayed) gradient."""

    def __init__(self, params, lr=0.01, momentum=0, dampening=0, weight_decay=0, nesterov=False, max_unorm=0.02):
        for key, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                           ("max_unorm", max_unorm)):
            if value < 0.0:
                raise ValueError(f"PytorchLARS: {key} = {value!r} must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("PytorchLARS: Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, max_unorm=max_unorm))

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum, max_unorm = group["momentum"], group["max_unorm"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["weight_decay"]:
                    direction = direction.add(p, alpha=group["weight_decay"])
                if momentum:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = direction.detach().clone()
                    else:
                        buf.mul_(momentum).add_(direction, alpha=1 - group["dampening"])
                    direction = direction + momentum * buf if group["nesterov"] else buf
                scale = 1.0
                if max_unorm > 0:
                    limit = max_unorm * torch.linalg.vector_norm(p)
                    norm = torch.linalg.vector_norm(direction)
                    if norm > limit:
                        scale = float(limit / norm)
                p.add_(direction, alpha=-group["lr"] * scale)
        return loss
