"""Runs the installed WikiExtractor with section headings left out of the text.

  python wikiextractor_without_headings.py [WikiExtractor's own arguments]

WikiExtractor's command line writes a section heading (`== History ==`) into
an article's text as a line of its own, `History.`, which nothing but a guess
tells apart from a one-sentence paragraph ("Returns the current ABC cache
token."). Its Extractor knows better: with keepSections=False it writes no
heading at all, and every line of the text is a paragraph of the article.
The command line has no option for that, so this script runs WikiExtractor's
own main() (every option, the template pass, the worker processes, the
output files as the command line writes them) with keepSections=False added
to the arguments main() hands every Extractor it builds.

The package itself is used, not a copy of it: `wikiextractor>=3.1.0`, whose
process_dump takes the Extractor's arguments (`extractor_kwargs`).

WikiExtractor's worker and reducer processes wait on queues for each other
and for the main process. When one of them is killed (the kernel's OOM
killer, a user's kill), the others wait forever, and the survivors of a
killed main process hold extract.sh's output pipe open, so the pipeline
hangs instead of failing. Here every process dies with the main one
(Linux: PR_SET_PDEATHSIG), and the main process stops with one error line
when a child dies abnormally (stop_when_a_child_dies), so a rerun redoes
the extraction.
"""

import ctypes
import inspect
import os
import signal
import sys
import threading
import time

from wikiextractor import WikiExtractor

_PR_SET_PDEATHSIG = 1
_forking_process = None  # the pid that last forked (set before each fork)


def remember_the_forking_process():
  """Before a fork, in the parent: its pid, for die_with_the_parent."""
  global _forking_process
  _forking_process = os.getpid()


def die_with_the_parent():
  """In a forked child: SIGKILL when the process that forked it exits
  (Linux; elsewhere nothing)."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):
    return
  if os.getppid() != _forking_process:  # it died before prctl took effect
    os._exit(1)  # pylint: disable=protected-access


def stop_when_a_child_dies(poll_seconds=0.5):
  """A daemon thread of the main process: when a child process is killed
  by a signal or exits non-zero, prints one error line and exits 1 (its
  children die with it). Children are peeked at (WNOWAIT), not reaped:
  multiprocessing still joins the ones that end normally."""

  def watch():
    while True:
      try:
        child = os.waitid(os.P_ALL, 0,
                          os.WEXITED | os.WNOHANG | os.WNOWAIT)
      except ChildProcessError:
        child = None
      if child is not None and (child.si_code != os.CLD_EXITED or
                                child.si_status != 0):
        how = (f"exited with status {child.si_status}"
               if child.si_code == os.CLD_EXITED else
               f"was killed by signal {child.si_status}")
        print(f"error: WikiExtractor's process {child.si_pid} {how}: "
              f"extraction stopped (its output is incomplete; rerun to "
              f"redo it)", file=sys.stderr, flush=True)
        os._exit(1)  # pylint: disable=protected-access
      time.sleep(poll_seconds)

  threading.Thread(target=watch, daemon=True,
                   name="stop_when_a_child_dies").start()


def without_section_headings(process_dump):
  """process_dump, with keepSections=False for every Extractor it builds."""

  def process_dump_without_headings(*args, extractor_kwargs=None, **kwargs):
    extractor_kwargs = dict(extractor_kwargs or {}, keepSections=False)
    return process_dump(*args, extractor_kwargs=extractor_kwargs, **kwargs)

  return process_dump_without_headings


def main():
  if "extractor_kwargs" not in inspect.signature(
      WikiExtractor.process_dump).parameters:
    print(f"error: wikiextractor {WikiExtractor.__version__} cannot leave "
          f"section headings out of the text: pip install "
          f"'wikiextractor>=3.1.0'", file=sys.stderr)
    sys.exit(1)
  WikiExtractor.process_dump = without_section_headings(
      WikiExtractor.process_dump)
  if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=remember_the_forking_process,
                        after_in_child=die_with_the_parent)
  if hasattr(os, "waitid"):
    stop_when_a_child_dies()
  WikiExtractor.main()


if __name__ == "__main__":
  main()
