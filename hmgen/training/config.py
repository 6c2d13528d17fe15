"""The training options, declared once: each option (a field of one of TrainConfig's groups: run, model,
detectors, optim, handwriting) carries its type, default, help text, flag names and allowed range, and drives the
`hmgen train` flags, the config-file keys (TOML/JSON, keys as the flag names, `-` or `_`) and the checks of both.
A value is written the same way everywhere: `hidden = "512,512"` in a file means what `--hidden 512,512` means.
Runs and model files record the options flat, by the same names.

Fixed options (`fixed=True`: the model, the data and its order, the learning rate the optimiser state
holds) cannot change when a run is resumed; the others (length, intervals, schedule, machine) may.
"""
from __future__ import annotations

import difflib
import math
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields

from hmgen.cell import ARCHS, HMLSTM_ARCH
from hmgen.errors import UsageError


def option(default=MISSING, help: str = "", *, fixed: bool = False, min: float | None = None,
           above: float | None = None, choices: tuple[str, ...] | None = None, flags: tuple[str, ...] = ()):
    """An option, a field of one of TrainConfig's groups: `min` is an inclusive lower bound, `above` an exclusive
    one. Its name is the flag's (unique across the groups)."""
    meta = dict(help=help, fixed=fixed, min=min, above=above, choices=choices, flags=flags)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class Group:
    """A group of options: each value is checked (parse_value) when the group is made."""

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, parse_value(f.name, getattr(self, f.name), f.name))


@dataclass
class RunOptions(Group):
    """The data, the run folder, how long the run goes, what it records, and the machine."""
    data: str = option(help="Corpus: a file or folder (.xz ok), ptb:DIR, text8[:DIR] or enwik8[:DIR]; "
                            "iam:DIR for handwriting (IAM-OnDB).", fixed=True)
    out: str = option("runs/hmlstm", "Run folder (checkpoints, best model, metrics.jsonl).", flags=("--out", "-o"))
    valid: str | None = option(None, "Validation file for a file/folder corpus (default: its valid split, "
                                     "or the last 1%).", fixed=True)
    download: bool = option(False, "Fetch text8/enwik8 if they are not in DIR.", flags=("--download",))
    steps: int | None = option(None, "Stop after this many steps in total.", min=1)
    epochs: float | None = option(None, "Stop after this many epochs in total.", above=0)
    time_limit: float | None = option(None, "Stop (with a checkpoint) after this many seconds of this "
                                            "invocation.", min=0)
    eval_every: int = option(500, "Validate every this many steps.", min=1)
    eval_symbols: int | None = option(None, "Validate on at most this many symbols (pen points).", min=1)
    ckpt_every: int = option(500, "Write a checkpoint every this many steps.", min=1)
    log_every: int = option(20, "Log a metrics line every this many steps.", min=1)
    seed: int = option(1234, "Random seed (initial weights, batch order).", fixed=True)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1 ...")
    threads: int | None = option(None, "CPU threads for torch.", min=1)
    name: str | None = option(None, "Name recorded in the exported model (default: the run folder's).")


@dataclass
class ModelOptions(Group):
    """The network: its stack (hmgen.cell), the text model's embeddings, and how its forward runs."""
    arch: str = option(HMLSTM_ARCH, "hmlstm, or lstm (the baseline: same modules, no boundaries).", fixed=True,
                       choices=ARCHS)
    embed_dim: int = option(128, "Input embedding size (paper: 128).", fixed=True, min=1)
    hidden: list[int] = option([512, 512, 512], "Layer sizes, comma-separated.", fixed=True, min=1)
    out_embed: int = option(512, "Output embedding size (paper: 512 on PTB).", fixed=True, min=1)
    layer_norm: bool = option(True, "Layer normalisation.", fixed=True, flags=("--layer-norm/--no-layer-norm",))
    # hmgen's choice for new runs is LN on c only (the cell's HMLSTMLayer says why)
    ln_terms: bool = option(False, "Also layer-normalise each pre-activation term (hmgen's first cell; its "
                                   "gradients explode through time), not only c.", fixed=True,
                            flags=("--ln-terms/--no-ln-terms",))
    fast: bool = option(False, "Text models: the fused forward of hmgen.cell.fast (same function, fewer "
                               "kernels; for GPUs).", flags=("--fast/--no-fast",))

    def stack(self) -> dict:
        """The stack's part of a model's config (hmgen.cell.reference.StackConfig's fields)."""
        return {"arch": self.arch, "hidden": list(self.hidden), "layer_norm": self.layer_norm,
                "ln_terms": self.ln_terms}

    def text_config(self, vocab_size: int):
        """The character LM's ModelConfig for a vocabulary of `vocab_size` symbols."""
        from hmgen.cell.reference import ModelConfig
        return ModelConfig(vocab_size=vocab_size, embed_dim=self.embed_dim, out_embed=self.out_embed, **self.stack())


