"""Distil the demo base models: CFG into dev's guidance input, and few-step students.

    nice -n 10 python -m models.demo.train_distill --mode guidance --steps 150 --lr 5e-4
    nice -n 10 python -m models.demo.train_distill --mode schnell --steps 250 --bank 512 --lr 3e-4
    nice -n 10 python -m models.demo.train_distill --mode klein --steps 250 --bank 512 --lr 3e-4

Wall time: a few minutes each on one thread of the shared 2-core CPU (the trajectory bank is
most of it for schnell and klein); each run's own is in runs/distill_<mode>/log.jsonl. The
shipped dev and schnell come from the 14,000-step dev base (train_flow.py): guidance --steps 300
--lr 5e-4, schnell --steps 400 --bank 512 --lr 3e-4, side by side.
The shipped klein: the earlier klein (a 2,000-step base, distilled) trained on in
train_edit.py's reference mode, whose plain rows continue base training, to step 15,000 of that
run (batch 32, lr 5e-4, about 95 min; judged at 4 steps on 270 prompts: 0.37 -> 0.52 at step
9,000 -> 0.56), then distilled again:
    --mode klein --teacher runs/edit_reference/ema_final.pt --steps 400 --bank 512 --lr 3e-4
(4 min; 0.56 -> 0.59 on 270 prompts). The student starts from the teacher, so it keeps reading
reference images.

guidance: the student (init: the dev base) learns v(x_t, t, c, g) = v_u + g (v_c - v_u) of the
  frozen base for g ~ U(1, 6) at noised data points: FLUX.1-dev's guidance distillation, so the
  shipped dev needs one forward per step and its `guidance` request field means what it says.
schnell / klein: the student learns the teacher's trajectory on the student's own 4-step
  schedule (schnell: linear 1, .75, .5, .25, 0; klein: the FLUX.2 shifted one). The teacher
  (the dev or klein base with true CFG at G) integrates each student
  segment in SUB Euler steps from seeded noise; the student regresses each segment's mean
  velocity (x_{k+1} - x_k) / (t_{k+1} - t_k) from x_k. The trajectory bank is built once and
  kept in the run folder. Resumable; seeded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.demo.train_common import EmaRun, Logger, batch, captions_for, load_state, save_state, step_rng
from models.demo.train_flow import FlowModel, demo_preset, load_ae, quick_eval
from models.demo.world import sample_attributes
from models.flux import sampling

SUB = 4  # teacher Euler steps per student segment (16 CFG steps in all: the bank costs minutes)


def load_flow(arch: str, path: Path) -> FlowModel:
    """A FlowModel of preset `arch` from a FlowModel state dict of any sibling (strict=False
    covers dev -> schnell, whose only difference is the guidance input it does not have)."""
    model = FlowModel(demo_preset(arch))
    missing, unexpected = model.load_state_dict(torch.load(path, map_location="cpu"), strict=False)
    assert all("guidance_in" in k for k in missing + unexpected), (missing, unexpected)
    return model


def teacher_velocity(teacher: FlowModel, x: torch.Tensor, t: torch.Tensor, text: tuple, uncond: tuple,
                     g: torch.Tensor) -> torch.Tensor:
    """True CFG of a base model (dev's base was trained with a guidance input it ignores)."""
    gin = g if teacher.preset.transformer.guidance_embed else None
    v_c, v_u = teacher(x, t, text, gin), teacher(x, t, uncond, gin)
    return v_u + g[:, None, None] * (v_c - v_u)


@torch.no_grad()
def build_bank(teacher: FlowModel, schedule: list[float], n: int, guidance: float, seed: int, log: Logger,
               chunk: int = 128) -> dict:
    """n seeded (caption, noise) pairs and the teacher's latents at every student time."""
    rng = np.random.default_rng([seed, 12345])
    attrs = [sample_attributes(rng) for _ in range(n)]  # seen combinations only
    caps = captions_for(attrs, rng, 0.0)
    channels = teacher.transformer.params.in_channels  # 64 (FLUX.1, 2x2-packed) or 128 (FLUX.2)
    noise = torch.from_numpy(rng.standard_normal((n, teacher.side**2, channels)).astype("float32"))
    xs = torch.empty(n, len(schedule), *noise.shape[1:])
    for s in range(0, n, chunk):
        x = noise[s : s + chunk].clone()
        b = x.shape[0]
        text = teacher.encode_text(caps[s : s + chunk])
        uncond = teacher.encode_text([""] * b)
        g = torch.full((b,), guidance)
        xs[s : s + b, 0] = x
        for k in range(len(schedule) - 1):
            ts = np.linspace(schedule[k], schedule[k + 1], SUB + 1)
            for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
                v = teacher_velocity(teacher, x, torch.full((b,), float(t0)), text, uncond, g)
                x = x + float(t1 - t0) * v
            xs[s : s + b, k + 1] = x
        log(event="bank", done=s + b, of=n)
    return {"captions": caps, "xs": xs, "schedule": schedule}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["guidance", "schnell", "klein"], required=True)
    ap.add_argument("--teacher", type=Path, default=None, help="FlowModel state dict (default: by mode)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--guidance", type=float, default=3.0, help="teacher CFG scale for step distillation")
    ap.add_argument("--bank", type=int, default=1536)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="1 per run: two runs side by side beat one on 2 threads")
    ap.add_argument("--run-dir", type=Path, default=Path("runs"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run = args.run_dir / f"distill_{args.mode}"
    # All three distil a base model sampled with true CFG, so guidance and schnell can run side by side.
    default_teacher = {"guidance": "flow_dev/ema_final.pt", "schnell": "flow_dev/ema_final.pt",
                       "klein": "flow_klein/ema_final.pt"}[args.mode]
    teacher_path = args.teacher or args.run_dir / default_teacher
    t_arch = "klein" if args.mode == "klein" else "dev"
    s_arch = {"guidance": "dev", "schnell": "schnell", "klein": "klein"}[args.mode]
    teacher = load_flow(t_arch, teacher_path).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = load_flow(s_arch, teacher_path)
    ae = load_ae(s_arch)
    log = Logger(run / "log.jsonl")

    schedule = sampling.get_schedule(4, student.side**2, student.preset.schedule)  # as the pipeline at 64 px
    bank = None
    if args.mode != "guidance":
        bank_path = run / "bank.pt"
        bank = load_state(bank_path)
        if bank is None:
            t0 = time.time()
            bank = build_bank(teacher, schedule, args.bank, args.guidance, args.seed, log)
            save_state(bank_path, bank)
            log(event="bank_done", seconds=round(time.time() - t0, 1))
        schedule = bank["schedule"]

    r = EmaRun(run, student, args.lr, args.steps, warmup=30, ema_cap=0.995, weight_decay=0.0)
    log(event="start", step=r.step, teacher=str(teacher_path))
    for step in range(r.step, args.steps):
        rng = step_rng(args.seed, step)
        if bank is None:  # guidance distillation on noised data
            x, attrs = batch(args.batch, rng)
            with torch.no_grad():
                x0 = student.to_tokens(ae.encode(x))
            caps = captions_for(attrs, rng, 0.05)
            eps = torch.from_numpy(rng.standard_normal(x0.shape).astype("float32"))
            t = torch.sigmoid(torch.from_numpy(rng.standard_normal(len(attrs)).astype("float32")))
            g = torch.from_numpy(rng.uniform(1, 6, len(attrs)).astype("float32"))
            xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
            with torch.no_grad():
                target = teacher_velocity(teacher, xt, t, teacher.encode_text(caps),
                                          teacher.encode_text([""] * len(caps)), g)
            pred = student(xt, t, student.encode_text(caps), g)
        else:  # one student segment per sample, from the teacher's own trajectory point
            idx = rng.integers(len(bank["captions"]), size=args.batch)
            k = torch.from_numpy(rng.integers(len(schedule) - 1, size=args.batch))
            sched = torch.tensor(schedule, dtype=torch.float32)
            xs = bank["xs"][torch.from_numpy(idx)]  # (B, K+1, L, C)
            rows = torch.arange(args.batch)
            xt, xn = xs[rows, k], xs[rows, k + 1]
            t, tn = sched[k], sched[k + 1]
            target = (xn - xt) / (tn - t)[:, None, None]
            g = None
            pred = student(xt, t, student.encode_text([bank["captions"][i] for i in idx]), g)
        loss = F.mse_loss(pred, target)
        r.update(step, loss)
        if step % 25 == 0:
            log(step=step, loss=round(loss.item(), 4), train_wall=round(r.wall, 1))
        last = step == args.steps - 1
        if (step + 1) % args.eval_every == 0 or last:
            steps, g_eval = (20, args.guidance) if args.mode == "guidance" else (4, 1.0)
            rep = quick_eval(r.ema, ae, 60, steps, g_eval)
            log(step=step + 1, eval_acc=rep["accuracy"], per=rep["per_attribute"], train_wall=round(r.wall, 1))
            torch.save(r.ema.state_dict(), run / f"ema_{step + 1}.pt")
            r.restart_clock()
    ema = r.ema
    torch.save(ema.state_dict(), run / "ema_final.pt")
    from models.demo.train_flow import export_variant

    log(event="exported", paths=[str(p) for p in export_variant(ema, s_arch)], train_wall=round(r.wall, 1))


if __name__ == "__main__":
    main()
