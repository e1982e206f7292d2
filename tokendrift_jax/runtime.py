"""Process start-up shared by every entry point (train, eval, experiments).

Neutral ground between ``train/`` and ``eval/``: both launchers start ``jax.distributed``
and check their command lines here, so neither imports the other.

:func:`flags_parser` is the absl flag parser of the launch scripts (``app.run(main,
flags_parser=runtime.flags_parser("configs/mdlm_drift.py"))``): configuration errors (a
misspelled ``--config.*`` field, a missing config file, an unknown flag or a bad value)
print one ``error: ...`` line, the suggestion first, and exit with status 2 instead of a
traceback; ``--help`` exits 0 and lists the config's fields with their defaults. jax is
imported only by :func:`init_distributed` and :func:`workdir_lock`, so ``--help`` and flag
errors stay fast.

:func:`workdir_lock` / :func:`check_workdir_free` are the one-writer lock of a run's
workdir for every process of a multi-process run: process 0 takes (or probes) it and every
process learns the outcome (:func:`decided_by_process_0`, :func:`agreed_message`), so a
held workdir stops all of them with the same line.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from typing import Callable, Sequence

import ml_collections
from absl import flags as absl_flags

from tokendrift_jax import fs

# The exit status of a configuration / user error (as every launch script's `error: ...`).
EXIT_USAGE = 2
# What absl / ml_collections raise for a bad command line: a flag error (unknown flag, bad
# value, missing required flag), a misspelled --config.* field (KeyError / AttributeError),
# a config file that cannot be read (IOError). Anything else is a bug and keeps its traceback.
CONFIG_ERRORS = (absl_flags.Error, KeyError, AttributeError, OSError)
HELP_ARGS = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull",
             "-h", "-?", "--help=true", "--help=True")


def init_distributed(cfg: ml_collections.ConfigDict) -> None:
  """jax.distributed from config.distributed, or from the cluster environment ("auto").

  On CPU the cross-process collectives go through gloo.
  """
  import jax  # pylint: disable=import-outside-toplevel
  mode = str(cfg.get("initialize", "auto"))
  explicit = bool(cfg.get("coordinator_address")) or int(cfg.get("num_processes", 0)) > 1
  if mode == "never" or (mode == "auto" and not explicit and not _cluster_env()):
    return
  if mode not in ("auto", "always", "never"):
    raise ValueError(f"config.distributed.initialize must be auto|always|never, got {mode!r}")
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if cfg.get("coordinator_address"):
    kwargs["coordinator_address"] = cfg.coordinator_address
  if int(cfg.get("num_processes", 0)) > 0:
    kwargs["num_processes"] = int(cfg.num_processes)
  if int(cfg.get("process_id", -1)) >= 0:
    kwargs["process_id"] = int(cfg.process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d global devices", jax.process_index(),
               jax.process_count(), jax.device_count())


# Bytes of a message broadcast by agreed_message (longer ones are cut: error lines only).
MESSAGE_BYTES = 2048


def agreed_message(local: str, *, is_main: bool, process_count: int,
                   broadcast: Callable | None = None) -> str:
  """Process 0's ``local`` on every process ("" = nothing to report).

  A decision only process 0 can take (it alone touches the workdir) must be the same on
  every process: one that went on alone would wait forever at its first collective. The
  message travels as uint8 [MESSAGE_BYTES] (UTF-8, zero-padded) through ``broadcast``
  (default ``multihost_utils.broadcast_one_to_all``, a collective every process must call
  at the same point); a single process returns ``local`` without any collective.
  """
  if process_count == 1:
    return local
  import numpy as np  # pylint: disable=import-outside-toplevel
  if broadcast is None:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    broadcast = multihost_utils.broadcast_one_to_all
  buf = np.zeros(MESSAGE_BYTES, np.uint8)
  if is_main:
    data = local.encode("utf-8")[:MESSAGE_BYTES]
    buf[:len(data)] = np.frombuffer(data, np.uint8)
  got = np.asarray(broadcast(buf), np.uint8).tobytes().rstrip(b"\0")
  return got.decode("utf-8", errors="replace")


def decided_by_process_0(fn: Callable[[], object], *, process_index: int | None = None,
                         process_count: int | None = None,
                         broadcast: Callable | None = None):
  """``fn()`` on process 0 only (its result there; None elsewhere). When it raises
  :class:`fs.DestinationError` or OSError, every process raises the same one-line error
  (:class:`fs.WorkdirBusy` when it was one, else :class:`fs.DestinationError`), so all
  of them stop alike.

  Every process of a run must call it at the same point (a collective when there are
  several). ``process_index`` / ``process_count`` default to jax's.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index, process_count = jax.process_index(), jax.process_count()
  result, problem = None, ""
  if process_index == 0:
    try:
      result = fn()
    except fs.WorkdirBusy as e:
      problem = "busy:" + _one_line(e)
    except (fs.DestinationError, OSError) as e:
      problem = "error:" + _one_line(e)
  problem = agreed_message(problem, is_main=process_index == 0, process_count=process_count,
                           broadcast=broadcast)
  if not problem:
    return result
  kind, _, line = problem.partition(":")
  raise (fs.WorkdirBusy if kind == "busy" else fs.DestinationError)(line)