@dataclass
class DetectorOptions(Group):
    """Keeping the boundary detectors alive (hmgen.training.boundary), and the slope of their hard sigmoid. The
    paper has none of these but the slope: hmgen's choices for new runs are the threshold controller with gain 1
    (benchmarks/RESULTS.md, "Hierarchy"); the rate regulariser (the previous choice) stays for experiments. The
    options left None take the task's defaults (DetectorDefaults)."""
    boundary_init: str = option("torch", "Boundary rows' initialisation: torch (nn.Linear's), or glorot "
                                         "(the authors' TF code).", fixed=True, choices=("torch", "glorot"))
    boundary_lr: float | None = option(None, "Learning rate of the boundary rows, as a multiple of --lr "
                                             "(default: 1 for text, 0.1 for handwriting).", above=0)
    boundary_grad: float | None = option(None, "Scale of the straight-through gradient into the boundary "
                                               "detectors (0 = the loss never moves them; the controller alone "
                                               "sets their rates; default: 1 for text, 0.1 for handwriting).",
                                         min=0)
    rate_control: float = option(1.0, "Gain of the controller that moves each detector's bias, after every "
                                      "update, toward the threshold at which it would have fired at its target "
                                      "rate (0 = off).", min=0)
    rate_band: float | None = option(None, "The controller leaves a detector alone while it fires within "
                                          "[target / band, target * band] (1 = hold it at the target; default: 2 "
                                          "for text, 1 for handwriting).", min=1)
    rate_reg: float = option(0.0, "Weight of the firing-rate regulariser pulling each detector toward its "
                                  "target rate (H-Net's ratio loss; 0 = off).", min=0)
    rate_leak: float = option(0.0, "Added to the sigmoid's derivative in the regulariser's gradient, so a "
                                   "detector far outside its window is still pulled back (0 = off).", min=0)
    # slope annealing a = min(slope_max, slope_start + slope_rate * epoch)   (paper PTB: 1, 0.04, 5)
    slope_start: float = option(1.0, "Slope of the boundary detector's hard sigmoid at epoch 0.", above=0)
    slope_rate: float = option(0.04, "Slope a = min(slope_max, slope_start + rate*epoch).", min=0)
    slope_max: float = option(5.0, "Largest slope.", above=0)


@dataclass
class OptimOptions(Group):
    """Batches and the optimiser (paper §4.1: Adam 0.002, clip 1, LR / 50 on plateau)."""
    batch_size: int = option(64, "Streams (text) or lines (handwriting) per batch.", fixed=True, min=1,
                             flags=("--batch-size", "-b"))
    seq_len: int = option(100, "Truncated-BPTT length (symbols or pen points per step).", fixed=True, min=1)
    cold_starts: float = option(0.0, "Text: the share of training segments in which a stream starts again from "
                                     "the zero state after a newline, as every lane of a compressed block does "
                                     "(0 = off; models meant for compression).", min=0)
    lr: float = option(0.002, "Adam learning rate (paper: 0.002).", fixed=True, above=0)
    clip: float = option(1.0, "Gradient-norm clip (paper: 1).", above=0)
    warmup: int = option(0, "Linear learning-rate warm-up over this many steps (not in the paper; 0 = off).", min=0)
    lr_divide: float = option(50.0, "Divide the LR by this on a validation plateau (paper: 50).", min=1)
    patience: int = option(0, "Evaluations without improvement before dividing.", min=0)
    max_lr_decays: int | None = option(None, "Stop at the plateau after this many divisions "
                                             "(paper: after the 2nd).", min=0)


