"""The training options and their defaults (every key a config may set), shared by train/_config.py (which resolves
a run's config) and train/_checks.py (which checks it)."""

from __future__ import annotations

from typing import Any

STAGES: tuple[str, ...] = ("pretrain", "finetune")
#: Mixed precision of a run: auto (bf16 on CUDA where supported, else none), none, fp16, bf16.
AMP_MODES: tuple[str, ...] = ("auto", "none", "fp16", "bf16")

#: Options of one training stage (the ``train:`` section and the per-stage sections).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,  # sequences per optimizer step, summed over all processes
    "lr": 1e-3,
    "optimizer": "adam",  # adam | adamw
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "lr_decay": 0.96,  # multiplied into the lr once per epoch
    "warmup_steps": 0,  # linear warm-up from 0 over the first steps of the stage
    "grad_clip": 1.0,  # max global grad norm; 0 or null disables clipping
    "max_steps": None,  # cap on optimizer steps of the stage (smoke runs, tests)
    "stride": None,  # window stride of the training clips; null = num_frame (non-overlapping, upstream)
    "flip": True,  # random left/right mirror augmentation (p = 0.5 per clip)
    "checkpoint_every": 0,  # also write last.pt every N steps (0: once per epoch)
    "val_every": 1,  # validate every N epochs (and at the end of the stage)
}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": "auto",  # auto (bf16 on CUDA where supported, else none) | none | fp16 | bf16
    "out": "runs/default",
    "stage": "all",  # pretrain | finetune | all
    "init": None,  # weights the first trained stage starts from (ours or upstream MixSTE)
    "resume": None,  # path of a last.pt to continue from
    "fused": False,  # train with the Triton attention kernels
    "recompute": "none",  # activation recompute: RECOMPUTE_POLICIES or auto (CUDA: cheapest that fits; cpu: none)
    "compare_scratch": False,  # also fine-tune from scratch with the same budget, plot both curves
    "progress": True,  # tqdm bars
    "threads": None,  # CPU threads per process (torch.set_num_threads); null = torch's default
    "data": {
        "dir": None,  # VideoPose3D-format npz files; null = the built-in dataset
        "keypoints": "cpn_ft_h36m_dbb",
        "mocap": [],  # extra pretraining corpora (npz files from the mocap import)
        "num_workers": 0,
    },
    "model": {},  # MixSTEConfig fields; omitted ones take MixSTEConfig's defaults
    "train": {},
    # h36m_3d: use the training subjects' 3D as a source; motion_frames: frames of procedural motion (0: none)
    # loss_weights: the stage loss's term weights (fastmixste.eval.losses.PRETRAIN_WEIGHTS / FINETUNE_WEIGHTS; the ones
    # not given keep those defaults)
    "pretrain": {"h36m_3d": True, "corruption": {}, "motion_frames": 0, "motion_clip_frames": 300, "loss_weights": {}},
    "finetune": {"loss_weights": {}},
    # Per-epoch validation: one test clip per action and subject, first max_frames frames, no flip.
    "val": {"max_frames": 486, "batch_size": 64},
    # Final evaluation: the full test set. attn_backend: null = the training backend (weights are shared, so any
    # backend gives the same numbers; e.g. sdpa keeps a --fused run under TRITON_INTERPRET=1 quick to evaluate).
    # heldout_clips: clips per pattern of the held-out motion set (fastmixste.data.motion; 0: not evaluated).
    "eval": {"flip": True, "batch_size": 64, "max_frames": None, "attn_backend": None, "heldout_clips": 0},
    # Test hooks, never restored by --resume: a NaN loss at this step of a stage (the divergence stop); Ctrl-C in
    # the middle of step STEP of stage STAGE, written "STAGE:STEP" (the interrupt save).
    "debug": {"nan_step": None, "interrupt_at": None},
}

STAGE_ONLY_KEYS = {
    "pretrain": {"h36m_3d", "corruption", "motion_frames", "motion_clip_frames", "loss_weights"},
    "finetune": {"loss_weights"},
}