def check_workdir_free(workdir: str, **kwargs) -> None:
  """:meth:`fs.WorkdirLock.check_free` as process 0 sees it, on every process (only
  process 0 takes the lock, so only its view of the workdir counts)."""
  decided_by_process_0(lambda: fs.WorkdirLock.check_free(workdir), **kwargs)


def workdir_lock(workdir: str, what: str, **kwargs) -> "fs.WorkdirLock | None":
  """Process 0 takes ``workdir``'s :class:`fs.WorkdirLock` (returned; None elsewhere);
  when it cannot, every process raises the same one-line error
  (:func:`decided_by_process_0`)."""
  return decided_by_process_0(lambda: fs.WorkdirLock(workdir, what).acquire(), **kwargs)


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, OSError) and e.filename is not None:
    text = f"{e.filename}: {e.strerror or text}"
  return (text.splitlines() or [type(e).__name__])[0]


def _cluster_env() -> bool:
  return any(v in os.environ for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                                       "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS"))


def repeated_sequence_overrides(argv, config: ml_collections.ConfigDict) -> str | None:
  """A message if a tuple / list field is overridden twice on the command line, else None.

  ml_collections concatenates repeated overrides of a sequence field (``--config.seeds=(0,1)
  --config.seeds=(2,)`` gives ``(0, 1, 2)``) instead of keeping the last one, so a script's
  default plus a user's override would silently run both; refuse it instead.
  """
  seen: dict[str, int] = {}
  for arg in argv:
    if arg.startswith("--config.") and len(arg) > len("--config."):
      field = arg[len("--config."):].split("=", 1)[0]
      seen[field] = seen.get(field, 0) + 1
  for field, count in seen.items():
    if count < 2:
      continue
    node = config
    try:
      for part in field.split("."):
        node = node[part]
    except (KeyError, AttributeError, TypeError):
      continue
    if isinstance(node, (tuple, list)):
      return (f"--config.{field} is given {count} times; ml_collections would concatenate the "
              f"values into {tuple(node)}; give it once")
  return None


# ----------------------------------------------------------------------------- flags


def flags_parser(example_config: str, *, config_flag: str = "config"
                 ) -> Callable[[list[str]], list[str]]:
  """The ``app.run(main, flags_parser=...)`` of a launch script with a config file flag.

  Args:
    example_config: a config file named in hints, e.g. "configs/mdlm_drift.py".
    config_flag: the name of the ``config_flags.DEFINE_config_file`` flag.
  """
  def parse(argv: list[str]) -> list[str]:
    return parse_flags(argv, example_config, config_flag=config_flag)
  return parse


def parse_flags(argv: Sequence[str], example_config: str, *, config_flag: str = "config"
                ) -> list[str]:
  """Parses absl's FLAGS from ``argv``; ``--help`` prints the usage and the config's fields
  and exits 0, a configuration error prints one ``error: ...`` line and exits 2.

  ml_collections reports a misspelled override (``--config.optim.lrr=1``) as a KeyError /
  AttributeError deep in flag parsing (its "Did you mean" on the last line of a long
  traceback) and a missing config file as an IOError at the first use of the config; both
  become one line here, the suggestion first.
  """
  argv = list(argv)
  end = argv.index("--") if "--" in argv else len(argv)
  helps = [a for a in argv[1:end] if a in HELP_ARGS]
  if helps:
    print_help(argv, example_config, config_flag=config_flag,
               full=any("helpfull" in a for a in helps))
    sys.exit(0)
  try:
    rest = absl_flags.FLAGS(argv)
  except CONFIG_ERRORS as e:
    exit_config_error(e, argv, example_config, config_flag=config_flag)
  fv = absl_flags.FLAGS
  value = fv[config_flag].value if config_flag in fv else None
  if _is_error_config(value):
    exit_config_error(object.__getattribute__(value, "_error"), argv, example_config,
                      config_flag=config_flag)
  return rest