@dataclass
class HandwritingOptions(Group):
    """Handwriting only (corpus iam:DIR, see hmgen.handwriting)."""
    mixtures: int = option(20, "Handwriting: mixture components (Graves: 20).", fixed=True, min=1)
    window: int = option(10, "Handwriting: Gaussians in the attention window (Graves: 10).", fixed=True, min=1)
    conditional: bool = option(True, "Handwriting: text-conditioned synthesis, or the paper's unconditional "
                                     "model.", fixed=True, flags=("--conditional/--unconditional",))
    stride: int = option(2, "Handwriting: keep every N-th pen point.", fixed=True, min=1)
    max_points: int = option(600, "Handwriting: skip training lines longer than this (after --stride).",
                             fixed=True, min=2)


GROUPS = {"run": RunOptions, "model": ModelOptions, "detectors": DetectorOptions, "optim": OptimOptions,
          "handwriting": HandwritingOptions}


@dataclass(frozen=True)
class DetectorDefaults:
    """What a task's detectors get where the run does not say: the DetectorOptions left None, and the firing-rate
    targets. Each task declares its own (hmgen.text.train.TextTask, hmgen.handwriting.train.HandwritingTask)."""
    boundary_lr: float = 1.0
    boundary_grad: float = 1.0
    rate_band: float = 2.0
    first_rate: float = 0.2           # layer 1's target firing rate, a share of all time steps: about once a word
    rate_ratio: float = 0.25          # each layer above fires about a quarter as often as the one below it

    def targets(self, layers: int) -> list[float]:
        """The target firing rate of each detector (layers 1..L-1): hmgen's choice, the paper has no target."""
        return [round(self.first_rate * self.rate_ratio ** l, 4) for l in range(layers - 1)]


@dataclass(init=False)
class TrainConfig:
    """Every training option, in groups: cfg.run.steps, cfg.model.hidden, cfg.detectors.rate_band, cfg.optim.lr,
    cfg.handwriting.mixtures. Made, recorded and read by the options' flat names (the flags' names), which are
    unique across the groups: TrainConfig(data=..., hidden=[16, 16]), to_dict(), from_dict()."""
    run: RunOptions
    model: ModelOptions
    detectors: DetectorOptions
    optim: OptimOptions
    handwriting: HandwritingOptions

    def __init__(self, **options):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"TrainConfig: unknown option {unknown[0]!r}")
        for group, cls in GROUPS.items():
            setattr(self, group, cls(**{f.name: options[f.name] for f in fields(cls) if f.name in options}))

    def to_dict(self) -> dict:
        """The options by their flat names: what a run records (checkpoints, metrics, model files)."""
        return {name: value for group in GROUPS for name, value in asdict(getattr(self, group)).items()}

    def replace(self, **options) -> "TrainConfig":
        return TrainConfig(**{**self.to_dict(), **options})

    def with_defaults(self, defaults: DetectorDefaults) -> "TrainConfig":
        """The detector options left None set to a task's defaults (so that the run records them)."""
        d = self.detectors
        unset = {name: getattr(defaults, name) for name in ("boundary_lr", "boundary_grad", "rate_band")
                 if getattr(d, name) is None}
        return self.replace(**unset) if unset else self

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> "TrainConfig":
        """Options from a config file or a run's record (flat, keys as the flag names); `where` (a file name)
        prefixes the messages."""
        return cls(**{"data": None, **parse_options(d, where)})


# What a run recorded before these options existed meant: such a run resumes with its old cell and objective,
# whatever the defaults for new runs are.
OLD_RUN_DEFAULTS = {"ln_terms": True, "boundary_init": "torch", "boundary_lr": 1.0, "boundary_grad": 1.0,
                    "rate_reg": 0.0, "rate_leak": 0.0, "rate_control": 0.0, "rate_band": 1.0}

