"""``--resume``: which run folder and checkpoint, and which flags may change.

- ``--resume latest --experiment-name X`` continues ``{output_dir}/X`` and nothing else;
  ``--resume latest`` alone continues the run under ``output_dir`` that was active last (the
  newest ``checkpoint_latest.pt`` or ``config.json``), and says which; a run folder or a
  checkpoint file may also be given (then a different ``--experiment-name`` is refused).
- A run killed before its first checkpoint (a ``config.json``, no checkpoint) is started again
  from step 0 with its saved settings, in its own folder.
- Flags that make sense to change on resume (:data:`RESUMABLE_FLAGS`: steps, validation interval,
  device, evaluation settings, ``--stop-after``, ``--progress``, ``--viewer*``) are applied and
  validated through :func:`~taichi_nerf.training.config.resolve_config`; any other flag given
  with a value that differs from the saved run (``--scene lego`` for a demo checkpoint,
  ``--model``, ``--downscale`` ...) is refused, all of them named in one line. Flags not given
  keep the saved run's values, except the ``--viewer*`` flags: a resumed run serves a viewer only
  when its own command line asks for one.
- A finished run (``metrics.json`` written at its last step) is not "resumed" into rewriting its
  results: it needs a larger ``--num-iters`` (or ``examples/evaluate.py``).

Which flags were *given*: the command lines pass the flags they parsed (:func:`flags_in_argv`);
library callers get :func:`flags_given`, the fields that differ from ``TrainConfig()``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from taichi_nerf.training.checkpoint import CheckpointError, count_nonfinite, load_checkpoint
from taichi_nerf.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    resolve_config,
)

__all__ = ["RESUMABLE_FLAGS", "ResumeTarget", "find_run", "flags_given", "flags_in_argv",
           "resume_config", "prepare"]

#: Flags that may change on --resume (``eval`` means every ``--eval.*`` flag).
RESUMABLE_FLAGS = ("num_iters", "val_every", "device", "eval", "stop_after", "progress",
                   "viewer", "viewer_port", "viewer_host")
#: Where the run and its data are, not what it is: taken as given.
_LOCATION_FLAGS = ("resume", "output_dir", "experiment_name", "data_dir")
#: Never inherited from the saved run (a saved --stop-after would stop the resumed run at once;
#: a web server is asked for by each command line, not by the run it continues).
_NOT_INHERITED = ("resume", "stop_after", "viewer", "viewer_port", "viewer_host")
_LATEST = "checkpoint_latest.pt"


@dataclasses.dataclass
class ResumeTarget:
    """The run to continue: its folder, checkpoint (None: killed before the first one), the
    saved config dict and the step it reached."""

    run_dir: Path
    checkpoint: Path | None
    saved: dict[str, Any]
    step: int


def _read_target(run_dir: Path, checkpoint: Path | None = None) -> ResumeTarget:
    if checkpoint is None and (run_dir / _LATEST).is_file():
        checkpoint = run_dir / _LATEST
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, mmap=True)
        return ResumeTarget(run_dir, checkpoint, state["config"], int(state["step"]))
    config_json = run_dir / "config.json"
    if not config_json.is_file():
        raise CheckpointError(f"--resume: {run_dir} holds neither {_LATEST} nor config.json, so "
                              f"it is not a run folder; start a new run without --resume")
    try:
        saved = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--resume: cannot read {config_json} ({exc}); start a new run "
                              f"with another --experiment-name") from None
    return ResumeTarget(run_dir, None, saved, 0)


def _newest_run(output_dir: Path) -> Path:
    def activity(run: Path) -> float:
        return max((run / name).stat().st_mtime for name in (_LATEST, "config.json")
                   if (run / name).is_file())

    runs = [p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            and ((p / _LATEST).is_file() or (p / "config.json").is_file())] \
        if output_dir.is_dir() else []
    if not runs:
        raise CheckpointError(f"--resume latest: no run folder under {output_dir}; pass "
                              f"--output-dir, or start a new run without --resume")
    return max(runs, key=activity)


def find_run(resume: str, output_dir: str | Path, experiment_name: str | None = None
             ) -> ResumeTarget:
    """Turn ``--resume`` (``latest``, a run folder or a checkpoint file) into a :class:`ResumeTarget`.

    Raises:
        CheckpointError: nothing to resume there, or a checkpoint of another run than
            ``--experiment-name``.
    """
    output_dir = Path(output_dir)
    if resume == "latest":
        if not experiment_name:
            return _read_target(_newest_run(output_dir))
        run_dir = output_dir / experiment_name
        if not run_dir.is_dir():
            raise CheckpointError(f"--resume latest --experiment-name {experiment_name}: no run "
                                  f"folder {run_dir}; start it without --resume")
        return _read_target(run_dir)
    path = Path(resume)
    if path.is_dir():
        target = _read_target(path)
    elif path.is_file():
        target = _read_target(path.parent, path)
    else:
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    if experiment_name and target.run_dir.name != experiment_name:
        raise CheckpointError(f"--resume {resume} belongs to run {target.run_dir.name}, not to "
                              f"--experiment-name {experiment_name}; give only one of the two")
    return target


def _flat(cfg: TrainConfig) -> dict[str, Any]:
    out = {}
    for key, value in config_to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def flags_given(config: TrainConfig, defaults: TrainConfig | None = None) -> set[str]:
    """Fields (dotted: ``ngp.hidden_dim``) where ``config`` differs from ``defaults``
    (``TrainConfig()``): what a library caller "gave"."""
    base = _flat(defaults if defaults is not None else TrainConfig())
    return {k for k, v in _flat(config).items() if v != base.get(k)}


def flags_in_argv(argv: list[str]) -> set[str]:
    """Fields named on a tyro command line (``--scene``, ``--no-progress``, ``--eval.refine_lr=2``)."""
    spellings: dict[str, str] = {}
    defaults = TrainConfig()
    for path in _flat(defaults):
        head, _, leaf = path.rpartition(".")
        prefix = f"{head}." if head else ""
        spellings[path.replace("_", "-")] = path
        value = getattr(getattr(defaults, head) if head else defaults, leaf)
        if isinstance(value, bool):
            spellings[f"{prefix}no-{leaf}".replace("_", "-")] = path
    names = (token[2:].split("=", 1)[0].replace("_", "-") for token in argv
             if token.startswith("--"))
    return {spellings[name] for name in names if name in spellings}


def _value(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return list(cfg) if isinstance(cfg, tuple) else cfg


def _refuse_changes(config: TrainConfig, saved: TrainConfig, given: set[str],
                    target: ResumeTarget) -> None:
    changed = []
    for path in sorted(given):
        top = path.split(".")[0]
        if top in RESUMABLE_FLAGS or top in _LOCATION_FLAGS:
            continue
        new, old = _value(config, path), _value(saved, path)
        if new != old:
            shown = " ".join(map(str, new)) if isinstance(new, list) else new
            was = " ".join(map(str, old)) if isinstance(old, list) else old
            changed.append(f"--{path.replace('_', '-')} {shown} (the run has {was})")
    if changed:
        where = target.checkpoint or target.run_dir
        raise ConfigError(
            f"--resume {where} (scene {saved.scene}, model {saved.model}): "
            f"{'; '.join(changed)} cannot change on resume; only --num-iters, --val-every, "
            f"--device, --eval.*, --stop-after, --progress, --viewer* can: drop the others, or "
            f"start a new run")


def resume_config(config: TrainConfig, target: ResumeTarget,
                  given: set[str] | None = None) -> TrainConfig:
    """The saved run's config with the given resumable flags applied; checked (resolved once)."""
    given = flags_given(config) if given is None else set(given)
    saved = config_from_dict(target.saved)
    _refuse_changes(config, saved, given, target)
    changes: dict[str, Any] = {name: getattr(config, name) for name in _NOT_INHERITED}
    for name in RESUMABLE_FLAGS + ("data_dir",):
        if name in given and name != "eval":
            changes[name] = getattr(config, name)
    changes["eval"] = dataclasses.replace(saved.eval, **{
        path.split(".", 1)[1]: _value(config, path) for path in given
        if path.startswith("eval.")})
    changes.update(output_dir=str(target.run_dir.parent), experiment_name=target.run_dir.name)
    merged = dataclasses.replace(saved, **changes)
    resolve_config(merged)  # the one place flags are checked: --num-iters -5, --val-every 0
    _check_progress(merged, target)
    return merged