def exit_config_error(exc: BaseException, argv: Sequence[str], example_config: str, *,
                      config_flag: str = "config"):
  """Prints a configuration error (one of CONFIG_ERRORS) as one ``error: ...`` line, the
  suggestion first, and exits with status 2.

  Also for a config flag whose *default* file is parsed when it is defined (with the
  command line's overrides): wrap ``config_flags.DEFINE_config_file`` in ``try``.
  """
  if isinstance(exc, absl_flags.Error):
    message = _flags_error(exc, argv, example_config, config_flag)
  elif isinstance(exc, (KeyError, AttributeError)):
    message = _override_error(exc, argv, example_config, config_flag)
  else:
    message = _config_file_error(exc, argv, example_config, config_flag)
  print("error: " + " ".join(message.split()), file=sys.stderr)
  sys.exit(EXIT_USAGE)


def print_help(argv: Sequence[str], example_config: str, *, config_flag: str = "config",
               full: bool = False) -> None:
  """absl's usage (the script's docstring and flags), then the fields of the config file
  given with ``--config`` (or its default) with their defaults, or how to list them."""
  from absl import app  # pylint: disable=import-outside-toplevel
  app.usage(shorthelp=not full, writeto_stdout=True)
  spec = _config_spec(argv, config_flag)
  print()
  if spec:
    config, error = _load_config(spec, config_flag)
    if config is not None:
      print(f"Fields of --{config_flag}={spec} with their defaults (override any with "
            f"--{config_flag}.FIELD=VALUE):")
      for name, value in _flatten(config):
        print(f"  --{config_flag}.{name}={_shell_value(value)}")
      return
    print(f"(--{config_flag}={spec} cannot be loaded: {error})")
  print(f"To list a config's fields and their defaults: python {_prog(argv)} "
        f"--{config_flag}=FILE --help, e.g. --{config_flag}={example_config}")


def _prog(argv: Sequence[str]) -> str:
  return argv[0] if argv else "SCRIPT"


def _is_error_config(value) -> bool:
  # ml_collections' stand-in for a config file that failed to load (it raises on any use).
  return type(value).__name__ == "_ErrorConfig"


def _config_spec(argv: Sequence[str], config_flag: str) -> str | None:
  """The ``--config`` value of the command line (the last one), else the flag's default."""
  spec = None
  for i, arg in enumerate(argv[1:], 1):
    for prefix in (f"--{config_flag}=", f"-{config_flag}="):
      if arg.startswith(prefix):
        spec = arg[len(prefix):]
    if arg in (f"--{config_flag}", f"-{config_flag}") and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    if config_flag in absl_flags.FLAGS:
      default = str(absl_flags.FLAGS[config_flag].default_as_str or "").strip("'\"")
      spec = default if default not in ("", "None") else None
  return spec


def _load_config(spec: str, config_flag: str):
  """(config, None) or (None, one-line reason) for a config file spec ``FILE[:ARG]``."""
  from ml_collections.config_flags import config_flags  # pylint: disable=import-outside-toplevel
  try:
    config = config_flags.ConfigFileFlagParser(config_flag, lock_config=False).parse(spec)
  except Exception as e:  # pylint: disable=broad-except
    return None, " ".join(str(e).split()[-12:])
  if _is_error_config(config):
    path = spec.split(":", 1)[0]
    return None, f"no such file {path}" if not os.path.isfile(path) else "it failed to load"
  return config, None


def _flatten(config, prefix: str = ""):
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)) and len(value):
      yield from _flatten(value, name + ".")
    else:
      yield name, value


def _shell_value(value) -> str:
  """A field's value as it is written on a shell command line."""
  import shlex  # pylint: disable=import-outside-toplevel
  return shlex.quote(value if isinstance(value, str) else repr(value))


def _override_names(argv: Sequence[str], config_flag: str) -> list[str]:
  pattern = re.compile(r"^--?(?:no)?" + re.escape(config_flag) + r"\.([^=]+)")
  return [m.group(1) for m in map(pattern.match, argv[1:]) if m]


