"""A process pool that survives its workers' deaths: map_in_workers runs
jobs in worker processes, one job per worker at a time, so a worker killed
(kill -9, the out-of-memory killer) is reported with the job it held,
instead of leaving the caller waiting forever."""

import multiprocessing
import multiprocessing.connection
import signal

from bert_distill import cli


def _worker_loop(connection, function, initializer, initargs):
  """A worker process: runs function(job) for each job received, in turn.

  Replies (True, result) or (False, exception). The initializer runs before
  the first job, and an exception it raises is the reply to that job. Ends
  on None or when the parent is gone.
  """
  # Ctrl-C reaches the whole process group: the parent alone handles it (it
  # stops the workers), a worker's KeyboardInterrupt would print a traceback.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  initialized = False
  while True:
    try:
      job = connection.recv()
    except (EOFError, OSError):
      return
    if job is None:
      return
    try:
      if not initialized:
        if initializer is not None:
          initializer(*initargs)
        initialized = True
      reply = (True, function(job))
    except Exception as e:  # pylint: disable=broad-except
      reply = (False, e)
    try:
      connection.send(reply)
    except (EOFError, OSError):
      return
    except Exception as e:  # pylint: disable=broad-except
      # A result or exception that does not pickle.
      connection.send((False, cli.StageError(f"{type(e).__name__}: {e}")))


def _death(exitcode):
  """How a process ended, in words, from its exit code."""
  if exitcode is not None and exitcode < 0:
    try:
      name = signal.Signals(-exitcode).name
    except ValueError:
      name = f"signal {-exitcode}"
    return f"was killed by {name}"
  return f"exited with status {exitcode}"


def map_in_workers(function, jobs, num_workers, name_of_job, context="spawn",
                   initializer=None, initargs=(), ordered=False):
  """Yields (job, function(job)) for every job, computed in worker processes.

  Unlike multiprocessing.Pool, a worker that dies (kill -9, the out-of-memory
  killer) does not leave the caller waiting forever: every worker holds one
  job at a time, so the one it held is known, and StageError names it. An
  exception raised by function is raised here, in the caller. Either way the
  other workers are stopped and nothing more is yielded.

  Args:
    function: a module-level function of one job (picklable under spawn).
    jobs: a list of picklable jobs.
    num_workers: the most worker processes (at least 1).
    name_of_job: job -> the words that name it in an error (e.g. its file).
    context: the multiprocessing start method, "spawn" or "fork".
    initializer, initargs: run once in each worker before its first job.
    ordered: yield in the order of `jobs` (at most 2 * num_workers results
      wait for an earlier one) instead of as they finish.
  """
  jobs = list(jobs)
  if not jobs:
    return
  mp = multiprocessing.get_context(context)
  workers = []  # [(process, connection)]
  for _ in range(max(1, min(num_workers, len(jobs)))):
    parent_end, child_end = mp.Pipe()
    process = mp.Process(target=_worker_loop, daemon=True,
                         args=(child_end, function, initializer, initargs))
    process.start()
    child_end.close()
    workers.append((process, parent_end))
  holding = {}  # worker index -> job index
  finished = {}  # job index -> result, waiting for an earlier one
  next_job = next_to_yield = 0
  ok = False
  try:
    while next_to_yield < len(jobs):
      for w in range(len(workers)):
        if (w not in holding and next_job < len(jobs) and
            (not ordered or next_job < next_to_yield + 2 * len(workers))):
          try:
            workers[w][1].send(jobs[next_job])
          except OSError:
            workers[w][0].join()
            raise cli.StageError(
                f"a worker process {_death(workers[w][0].exitcode)} before "
                f"working on {name_of_job(jobs[next_job])}: rerun") from None
          holding[w] = next_job
          next_job += 1
      waiting = {}
      for w in holding:
        process, connection = workers[w]
        waiting[connection] = w
        waiting[process.sentinel] = w
      for ready in multiprocessing.connection.wait(list(waiting)):
        w = waiting[ready]
        if w not in holding:
          continue  # Its connection and its sentinel were both ready.
        process, connection = workers[w]
        reply = None
        try:
          if connection.poll():
            reply = connection.recv()
        except (EOFError, OSError):  # Its end of the pipe closed: it died.
          pass
        if reply is None:
          process.join()
          raise cli.StageError(
              f"a worker process {_death(process.exitcode)} while working on "
              f"{name_of_job(jobs[holding[w]])}; nothing of it is under its "
              f"final name. Rerun to redo it (too little memory? try fewer "
              f"workers)")
        succeeded, value = reply
        index = holding.pop(w)
        if not succeeded:
          raise value
        finished[index] = value
      while True:
        if ordered:
          index = next_to_yield
        else:
          index = next(iter(finished), None)
        if index not in finished:
          break
        result = finished.pop(index)
        next_to_yield += 1
        yield jobs[index], result
    ok = True
  finally:
    for process, connection in workers:
      if ok:
        try:
          connection.send(None)
        except OSError:
          pass
      else:
        process.terminate()
    for process, connection in workers:
      process.join()
      connection.close()
