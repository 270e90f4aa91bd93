"""Training: demos -> dataset -> policy, with AdamW, a cosine schedule with warm-up, EMA,
periodic rollouts, atomic checkpoints and exact resume.

A run folder holds `config.yaml` (the resolved config), `metrics.jsonl`, TensorBoard logs
(`tb/`), `checkpoints/latest.pt` (everything needed to resume: weights, EMA, optimiser,
scheduler, RNG states, evaluation history), the deployable policy files `policy_latest.pt`
and `policy_best.pt` (EMA weights), `eval/` results and videos, and `final.json`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from mp1 import jsonio
from mp1.data import DeviceBatches, PointCloudDataset
from mp1.data.demos import DemoConfig, default_store_path, generate_demos
from mp1.envs import resolve_env_names
from mp1.evaluate import DP3_EPISODE_STEPS, EvalResult, dp3_protocol, evaluate, observation_settings
from mp1.integrity import content_digest
from mp1.lock import FolderLock
from mp1.policies import POLICY_NAMES, PRESETS, Policy, make_config
from mp1.policies.config import config_to_dict
from mp1.policies.policy import atomic_torch_save
from mp1.progress import progress_bar
from mp1.report import write_run_report


@dataclass
class TrainConfig:
    policy: str = "mp1"  # mp1, mp1-tuned, flowpolicy, dp3, flowmatching or regression (a diagnostic)
    # metaworld/<task> or adroit/<door|hammer|pen>; empty: the data_path store's task (none for a
    # robot's recording: no simulator, validation on held-out episodes), else metaworld/button-press
    task: str = ""
    preset: str = "cpu"  # network scale: cpu (5.5 M parameters) or paper (255 M)
    seed: int = 0  # seeds weights, batches, noise and the periodic evaluations' policy noise
    demos: int = 10  # expert episodes to train on (generated when missing); 0: every training episode of the store
    demo_seed: int = 0  # seed of the demonstration episodes
    data_dir: str = "data/demos"  # where demonstration stores are kept
    data_path: str = ""  # an existing store to train on instead (e.g. made by DP3's scripts)
    allow_task_mismatch: bool = False  # train on a data_path store recorded for another task
    val_episodes: int = 0  # episodes of the store held out (drawn with demo_seed); validated at every eval_every
    run_dir: str = ""  # default: runs/<task>/<policy>-<preset>-seed<seed>
    epochs: int = 100  # passes over the demonstration windows
    steps: int = 0  # a budget in optimiser steps instead: epochs becomes the fewest whole epochs reaching it; 0: epochs decides
    batch_size: int = 128  # windows per step
    lr: Optional[float] = None  # AdamW learning rate; None: the policy's recipe (its config's `train_lr`)
    betas: tuple[float, float] = (0.95, 0.999)  # AdamW betas
    weight_decay: float = 1e-6  # AdamW weight decay
    warmup_steps: int = 500  # linear warm-up, then cosine decay to the planned last step
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    ema_decay: float = 0.9999  # the EMA warms up: decay_k = min(ema_decay, 1 - (1 + k)^-ema_power)
    ema_power: float = 0.75  # the EMA warm-up's power
    # Periodic rollouts (every `eval_every` epochs, 0 disables) and the final strict evaluation.
    eval_every: int = 20  # epochs between periodic evaluations of the EMA weights (0: none)
    eval_episodes: int = 20  # episodes per periodic evaluation
    final_eval_episodes: int = 100  # strict protocol: fixed-seed episodes of the final EMA weights (0: skip)
    eval_seed: int = 1000  # episode i uses environment seed eval_seed + i
    eval_max_steps: int = DP3_EPISODE_STEPS  # DP3's Meta-World length, Adroit's horizon; 0: the env's own limit
    eval_jobs: int = 1  # rollout processes
    video: bool = True  # write a video of the first episode of each evaluation
    checkpoint_every: int = 5  # epochs between resumable checkpoints
    log_every: int = 10  # steps per metrics record (means over those steps); each record waits for the device
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N
    precision: str = "fp32"  # fp32, or bf16: the loss's forward passes under autocast (weights, optimiser fp32)
    compile: bool = False  # torch.compile the encoder and UNet for training (the first steps wait for the compiler)
    model: dict[str, Any] = field(default_factory=dict)  # policy settings, e.g. model.dispersive.weight=0 (see --show-config)

    def validate(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise ValueError(f"unknown policy {self.policy!r}; choose from {list(POLICY_NAMES)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.task:
            resolve_env_names([self.task])
        elif not self.data_path and self.demos == 0:
            raise ValueError("demos=0 (every episode of a store) needs data_path=STORE")
        at_least_zero = ("epochs", "steps", "final_eval_episodes", "eval_every", "warmup_steps", "eval_max_steps",
                         "demos", "val_episodes")
        for name in (*at_least_zero, "batch_size", "eval_episodes", "eval_jobs", "checkpoint_every", "log_every"):
            minimum = 0 if name in at_least_zero else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables it), got {self.grad_clip}")
        if self.ema_power <= 0:
            raise ValueError(f"ema_power must be positive, got {self.ema_power}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def run_path(self) -> Path:
        suffix = "-custom" if self.model else ""
        name = f"{self.policy}{suffix}-{self.preset}-{self.demos or 'all'}demos-seed{self.seed}"
        source = self.task.replace("/", "_") if self.task else Path(self.data_path).stem
        return Path(self.run_dir or f"runs/{source}/{name}")


def parse_overrides(args: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """`key=value` arguments (OmegaConf dotlist syntax, type-checked) onto the defaults."""
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"expected key=value, got {arg!r}")
    config = OmegaConf.merge(OmegaConf.structured(base or TrainConfig()), OmegaConf.from_dotlist(args))
    config = OmegaConf.to_object(config)
    config.validate()
    return config


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with the fused kernel (CPU and CUDA): one pass over all parameters instead of
    several kernels per parameter (cpu preset, 2-core CPU: 5.7 instead of 18 ms a step)."""
    return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


