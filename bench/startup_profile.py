"""Where a stage's run time goes: wall and CPU seconds of each phase.

Runs distill.py or extract_teacher_labels_truncated.py in this process, as
`python SCRIPT ARGS...` would (the stage's own flags and main), with its
phases timed by wrapping the stage's functions: the TensorFlow import, the
model build, the checkpoint restore, the dataset set-up, every call of the
training loop (the first one includes tracing and graph optimisation) or of
the teacher (the first call of each length includes its trace and XLA
compile), checkpoint writes, the record counting pass. Prints one line per
phase (phases nest: a checkpoint write inside the training loop's phase is
also its own line) and the total; `--` separates the script's arguments.

  .venv/bin/python bench/startup_profile.py distill.py -- --do_train ...
"""

import collections
import functools
import importlib.util
import os
import sys
import time

_START = time.perf_counter()
_CPU_START = time.process_time()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PHASES = collections.OrderedDict()


def _record(name, wall, cpu):
  total = PHASES.setdefault(name, [0, 0.0, 0.0])
  total[0] += 1
  total[1] += wall
  total[2] += cpu


def timed(name, fn):
  """fn, with each call's wall and CPU seconds added to phase `name`
  (a callable name(args) -> str names each call's phase)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
      return fn(*args, **kwargs)
    finally:
      label = name(*args, **kwargs) if callable(name) else name
      _record(label, time.perf_counter() - wall, time.process_time() - cpu)
  return wrapper


def _load_stage(script):
  path = os.path.join(ROOT, script)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def instrument(stage, modeling):
  """Wraps the phases of either stage."""
  modeling.BertPretrainingModel.__init__ = timed(
      "model build (variables)", modeling.BertPretrainingModel.__init__)
  from bert_distill import checkpoints  # pylint: disable=g-import-not-at-top
  for name in ("save_checkpoint", "load_checkpoint", "restore_variables"):
    setattr(checkpoints, name, timed(f"checkpoints.{name}",
                                     getattr(checkpoints, name)))
  if stage.__name__ == "distill":
    from bert_distill import distill_input  # pylint: disable=g-import-not-at-top
    from bert_distill import distill_training  # pylint: disable=g-import-not-at-top
    from bert_distill import distribution  # pylint: disable=g-import-not-at-top
    from bert_distill import summaries  # pylint: disable=g-import-not-at-top
    original = distill_training.make_train_loop

    def make_train_loop(*args, **kwargs):
      loop = original(*args, **kwargs)
      calls = [0]

      def call(iterator, num_steps):
        calls[0] += 1
        return loop(iterator, num_steps)
      return timed(lambda i, n: (
          f"train loop, call 1 ({int(n)} steps + trace + graph optimisation)"
          if calls[0] == 1 else "train loop, later calls"), call)
    distill_training.make_train_loop = make_train_loop
    phases = {distill_input: ("check_inputs", "distributed_dataset",
                              "count_batches"),
              distribution: ("create_strategy",),
              distill_training: ("build_student", "restore_or_initialize",
                                 "evaluate"),
              summaries: ("write_scalars",)}
  else:  # extract_teacher_labels_truncated.py
    from bert_distill import distribution  # pylint: disable=g-import-not-at-top
    from bert_distill import teacher_labels  # pylint: disable=g-import-not-at-top
    seen = set()
    original_call = teacher_labels.TeacherLabeler.__call__

    def label(self, inputs):
      shape = tuple(inputs[0].shape)
      first = shape not in seen
      seen.add(shape)
      wall, cpu = time.perf_counter(), time.process_time()
      try:
        return original_call(self, inputs)
      finally:
        _record(f"teacher, first call at {shape} (trace + compile + run)"
                if first else "teacher, later calls (run)",
                time.perf_counter() - wall, time.process_time() - cpu)
    teacher_labels.TeacherLabeler.__call__ = label
    from bert_distill import records  # pylint: disable=g-import-not-at-top
    phases = {teacher_labels: ("check_inputs", "load_teacher",
                               "read_teacher_config"),
              records: ("count_records",),
              distribution: ("local_strategy",)}
  for module, names in phases.items():
    for name in names:
      setattr(module, name, timed(name, getattr(module, name)))


def main():
  script, args = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
  sys.path.insert(0, ROOT)
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  import flops  # pylint: disable=g-import-not-at-top
  print(flops.cpu_line(), flush=True)
  wall, cpu = time.perf_counter(), time.process_time()
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  _record("import tensorflow", time.perf_counter() - wall,
          time.process_time() - cpu)
  from bert_distill import cli  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  stage = _load_stage(script)
  instrument(stage, modeling)
  sys.argv = [script] + args
  try:
    cli.run(stage.main)
  except SystemExit as e:
    if e.code:
      raise
  total_wall = time.perf_counter() - _START
  total_cpu = time.process_time() - _CPU_START
  print(f"\n{script}: {total_wall:.1f} s wall, {total_cpu:.1f} CPU s in "
        f"this process (exit not included)", file=sys.stderr)
  for name, (count, phase_wall, phase_cpu) in PHASES.items():
    print(f"  {name:62s} x{count:<3d} {phase_wall:6.1f} s wall "
          f"{phase_cpu:6.1f} CPU s", file=sys.stderr)


if __name__ == "__main__":
  main()
