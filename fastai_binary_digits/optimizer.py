"fastai's `SGD` with the same hypers, state and results, stepping each parameter group in a few batched updates"
from __future__ import annotations
import torch
from .compat import fast_paths_checked
from fastai.optimizer import Optimizer, average_grad, l2_reg, momentum_step, sgd_step, weight_decay


__all__ = ['SGDOptimizer']

# fastai's `SGD` callbacks, (decoupled weight decay, momentum): the recipes `SGDOptimizer.step` batches
_RECIPES = (((weight_decay, sgd_step), (True, False)), ((l2_reg, sgd_step), (False, False)),
            ((weight_decay, average_grad, momentum_step), (True, True)), ((l2_reg, average_grad, momentum_step), (False, True)))


def sgd_recipe(cbs) -> tuple|None:
    "(decoupled weight decay, momentum) when the optimizer callbacks `cbs` are exactly one of fastai's `SGD`s, else None"
    cbs = list(cbs)  # compared by identity: callbacks need not be hashable, nor their `__eq__` called
    for fs, recipe in _RECIPES:
        if len(fs) == len(cbs) and all(f is cb for f, cb in zip(fs, cbs)): return recipe
    return None


_STATE_KEYS = {'do_wd', 'force_train', 'grad_avg'}  # what fastai's SGD keeps per parameter


class SGDOptimizer(Optimizer):
    """A fastai `Optimizer` (hypers, `freeze`, `state_dict`, ... are fastai's) whose `step` applies `SGD`'s callbacks
    to a whole parameter group at once; any other callbacks, or state the batched step does not know, take fastai's path"""

    def zero_grad(self):
        if not fast_paths_checked(): return super().zero_grad()
        for pg in self.param_lists:
            for p in pg:
                self.state[p]  # as fastai's `all_params`: every parameter gets its (empty) state
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()

    def step(self, closure=None):
        if closure is not None: raise NotImplementedError("fastai optimizers currently do not support closure")
        recipe = sgd_recipe(self.cbs) if fast_paths_checked() else None
        if recipe is None: return super().step()
        decouple, momentum = recipe
        groups = []
        for pg, hyper in zip(self.param_lists, self.hypers):
            for p in pg: self.state[p]  # as fastai's `all_params`: every parameter gets its (empty) state
            ps = [p for p in pg if p.grad is not None]
            if not ps: continue
            states = [self.state[p] for p in ps]
            if not _batchable(hyper, states, momentum): return super().step()
            groups.append((ps, states, hyper))
        for ps, states, hyper in groups: _sgd_group(ps, states, hyper, decouple, momentum)


def _batchable(hyper:dict, states:list, momentum:bool) -> bool:
    "Whether the batched step gives what fastai's per-parameter `cb(p, **{**state, **hyper})` calls give"
    if 'lr' not in hyper or 'wd' not in hyper or 'grad_avg' in hyper or (momentum and 'mom' not in hyper): return False
    return all(st.keys() <= _STATE_KEYS for st in states)


def _sgd_group(ps:list, states:list, hyper:dict, decouple:bool, momentum:bool):
    "fastai's `weight_decay` or `l2_reg`, then `average_grad` and `momentum_step`, or `sgd_step`, on the params `ps`"
    lr, wd = hyper['lr'], hyper['wd']
    data, grads = [p.data for p in ps], [p.grad.data for p in ps]
    if wd != 0:
        sel = [i for i, st in enumerate(states) if (hyper['do_wd'] if 'do_wd' in hyper else st.get('do_wd', True))]
        if sel and decouple: torch._foreach_mul_([data[i] for i in sel], 1 - lr*wd)
        elif sel: torch._foreach_add_([grads[i] for i in sel], [data[i] for i in sel], alpha=wd)
    if not momentum:
        torch._foreach_add_(data, grads, alpha=-lr)
        return
    mom = hyper['mom']
    damp = 1-mom if hyper.get('dampening', False) else 1.
    avgs = []
    for st, g in zip(states, grads):
        if st.get('grad_avg') is None: st['grad_avg'] = torch.zeros_like(g)
        avgs.append(st['grad_avg'])
    torch._foreach_mul_(avgs, mom)
    torch._foreach_add_(avgs, grads, alpha=damp)
    torch._foreach_add_(data, avgs, alpha=-lr)