OPTIONS = {f.name: f for cls in GROUPS.values() for f in fields(cls)}
TYPES = {name: kind for cls in GROUPS.values() for name, kind in typing.get_type_hints(cls).items()}
FIXED = frozenset(name for name, f in OPTIONS.items() if f.metadata["fixed"])


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show(value) -> str:
    """A value as the flag takes it (layer sizes as 512,512)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def parse_options(d: dict, where: str | None = None) -> dict:
    """Keys as flag names (`-` or `_`) -> {field: checked value}; an unknown key is refused naming the
    nearest known one."""
    out = {}
    for key, value in d.items():
        name = key.replace("-", "_")
        if name not in OPTIONS:
            near = difflib.get_close_matches(name, OPTIONS, n=1)
            hint = f" (did you mean {near[0].replace('_', '-')!r}?)" if near else ""
            raise UsageError(f"{where + ': ' if where else ''}unknown option {key!r}{hint}")
        out[name] = parse_value(name, value, f"{where}: {key}" if where else flag(name))
    return out


def parse_value(name: str, value, label: str):
    """One option's value -> its type, range-checked; `label` names it in the one-line error."""
    kind, meta = TYPES[name], OPTIONS[name].metadata
    optional = type(None) in typing.get_args(kind)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if optional else kind

    def bad(expected: str):
        raise UsageError(f"{label}: expected {expected}, got {value!r}")

    if value is None:
        if optional:
            return None
        if name == "data":
            raise UsageError("no training data: give a corpus (a file or folder, ptb:DIR, text8, enwik8, iam:DIR)")
        bad("a value")
    if base is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            bad("true or false")
    elif base is int or base == list[int]:
        many = base != int
        expected = "comma-separated integers like 512,512,512" if many else "an integer"
        items = value.split(",") if isinstance(value, str) else value if many else [value]
        if not isinstance(items, (list, tuple)) or not items:
            bad(expected)
        parsed = []
        for v in items:
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                bad(expected)
            parsed.append(v)
        if not many and len(parsed) != 1:
            bad(expected)
        value = parsed if many else parsed[0]
    elif base is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                bad("a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            bad("a finite number")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            bad("text")
    for v in (value if isinstance(value, list) else [value]):
        if meta["min"] is not None and v < meta["min"]:
            raise UsageError(f"{label}: must be at least {meta['min']:g}, got {show(value)}")
        if meta["above"] is not None and v <= meta["above"]:
            raise UsageError(f"{label}: must be greater than {meta['above']:g}, got {show(value)}")
    if meta["choices"] and value not in meta["choices"]:
        raise UsageError(f"{label}: expected one of {', '.join(meta['choices'])}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- resuming a run

def split_spec(spec: str) -> tuple[str, str]:
    """A corpus spec -> (its kind with the colon, e.g. "ptb:", or ""; its file or folder, or "")."""
    if ":" in spec and not os.path.exists(spec):
        kind, _, rest = spec.partition(":")
        return kind + ":", rest
    return "", spec


def absolute_data(spec: str | None) -> str | None:
    """A corpus spec with its file or folder made absolute ("ptb:data/ptb" -> "ptb:/home/me/data/ptb"); a name
    alone (text8, enwik8: the download folder) stays as it is."""
    if not spec:
        return spec
    kind, rest = split_spec(spec)
    if not rest or (not kind and not os.path.exists(rest)):
        return spec
    return kind + os.path.abspath(os.path.expanduser(rest))


def same_data(a: str | None, b: str | None) -> bool:
    """Two corpus specs name the same data: equal, or the same file/folder written differently."""
    if a == b:
        return True
    if not a or not b:
        return False
    (pa, _, ra), (pb, _, rb) = (s.rpartition(":") if ":" in s and not os.path.exists(s) else ("", "", s) for s in (a, b))
    try:
        return pa == pb and os.path.samefile(ra, rb)
    except OSError:
        return False


def resume_changes(run: dict, cfg: TrainConfig, out) -> dict:
    """The options in which `cfg` differs from the run's recorded configuration, {name: [run's, now]}.
    A fixed option that differs is refused in one line naming it and both values."""
    recorded = TrainConfig.from_dict(run).to_dict()
    changes = {}
    for name, now in cfg.to_dict().items():
        was = recorded[name]
        if name == "out" or now == was or (name in ("data", "valid") and same_data(was, now)):
            continue
        if name in FIXED:
            raise UsageError(f"{flag(name)} {show(now)}: the run in {out} has {flag(name)} {show(was)}, which "
                             f"--resume cannot change (leave it out, or start a new run)")
        changes[name] = [was, now]
    return changes