DEFAULT_TASK = "metaworld/button-press"  # the task of a run given neither task nor data_path


def ensure_demos(config: TrainConfig) -> Path:
    if config.data_path:
        if not Path(config.data_path).exists():
            raise FileNotFoundError(f"data_path {config.data_path} does not exist")
        return Path(config.data_path)
    demo_config = DemoConfig(episodes=config.demos, seed=config.demo_seed)
    path = default_store_path(config.data_dir, config.task, demo_config)
    if not path.exists():
        generate_demos([config.task], config.data_dir, demo_config)
    return path


# Settings that may differ when an interrupted run is resumed: they do not change what is learnt.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "steps", "eval_every", "eval_episodes", "final_eval_episodes", "eval_jobs", "video", "checkpoint_every",
     "threads", "device", "data_dir", "run_dir", "log_every", "compile"}
)


class Trainer:
    def __init__(self, config: TrainConfig):
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        config.validate()
        self.config = config
        if not config.task and not config.data_path:
            config.task = DEFAULT_TASK
        if config.threads:
            torch.set_num_threads(config.threads)
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={config.device} but this torch ({torch.__version__}) sees no CUDA device; use device=cpu")
        self.device = torch.device(auto if config.device == "auto" else config.device)
        seed_everything(config.seed)

        policy_config = make_config(config.policy, config.preset, config.model)
        if config.lr is None:
            config.lr = policy_config.train_lr
        windows = (ensure_demos(config), policy_config.horizon, policy_config.n_obs_steps, policy_config.n_action_steps)
        self.dataset = PointCloudDataset(
            *windows, val_episodes=config.val_episodes, max_episodes=config.demos or None, seed=config.demo_seed
        )
        self.val_dataset = (
            PointCloudDataset(*windows, split="val", val_episodes=config.val_episodes, seed=config.demo_seed)
            if config.val_episodes else None
        )
        recorded_task = self.dataset.attrs.get("env")
        if not config.task:  # a store's own task, or none: a recording with no simulator behind it
            config.task = recorded_task or ""
        elif recorded_task and recorded_task != config.task and not config.allow_task_mismatch:
            raise ValueError(
                f"the demonstration store holds {recorded_task!r}, not task={config.task!r}; "
                "set allow_task_mismatch=true to train on it anyway"
            )
        if len(self.dataset.episodes) < config.demos:
            raise ValueError(
                f"the demonstration store holds {len(self.dataset.episodes)} training episodes "
                f"({config.val_episodes} held out); demos={config.demos}"
            )
        self.run = config.run_path
        sample = self.dataset[0]
        self.observation = observation_settings(self.dataset.attrs, self.dataset.point_cloud.shape)
        policy_config.action_dim = sample["action"].shape[-1]
        policy_config.state_dim = sample["obs"]["agent_pos"].shape[-1]
        policy_config.point_dim = sample["obs"]["point_cloud"].shape[-1]
        self.policy = Policy(policy_config)
        self.policy.set_normalizer(self.dataset.get_normalizer())
        self.policy.to(self.device)
        if config.compile:  # in place: parameter names, and so checkpoints, stay those of the plain modules
            self.policy.encoder.compile()
            self.policy.unet.compile()
        self.ema_policy = Policy(policy_config).to(self.device).eval()
        self.ema_policy.load_state_dict(self.policy.state_dict())
        # Multi-tensor updates (as the optimiser's): a few kernels per step, not one per parameter.
        self.ema = EMAModel(
            self.policy.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=config.ema_power, foreach=True
        )
        self.optimizer = make_optimizer(self.policy.parameters(), config.lr, tuple(config.betas), config.weight_decay)

        self.loader_generator = torch.Generator().manual_seed(config.seed)
        self.loader = DeviceBatches(self.dataset, config.batch_size, self.device, self.loader_generator)
        if config.steps:  # recorded as epochs, so the schedule, checkpoints and evaluations stay per epoch
            config.epochs = math.ceil(config.steps / len(self.loader))
        self.total_steps = config.epochs * len(self.loader)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, max(1, self.total_steps))
        self.epoch, self.step = 0, 0
        self.train_seconds = 0.0  # wall-clock spent in training steps (evaluations excluded)
        self.evaluations: list[dict[str, Any]] = []

    # --- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run / "checkpoints" / "latest.pt"

    def save_checkpoint(self) -> None:
        state = {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "policy": self.policy.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "evaluations": self.evaluations,
            "rng": rng_states(self.loader_generator),
        }
        state["checksum"] = content_digest(state)
        atomic_torch_save(state, self.checkpoint_path)
        self.ema.copy_to(self.ema_policy.parameters())
        self.ema_policy.save(self.run / "policy_latest.pt", extra=self.policy_extra())

    def load_checkpoint(self) -> None:
        state = read_checkpoint(self.checkpoint_path)
        # A key missing from an older checkpoint was added later; that run used its default.
        saved = {**asdict(TrainConfig()), **state["config"]}
        changed = {
            key: (saved[key], value)
            for key, value in asdict(self.config).items()
            if key not in RESUMABLE_CHANGES and saved[key] != value
        }
        if changed:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{self.run} holds a run with another config ({details}); choose another run_dir or delete it"
            )
        self.policy.load_state_dict(state["policy"])
        self.ema_policy.load_state_dict(state["policy"])  # the normaliser of the checkpoint, too
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.evaluations = state["epoch"], state["step"], state["evaluations"]
        self.train_seconds = state.get("train_seconds", 0.0)
        set_rng_states(state["rng"], self.loader_generator)

    def policy_extra(self, **more: Any) -> dict[str, Any]:
        """What a policy file records about its origin (eval reads the task from it)."""
        return {
            "task": self.config.task, "observation": self.observation, "epoch": self.epoch, "step": self.step,
            "seed": self.config.seed, "pipeline": self.dataset.attrs.get("observation", {}).get("pipeline"), **more,
        }

    def recipe(self) -> dict[str, Any]:
        """What was learnt with: every policy setting resolved (objective, sampler, network) and
        the optimiser's settings, so that two runs of one policy name can be told apart."""
        optimiser = {key: getattr(self.config, key) for key in ("lr", "betas", "weight_decay", "warmup_steps", "batch_size")}
        return {"policy": self.config.policy, "optimiser": {**optimiser, "betas": list(optimiser["betas"])},
                "model": config_to_dict(self.policy.config)}

    # --- logging -----------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        with open(self.run / "metrics.jsonl", "a") as f:
            f.write(jsonio.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def log_training(self, sums: dict[str, torch.Tensor], steps: int, since: float, bar: tqdm) -> None:
        """One record of the means over the last `steps` steps, begun at `since`: the only place the
        loop waits for the device (so the clock is read after it). A non-finite loss stops the run
        before any checkpoint can keep it."""
        means = {key: value.item() for key, value in zip(sums, torch.stack(list(sums.values())).div(steps))}
        self.train_seconds += time.perf_counter() - since
        if not np.isfinite(means["loss"]):
            raise FloatingPointError(
                f"the loss became {means['loss']} within steps {self.step - steps + 1}-{self.step}; "
                "lower lr or enable grad_clip"
            )
        bar.set_postfix(epoch=self.epoch, loss=f"{means['loss']:.4f}", refresh=False)
        self.log({"kind": "train", "step": self.step, "epoch": self.epoch, "train_seconds": self.train_seconds,
                  "lr": self.scheduler.get_last_lr()[0], **means})

    # --- the loop ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Trains (or resumes), evaluates and reports; one writer per run folder."""
        with FolderLock(self.run):
            return self._train()

    def _train(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        remove_leftovers(self.run)
        if self.checkpoint_path.exists():
            self.load_checkpoint()
            tqdm.write(f"resuming {self.run} from epoch {self.epoch} (step {self.step})")
            truncate_metrics(self.run / "metrics.jsonl", self.step)
        (self.run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(self.config)))
        (self.run / "recipe.yaml").write_text(OmegaConf.to_yaml(self.recipe()))
        self.writer = SummaryWriter(str(self.run / "tb"))
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step", desc=f"train {self.config.policy}", dynamic_ncols=True)
        try:
            while self.epoch < self.config.epochs:
                self.train_epoch(bar)
                self.epoch += 1
                if self.config.eval_every and self.epoch % self.config.eval_every == 0:
                    self.periodic_eval()
                if self.epoch % self.config.checkpoint_every == 0 or self.epoch == self.config.epochs:
                    self.save_checkpoint()
        finally:
            bar.close()
        summary = self.final_eval()
        self.writer.close()
        return summary

    def train_epoch(self, bar: tqdm) -> None:
        self.policy.train()
        sums: dict[str, torch.Tensor] = {}  # per-step values summed on the device since the last record
        pending, since = 0, time.perf_counter()
        for batch in self.loader:
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.precision == "bf16"):
                loss, info = self.policy.compute_loss(batch, self.step, checked=False)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip > 0:
                info["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.ema.step(self.policy.parameters())
            sums = {key: sums[key] + value if key in sums else value.float() for key, value in info.items()}
            self.step += 1
            pending += 1
            bar.update(1)
            if self.step % self.config.log_every == 0:
                self.log_training(sums, pending, since, bar)
                sums, pending, since = {}, 0, time.perf_counter()
        if pending:  # the epoch's last steps, recorded before any evaluation or checkpoint
            self.log_training(sums, pending, since, bar)

    def evaluate_ema(self, episodes: int, video_name: str | None) -> tuple[dict[str, Any], EvalResult]:
        self.ema.copy_to(self.ema_policy.parameters())
        video = str(self.run / "eval" / video_name) if video_name and self.config.video else None
        # Rollout processes load the policy from a file, removed once they are done.
        path = self.run / "eval" / "policy_under_eval.pt"
        if self.config.eval_jobs > 1:
            self.ema_policy.save(path, extra=self.policy_extra())
        try:
            result = evaluate(
                path if self.config.eval_jobs > 1 else self.ema_policy, self.config.task, episodes,
                self.config.eval_seed, self.config.eval_jobs, video, self.config.eval_max_steps,
                observation=self.observation,
            )
        finally:
            path.unlink(missing_ok=True)
        record = {"epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds, **result.summary()}
        return record, result

    def validate_ema(self) -> dict[str, Any]:
        """The EMA weights' action error on the held-out episodes (mp1.validation)."""
        from mp1.validation import validation_error

        self.ema.copy_to(self.ema_policy.parameters())
        return validation_error(self.ema_policy, self.val_dataset, seed=self.config.seed)

    def periodic_eval(self) -> None:
        """Rollouts in the simulator when the run has a task, validation on held-out episodes when
        it has some; the best policy file is chosen by success, or without a simulator by error."""
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds}
        if self.val_dataset is not None:
            record.update(self.validate_ema())
        if self.config.task:
            record.update(self.evaluate_ema(self.config.eval_episodes, f"epoch{self.epoch:04d}.mp4")[0])
        score = (lambda r: r["success_rate"]) if self.config.task else (lambda r: -r["val_mse"])
        best = max(map(score, self.evaluations), default=-float("inf"))
        self.evaluations.append(record)
        if score(record) > best:
            self.ema_policy.save(self.run / "policy_best.pt", extra=self.policy_extra(**{
                key: record[key] for key in ("success_rate", "val_mse") if key in record}))
        self.log({"kind": "eval", **{k: v for k, v in record.items() if k not in ("env", "device", "val_mse_per_dim")}})
        measured = [f"success {100 * record['success_rate']:.0f}% over {record['episodes']} episodes, "
                    f"latency p50 {record['latency_p50_ms']:.1f} ms"] if "success_rate" in record else []
        if "val_mse" in record:
            measured.append(f"validation MSE {record['val_mse']:.4f} over {record['val_episodes']} held-out episodes")
        tqdm.write(f"epoch {self.epoch}: " + "; ".join(measured))

    def final_eval(self) -> dict[str, Any]:
        """Both protocols, labelled: DP3's (mean of the best periodic evaluations) and the
        strict one (the final EMA weights over many fixed-seed episodes); and the final EMA
        weights' validation error when episodes were held out."""
        rollouts = [e["success_rate"] for e in self.evaluations if "success_rate" in e]
        summary: dict[str, Any] = {
            "task": self.config.task, "policy": self.config.policy, "preset": self.config.preset,
            "seed": self.config.seed, "demos": self.config.demos, "model": self.config.model, "recipe": self.recipe(),
            "epochs": self.epoch, "steps": self.step, "device": str(self.device), "precision": self.config.precision,
            "train_seconds": self.train_seconds, "steps_per_second": self.step / max(self.train_seconds, 1e-9),
            "dp3_protocol_success": dp3_protocol(rollouts),
            "periodic_evaluations": self.evaluations,
        }
        if self.val_dataset is not None:
            summary["validation"] = self.validate_ema()
        if self.config.task and self.config.final_eval_episodes:
            record, result = self.evaluate_ema(self.config.final_eval_episodes, "final.mp4")
            result.save(self.run / "eval" / "final_episodes.json")
            summary["strict_protocol"] = record
            summary["strict_protocol_success"] = record["success_rate"]
        jsonio.write(self.run / "final.json", summary, indent=1)
        write_run_report(self.run)
        return summary


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (truncated, corrupt, foreign or unsafe)."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with torch's weights-only loader: a file crafted to run code
    when unpickled is refused, like a truncated or foreign one, with one error."""
    try:
        # Checkpoints of earlier versions hold numpy's RNG state as an array: its reconstruction
        # (numpy's own, which runs no other code) is allowed, nothing else.
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise CheckpointError(
            f"{path} is not a readable mp1 checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            f"delete it to restart the run from scratch"
        ) from None
    missing = {"config", "epoch", "step", "policy", "ema", "optimizer", "scheduler", "rng"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise CheckpointError(f"{path} is not an mp1 checkpoint (missing {sorted(missing)}); delete it to restart the run")
    if "checksum" in state and content_digest(state) != state["checksum"]:  # checkpoints before checksums have none
        raise CheckpointError(f"{path} is corrupt: its contents do not match the checksum written with them; delete it to restart the run")
    return state


NUMPY_ARRAY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def rng_states(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random source's state as tensors and plain numbers, which the weights-only loader reads."""
    _, mt_keys, mt_pos, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(mt_keys.astype(np.int64)), "pos": int(mt_pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss_next": gauss_next},
        "loader": loader_generator.get_state(),
    }


def set_rng_states(states: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    numpy, python = states["numpy"], states["python"]
    if isinstance(numpy, dict):
        numpy = ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"].tolist()), python["gauss_next"])
    np.random.set_state(numpy)  # earlier versions stored numpy's and Python's own tuples
    random.setstate(python)
    loader_generator.set_state(states["loader"])


def remove_leftovers(run: Path) -> None:
    """Temporary files of a writer that was killed (atomic saves clean up after themselves on
    every other exit path). Called under the run's lock, so no live writer owns them."""
    for leftover in [*run.glob(".*.tmp"), *run.glob("*/.*.tmp"), run / "eval" / "policy_under_eval.pt"]:
        leftover.unlink(missing_ok=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drops records logged after the checkpoint we resume from, so they are not doubled."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short when the run was killed
            continue
    path.write_text("".join(line + "\n" for line in kept))