def _missing_field(config, name: str):
  """(path walked, missing key, keys there) of an override path the config lacks, or None."""
  node, walked = config, []
  for part in name.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      return None
    keys = [str(k) for k in node.keys()]
    if part not in keys:
      return walked, part, keys
    node = node[part]
    walked.append(part)
  return None


def _override_error(exc: BaseException, argv: Sequence[str], example_config: str,
                    config_flag: str) -> str:
  """A misspelled ``--config.FIELD``: the closest field first, then what is missing."""
  spec = _config_spec(argv, config_flag)
  listing = (f"`python {_prog(argv)} --{config_flag}={spec or example_config} --help` lists "
             f"the fields")
  config = _load_config(spec, config_flag)[0] if spec else None
  if config is not None:
    for name in _override_names(argv, config_flag):
      missing = _missing_field(config, name)
      if missing is None:
        continue
      walked, bad, keys = missing
      field = ".".join(walked + [bad])
      close = difflib.get_close_matches(bad, keys, n=1)
      if close:
        return (f"did you mean --{config_flag}.{'.'.join(walked + close)}? {spec} has no field "
                f"{field}; {listing}")
      where = ".".join(walked) or "its top level"
      return (f"{spec} has no field {field} (--{config_flag}.{name}); the fields of {where} "
              f"are {', '.join(keys)}; {listing}")
  # Not found by walking the file (e.g. a field its get_config adds conditionally): the
  # exception's own text, its "Did you mean" line first.
  text = exc
  while isinstance(text, BaseException) and text.args:
    text = text.args[0]
  lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
  lines.sort(key=lambda ln: not ln.lower().startswith("did you mean"))
  return f"{' '.join(lines)} (an unknown --{config_flag}.* field); {listing}"


def _config_file_error(exc, argv: Sequence[str], example_config: str, config_flag: str
                       ) -> str:
  """A config file that cannot be loaded: a close file name first, else the files there."""
  spec = _config_spec(argv, config_flag)
  path = (spec or "").split(":", 1)[0]
  if not path:
    return f"pass --{config_flag}=FILE, e.g. --{config_flag}={example_config}"
  if not os.path.isfile(path):
    folder = os.path.dirname(path)
    names = sorted(f for f in os.listdir(folder or ".") if f.endswith(".py")
                   and not f.startswith("_")) if os.path.isdir(folder or ".") else []
    close = difflib.get_close_matches(os.path.basename(path), names, n=1)
    if close:
      return (f"did you mean --{config_flag}={os.path.join(folder, close[0])}? there is no "
              f"config file {path}")
    if names and folder:
      return (f"no config file {path} (--{config_flag}); the config files in {folder}/ are "
              f"{', '.join(names)}")
    where = "" if os.path.isabs(path) else f", relative to {os.getcwd()}"
    return (f"no config file {path} (--{config_flag}{where}); pass an existing file, e.g. "
            f"--{config_flag}={example_config}")
  last = [ln for ln in str(exc or "").splitlines() if ln.strip()]
  return f"cannot load config file {path}: {last[-1].strip() if last else exc!r}"


def _flags_error(exc: BaseException, argv: Sequence[str], example_config: str,
                 config_flag: str) -> str:
  """absl's flag errors (unknown flag, bad value, missing required flag) in one line."""
  message = str(exc)
  prog = _prog(argv)
  if "Error whilst parsing config file" in message:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return (f"the config file --{config_flag}={_config_spec(argv, config_flag)} raised "
            f"{lines[-1]} (run `python -c 'import runpy; runpy.run_path(FILE)[\"get_config\"]"
            f"()'` for its traceback)")
  required = re.search(r"Flag --(\S+) must have a value other than None", message)
  if required:
    name = required.group(1)
    value = "FILE, e.g. --" + f"{config_flag}={example_config}" if name == config_flag else "..."
    return f"pass --{name}={value} (`python {prog} --help` describes the flags)"
  unknown = re.search(r"Unknown command line flag '([^']+)'(?:\. Did you mean: (.+?) \?)?",
                      message)
  if unknown:
    if unknown.group(2):
      return (f"did you mean --{unknown.group(2).split(',')[0].strip()}? unknown flag "
              f"--{unknown.group(1)}")
    return f"unknown flag --{unknown.group(1)} (`python {prog} --help` lists the flags)"
  return f"{message} (`python {prog} --help` describes the flags)"
