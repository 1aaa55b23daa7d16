"""Train 4 vs 8 on the bundled sample, alone (`python distributed_run.py OUT`) or as one rank of several
(`torchrun --nproc_per_node 2 distributed_run.py OUT`), and write what this rank saw and computed to `OUT/rank<r>.json`;
rank 0 also exports the model to `OUT/export.pkl`. Used by `test_distributed.py`."""
import argparse, hashlib, json, time
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.torch_core import num_distrib, rank_distrib

from fastai_binary_digits import BinaryDigitsDataLoaders, DigitsDataset, binary_learner
from fastai_binary_digits.distributed import distrib_ctx_if_launched

N_ODD = 399  # images in a validation loader that two ranks cannot split evenly: `DistributedDL` pads it, then unpads


def row_keys(x:torch.Tensor) -> list:
    "A short hash of each image (row of `x`), to tell which images a rank trained on"
    return [hashlib.blake2b(r.tobytes(), digest_size=8).hexdigest() for r in x.detach().cpu().contiguous().numpy()]


class RecordSeen(Callback):
    "Record the hashes of the images of every training batch, one list per epoch"
    def before_fit(self): self.seen = []
    def before_train(self): self.seen.append([])
    def before_batch(self):
        if self.training: self.seen[-1] += row_keys(self.x)


def run(out:Path, epochs:int=3, bs:int=64, seed:int=42, arch:str='linear', lr:float=0.1) -> dict:
    "Train; return (and write to `out/rank<r>.json`) the images seen, the metrics, gathered predictions and timings"
    t0 = time.perf_counter()
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=seed, bs=bs)
    rec = RecordSeen()
    learn = binary_learner(dls, arch=arch, seed=seed, lr=lr, path=out, cbs=rec)
    v = dls.valid.dataset
    odd_dl = dls.valid.new(DigitsDataset(v.x[:N_ODD], v.y[:N_ODD], v.vocab))
    with distrib_ctx_if_launched(learn):
        t1 = time.perf_counter()
        learn.fit(epochs)
        t2 = time.perf_counter()
        world = num_distrib()  # 1 again once the context is left
        seen, values = rec.seen, [[float(o) for o in vs] for vs in learn.recorder.values]  # `get_preds` resets both
        preds, targs = learn.get_preds()          # gathered across ranks
        odd_preds, odd_targs = learn.get_preds(dl=odd_dl)  # gathered, then unpadded to `N_ODD`
    learn.export()  # only rank 0 writes
    res = dict(rank=rank_distrib(), world=world, seen=seen, values=values,
               preds=preds.view(-1).tolist(), targs=targs.view(-1).tolist(),
               odd_preds=odd_preds.view(-1).tolist(), odd_targs=odd_targs.view(-1).tolist(),
               weights=[p.detach().sum().item() for p in learn.model.parameters()],
               fit_s=t2-t1, total_s=time.perf_counter()-t0)
    (out/f"rank{res['rank']}.json").write_text(json.dumps(res))
    if not res['rank']:
        print(f"world {max(res['world'], 1)}: bs {bs} per process, {epochs} epochs, fit {res['fit_s']:.2f} s, "
              f"valid accuracy {res['values'][-1][-1]:.4f}", flush=True)
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('out', type=Path, help='folder for rank<r>.json and export.pkl')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--bs', type=int, default=64, help='batch size per process')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--arch', default='linear')
    p.add_argument('--lr', type=float, default=0.1)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    run(a.out, a.epochs, a.bs, a.seed, a.arch, a.lr)