def _check_progress(merged: TrainConfig, target: ResumeTarget) -> None:
    if merged.num_iters is None or target.checkpoint is None:
        return
    if target.step > merged.num_iters:
        raise ConfigError(f"--num-iters {merged.num_iters} is below the step {target.step} of "
                          f"{target.checkpoint}; give a larger --num-iters")
    if target.step == merged.num_iters and (target.run_dir / "metrics.json").is_file():
        raise ConfigError(f"{target.run_dir} finished at step {target.step} (metrics.json is "
                          f"written): train it longer with --num-iters N > {target.step}, or "
                          f"re-evaluate it with examples/evaluate.py {target.run_dir}")


def prepare(config: TrainConfig, given: set[str] | None = None
            ) -> tuple[TrainConfig, dict[str, Any] | None, ResumeTarget]:
    """For ``config.resume``: ``(config to run, checkpoint state or None, target)``; a None
    state means the run is started again from step 0 (it had no checkpoint yet)."""
    target = find_run(config.resume, config.output_dir, config.experiment_name)
    merged = resume_config(config, target, given)
    state = None
    if target.checkpoint is not None:
        state = load_checkpoint(target.checkpoint)
        bad = count_nonfinite([state["renderer"], state["poses"]])
        if bad:
            raise CheckpointError(f"{target.checkpoint} holds {bad} non-finite weights (saved "
                                  f"after its run diverged); resume an earlier checkpoint_N.pt "
                                  f"of {target.run_dir}, or start a new run")
    return merged, state, target
